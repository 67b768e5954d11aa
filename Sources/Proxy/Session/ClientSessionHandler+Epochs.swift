import Logging
import NIOCore
import Wire

/// A client group waiting for its turn in the node's order of commits and statements.
struct EpochWait {
    var ticket: Int
    var bytes: ByteBuffer
    var cycle: Bool
    var wrap: Bool
    var flags: GroupFlags
    /// The group holds the sequence turn: its cycle is the one the turn is held for.
    var underOrder: Bool
    /// `bytes` is pgchorus' own snapshot-taking statement, its replies unseen, and this read goes to
    /// the lead alone right after it (`routeTakingSnapshotEverywhere`).
    var thenRoute: ByteBuffer? = nil
}

/// A turn held by a cycle the session sent.
struct EpochTurn {
    var ticket: Int
    /// The backends that have still to finish the cycle, by index, in order.
    var pending: [Int]
    /// What the node was last told (`reportEpochTargets`): the backends the statement runs on (by
    /// index, with the session's process there), the live backends that have still to finish it, and
    /// whether it waits for its client's COPY data.
    var reportedTargets: [(index: Int, pid: Int32)] = []
    var reportedPending: [Int] = []
    var reportedAwaitsClient = false
}

/// The session's part in `CommitEpochs`: every cycle that goes to all backends takes a turn before it
/// is sent and gives it back once every backend has finished it; a vote's `COMMIT PREPARED`s take one
/// before they are sent (`awaitCommitTurn`).
extension ClientSessionHandler {
    /// The kind of turn a group needs, or nil when it needs none (one backend, ordering off, no reply cycle).
    func epochKind(cycle: Bool, flags: GroupFlags) -> EpochSchedule.Kind? {
        guard cycle, liveCount > 1, shared.epochs.enabled, openPartial == nil else { return nil }
        // A group that commits on each backend at its own end (autocommit DDL, COPY or any write outside
        // the vote, a COMMIT outside the vote) runs while nothing else does.
        if flags.answerWhenAll || flags.mixesTransactionControl || flags.commits { return .exclusive }
        return .statement
    }

    /// Sends a client group once the node's order lets it start (at once, usually).
    func sendInTurn(_ bytes: ByteBuffer, cycle: Bool, wrap: Bool, flags: GroupFlags, underOrder: Bool = false, thenRoute: ByteBuffer? = nil) {
        let wait = EpochWait(ticket: 0, bytes: bytes, cycle: cycle, wrap: wrap, flags: flags, underOrder: underOrder, thenRoute: thenRoute)
        guard let kind = epochKind(cycle: cycle, flags: flags), let context else {
            sendNow(wait)
            return
        }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let (ticket, now) = shared.epochs.request(kind) { loop.execute { bound.value.epochGranted() } }
        if OrderTrace.enabled { trace("ER", "\(ticket) \(kind) \(now ? "now" : "waits") \(traceText(of: bytes))") }
        var waiting = wait
        waiting.ticket = ticket
        if now {
            sendGranted(waiting)
        } else {
            epochWaiting = waiting
            noteHoldStarted()
        }
    }

    /// The first statement of a transaction that takes a snapshot goes to the lead alone (a per-server
    /// read, a `SKIP LOCKED` take, a lead-only cursor): under REPEATABLE READ the lead's snapshot would
    /// be fixed there and the followers' only at the next statement that reaches them, which may see
    /// commits the lead's does not — and a write copying what the transaction read then differs.
    /// A `SELECT` of the transaction's isolation level goes to every backend first, in its turn of the
    /// order, its replies unseen but for the lead's answer, so every backend takes its snapshot there;
    /// then `read` goes to the lead (right behind it, no round trip). The answer, in a transaction that
    /// set no isolation level, says whether the session's transactions are READ COMMITTED
    /// (`readCommittedKnown`): then none of its later transactions needs this.
    func routeTakingSnapshotEverywhere(_ read: ByteBuffer) {
        snapshotEverywhere = true
        var b = ByteBuffer()
        FrontendMessage.query("SELECT pg_catalog.current_setting('transaction_isolation')").encode(into: &b)
        sendInTurn(b, cycle: true, wrap: false, flags: GroupFlags(), thenRoute: read)
    }

