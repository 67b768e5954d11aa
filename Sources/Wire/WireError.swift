/// A protocol violation found while decoding PostgreSQL v3 bytes.
///
/// Every decoder in `Wire` is total: any byte sequence yields a message or one of these.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The length field announces more bytes than the configured limit allows.
    case messageTooLarge(type: UInt8?, length: Int, limit: Int)
    /// The length field is smaller than the length field itself (or otherwise impossible).
    case invalidLength(type: UInt8?, length: Int)
    /// A field ran past the end of the message body.
    case truncated(message: String, field: String)
    /// Bytes remained in the body after the last field.
    case trailingBytes(message: String, count: Int)
    /// The type byte names no message of this direction.
    case unknownMessageType(UInt8)
    /// A field holds a value the protocol does not allow.
    case invalidValue(message: String, field: String, detail: String)
    /// The startup packet asks for a protocol this node does not speak.
    case unsupportedProtocolVersion(major: Int, minor: Int)

    public var description: String {
        switch self {
        case let .messageTooLarge(type, length, limit):
            return "invalid message length \(length) for message \(Self.name(type)): larger than the limit of \(limit) bytes"
        case let .invalidLength(type, length):
            return "invalid message length \(length) for message \(Self.name(type))"
        case let .truncated(message, field):
            return "invalid \(message) message: truncated at field \(field)"
        case let .trailingBytes(message, count):
            return "invalid \(message) message: \(count) unexpected bytes after the last field"
        case let .unknownMessageType(type):
            return "invalid frontend message type \(type) ('\(Self.printable(type))')"
        case let .invalidValue(message, field, detail):
            return "invalid \(message) message: field \(field): \(detail)"
        case let .unsupportedProtocolVersion(major, minor):
            return "unsupported frontend protocol \(major).\(minor): server supports 3.0 to 3.0"
        }
    }

    static func name(_ type: UInt8?) -> String {
        guard let type else { return "startup packet" }
        return "type '\(printable(type))'"
    }

    public static func printable(_ byte: UInt8) -> String {
        (0x20..<0x7f).contains(byte) ? String(UnicodeScalar(byte)) : "\\x" + String(byte, radix: 16)
    }
}
