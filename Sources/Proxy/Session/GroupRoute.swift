import Wire

/// Where a client's group goes once the statement tracker has read it (**pure**): through the commit
/// vote, to the lead alone, to one backend chosen by `read_routing`, or to every backend lead-first —
/// an autocommit write wrapped so it ends in the vote too. A write never goes to fewer than every
/// live backend; only reads may go to one.
enum GroupRoute: Equatable {
    /// A COMMIT of a transaction that wrote: the two-phase commit vote (`CommitRound`).
    case vote
    /// `BEGIN; …; COMMIT` (from idle) or `…; COMMIT` (in a transaction) in one Query: the statements
    /// go to every backend as one cycle, then the COMMIT through the vote; the client sees one answer.
    case statementsThenVote
    /// A read the lead alone answers: per-server state (catalogs, statistics, `pg_backend_pid()` …)
    /// that comparing would fail backends for, a cursor over such a read, or `read_routing = lead`.
    case lead
    /// A read outside a transaction balanced over the live backends (`read_routing = balance`).
    case balanced
    /// Every backend, lead-first. `wrap`: an autocommit write run as `BEGIN`; the statement; then the
    /// vote, like a COMMIT.
    case all(wrap: Bool)

    /// What the session is in when the group ends.
    struct Session {
        /// More than one backend is live (else everything passes to the one as it is).
        var replicated: Bool
        /// The group ends with a reply cycle (Sync, Query, FunctionCall), not a Flush or COPY data.
        var cycle: Bool
        var status: BackendMessage.TransactionStatus
        var wroteInTransaction: Bool
        /// `replication.two_phase_commit`.
        var twoPhaseCommit: Bool
        /// The session may still PREPARE (no temporary table; pgchorus' schema in the database).
        var votedCommitAvailable: Bool
        /// The transaction ran something PostgreSQL cannot PREPARE after (NOTIFY, LISTEN, WITH HOLD).
        var transactionPreventsPrepare: Bool
        /// An extended-protocol group ended by Flush is open on the lead.
        var openExtendedGroup: Bool
        /// A read sent to one backend is still unanswered.
        var routedReadPending: Bool
        /// Every cycle sent so far has gone to the followers too.
        var nothingUnreleased: Bool
        /// `replication.read_routing`: "all", "lead" or "balance".
        var readRouting: String
    }

    /// The route of a group the tracker read as `r`. `routinesMayNotify`: a routine of the database may
    /// notify (PostgreSQL then refuses PREPARE); `splitsAtTrailingCommit`: the Query ends with a COMMIT
    /// it can be cut before. Both are asked only when they decide.
    static func decide(_ r: StatementTracker.Result, _ s: Session, routinesMayNotify: () -> Bool,
                       splitsAtTrailingCommit: () -> Bool) -> GroupRoute {
        let votable = s.votedCommitAvailable && !s.transactionPreventsPrepare && s.twoPhaseCommit
        if s.cycle, r.isCommit, s.replicated, s.status == .inTransaction, s.wroteInTransaction, votable, !routinesMayNotify() {
            return .vote
        }
        if s.replicated, s.cycle, r.containsCommit, !r.isCommit, s.wroteInTransaction, votable, !routinesMayNotify(),
           splitsAtTrailingCommit() {
            return .statementsThenVote
        }
        if s.replicated, s.cycle, r.usesLeadOnlyCursor, !s.routedReadPending, !s.openExtendedGroup, s.status != .failed {
            return .lead
        }
        // A job queue's `SELECT … FOR UPDATE SKIP LOCKED`, a `SELECT pg_try_advisory_lock(k)`: each backend
        // would answer by its own sessions' locks as they stand there; the lead's answer is the session's.
        if s.replicated, s.cycle, r.locksOnLeadAlone, s.nothingUnreleased, !s.routedReadPending, !s.openExtendedGroup, s.status != .failed {
            return .lead
        }
        if s.replicated, s.cycle, r.isPlainRead, !r.writes, s.nothingUnreleased, !s.routedReadPending, !s.openExtendedGroup {
            // A read whose rows physical order picks goes everywhere inside a transaction (its rows
            // uncompared): a REPEATABLE READ transaction takes its snapshot at its first statement,
            // and the followers must take theirs there too.
            if r.readsServerState, s.status != .failed, r.perServerNeedsLead || s.status == .idle { return .lead }
            if s.readRouting != "all", s.status == .idle { return s.readRouting == "lead" ? .lead : .balanced }
        }
        // Not after a part ended by Flush (`openExtendedGroup`): the wrap's BEGIN would go between that
        // part and its Sync, where PostgreSQL skips it after an error in the part (the session then
        // owed an answer that never came), and its answers would come between the part's and the cycle's.
        let wrap = s.replicated && s.cycle && r.writes && r.isWrappable && !r.hasDDL && !r.preventsPrepare && s.status == .idle
            && !s.openExtendedGroup && s.twoPhaseCommit && s.votedCommitAvailable && !routinesMayNotify()
        return .all(wrap: wrap)
    }
}