    /// Sends what waited (or needed no turn); the seq of the cycle that holds the turn.
    @discardableResult
    private func sendNow(_ w: EpochWait) -> Int {
        guard let read = w.thenRoute else {
            let seq = send(w.bytes, cycle: w.cycle, wrap: w.wrap, flags: w.flags)
            if w.underOrder { orderSeq = seq }
            return seq
        }
        let seq = nextSeq
        snapshotIsolationSeq = transactionMentionsIsolation ? nil : seq
        dispatch(w.bytes, kind: .hidden, waitsForLead: false)
        route(read, to: lead)
        return seq
    }

    private func sendGranted(_ w: EpochWait) {
        let seq = sendNow(w)
        // Only a write can wait on a row lock on the lead and need cancelling (see `cancelForEpochs`).
        if w.flags.writes, let context {
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            // A write that commits on each backend at its own end (autocommit COPY or DDL, a COMMIT
            // among other statements: outside the vote) is never cancelled on the lead: the followers
            // would commit it all the same, and be failed for it (an autocommit COPY waiting for its
            // client's data, parked, was cancelled so when a commit beside it went on before the COPY
            // had reached a follower).
            let outsideVote = w.flags.answerWhenAll || w.flags.mixesTransactionControl || w.flags.commits
            let cancel: (@Sendable () -> Void)? = outsideVote ? nil : { @Sendable in loop.execute { bound.value.cancelForEpochs(seq) } }
            shared.epochs.onCancel(w.ticket, readsOnlyItsTarget: w.flags.readsOnlyItsTarget, cancel,
                                   doom: { loop.execute { bound.value.doomForEpochs(seq) } })
            // Test hook: every write goes as if the order had gone on without it (SnapshotOrderTests).
            if shared.testHook == "doom-writes" { doomForEpochs(seq) }
        }
        epochTurns[seq] = EpochTurn(ticket: w.ticket, pending: backends.indices.filter { backends[$0].isLive })
        epochTargetsDirty = true
        reportEpochTargets()
    }

    func epochGranted() {
        guard let w = epochWaiting else { return }
        epochWaiting = nil
        guard phase == .relaying else {
            shared.epochs.end(w.ticket)
            return
        }
        sendGranted(w)
        flushBackends()
        replayHeldFrames()
    }

    /// Backend `index` finished cycle `seq` (or will not run it): the turn ends when every live backend has.
    /// (The turn is found once and changed in place: a copy taken out of `epochTurns` and changed would
    /// copy its arrays.)
    func epochCycleFinished(_ seq: Int, on index: Int) {
        guard let at = epochTurns.index(forKey: seq) else { return }
        epochTurns.values[at].pending.removeAll { $0 == index }
        guard epochTurns.values[at].pending.contains(where: { backends[$0].isLive }) else {
            let ticket = epochTurns.values[at].ticket
            epochTurns.remove(at: at)
            shared.epochs.end(ticket)
            return
        }
        epochTargetsDirty = true
        reportEpochTargets()
    }

    /// Tells the node where each statement holding a turn runs now: the live backends it has been sent
    /// to and not finished (lead-first: the lead, then the followers; a new lead once it is re-sent).
    /// Only those can be seen waiting on a lock. Called when the session flushes what it wrote, several
    /// times a statement: what is unchanged is found so without building anything; the turns are walked
    /// by index and changed in place (a copy of a turn copies its arrays, an assignment into
    /// `epochTurns` by key while it is walked would copy the whole dictionary), and the node is told
    /// after the walk.
    func reportEpochTargets() {
        guard epochTargetsDirty, !epochTurns.isEmpty else { return }
        epochTargetsDirty = false
        var reports: [(ticket: Int, targets: [CommitEpochs.Target], pending: [String], awaitsClient: Bool)] = []
        var at = epochTurns.startIndex
        while at != epochTurns.endIndex {
            let seq = epochTurns.keys[at]
            // The cycle in COPY FROM STDIN (the lead's oldest owed): its backends wait for the client's data.
            let awaitsClient = copyInProgress && backends[lead].owed.head?.seq == seq
            if reportDiffers(epochTurns.values[at], seq: seq, awaitsClient: awaitsClient) {
                reports.append(noteReport(&epochTurns.values[at], seq: seq, awaitsClient: awaitsClient))
            }
            epochTurns.formIndex(after: &at)
        }
        for r in reports {
            shared.epochs.running(r.ticket, on: r.targets, pending: r.pending, awaitsClient: r.awaitsClient)
        }
    }

