import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension ByteBuffer {
    /// Appends the readable bytes of `other` with one copy of raw memory. `writeImmutableBuffer`
    /// takes a generic path that costs several times more per call, and the relay appends every
    /// message it forwards.
    @inlinable
    public mutating func appendReadableBytes(of other: ByteBuffer) {
        other.withUnsafeReadableBytes { _ = self.writeBytes($0) }
    }

    /// Reads a NUL-terminated string; nil when no terminator is left in the buffer.
    @inlinable
    mutating func readCString() -> String? {
        // memchr, not a step per byte through a view: a Query's text can be many megabytes.
        guard let length = self.withUnsafeReadableBytes({ raw -> Int? in
            guard let base = raw.baseAddress, let found = memchr(base, 0, raw.count) else { return nil }
            return UnsafeRawPointer(found) - base
        }) else { return nil }
        let string = self.readString(length: length)
        self.moveReaderIndex(forwardBy: 1)
        return string
    }

    /// Writes `string` followed by a NUL byte.
    @inlinable
    @discardableResult
    public mutating func writeCString(_ string: String) -> Int {
        let written = self.writeString(string)
        self.writeInteger(UInt8(0))
        return written + 1
    }

    /// Writes one typed message: the type byte, the length (filled in afterwards), and the body.
    @inlinable
    public mutating func writeMessage(_ type: UInt8, _ body: (inout ByteBuffer) -> Void) {
        self.writeInteger(type)
        let lengthIndex = self.writerIndex
        self.writeInteger(Int32(0))
        body(&self)
        self.setInteger(Int32(self.writerIndex - lengthIndex), at: lengthIndex)
    }

    /// Writes one untyped startup-phase packet (length first, then the body).
    @inlinable
    public mutating func writeStartupPacket(_ body: (inout ByteBuffer) -> Void) {
        let lengthIndex = self.writerIndex
        self.writeInteger(Int32(0))
        body(&self)
        self.setInteger(Int32(self.writerIndex - lengthIndex), at: lengthIndex)
    }
}

/// Reads the fields of one message body and turns every shortfall into a `WireError`.
public struct MessageReader {
    public var buffer: ByteBuffer
    /// What is being read (a message kind or a name), turned into text only when an error names it:
    /// describing an enum value goes through reflection, far too slow for every message relayed.
    private let subject: Any

    /// The message's name, for errors.
    public var message: String { (subject as? String) ?? "\(subject)" }

    public init(_ buffer: ByteBuffer, message: Any) {
        self.buffer = buffer
        self.subject = message
    }

    public mutating func int8(_ field: @autoclosure () -> String) throws(WireError) -> UInt8 {
        guard let v = buffer.readInteger(as: UInt8.self) else { throw .truncated(message: message, field: field()) }
        return v
    }

    public mutating func int16(_ field: @autoclosure () -> String) throws(WireError) -> Int16 {
        guard let v = buffer.readInteger(as: Int16.self) else { throw .truncated(message: message, field: field()) }
        return v
    }

    public mutating func int32(_ field: @autoclosure () -> String) throws(WireError) -> Int32 {
        guard let v = buffer.readInteger(as: Int32.self) else { throw .truncated(message: message, field: field()) }
        return v
    }

    public mutating func cString(_ field: @autoclosure () -> String) throws(WireError) -> String {
        guard let v = buffer.readCString() else { throw .truncated(message: message, field: field()) }
        return v
    }

    public mutating func bytes(_ count: Int, _ field: @autoclosure () -> String) throws(WireError) -> ByteBuffer {
        guard count >= 0, let v = buffer.readSlice(length: count) else { throw .truncated(message: message, field: field()) }
        return v
    }

    /// A 2-byte count field, small enough that the rest of the body could hold `minimumElementSize` bytes per element.
    /// Unsigned, as PostgreSQL reads it (`pq_getmsgint`): libpq sends up to 65535 parameters.
    public mutating func count16(_ field: @autoclosure () -> String, minimumElementSize: Int) throws(WireError) -> Int {
        guard let n = buffer.readInteger(as: UInt16.self).map(Int.init) else { throw .truncated(message: message, field: field()) }
        guard n * minimumElementSize <= buffer.readableBytes else { throw .truncated(message: message, field: field()) }
        return n
    }

    /// A length-prefixed value where -1 means NULL.
    public mutating func nullableBytes(_ field: @autoclosure () -> String) throws(WireError) -> ByteBuffer? {
        let length = Int(try int32(field()))
        if length == -1 { return nil }
        guard length >= 0 else { throw .invalidValue(message: message, field: field(), detail: "negative length \(length)") }
        return try bytes(length, field())
    }

    public func finish() throws(WireError) {
        if buffer.readableBytes > 0 { throw .trailingBytes(message: message, count: buffer.readableBytes) }
    }

    public mutating func rest() -> ByteBuffer {
        let r = buffer
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return r
    }
}
