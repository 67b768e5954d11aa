import NIOCore
import Wire

/// Notifications raised by routines (a job queue's insert trigger calling `pg_notify`), held until
/// the vote commits (see `DeterministicValues.notificationsDDL`): a routine's `pg_notify` is defined
/// as `pgchorus.pg_notify`, which holds while the session's `pgchorus.hold_notifications` is on. The
/// session turns it on (a hidden statement outside any transaction, on every backend) before a
/// transaction the vote will end — a wrapped autocommit write, a transaction opened — and off before
/// what commits on its own (DDL, COPY, a message with its own COMMIT that is not voted). After the
/// vote committed, each backend sends what it held; a transaction that ends up committing without
/// the vote sends it into itself before its COMMIT.
extension ClientSessionHandler {
    /// Routines' notifications may be held in this session: the vote is on, the database's routines
    /// call `pgchorus.pg_notify` (or that is not known yet), and none notifies in a way that cannot be held.
    func routineNotificationsMayBeHeld() -> Bool {
        guard tracker.deterministic, liveCount > 1, configuration.replication.twoPhaseCommit, votedCommitAvailable,
              shared.sequenceOrdering.routinesHoldNotifications(in: database) != false else { return false }
        return !routinesMayNotify()
    }

    /// At idle, before a client group: on for a transaction the vote ends (`voted`: a wrapped
    /// autocommit write or a voted `BEGIN; …; COMMIT`; or a transaction the group opens), off for
    /// what commits on its own.
    func decideNotificationHold(_ bytes: ByteBuffer, containsCommit: Bool, voted: Bool) {
        guard lastStatus == .idle else { return }
        // The usual case, a database whose routines do not notify: nothing to do.
        if notificationHold == false, shared.sequenceOrdering.routinesHoldNotifications(in: database) == false { return }
        // The first word, read once, when one of the two questions below needs it.
        let first = notificationHold == true || (!voted && !containsCommit) ? Self.firstStatement(of: bytes) : nil
        if notificationHold == true, first == "reset" || first == "discard" {
            // RESET ALL / DISCARD ALL: the setting may be gone.
            notificationHold = nil
        }
        let candidate = voted || (!containsCommit && (first == "begin" || first == "start"))
        guard candidate else {
            if notificationHold != false { setNotificationHold(false) }
            return
        }
        let wanted = routineNotificationsMayBeHeld()
        if wanted != notificationHold { setNotificationHold(wanted) }
    }

    /// Sets `pgchorus.hold_notifications` for the session on every backend.
    func setNotificationHold(_ on: Bool) {
        notificationHold = on
        var b = ByteBuffer()
        FrontendMessage.query(Self.notificationHoldSQL(on)).encode(into: &b)
        dispatch(b, kind: .hidden, waitsForLead: false)
    }

    static func notificationHoldSQL(_ on: Bool) -> String {
        "SELECT pg_catalog.set_config('\(DeterministicValues.holdSetting)', '\(on ? "on" : "off")', false)"
    }

    /// A transaction about to commit without the vote: what its routines held goes into it now
    /// (PostgreSQL then notifies at its commit, never on rollback), and the rest of it notifies directly.
    func releaseNotificationsIntoTransaction() {
        guard notificationHold == true, lastStatus == .inTransaction,
              shared.sequenceOrdering.routinesHoldNotifications(in: database) == true else { return }
        releaseHeldByRoutines()
    }

    /// The vote committed: each backend sends what the transaction's routines held.
    func releaseNotificationsAfterCommit() {
        guard notificationHold == true, shared.sequenceOrdering.routinesHoldNotifications(in: database) == true else { return }
        releaseHeldByRoutines()
    }

    private func releaseHeldByRoutines() {
        var b = ByteBuffer()
        FrontendMessage.query("SELECT pgchorus.release_notifications()").encode(into: &b)
        dispatch(b, kind: .hidden, waitsForLead: false)
    }

    /// The SQL of a group's first message, when it is a Query or a Parse.
    static func firstSQL(of bytes: ByteBuffer) -> String? {
        let r = bytes.readerIndex
        guard let length = bytes.getInteger(at: r + 1, as: Int32.self), length >= 4, let slice = bytes.getSlice(at: r, length: Int(length) + 1),
              let message = try? FrontendMessage(frame: PostgresFrame(bytes: slice)) else { return nil }
        switch message {
        case let .query(q): return q
        case let .parse(p): return p.query
        default: return nil
        }
    }

    /// The first word of the first statement of a group's first message (a Query or a Parse), lower-cased.
    static func firstStatement(of bytes: ByteBuffer) -> String? {
        guard let sql = firstSQL(of: bytes), let first = SQLLexer.significant(String(sql.prefix(64))).first, first.kind == .word else { return nil }
        return first.text
    }
}
