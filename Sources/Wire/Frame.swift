import NIOCore

/// One typed message of the regular protocol phase, kept as the exact bytes received.
///
/// The proxy forwards `bytes` unchanged, so every field (even ones this code does not know)
/// reaches the other side byte-exact; typed views are parsed only where a decision needs them.
public struct PostgresFrame: Sendable, Equatable {
    /// The whole message: type byte, length and body.
    public let bytes: ByteBuffer
    /// The message type byte (read once: the relay asks for it many times per message).
    public let type: UInt8

    /// Wraps a complete message. The caller guarantees the header is consistent.
    public init(bytes: ByteBuffer) {
        self.bytes = bytes
        self.type = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) ?? 0
    }

    /// Builds a frame from a type byte and a body.
    public init(type: UInt8, body: ByteBuffer) {
        var b = ByteBuffer()
        b.reserveCapacity(5 + body.readableBytes)
        b.writeInteger(type)
        b.writeInteger(Int32(4 + body.readableBytes))
        var body = body
        b.writeBuffer(&body)
        self.bytes = b
        self.type = type
    }

    /// The message body (after type and length).
    public var body: ByteBuffer { bytes.getSlice(at: bytes.readerIndex + 5, length: bytes.readableBytes - 5)! }
}

/// Splits a byte stream into `PostgresFrame`s, refusing impossible or oversized lengths
/// before buffering the body, so memory stays bounded by `maximumMessageSize`.
public struct PostgresFrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = PostgresFrame

    public let maximumMessageSize: Int

    public init(maximumMessageSize: Int = 1 << 30) {
        self.maximumMessageSize = maximumMessageSize
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> PostgresFrame? {
        guard let type = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
              let length = buffer.getInteger(at: buffer.readerIndex + 1, as: Int32.self)
        else { return nil }
        let len = Int(length)
        guard len >= 4 else { throw WireError.invalidLength(type: type, length: len) }
        guard len - 4 <= maximumMessageSize else {
            throw WireError.messageTooLarge(type: type, length: len, limit: maximumMessageSize)
        }
        guard let bytes = buffer.readSlice(length: len + 1) else { return nil }
        return PostgresFrame(bytes: bytes)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> PostgresFrame? {
        try decode(buffer: &buffer)
    }
}
