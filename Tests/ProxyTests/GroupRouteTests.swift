@testable import Proxy
import Testing
import Wire

/// Where a client's group goes: `GroupRoute`, from the tracker's reading and the session's state.
@Suite struct GroupRouteTests {
    func session(status: BackendMessage.TransactionStatus = .idle, wrote: Bool = false, replicated: Bool = true,
                 routing: String = "all") -> GroupRoute.Session {
        GroupRoute.Session(replicated: replicated, cycle: true, status: status, wroteInTransaction: wrote, twoPhaseCommit: true,
                           votedCommitAvailable: true, transactionPreventsPrepare: false, openExtendedGroup: false,
                           routedReadPending: false, nothingUnreleased: true, readRouting: routing)
    }

    func result(_ change: (inout StatementTracker.Result) -> Void) -> StatementTracker.Result {
        var r = StatementTracker.Result()
        change(&r)
        return r
    }

    var commit: StatementTracker.Result { result { $0.isCommit = true; $0.containsCommit = true; $0.isPlainRead = false } }
    var update: StatementTracker.Result { result { $0.writes = true; $0.isWrappable = true; $0.isPlainRead = false } }
    var select: StatementTracker.Result { result { $0.isPlainRead = true } }

    func route(_ r: StatementTracker.Result, _ s: GroupRoute.Session, notify: Bool = false, splits: Bool = true) -> GroupRoute {
        GroupRoute.decide(r, s, routinesMayNotify: { notify }, splitsAtTrailingCommit: { splits })
    }

    @Test func aCommitOfATransactionThatWroteIsVoted() {
        #expect(route(commit, session(status: .inTransaction, wrote: true)) == .vote)
        // Nothing written: a plain COMMIT everywhere. Outside a transaction: nothing to vote on.
        #expect(route(commit, session(status: .inTransaction, wrote: false)) == .all(wrap: false))
        #expect(route(commit, session(status: .idle, wrote: true)) == .all(wrap: false))
        // A routine that may notify (PREPARE would be refused), a transaction that cannot PREPARE, the vote off.
        #expect(route(commit, session(status: .inTransaction, wrote: true), notify: true) == .all(wrap: false))
        var s = session(status: .inTransaction, wrote: true)
        s.transactionPreventsPrepare = true
        #expect(route(commit, s) == .all(wrap: false))
        s = session(status: .inTransaction, wrote: true)
        s.twoPhaseCommit = false
        #expect(route(commit, s) == .all(wrap: false))
        // One backend left: nothing to vote among.
        #expect(route(commit, session(status: .inTransaction, wrote: true, replicated: false)) == .all(wrap: false))
    }

    @Test func statementsBeforeACommitInOneQueryRunThenTheVote() {
        let body = result { $0.writes = true; $0.containsCommit = true; $0.mixesTransactionControl = true; $0.isPlainRead = false }
        #expect(route(body, session(status: .inTransaction, wrote: true)) == .statementsThenVote)
        // Where the COMMIT cannot be cut off (not last, beside other transaction control): sent as it is.
        #expect(route(body, session(status: .inTransaction, wrote: true), splits: false) == .all(wrap: false))
    }

    @Test func anAutocommitWriteIsWrappedForTheVote() {
        #expect(route(update, session()) == .all(wrap: true))
        // In a transaction its COMMIT is voted; DDL and what cannot be PREPAREd are answered once all have it.
        #expect(route(update, session(status: .inTransaction)) == .all(wrap: false))
        #expect(route(result { $0.writes = true; $0.isWrappable = true; $0.hasDDL = true; $0.isPlainRead = false }, session()) == .all(wrap: false))
        #expect(route(result { $0.writes = true; $0.isWrappable = true; $0.preventsPrepare = true; $0.isPlainRead = false }, session()) == .all(wrap: false))
        #expect(route(update, session(), notify: true) == .all(wrap: false))
        #expect(route(update, session(replicated: false)) == .all(wrap: false))
    }

    @Test func readsGoWhereReadRoutingSaysOutsideTransactions() {
        #expect(route(select, session()) == .all(wrap: false))
        #expect(route(select, session(routing: "lead")) == .lead)
        #expect(route(select, session(routing: "balance")) == .balanced)
        // In a transaction a read goes everywhere: it may see the transaction's own writes.
        #expect(route(select, session(status: .inTransaction, routing: "balance")) == .all(wrap: false))
        // A write never goes to one backend, whatever the routing.
        #expect(route(update, session(routing: "balance")) == .all(wrap: true))
        // Not while earlier cycles are still on their way to the followers, or a read is unanswered.
        var s = session(routing: "balance")
        s.nothingUnreleased = false
        #expect(route(select, s) == .all(wrap: false))
        s = session(routing: "balance")
        s.routedReadPending = true
        #expect(route(select, s) == .all(wrap: false))
    }

    @Test func aReadOfPerServerStateIsTheLeadsAloneEvenInATransaction() {
        let catalog = result { $0.isPlainRead = true; $0.readsServerState = true; $0.perServerNeedsLead = true }
        // A read whose rows physical order picks (`SELECT … LIMIT 1`): the lead's alone outside a
        // transaction; inside one everywhere (its rows uncompared), so every snapshot starts alike.
        let picked = result { $0.isPlainRead = true; $0.readsServerState = true }
        #expect(route(picked, session()) == .lead)
        #expect(route(picked, session(status: .inTransaction)) == .all(wrap: false))
        #expect(route(catalog, session()) == .lead)
        #expect(route(catalog, session(status: .inTransaction)) == .lead)
        // In an aborted block every backend must answer the same error.
        #expect(route(catalog, session(status: .failed)) == .all(wrap: false))
        let cursor = result { $0.usesLeadOnlyCursor = true; $0.isPlainRead = false }
        #expect(route(cursor, session(status: .inTransaction)) == .lead)
    }

    /// A job queue's `SELECT … FOR UPDATE SKIP LOCKED`: the lead's choice, in a transaction or not;
    /// behind unreleased groups or in an aborted block, everywhere (its rows then uncompared).
    @Test func aSkipLockedTakeIsTheLeadsAlone() {
        let take = result { $0.writes = true; $0.isPlainRead = false; $0.locksOnLeadAlone = true }
        #expect(route(take, session()) == .lead)
        #expect(route(take, session(status: .inTransaction, wrote: true)) == .lead)
        #expect(route(take, session(status: .failed)) == .all(wrap: false))
        var s = session(status: .inTransaction)
        s.nothingUnreleased = false
        #expect(route(take, s) == .all(wrap: false))
        #expect(route(take, session(replicated: false)) == .all(wrap: false))
    }

    @Test func aFlushOrCopyDataIsNeverRoutedAlone() {
        var s = session(routing: "lead")
        s.cycle = false
        #expect(route(select, s) == .all(wrap: false))
        #expect(route(update, s) == .all(wrap: false))
        s = session(routing: "lead")
        s.openExtendedGroup = true
        #expect(route(select, s) == .all(wrap: false))
        // An autocommit write after a part ended by Flush: not wrapped (no BEGIN of the node's between the part and its Sync).
        #expect(route(update, s) == .all(wrap: false))
        #expect(route(update, session(routing: "lead")) == .all(wrap: true))
    }
}
