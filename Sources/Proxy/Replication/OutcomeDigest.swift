import NIOCore
import Wire

/// What one backend answered for one cycle (up to its ReadyForQuery), reduced to what must agree
/// across backends: message kinds, SQLSTATEs, command tags (with row counts), and a hash of the
/// returned rows. Notices, parameter changes and notifications are left out: they may differ
/// harmlessly. A few things are kept only to explain a difference (error messages, the first rows):
/// they take no part in equality.
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

    /// SQLSTATEs that say when a statement ran, not what the data is: a cancel or statement_timeout,
    /// lock_timeout / NOWAIT, a deadlock, a serialization failure. The lead's such outcome is the
    /// session's; no backend is failed for it.
    static let timingSQLStates: Set<String> = ["57014", "55P03", "40P01", "40001"]

    /// Rows kept (zero-copy slices) to name a differing row in a failure reason.
    static let keptRows = 8

    var entries: [Entry] = []
    var rowHash: UInt64 = 0xcbf2_9ce4_8422_2325
    /// The first error's SQLSTATE when it is a timing outcome (see `timingSQLStates`).
    var timingSQLState: String?
    /// Error messages, for a failure reason only.
    var errorMessages: [String] = []
    /// The first rows' bytes, for a failure reason only.
    var firstRows: [PostgresFrame] = []

    static func == (a: OutcomeDigest, b: OutcomeDigest) -> Bool {
        a.rowHash == b.rowHash && a.entries == b.entries
    }

    /// Compact description, one string per entry.
    var summary: [String] { entries.map(\.text) }

    /// The transaction status after the cycle (`I`, `T`, `E`), from its ReadyForQuery.
    var statusAfter: UInt8? {
        entries.last(where: { $0.type == UInt8(ascii: "Z") }).map { UInt8(truncatingIfNeeded: $0.count) }
    }

    var hasError: Bool { entries.contains { $0.type == UInt8(ascii: "E") } }

    mutating func add(_ frame: PostgresFrame, hashRows: Bool) {
        switch frame.type {
        case UInt8(ascii: "N"), UInt8(ascii: "S"), UInt8(ascii: "A"):
            return
        case UInt8(ascii: "D"), UInt8(ascii: "d"):
            if hashRows {
                hash(frame)
                if frame.type == UInt8(ascii: "D"), firstRows.count < Self.keptRows { firstRows.append(frame) }
            }
            if let last = entries.indices.last, entries[last].type == frame.type {
                entries[last].count += 1
            } else {
                entries.append(Entry(type: frame.type, count: 1))
            }
        case UInt8(ascii: "E"):
            var sqlState: ByteBuffer?
            if case let .errorResponse(fields)? = try? BackendMessage(frame: frame) {
                if let code = fields.sqlState {
                    sqlState = ByteBuffer(string: code)
                    if !hasError, Self.timingSQLStates.contains(code) { timingSQLState = code }
                }
                if errorMessages.count < 4 { errorMessages.append(String((fields.message ?? "").prefix(200))) }
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

    /// The rows as a multiset: each row's FNV-1a hash, mixed (splitmix64's finaliser) and added up, so
    /// the same rows in another order hash alike. Row order is not data: without ORDER BY it is
    /// physical order, which (auto)vacuum changes per backend; with a total ORDER BY equal multisets
    /// come in equal order anyway, and ties under a partial one may come in any order on PostgreSQL
    /// itself. Cheap, deterministic, and the same in every process.
    private mutating func hash(_ frame: PostgresFrame) {
        // Eight bytes a step through the raw bytes: a row of many megabytes (a 50 MB literal read back)
        // must not cost a step per byte on the event loop, least of all in a debug build.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ UInt64(frame.bytes.readableBytes)
        frame.bytes.withUnsafeReadableBytes { raw in
            let words = raw.count / 8
            var i = 0
            while i < words {
                h = (h ^ raw.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self)) &* 0x100_0000_01b3
                h ^= h >> 29
                i &+= 1
            }
            var offset = words &* 8
            while offset < raw.count {
                h = (h ^ UInt64(raw[offset])) &* 0x100_0000_01b3
                offset &+= 1
            }
        }
        h = (h ^ (h >> 30)) &* 0xbf58_476d_1ce4_e5b9
        h = (h ^ (h >> 27)) &* 0x94d0_49bb_1331_11eb
        h ^= h >> 31
        rowHash = rowHash &+ h
    }

    var description: String { summary.joined(separator: " ") }

    /// What differs between this outcome (`got`) and `expected`, for an operator: the first message
    /// that differs with SQLSTATEs and messages, or the first differing row, column by column.
    func difference(from expected: OutcomeDigest) -> String {
        if entries != expected.entries {
            var i = 0
            while i < entries.count, i < expected.entries.count, entries[i] == expected.entries[i] { i += 1 }
            let got = i < entries.count ? entries[i].text : "nothing"
            let want = i < expected.entries.count ? expected.entries[i].text : "nothing"
            var text = "got \(got) where the others had \(want) (got [\(description)], expected [\(expected.description)])"
            if errorMessages != expected.errorMessages {
                let mine = errorMessages.isEmpty ? "none" : errorMessages.map { "\"\($0)\"" }.joined(separator: ", ")
                let theirs = expected.errorMessages.isEmpty ? "none" : expected.errorMessages.map { "\"\($0)\"" }.joined(separator: ", ")
                text += "; error messages: got \(mine), expected \(theirs)"
            }
            return text
        }
        for (n, (a, b)) in zip(firstRows, expected.firstRows).enumerated() where a.bytes != b.bytes {
            return "row \(n + 1) differs: got \(Self.rowText(a)), expected \(Self.rowText(b))" + Self.columnDifference(a, b)
        }
        let shown = min(firstRows.count, expected.firstRows.count)
        return "the returned rows differ after the first \(shown) (same kinds and tags [\(description)], row hashes \(String(rowHash, radix: 16)) and \(String(expected.rowHash, radix: 16)))"
    }

    /// The values of a DataRow body, text as text, each truncated.
    static func rowValues(_ row: PostgresFrame) -> [String]? {
        guard case let .dataRow(columns)? = try? BackendMessage(frame: row) else { return nil }
        return columns.map { value in
            guard let value else { return "NULL" }
            let text = String(decoding: value.readableBytesView.prefix(60), as: UTF8.self)
            return "'" + text + (value.readableBytes > 60 ? "…" : "") + "'"
        }
    }

    static func rowText(_ row: PostgresFrame) -> String {
        rowValues(row).map { "(" + $0.joined(separator: ", ") + ")" } ?? "(unreadable row)"
    }

    static func columnDifference(_ a: PostgresFrame, _ b: PostgresFrame) -> String {
        guard let x = rowValues(a), let y = rowValues(b), x.count == y.count,
              let c = x.indices.first(where: { x[$0] != y[$0] }) else { return "" }
        return " (column \(c + 1): \(x[c]) vs \(y[c]))"
    }
}