    /// Notes in `turn` what the node is told of it now, and returns that: the live backends that have
    /// still to finish it (by id), and those of them it runs on, with the session's process there.
    private func noteReport(_ turn: inout EpochTurn, seq: Int, awaitsClient: Bool)
        -> (ticket: Int, targets: [CommitEpochs.Target], pending: [String], awaitsClient: Bool) {
        var targets: [CommitEpochs.Target] = [], pending: [String] = []
        targets.reserveCapacity(turn.pending.count)
        pending.reserveCapacity(turn.pending.count)
        turn.reportedPending.removeAll(keepingCapacity: true)
        turn.reportedTargets.removeAll(keepingCapacity: true)
        for i in turn.pending where backends[i].isLive {
            turn.reportedPending.append(i)
            pending.append(backends[i].backend.id)
            guard backends[i].owed.owes(seq) else { continue }
            let pid = backends[i].login.processID
            turn.reportedTargets.append((i, pid))
            targets.append(CommitEpochs.Target(backend: backends[i].backend.id, pid: pid))
        }
        turn.reportedAwaitsClient = awaitsClient
        return (turn.ticket, targets, pending, awaitsClient)
    }

    /// Whether what `reportEpochTargets` would tell the node of `turn` now differs from what it last told.
    private func reportDiffers(_ turn: EpochTurn, seq: Int, awaitsClient: Bool) -> Bool {
        if awaitsClient != turn.reportedAwaitsClient { return true }
        var p = 0, t = 0
        for i in turn.pending where backends[i].isLive {
            guard p < turn.reportedPending.count, turn.reportedPending[p] == i else { return true }
            p += 1
            guard backends[i].owed.owes(seq) else { continue }
            guard t < turn.reportedTargets.count, turn.reportedTargets[t].index == i,
                  turn.reportedTargets[t].pid == backends[i].login.processID else { return true }
            t += 1
        }
        return p != turn.reportedPending.count || t != turn.reportedTargets.count
    }

    /// The node cannot start cycle `seq` on a follower before a commit that the lead applied while the
    /// cycle waited there, and the cycle still runs on the lead (waiting for a later commit): it is
    /// cancelled on the lead, and the client gets a serialization failure to retry, as PostgreSQL gives
    /// under REPEATABLE READ. The followers follow the lead's outcome (`releaseLeadTimingOutcome`).
    func cancelForEpochs(_ seq: Int) {
        guard phase == .relaying, let context, backends[lead].isLive, let channel = backends[lead].channel,
              backends[lead].owed.head?.seq == seq else {
            if OrderTrace.enabled { trace("CANCEL-SKIP", "\(seq) phase=\(phase) head=\(backends[lead].owed.head.map { "\($0.seq)" } ?? "-")") }
            return
        }
        // Its 57014 is the node's own while the request is on its way and a second after the server has
        // processed it (a cancel may land on the statement after the one meant), and always on `seq`:
        // on a loaded host either may take more than a second.
        epochCancelUntil = .distantFuture
        epochCancelSeq = seq
        if OrderTrace.enabled { trace("CANCEL", "\(seq)") }
        logger.debug("cancelling a statement on the lead that waits for a commit the followers must apply before it: the client gets 40001")
        ProxyMetrics.epochCancels.increment()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        sendCancel(to: lead, channel: channel).whenComplete { _ in bound.value.epochCancelDelivered() }
    }

    /// The server processed a cancel sent by `cancelForEpochs`.
    func epochCancelDelivered() {
        // (Also when the backend has left the session meanwhile: a later cancel of the client's own is its.)
        if epochCancelUntil == .distantFuture { epochCancelUntil = .now() + .seconds(1) }
    }

    /// Sends a CancelRequest to backend `index`'s session (on `channel`). Nothing more goes to that
    /// backend until the server has processed the request: a cancel that arrives after the statement
    /// has finished must find the backend idle (PostgreSQL then drops it), not running the next
    /// statement — or the vote's PREPARE, or the transaction's stamp.
    func sendCancel(to index: Int, channel: Channel) -> EventLoopFuture<Void> {
        backends[index].cancelsInFlight += 1
        let loop = channel.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        let sent = cancelTarget(index).send(on: loop)
        sent.whenComplete { _ in bound.value.cancelDelivered(channel) }
        return sent
    }

    /// The server processed a cancel sent to the backend session on `channel`: what was written to it meanwhile goes now.
    func cancelDelivered(_ channel: Channel) {
        guard let i = backendIndex(of: channel) else { return }
        backends[i].cancelDelivered()
        flushBackend(i)
    }

