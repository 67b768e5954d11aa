import NIOCore
import Wire

/// What one backend answered for one cycle (up to its ReadyForQuery), reduced to what must agree
/// across backends: message kinds, SQLSTATEs, command tags (with row counts), and a hash of the
/// returned rows. Notices, parameter changes and notifications are left out: they may differ
/// harmlessly.
struct OutcomeDigest: Equatable, Sendable {
    /// One message kind run: `T`, `D×3`, `C:UPDATE 1`, `E:23505`, `Z:I`. Kept as bytes (the command
    /// tag is a slice of the message): a digest is built for every reply of every backend, text only
    /// when a mismatch is reported.
    struct Entry: Equatable, Sendable {
        var type: UInt8
        /// Rows in a DataRow / CopyData run; the transaction status byte of a ReadyForQuery.
        var count = 0
        /// The command tag of a CommandComplete, the SQLSTATE of an ErrorResponse (nil: unreadable).
        var detail: ByteBuffer?

        var text: String {
            switch type {
            case UInt8(ascii: "D"), UInt8(ascii: "d"):
                return "\(Character(Unicode.Scalar(type)))×\(count)"
            case UInt8(ascii: "C"), UInt8(ascii: "E"):
                return "\(Character(Unicode.Scalar(type))):\(detail.map { String(buffer: $0) } ?? "?")"
            case UInt8(ascii: "Z"):
                return "Z:\(WireError.printable(UInt8(truncatingIfNeeded: count)))"
            default:
                return WireError.printable(type)
            }
        }
    }

    var entries: [Entry] = []
    var rowHash: UInt64 = 0xcbf2_9ce4_8422_2325

    /// Compact description, one string per entry.
    var summary: [String] { entries.map(\.text) }

    mutating func add(_ frame: PostgresFrame, hashRows: Bool) {
        switch frame.type {
        case UInt8(ascii: "N"), UInt8(ascii: "S"), UInt8(ascii: "A"):
            return
        case UInt8(ascii: "D"), UInt8(ascii: "d"):
            if hashRows { hash(frame) }
            if let last = entries.indices.last, entries[last].type == frame.type {
                entries[last].count += 1
            } else {
                entries.append(Entry(type: frame.type, count: 1))
            }
        case UInt8(ascii: "E"):
            var sqlState: ByteBuffer?
            if case let .errorResponse(fields)? = try? BackendMessage(frame: frame), let code = fields.sqlState {
                sqlState = ByteBuffer(string: code)
            }
            entries.append(Entry(type: frame.type, detail: sqlState))
        case UInt8(ascii: "C"):
            // The tag is the body up to its NUL terminator.
            let body = frame.body
            var tag: ByteBuffer?
            if body.readableBytes > 0, body.getInteger(at: body.writerIndex - 1, as: UInt8.self) == 0 {
                tag = body.getSlice(at: body.readerIndex, length: body.readableBytes - 1)
            }
            entries.append(Entry(type: frame.type, detail: tag))
        case UInt8(ascii: "Z"):
            // The transaction status is part of the outcome ('T' vs 'E' after an error).
            let status = frame.bytes.getInteger(at: frame.bytes.readerIndex + 5, as: UInt8.self) ?? 0
            entries.append(Entry(type: frame.type, count: Int(status)))
        default:
            entries.append(Entry(type: frame.type))
        }
    }

    /// FNV-1a over the row bytes: cheap, deterministic, and the same in every process.
    private mutating func hash(_ frame: PostgresFrame) {
        var h = rowHash
        for byte in frame.bytes.readableBytesView {
            h ^= UInt64(byte)
            h = h &* 0x100_0000_01b3
        }
        rowHash = h
    }

    var description: String { summary.joined(separator: " ") }
}
