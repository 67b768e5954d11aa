import NIOCore
import Wire

/// What one backend answered for one cycle (up to its ReadyForQuery), reduced to what must agree
/// across backends: message kinds, SQLSTATEs, command tags (with row counts), and a hash of the
/// returned rows. Notices, parameter changes and notifications are left out: they may differ
/// harmlessly.
struct OutcomeDigest: Equatable, Sendable {
    /// Compact description: one entry per message kind run, e.g. `T`, `D×3`, `C:UPDATE 1`, `E:23505`, `Z`.
    var summary: [String] = []
    var rowHash: UInt64 = 0xcbf2_9ce4_8422_2325
    private var lastRowRun = 0

    mutating func add(_ frame: PostgresFrame, hashRows: Bool) {
        switch frame.type {
        case UInt8(ascii: "N"), UInt8(ascii: "S"), UInt8(ascii: "A"):
            return
        case UInt8(ascii: "D"), UInt8(ascii: "d"):
            if hashRows { hash(frame) }
            let label = frame.type == UInt8(ascii: "D") ? "D" : "d"
            if lastRowRun > 0, summary.last?.hasPrefix(label) == true {
                lastRowRun += 1
                summary[summary.count - 1] = "\(label)×\(lastRowRun)"
            } else {
                lastRowRun = 1
                summary.append("\(label)×1")
            }
            return
        case UInt8(ascii: "E"):
            if case let .errorResponse(fields)? = try? BackendMessage(frame: frame) {
                summary.append("E:\(fields.sqlState ?? "?")")
            } else {
                summary.append("E:?")
            }
        case UInt8(ascii: "C"):
            if case let .commandComplete(tag)? = try? BackendMessage(frame: frame) {
                summary.append("C:\(tag)")
            } else {
                summary.append("C:?")
            }
        case UInt8(ascii: "Z"):
            // The transaction status is part of the outcome ('T' vs 'E' after an error).
            let status = frame.bytes.getInteger(at: frame.bytes.readerIndex + 5, as: UInt8.self) ?? 0
            summary.append("Z:\(WireError.printable(status))")
        default:
            summary.append(WireError.printable(frame.type))
        }
        lastRowRun = 0
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