    /// The node's order went on before cycle `seq` reached every backend (another node's commit, or a
    /// follower's COMMIT PREPARED that could wait no longer): the statement may have seen that commit
    /// on some backends and not on others. Its transaction must commit nowhere: the vote rolls it back
    /// everywhere and the client gets 40001 to retry, failing nobody; its cycles from here on are not
    /// compared. A statement outside the vote cannot be rolled back: that is logged.
    func doomForEpochs(_ seq: Int) {
        guard phase == .relaying || phase == .draining else { return }
        let votable = configuration.replication.twoPhaseCommit && votedCommitAvailable && !transactionPreventsPrepare
            && commit?.vote == nil && (wrapPending || commit != nil || lastStatus != .idle)
        guard votable else {
            logger.warning("a statement went on without the node's order before it reached every backend and its transaction is not ended by the vote: it may have seen another transaction's commit on some backends only")
            return
        }
        if OrderTrace.enabled { trace("DOOM", "\(seq)") }
        if !transactionDoomed { ProxyMetrics.epochDooms.increment() }
        transactionDoomed = true
        doomFrom = min(doomFrom ?? seq, seq)
        logger.info("the transaction rolls back at its vote (the client gets 40001): one of its statements may have seen a commit on some backends and not on others")
    }

    /// The doomed transaction has ended (rolled back by the vote, or by the client): its cycles stay
    /// uncompared, the next transaction's are compared again.
    func endDoom() {
        guard let from = doomFrom else { return }
        uncomparedRanges.append(from...max(from, nextSeq - 1))
        if uncomparedRanges.count > 32 { uncomparedRanges.removeFirst() }
        doomFrom = nil
        transactionDoomed = false
    }

    /// Whether cycle `seq` belongs to a doomed transaction (not compared).
    func isUncompared(_ seq: Int) -> Bool {
        if let from = doomFrom, seq >= from { return true }
        return uncomparedRanges.contains { $0.contains(seq) }
    }

    /// The error the client gets at the vote of a doomed transaction.
    static let epochDoomFailure = ErrorFields(
        severity: "ERROR", sqlState: "40001",
        message: "could not serialize access: pgchorus rolled this transaction back because one of its statements could not run with the same snapshot on every backend (a concurrent commit through another node or on a waiting follower)",
        hint: "Retry the transaction.")

    /// The error the client gets for a cycle the node cancelled (`cancelForEpochs`).
    static let epochSerializationFailure = ErrorFields(
        severity: "ERROR", sqlState: "40001",
        message: "could not serialize access: pgchorus cancelled this statement because it waited on rows of transactions that committed meanwhile and the other backends could not run it with the same snapshot",
        hint: "Retry the transaction.")

    /// A backend left the session: no turn waits for it any more.
    func epochBackendLost(_ index: Int) {
        for seq in epochTurns.keys.sorted() { epochCycleFinished(seq, on: index) }
    }

    /// Gives up a turn still waited for (session ending).
    func abandonEpochWait() {
        if let w = epochWaiting {
            epochWaiting = nil
            shared.epochs.end(w.ticket)
        }
    }

    /// Ends every turn the session holds (session closed).
    func endEpochTurns() {
        for turn in epochTurns.values { shared.epochs.end(turn.ticket) }
        epochTurns = [:]
        if let t = commitTurn {
            commitTurn = nil
            shared.epochs.end(t)
        }
    }

    /// Runs `body` once this vote's `COMMIT PREPARED`s may be applied: while no statement runs unparked.
    func awaitCommitTurn(_ body: @escaping () -> Void) {
        guard shared.epochs.enabled, let context else {
            body()
            return
        }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        pendingCommitTurn = body
        let (ticket, now) = shared.epochs.request(.commit) { loop.execute { bound.value.commitTurnGranted() } }
        commitTurn = ticket
        if now { commitTurnGranted() }
    }

    func commitTurnGranted() {
        guard let body = pendingCommitTurn else { return }
        pendingCommitTurn = nil
        guard phase == .relaying || phase == .draining else {
            endCommitTurn()
            return
        }
        body()
    }

    /// The vote's `COMMIT PREPARED`s are done everywhere.
    func endCommitTurn() {
        pendingCommitTurn = nil
        if let t = commitTurn {
            commitTurn = nil
            shared.epochs.end(t)
        }
    }
}
