import Wire

/// A simple Query's text, decoded once when the message arrives and looked at by every part of the
/// session that needs it: the cut at a COMMIT in the middle (`transactionSegments`), what it does to
/// the session's state (`SessionReplay.noteSQL`) and its analysis (`StatementTracker.process`). Each
/// used to decode the message and scan the text on its own; pgbench's TPC-B sends a new text for
/// every statement. (A class: it is handed on several times per statement, and a copy of it is one
/// reference, not four.)
final class QueryText {
    /// The message the text came in (`describes`).
    let frame: PostgresFrame
    let sql: String
    /// `StatementAnalysis.maskedShape` of the text: the key both memos keep texts that differ only in
    /// their numbers under. Not worked out for a text longer than `maximumShapedBytes`, whose shape
    /// could not be kept (`TextMemo.maximumTextBytes`) anyway.
    let masked: (shape: String, numbers: [StatementAnalysis.MaskedNumber])?
    /// The shape as the memos' key, its digest worked out once for both (`MemoKey`).
    let shapeKey: MemoKey?

    static let maximumShapedBytes = 64 * 1024

    /// Nil for any other message, or a Query that does not decode.
    init?(_ frame: PostgresFrame) {
        guard frame.type == FrontendMessage.Kind.query.rawValue, case let .query(sql)? = try? FrontendMessage(frame: frame) else { return nil }
        self.frame = frame
        self.sql = sql
        masked = sql.utf8.count <= Self.maximumShapedBytes ? StatementAnalysis.maskedShape(sql) : nil
        // (Only for a shape a memo may keep: the digest of a longer one would be worked out for nothing.)
        shapeKey = masked.flatMap { $0.shape.utf8.count <= TextMemo<Bool>.defaultMaximumTextBytes ? MemoKey($0.shape) : nil }
    }

    /// Whether this is the text of `other` (the same message: the buffers are compared, the same
    /// storage at once).
    func describes(_ other: PostgresFrame) -> Bool {
        frame.bytes == other.bytes
    }
}
