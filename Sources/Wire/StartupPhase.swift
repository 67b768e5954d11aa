import NIOCore

/// The parameters of a StartupMessage, in the order the client sent them.
public struct StartupMessage: Sendable, Equatable {
    public var protocolMajor: Int
    public var protocolMinor: Int
    /// Every parameter the client sent (`user`, `database`, `options`, GUCs, `_pq_.*`), in order.
    public var parameters: [(name: String, value: String)]

    public init(protocolMajor: Int = 3, protocolMinor: Int = 0, parameters: [(name: String, value: String)]) {
        self.protocolMajor = protocolMajor
        self.protocolMinor = protocolMinor
        self.parameters = parameters
    }

    public subscript(name: String) -> String? {
        parameters.first(where: { $0.name == name })?.value
    }

    public static func == (a: StartupMessage, b: StartupMessage) -> Bool {
        a.protocolMajor == b.protocolMajor && a.protocolMinor == b.protocolMinor
            && a.parameters.map(\.name) == b.parameters.map(\.name)
            && a.parameters.map(\.value) == b.parameters.map(\.value)
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeStartupPacket { b in
            b.writeInteger(Int32(protocolMajor << 16 | protocolMinor))
            for p in parameters {
                b.writeCString(p.name)
                b.writeCString(p.value)
            }
            b.writeInteger(UInt8(0))
        }
    }
}

/// A CancelRequest: the process id and secret key of the session to cancel (4 to 256 key bytes).
public struct CancelRequest: Sendable, Equatable {
    public var processID: Int32
    public var secretKey: [UInt8]

    public init(processID: Int32, secretKey: [UInt8]) {
        self.processID = processID
        self.secretKey = secretKey
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeStartupPacket { b in
            b.writeInteger(StartupPhaseMessage.cancelRequestCode)
            b.writeInteger(processID)
            b.writeBytes(secretKey)
        }
    }
}

/// The first message of a connection, which has no type byte.
public enum StartupPhaseMessage: Sendable, Equatable {
    case startup(StartupMessage)
    /// `trailingBytes` is true when the client sent more bytes right after the request,
    /// before the TLS handshake could start (CVE-2021-23222): such a connection must be refused.
    case sslRequest(trailingBytes: Bool)
    case gssEncryptionRequest(trailingBytes: Bool)
    case cancel(CancelRequest)

    public static let sslRequestCode: Int32 = 80877103
    public static let gssEncryptionRequestCode: Int32 = 80877104
    public static let cancelRequestCode: Int32 = 80877102

    public func encode(into buffer: inout ByteBuffer) {
        switch self {
        case let .startup(m): m.encode(into: &buffer)
        case .sslRequest: buffer.writeStartupPacket { $0.writeInteger(Self.sslRequestCode) }
        case .gssEncryptionRequest: buffer.writeStartupPacket { $0.writeInteger(Self.gssEncryptionRequestCode) }
        case let .cancel(c): c.encode(into: &buffer)
        }
    }

    /// Parses one complete startup-phase packet body (after the length field).
    public static func parse(body: ByteBuffer, remainingAfterPacket: Int) throws(WireError) -> StartupPhaseMessage {
        var r = MessageReader(body, message: "startup packet")
        let code = try r.int32("protocol version")
        switch code {
        case sslRequestCode:
            try r.finish()
            return .sslRequest(trailingBytes: remainingAfterPacket > 0)
        case gssEncryptionRequestCode:
            try r.finish()
            return .gssEncryptionRequest(trailingBytes: remainingAfterPacket > 0)
        case cancelRequestCode:
            let pid = try r.int32("process ID")
            let keyLength = r.buffer.readableBytes
            guard (4...256).contains(keyLength) else {
                throw .invalidValue(message: "CancelRequest", field: "secret key", detail: "length \(keyLength) is not between 4 and 256")
            }
            let key = r.rest()
            return .cancel(CancelRequest(processID: pid, secretKey: Array(key.readableBytesView)))
        default:
            let major = Int(UInt32(bitPattern: code) >> 16)
            let minor = Int(UInt32(bitPattern: code) & 0xffff)
            guard major == 3 else { throw .unsupportedProtocolVersion(major: major, minor: minor) }
            var params: [(name: String, value: String)] = []
            while true {
                let name = try r.cString("parameter name")
                if name.isEmpty { break }
                let value = try r.cString("parameter value for \(name)")
                params.append((name, value))
            }
            try r.finish()
            return .startup(StartupMessage(protocolMajor: major, protocolMinor: minor, parameters: params))
        }
    }
}

/// Decodes the one packet that opens a connection; its limit is small since no startup packet needs more.
public struct StartupPhaseDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = StartupPhaseMessage
    public static let defaultMaximumSize = 10_000

    public let maximumSize: Int

    public init(maximumSize: Int = StartupPhaseDecoder.defaultMaximumSize) {
        self.maximumSize = maximumSize
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> StartupPhaseMessage? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: Int32.self) else { return nil }
        let len = Int(length)
        guard len >= 8 else { throw WireError.invalidLength(type: nil, length: len) }
        guard len <= maximumSize else { throw WireError.messageTooLarge(type: nil, length: len, limit: maximumSize) }
        guard buffer.readableBytes >= len else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        let body = buffer.readSlice(length: len - 4)!
        return try StartupPhaseMessage.parse(body: body, remainingAfterPacket: buffer.readableBytes)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> StartupPhaseMessage? {
        try decode(buffer: &buffer)
    }
}
