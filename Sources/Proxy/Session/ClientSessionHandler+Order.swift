import Logging
import NIOCore
import Wire
import State

extension ClientSessionHandler {
    /// A wait for the sequence turn with no turn ending meanwhile is a lock cycle, when the waiter's
    /// transaction may hold locks: the waiter ends.
    static let orderTimeout: TimeAmount = .seconds(10)
    /// However the turns move, no statement waits longer than this for its own.
    static let orderTimeoutLimit: TimeAmount = .seconds(120)

    /// The advisory lock (two-key form, an unlikely class id) that orders sequence-drawing statements
    /// across clustering nodes.
    static let clusterOrderLock = "7451037, 1"

    /// With several clustering nodes, the node-wide turn is not enough: sessions of other nodes draw
    /// from the same sequences. The turn then also takes a session-level advisory lock on the lead
    /// backend — which every node shares — pipelined in front of the statement (no extra round trip
    /// unless another node holds it), and gives it back when the statement has run on every backend.
    /// A lead that fails takes the lock with it; a node that dies releases it when its connections close.
    ///
    /// Every holder also takes a number on the lead and gives it back as released with the lock
    /// (`ClusterOrderMarks`): a holder whose node died while its statement had drawn values on some
    /// backends only never released its number, and the next holder sets every follower's sequences
    /// to the lead's before its own statement (`resyncSequencesThenSend`).
    func takeClusterOrder() {
        guard configuration.cluster.nodes.count > 1, clusterOrderOn == nil, backends[lead].isLive else { return }
        clusterOrderMarks = nil
        sendOwn("SELECT pg_catalog.pg_advisory_lock(\(Self.clusterOrderLock)); \(ClusterOrderMarks.takeSQL)", to: lead)
        if OrderTrace.enabled { trace("SL", "lock1 asked on \(backends[lead].backend.id)@\(backends[lead].login.processID)") }
        clusterOrderOn = lead
    }

    func releaseClusterOrder() {
        guard let i = clusterOrderOn else { return }
        clusterOrderOn = nil
        sendClusterUnlock(to: i)
    }

    /// Lets the cluster-wide lock go only if this session holds it (no WARNING in the server's log when
    /// it does not): after a refusal, which may have come before or after the lock was taken, and on the
    /// paths that release it from an aborted transaction block. (It reads `pg_locks`, which takes every
    /// lock partition: not on the path of a statement that took the lock and ran.)
    static let clusterUnlockIfHeldSQL = "SELECT pg_catalog.pg_advisory_unlock(\(clusterOrderLock)) FROM pg_catalog.pg_locks "
        + "WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() AND classid = \(clusterOrderLock.split(separator: ",")[0]) "
        + "AND objid = 1 AND objsubid = 2 AND granted"

    private func sendClusterUnlock(to i: Int, onlyIfHeld: Bool = false) {
        guard backends[i].isLive, backends[i].phase == .ready else { return }
        clusterUnlockSeqs.insert(nextSeq)
        let unlock = onlyIfHeld ? Self.clusterUnlockIfHeldSQL : "SELECT pg_catalog.pg_advisory_unlock(\(Self.clusterOrderLock))"
        sendOwn("\(ClusterOrderMarks.releaseSQL(clusterOrderTakenMark, realign: clusterOrderRealign))\(unlock)", to: i)
        if OrderTrace.enabled { trace("SU", "lock1 released") }
        flushBackend(i)
    }

    /// Backend `index` ended a cycle with transaction status `status`. A release of the cluster-wide
    /// lock that ran in an aborted transaction block let nothing go (PostgreSQL refuses every statement
    /// there, and a session-level lock outlives the transaction): the statement that drew sequence
    /// values failed inside a transaction (a duplicate key, a deadlock). It is sent again once the block
    /// has ended (ROLLBACK, or ROLLBACK TO SAVEPOINT) — until 2026-12-06 it was not, and every other
    /// node's (and this node's other sessions') sequence-drawing statements waited until this client
    /// disconnected. Never into an extended group or a COPY in progress on the backend.
    func retryClusterUnlocks(_ index: Int, cycle seq: Int, status: BackendMessage.TransactionStatus) {
        if clusterUnlockSeqs.remove(seq) != nil, status == .failed {
            if releaseFromAbortedBlock(index) { return }
            clusterUnlocksOwed[index, default: 0] += 1
            if OrderTrace.enabled { trace("SU", "lock1 release refused in an aborted transaction: owed") }
            return
        }
        guard status != .failed, let owed = clusterUnlocksOwed[index], !openExtendedGroup, openPartial == nil,
              !copyInProgress, phase == .relaying else { return }
        clusterUnlocksOwed[index] = nil
        for _ in 0..<owed { sendClusterUnlock(to: index, onlyIfHeld: true) }
    }

    /// The release of the cluster-wide lock ran into backend `index`'s aborted transaction block. When
    /// the transaction used no savepoint, nothing of it can be kept: the client can only end it (a
    /// `ROLLBACK`, or a `COMMIT` answered `ROLLBACK`; `AND CHAIN` starts from the session's defaults
    /// after an aborted block). So that backend's block is rolled back, the lock let go, and a new block
    /// aborted in its place, in one Query of pgchorus' own — the client sees the same aborted block,
    /// and the other nodes' sequence-drawing statements go on at once. Until 2026-12-06 they waited
    /// until the client ended its block (a psql user who hit a duplicate key and left the session
    /// open stalled every node's inserts into SERIAL tables). Only with nothing else of the session's
    /// queued on that backend (a client's `ROLLBACK` sent behind the failed statement must not be
    /// undone), and never in an extended group or a COPY: otherwise the release stays owed until the
    /// block ends, as it does when the transaction used a savepoint (one the client may roll back to).
    private func releaseFromAbortedBlock(_ index: Int) -> Bool {
        guard !transactionUsedSavepoint, backends[index].isLive, backends[index].phase == .ready, backends[index].owed.isEmpty,
              !openExtendedGroup, openPartial == nil, !copyInProgress, commit == nil, !wrapPending, phase == .relaying else { return false }
        sendOwn("ROLLBACK; \(ClusterOrderMarks.releaseSQL(clusterOrderTakenMark, realign: clusterOrderRealign))\(Self.clusterUnlockIfHeldSQL); BEGIN; \(Self.followLeadAbortSQL)", to: index)
        if OrderTrace.enabled { trace("SU", "lock1 released by replacing the aborted block") }
        flushBackend(index)
        return true
    }

    /// Whether a group draws sequence values: explicit nextval/setval, or an insert into a table
    /// with a SERIAL/IDENTITY column (every insert while the catalog is not loaded yet).
    func needsSequenceOrder(_ result: StatementTracker.Result) -> Bool {
        if result.callsNextval { return true }
        guard !result.insertTargets.isEmpty else { return false }
        guard let tables = knownCatalog?.tables else {
            loadSequenceCatalogIfNeeded()
            return true
        }
        return result.insertTargets.contains { tables.contains($0) }
    }

    /// Whether a group must wait for the sequence turn before it is sent. A reply cycle that draws
    /// sequence values does, unless its turn is held already (taken for the parts of its extended
    /// group that went ahead). A part the client ended with Flush runs before its Sync: one that draws
    /// sequence values takes the turn first, and with several clustering nodes so does the first part
    /// of any group in a database where something may draw them — the turn's cluster-wide lock is
    /// asked on the lead with a Query of its own, which must not land in the middle of an extended
    /// group there (its answer was taken for the group's: the lead was failed against the followers,
    /// and the parts drew sequence values outside the order; psycopg 3's pipelines through two nodes).
    func needsOrderFirst(cycle: Bool, _ result: StatementTracker.Result) -> Bool {
        if openExtendedGroup, let held = orderSeq, held == nextSeq { return false }
        if cycle { return needsSequenceOrder(result) }
        guard !Self.continuesCopy(result.bytes) else { return false }
        if configuration.cluster.nodes.count > 1 {
            return !openExtendedGroup && (needsSequenceOrder(result) || mayDrawSequences())
        }
        return needsSequenceOrder(result)
    }

    /// Something in this database may draw sequence values (a SERIAL/IDENTITY table; unknown while
    /// its catalog is not loaded).
    func mayDrawSequences() -> Bool {
        guard let tables = knownCatalog?.tables else { return true }
        return !tables.isEmpty
    }

    /// Holds `bytes` until this session's turn to draw sequence values.
    func waitForOrder(_ bytes: ByteBuffer, cycle: Bool, wrap: Bool, flags: GroupFlags = GroupFlags()) {
        guard let context else { return }
        waitingGroup = (bytes, cycle, wrap, flags)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        orderCycleLookFailure = nil
        orderCycleLooksDenied = 0
        orderCycleLooksFailed = 0
        orderWaitNumber &+= 1
        armOrderTimer(since: .now())
        noteHoldStarted()
        if OrderTrace.enabled { trace("SW", "sequence turn wanted \(traceText(of: bytes))") }
        waitingTicket = shared.sequenceOrdering.acquire {
            loop.execute { bound.value.orderGranted() }
        }
    }

    func orderGranted() {
        orderTimer?.cancel()
        orderTimer = nil
        orderCycleTimer?.cancel()
        orderCycleTimer = nil
        endCycleLooks()
        if OrderTrace.enabled { trace("SG", "sequence turn granted") }
        let granted = waitingTicket
        waitingTicket = nil
        guard phase == .relaying, let (bytes, cycle, wrap, flags) = waitingGroup else {
            if let granted { shared.sequenceOrdering.release(granted) }
            return
        }
        waitingGroup = nil
        // The previous statement's turn may still be held if it has not finished everywhere: it ends now
        // only if every backend is done, otherwise the queue order keeps it (tickets are FIFO).
        orderTicket = granted
        orderPending = Set(backends.indices.filter { backends[$0].isLive })
        if let granted, backends[lead].isLive {
            shared.sequenceOrdering.noteHolderLead(granted, backend: backends[lead].backend.id, pid: backends[lead].login.processID)
        }
        // (Never a Query of pgchorus' own in the middle of an extended group on the lead: see `needsOrderFirst`.)
        let groupOpen = openPartial != nil || openExtendedGroup
        if !groupOpen, configuration.cluster.nodes.count > 1, clusterOrderOn == nil, backends[lead].isLive {
            // The cluster-wide lock in a round trip of its own: the statement takes its place in the
            // order of commits and statements (`sendInTurn`) once the lock is held. Waiting for it
            // inside that turn, pipelined in front of the statement, let commits land meanwhile; the
            // statement then took its snapshot on the lead after them, and on a follower perhaps
            // before one of them had finished there (issue 20).
            waitingGroup = (bytes, cycle, wrap, flags)
            clusterOrderLockSeq = nextSeq
            takeClusterOrder()
            flushBackends()
            return
        }
        if !groupOpen {
            takeClusterOrder()
        } else if configuration.cluster.nodes.count > 1, clusterOrderOn == nil {
            logger.warning("a pipeline began before it was seen to draw sequence values: its statements take this node's sequence turn but not the cluster-wide one (their values may be drawn in another order than another node's on some backends)")
        }
        if let open = openPartial {
            // The end of a pipeline whose first messages already run on the lead.
            finishOpenGroup(bytes)
            orderSeq = open
        } else {
            sendInTurn(bytes, cycle: cycle, wrap: wrap, flags: flags, underOrder: true)
        }
        flushBackends()
        replayHeldFrames()
    }

    /// The lead answered the cluster-wide lock (or went away meanwhile, `leadStatus` nil): the statement
    /// waiting for it goes — unless the lead refused the lock (`clusterOrderRefused`).
    func clusterOrderTaken(leadStatus: BackendMessage.TransactionStatus? = nil) {
        clusterOrderLockSeq = nil
        let refusal = clusterOrderLockError
        clusterOrderLockError = nil
        if let refusal, let leadStatus, let on = clusterOrderOn {
            // PostgreSQL keeps a session-level advisory lock whatever befalls the statement that took
            // it: the refusal may have come after the lock was granted (the client's statement_timeout
            // or cancel ending the Query while it takes its number). Until 2026-12-07 the session took
            // every refusal for "not taken" and kept the lock until the client disconnected: every
            // node's statements drawing sequence values waited for it. It is let go if held (from an
            // aborted block as `retryClusterUnlocks` does), before the client is answered.
            clusterOrderOn = nil
            clusterOrderTakenMark = nil
            clusterOrderRealign = false
            sendClusterUnlock(to: on, onlyIfHeld: true)
            clusterOrderRefused(refusal, leadStatus: leadStatus)
            return
        }
        if OrderTrace.enabled { trace("ST", "lock1 taken") }
        let marks = clusterOrderMarks
        clusterOrderMarks = nil
        clusterOrderTakenMark = marks?.taken
        clusterOrderRealign = marks.map { !ClusterOrderMarks.cleanlyReleased(taken: $0.taken, released: $0.released) } ?? false
        guard phase == .relaying, waitingGroup != nil else { return }
        if clusterOrderRealign {
            resyncSequencesThenSend()
            return
        }
        sendWaitingGroupInTurn()
    }

    /// The statement that waited for the cluster-wide lock takes its place in the order of commits and statements.
    private func sendWaitingGroupInTurn() {
        guard phase == .relaying, let (bytes, cycle, wrap, flags) = waitingGroup else { return }
        waitingGroup = nil
        sendInTurn(bytes, cycle: cycle, wrap: wrap, flags: flags, underOrder: true)
        flushBackends()
        replayHeldFrames()
    }

    /// The previous holder of the cluster-wide lock never released its number: its node died (or lost
    /// its lead connection) while holding it, perhaps after its statement had drawn sequence values on
    /// some backends and not others. Every follower's sequences are set to the lead's (`SequenceResync`,
    /// as after a timing outcome) before this session's statement runs; the turn and the lock stay held
    /// meanwhile. Until 2026-12-07 the next ids then differed between the backends, silently when not
    /// returned (a SIGKILLed node in a full test run).
    private func resyncSequencesThenSend() {
        let started = resyncSequences(trace: "sequences set to the lead's: the previous holder of lock1 never released it",
                                      why: "a node died holding the cluster-wide sequence lock after its statement may have drawn values on some backends only") { bound, _ in
            let session = bound.value
            if let t = session.orderTicket, session.backends[session.lead].isLive {
                session.shared.sequenceOrdering.holderResynced(t, backend: session.backends[session.lead].backend.id,
                                                              pid: session.backends[session.lead].login.processID)
            }
            session.sendWaitingGroupInTurn()
        }
        if !started { sendWaitingGroupInTurn() }
    }

    /// Sets every follower's sequences to the lead's on the resync thread (the turn held meanwhile),
    /// logs what was set or failed (`why` says what made it due), then calls `then` on the event
    /// loop. False, and nothing done, with no live follower or lead.
    private func resyncSequences(trace what: String, why: String,
                                 then: @escaping (NIOLoopBound<ClientSessionHandler>, SequenceResync.Outcome) -> Void) -> Bool {
        let followers = backends.indices.filter { $0 != lead && backends[$0].isLive }.map { backends[$0].backend }
        guard let context, backends[lead].isLive, !followers.isEmpty else { return false }
        let leadBackend = backends[lead].backend
        let database = self.database
        let configuration = self.configuration
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        ProxyMetrics.sequenceResyncs.increment()
        if let t = orderTicket { shared.sequenceOrdering.holderResyncs(t) }
        if OrderTrace.enabled { trace("SR", what) }
        shared.sequenceOrdering.runResync(on: context.eventLoop) {
            SequenceResync.run(lead: leadBackend, followers: followers, database: database, configuration: configuration)
        }.whenComplete { result in
            let outcome = (try? result.get()) ?? SequenceResync.Outcome(failures: ["the node's thread pool is not running"])
            let session = bound.value
            if !outcome.set.isEmpty {
                session.logger.notice("\(why): the followers' sequences were set to the lead's", metadata: [
                    "sequences": "\(outcome.set.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.joined(separator: ", "))" }.joined(separator: "; "))"])
            }
            if !outcome.failures.isEmpty {
                ProxyMetrics.sequenceResyncFailures.increment()
                session.logger.warning("\(why), and the followers' sequences could not all be set to the lead's: the next values drawn there may differ (\(outcome.failures.joined(separator: "; ")))")
            }
            then(bound, outcome)
        }
        return true
    }

    /// The lead answered the cluster-wide lock with an error, so the lock is not held: the session's
    /// own `lock_timeout` or `statement_timeout` ran out while another node's statement held it, a
    /// deadlock PostgreSQL found (the holder's statement waits for a row this transaction holds), or
    /// the block was aborted already. The statement is not run anywhere and the client gets that error,
    /// as from PostgreSQL for a statement that waited for a lock (`answerWaitingGroup`). Until
    /// 2026-12-06 the statement was sent all the same: without the lock in autocommit (drawing values
    /// outside the cluster-wide order), and in a block on a lead whose transaction the error had just
    /// aborted while the followers' had not — the backends then answered it differently.
    private func clusterOrderRefused(_ refusal: ErrorFields, leadStatus: BackendMessage.TransactionStatus) {
        releaseOrder()
        var fields = refusal
        if fields["D"] == nil {
            fields.fields.append(ErrorFields.Field(code: 0x44, value: "The statement waited for pgchorus' cluster-wide turn to draw sequence values (an advisory lock on the lead backend, held by a statement of another clustering node); it was not run."))
        }
        logger.info("the lead refused the cluster-wide sequence lock (\(refusal.sqlState ?? "") \(refusal.message ?? "")): the statement waiting for it is answered with that error, not run")
        ProxyMetrics.sequenceTurnRefusals.increment()
        guard answerWaitingGroup(with: fields, alreadyAborted: leadStatus == .failed ? [lead] : []) else {
            abandonOrderWait()
            fatal(ErrorFields(severity: "FATAL", sqlState: refusal.sqlState ?? "55P03",
                              message: "pgchorus could not take its cluster-wide turn to draw sequence values: \(refusal.message ?? "the lead refused it"); the session ends and its transaction is rolled back, retry it"))
            return
        }
    }

    /// Answers the group waiting for the sequence turn with `fields` (an error), as PostgreSQL answers
    /// a statement that fails before it does anything, without running it on any backend: outside a
    /// transaction block nothing else is needed; inside one, every backend's block is aborted like the
    /// client's (`followLeadAbortSQL`, but for `alreadyAborted`), the session and its connections kept.
    /// False, and nothing done, when the session cannot answer it so — a part ended by Flush (the
    /// client would wait for a Sync's answer), replies of earlier cycles still to come: the caller
    /// ends the session instead.
    func answerWaitingGroup(with fields: ErrorFields, alreadyAborted: Set<Int> = []) -> Bool {
        guard phase == .relaying, let waiting = waitingGroup, waiting.cycle, nothingUnderWay else { return false }
        abandonOrderWait()
        answerUnsentGroup(with: fields, alreadyAborted: alreadyAborted)
        return true
    }

    /// The same for a group waiting for its turn in the order of commits and statements (`epochWaiting`):
    /// behind an autocommit DDL or COPY, which runs while nothing else does, or a commit being applied.
    /// A group holding the sequence turn already (any insert while the catalog is reloaded after DDL)
    /// gives it back first. Not pgchorus' own snapshot-taking statement for a read behind it.
    func answerEpochWaitingGroup(with fields: ErrorFields) -> Bool {
        guard phase == .relaying, let w = epochWaiting, w.cycle, w.thenRoute == nil, waitingGroup == nil else { return false }
        guard nothingUnderWay(butTheEpochWait: true) else { return false }
        epochWaiting = nil
        shared.epochs.end(w.ticket)
        if w.underOrder { releaseOrder() }
        answerUnsentGroup(with: fields, alreadyAborted: [])
        return true
    }

    /// Answers the client's group that waits inside pgchorus, sent to no backend, with `fields`, as
    /// PostgreSQL answers a statement that fails: inside a transaction block the transaction is aborted
    /// on every live backend (but `alreadyAborted`).
    func answerUnsentGroup(with fields: ErrorFields, alreadyAborted: Set<Int>) {
        let status: BackendMessage.TransactionStatus = lastStatus == .idle ? .idle : .failed
        if status == .failed, lastStatus != .failed {
            for i in backends.indices where backends[i].isLive && !alreadyAborted.contains(i) {
                sendOwn(Self.followLeadAbortSQL, to: i)
            }
            flushBackends()
        }
        let seq = nextSeq
        nextSeq += 1
        writeClient(.errorResponse(fields))
        writeClient(.readyForQuery(status))
        cycleDelivered(seq, status: status)
        flushClient()
        replayHeldFrames()
    }

    /// The client cancelled while its statement waits inside pgchorus, where no backend runs it (the
    /// backends ignore the cancel, or cancel an earlier statement): it is answered with PostgreSQL's
    /// cancel (57014) and not run, as PostgreSQL ends a statement waiting for a lock. Until 2026-12-06
    /// the cancel was lost and the statement ran once its turn came: of the sequence turn, or of the
    /// order of commits and statements (psql's Ctrl-C on a `SELECT 1` waiting behind another session's
    /// `CREATE TABLE … AS` was answered only once that had ended). (A wait for the cluster-wide lock
    /// runs on the lead, where the cancel ends it: `clusterOrderRefused`.)
    func clientCancelled() {
        if catalogWait {
            // Answered once the load has ended (`catalogLoaded`): the load may be running on the lead,
            // where the cancel may land on it too.
            catalogCancelled = true
            return
        }
        answerHeldStatement(Self.heldStatementCancelled, because: "was cancelled by its client")
    }

    /// Answers the client statement pgchorus holds (`statementHeld`) with `error` (made with a detail
    /// saying where it waited) — a client's cancel, its `statement_timeout` — and never runs it. False
    /// when it cannot be answered alone (then it goes on when its turn comes).
    @discardableResult
    func answerHeldStatement(_ error: (String) -> ErrorFields, because cause: String) -> Bool {
        if let w = epochWaiting {
            // A ROLLBACK waiting for its turn runs when its turn comes: answered 57014 it left the
            // client's transaction aborted and its `rollback()` raising (69 of 3,441 transactions under
            // bench/cancel-storm.sh); PostgreSQL's window for cancelling a ROLLBACK is its few µs.
            if Self.onlyRollsBack(w.bytes) { return false }
            guard answerEpochWaitingGroup(with: error("The statement waited for its turn in pgchorus' order of commits and statements; it was not run.")) else { return false }
            logger.info("a statement waiting for its turn in the order of commits and statements \(cause): not run")
            return true
        }
        if catalogHold, waitingGroup != nil {
            // DDL waiting until the other clustering nodes acknowledge that it changes the catalog
            // (`holdForCatalogChange`, up to `cluster.peer_timeout` when a peer is slow to answer):
            // until 2026-12-07 a cancel was lost and the DDL ran once they had. The change told to
            // the peers ends with the transaction, as after any DDL.
            guard answerWaitingGroup(with: error("The statement waited for the other clustering nodes to acknowledge that it changes the catalog; it was not run.")) else { return false }
            logger.info("DDL waiting for the other nodes' acknowledgement \(cause): not run")
            return true
        }
        guard waitingGroup != nil, waitingTicket != nil, clusterOrderLockSeq == nil else { return false }
        guard answerWaitingGroup(with: error("The statement waited for pgchorus' turn to draw sequence values; it was not run.")) else { return false }
        logger.info("a statement waiting for the sequence turn \(cause): not run")
        return true
    }

    /// A client's CancelRequest for this session (its own connection, which closes once `delivered`
    /// is called). A statement pgchorus still holds back is answered here (`clientCancelled`); on the
    /// backends the cancel goes to the session of each one running the client's statement — the lead
    /// (a follower runs a statement only once the lead has finished it, and follows the lead's
    /// outcome), every backend during COPY FROM STDIN (all read the client's data), a backend running a
    /// read routed to it alone (`read_routing`) — and never to a statement of pgchorus' own that the
    /// client's does not wait on (`clientCycleToCancel`): where one runs ahead of the client's (the
    /// transaction's stamp, the snapshot-taking read, the hidden BEGIN), the cancel waits until the
    /// client's statement starts there. Until 2026-12-07 it went to the lead at once, where it could
    /// end pgchorus' own statement instead (aborting the lead's transaction block alone, and a
    /// follower failed at the client's next statement), and never to a backend running a balanced
    /// read. A backend running nothing of the client's gets nothing, as PostgreSQL drops a cancel that
    /// finds its session idle. While it is on its way nothing more is written to that backend
    /// (`sendCancel`).
    func clientCancelRequested(delivered: @escaping @Sendable () -> Void) {
        guard phase == .relaying || phase == .draining, let context else {
            delivered()
            return
        }
        // (What runs is looked at before a held statement is answered: answering one inside a block
        // sends the followers pgchorus' own abort, which is not the client's to cancel.)
        let targets = backends.indices.compactMap { i in backends[i].isLive ? clientCycleToCancel(on: i).map { (i, $0) } : nil }
        clientCancelled()
        // Each goes now where its cycle runs already, later where one of pgchorus' own runs ahead of it.
        let sent = targets.map { i, target in
            let done = context.eventLoop.makePromise(of: Void.self)
            deferredCancels.append((backends[i].backend.id, target, done))
            return done.futureResult
        }
        settleDeferredCancels()
        EventLoopFuture.andAllComplete(sent, on: context.eventLoop).whenComplete { _ in delivered() }
    }

    /// The cycle that a client's cancel is for on backend `index`: the oldest one owed there that runs
    /// for the client — a read routed to it alone; on the lead (on every backend during COPY) the
    /// client's statements; on the lead also the vote's PREPARE (the client's COMMIT: a cancel there is
    /// a timing outcome of the lead, which rolls the transaction back everywhere, failing nobody) and
    /// the cluster-wide sequence lock's Query while the client's statement waits for it (a cancel
    /// there is answered as the lock's refusal, `clusterOrderRefused`), and the catalog load a held
    /// statement waits for (`catalogCancelled`: answered 57014 when the load ends, cancelled or not).
    /// During COPY FROM STDIN a follower's is the COPY itself (the lead's cycle), not an older
    /// statement it may still be finishing.
    private func clientCycleToCancel(on index: Int) -> Int? {
        let isLead = index == lead
        if copyInProgress, !isLead, let copy = backends[lead].owed.head?.seq {
            return backends[index].owed.owes(copy) ? copy : nil
        }
        return backends[index].owed.cycles.first {
            $0.kind == .routedRead || (isLead && ($0.kind == .client || $0.kind == .prepare))
                || (isLead && $0.kind == .hidden && $0.seq == clusterOrderLockSeq && waitingGroup != nil)
                || (isLead && $0.kind == .catalog && catalogWait)
        }?.seq
    }

    /// Sends the deferred cancels whose client cycle now runs on its backend; drops (as done) those
    /// whose cycle that backend no longer owes (it left the session, or the cycle was dropped).
    func settleDeferredCancels() {
        guard !deferredCancels.isEmpty else { return }
        var waiting: [(backend: String, seq: Int, done: EventLoopPromise<Void>)] = []
        for d in deferredCancels {
            guard let i = backends.firstIndex(where: { $0.backend.id == d.backend }), backends[i].isLive,
                  let channel = backends[i].channel, backends[i].owed.owes(d.seq) else {
                d.done.succeed(())
                continue
            }
            if backends[i].owed.head?.seq == d.seq {
                sendCancel(to: i, channel: channel).cascade(to: d.done)
            } else {
                waiting.append(d)
            }
        }
        deferredCancels = waiting
    }

    /// Whether every statement of the group `bytes` (a Query, or Parses of unnamed statements) is a
    /// ROLLBACK or ABORT (`ROLLBACK TO SAVEPOINT` included), alone in its text.
    static func onlyRollsBack(_ bytes: ByteBuffer) -> Bool {
        var b = bytes
        var decoder = PostgresFrameDecoder()
        var texts = 0
        for _ in 0..<1_000 {
            guard let frame = try? decoder.decode(buffer: &b) else { break }
            let text: String
            switch try? FrontendMessage(frame: frame) {
            case let .query(q)?: text = q
            case let .parse(p)?: text = p.query
            case let .bind(bind)?:
                if !bind.statement.isEmpty { return false }
                continue
            default: continue
            }
            let head = SessionReplay.head(of: text, limit: 256)
            var body = head[...]
            while let last = body.last, last == UInt8(ascii: ";") || last == 32 { body.removeLast() }
            guard body.count < 256, !body.contains(UInt8(ascii: ";")),
                  body.starts(with: Array("rollback".utf8)) || body.starts(with: Array("abort".utf8)) else { return false }
            texts += 1
        }
        return texts > 0
    }

    /// PostgreSQL's answer to a cancelled statement, for one pgchorus held and never sent (`detail` says where it waited).
    static func heldStatementCancelled(_ detail: String) -> ErrorFields {
        ErrorFields(severity: "ERROR", sqlState: "57014", message: "canceling statement due to user request", detail: detail)
    }

    /// Nothing of the client's is under way but a group waiting for the sequence turn: no vote, no group
    /// held or sent and unanswered (pgchorus' own hidden cycles and catalog load aside), no extended group, COPY or cut
    /// Query open. What `answerWaitingGroup` needs to answer that group alone, and, with nothing owed at
    /// all, what `backendLost` calls an idle session.
    var nothingUnderWay: Bool { nothingUnderWay(butTheEpochWait: false) }

    /// `nothingUnderWay`, leaving out the group waiting for its turn in the order of commits and
    /// statements when `butTheEpochWait` (what `answerEpochWaitingGroup` answers alone), and client
    /// cycles whose answers the client has when `answeredAside` (backends still finishing them).
    func nothingUnderWay(butTheEpochWait: Bool, answeredAside: Bool = false) -> Bool {
        commit == nil && !wrapPending && leadFirst.isEmpty && openPartial == nil && !openExtendedGroup && !segments.inProgress
            && !copyInProgress && routedRead == nil && (butTheEpochWait || epochWaiting == nil) && handoverTicket == nil
            && answerWhenAll.awaiting == nil
            && backends.allSatisfy { b in
                !b.isLive || b.owed.cycles.allSatisfy {
                    $0.kind == .hidden || $0.kind == .catalog || (answeredAside && $0.kind == .client && !delivery.owes($0.seq))
                }
            }
    }

    /// A backend finished (or left) the cycle running under the order.
    func orderFinished(on index: Int) {
        guard orderSeq != nil else { return }
        orderPending.remove(index)
        guard orderPending.allSatisfy({ !backends[$0].isLive }) else { return }
        if orderResyncDue { resyncSequencesThenRelease() } else { releaseOrder() }
    }

    /// Backend `index` ended the statement under the order with a timing outcome (the lead's is the
    /// followers' too, who then never ran it), or its transaction is doomed (the followers ran it with
    /// another snapshot): the backends may have drawn different counts of values.
    func noteOrderOutcome(_ seq: Int, on index: Int) {
        guard seq == orderSeq, liveCount > 1, backends[index].digest.timingSQLState != nil || isUncompared(seq) else { return }
        orderResyncDue = true
    }

    /// Sets every follower's sequences to the lead's (`SequenceResync`), then lets the turn go: until
    /// 2026-12-06 a lead that ended an insert into a SERIAL table with a deadlock (its value drawn,
    /// the followers never running it) left the next ids one apart — the follower failed when they were
    /// compared, the backends silently different when not. The turn (and the cluster-wide lock) stays
    /// held meanwhile, so no other statement draws values on any node.
    func resyncSequencesThenRelease() {
        orderResyncDue = false
        guard let seq = orderSeq else {
            releaseOrder()
            return
        }
        let started = resyncSequences(trace: "\(seq) sequences set to the lead's",
                                      why: "a statement that drew sequence values ended differently on the backends (a timing outcome of the lead, or a doomed transaction)") { bound, _ in
            guard bound.value.orderSeq == seq else { return }
            bound.value.releaseOrder()
        }
        if !started { releaseOrder() }
    }

    /// Gives back the turn held for the statement that finished (or is abandoned).
    func releaseOrder() {
        releaseClusterOrder()
        if let t = orderTicket {
            orderTicket = nil
            shared.sequenceOrdering.release(t)
        }
        orderSeq = nil
        orderPending = []
    }

    /// Gives up a turn still waited for (session ending).
    func abandonOrderWait() {
        orderTimer?.cancel()
        orderTimer = nil
        orderCycleTimer?.cancel()
        orderCycleTimer = nil
        endCycleLooks()
        if let t = waitingTicket {
            waitingTicket = nil
            shared.sequenceOrdering.release(t)
        }
        waitingGroup = nil
        catalogHold = false
    }

    /// Looks at the sequence turn again in `orderTimeout`; `since` is when this wait began.
    private func armOrderTimer(since: NIODeadline) {
        guard let context else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        orderWait = (since: since, holder: shared.sequenceOrdering.holder())
        orderTimer = context.eventLoop.scheduleTask(in: Self.orderTimeout) { bound.value.orderTimedOut() }
        armOrderCycleCheck()
    }

    /// How long a session in a transaction waits for the turn before it looks for a lock cycle with
    /// the holder (PostgreSQL's own `deadlock_timeout` is 1 s).
    static let orderCycleCheckDelay: TimeAmount = .seconds(1)

    private func armOrderCycleCheck() {
        guard let context, orderCycleTimer == nil else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        orderCycleTimer = context.eventLoop.scheduleTask(in: Self.orderCycleCheckDelay) { bound.value.checkOrderCycle() }
    }

    /// A session inside a transaction waits for the sequence turn, whose holder's statement may wait
    /// on the lead for a lock this session's transaction holds (an insert into a SERIAL table waiting
    /// for this transaction's uncommitted duplicate key, an upsert's conflict): a cycle PostgreSQL cannot
    /// see, as half of it is pgchorus' turn. The lead is asked, on a connection of the node's own,
    /// whether the holder's server process waits for this session's, directly or through other
    /// sessions (`SequenceResync.holderWaits`); if it does, this session ends at once with 40P01 and its
    /// transaction rolls back everywhere, letting the holder go on — until 2026-12-06 only the 10 s
    /// timer (`orderTimedOut`) ended it, a stall of 10 s for every such cycle of an upsert workload.
    func checkOrderCycle() {
        orderCycleTimer = nil
        guard waitingGroup != nil, phase == .relaying, let context else { return }
        guard !orderCycleChecking, lastStatus == .inTransaction, backends[lead].isLive, backends[lead].phase == .ready,
              let holder = shared.sequenceOrdering.holderLead(), holder.backend == backends[lead].backend.id,
              holder.pid != backends[lead].login.processID else {
            armOrderCycleCheck()
            return
        }
        orderCycleChecking = true
        let wait = orderWaitNumber
        let waiter = backends[lead].login.processID
        let leadBackend = backends[lead].backend
        let key = SequenceResync.lookKey(lead: leadBackend, database: database)
        // (A lead that changed during the wait: the old lead's connection is not needed any more.)
        if let old = orderCycleLookKey, old != key { shared.sequenceOrdering.closeCycleLook(old) }
        orderCycleLookKey = key
        let database = self.database
        let configuration = self.configuration
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        shared.sequenceOrdering.runCycleLook(on: context.eventLoop) { connections in
            SequenceResync.holderWaits(for: waiter, holder: holder.pid, lead: leadBackend, database: database,
                                       configuration: configuration, connections: connections)
        }.whenComplete { result in
            let answer: Result<Bool, LibPQConnection.Failure>
            switch result {
            case let .success(looked): answer = looked
            case let .failure(error): answer = .failure(LibPQConnection.Failure(description: "the node's thread pool: \(error)"))
            }
            bound.value.orderCycleChecked(wait: wait, waiter: waiter, holder: holder, answer: answer)
        }
    }

    /// The wait for the turn ended: the connection its looks used is closed (after a look under way).
    private func endCycleLooks() {
        guard let key = orderCycleLookKey else { return }
        orderCycleLookKey = nil
        shared.sequenceOrdering.closeCycleLook(key)
    }

    /// The lead answered the look for a lock cycle, or could not (logged the first time in a wait, and
    /// said in the error if the wait ends by `orderTimedOut`: a cycle the look could not see).
    /// The answer counts only for the wait that asked (`wait`) while the holder it asked about still
    /// holds the turn: a look still under way when its wait was granted, or when the turn passed to
    /// the next holder in the queue, says nothing of the wait and holder after it (a stale "yes"
    /// would end them with 40P01).
    private func orderCycleChecked(wait: Int, waiter: Int32, holder: (backend: String, pid: Int32),
                                   answer: Result<Bool, LibPQConnection.Failure>) {
        orderCycleChecking = false
        guard waitingGroup != nil, phase == .relaying else { return }
        guard wait == orderWaitNumber, let now = shared.sequenceOrdering.holderLead(),
              now.backend == holder.backend, now.pid == holder.pid else {
            armOrderCycleCheck()
            return
        }
        let holder = holder.pid
        var found = false
        switch answer {
        case let .success(waits):
            found = waits
            if !waits { orderCycleLooksDenied += 1 }
            logger.debug("looked for a lock cycle through the sequence turn", metadata: [
                "holder_pid": "\(holder)", "waiter_pid": "\(waiter)", "holder_waits": "\(waits)"])
        case let .failure(failure):
            if orderCycleLookFailure == nil {
                logger.warning("could not ask the lead whether the sequence turn's holder waits for this session's locks: \(failure.description)")
            }
            orderCycleLookFailure = failure.description
            orderCycleLooksFailed += 1
        }
        guard found, backends[lead].isLive, backends[lead].login.processID == waiter else {
            armOrderCycleCheck()
            return
        }
        ProxyMetrics.sequenceTurnCycles.increment()
        let cycle = "deadlock detected: the statement holding pgchorus' turn to draw sequence values waits for a lock this session's transaction holds, while this session waits for that turn"
        // As PostgreSQL ends a deadlock's victim: the statement fails, the transaction is aborted —
        // which lets the transaction's locks go, not a session-level advisory lock the session may
        // hold (the holder may wait for that one): then the session ends, as before.
        if !leadLocks.sessionLocks, answerWaitingGroup(with: ErrorFields(severity: "ERROR", sqlState: "40P01", message: cycle,
                                                detail: "The statement was not run; the transaction is aborted on every backend.",
                                                hint: "Roll the transaction back and retry it.")) { return }
        abandonOrderWait()
        fatal(ErrorFields(severity: "FATAL", sqlState: "40P01", message: "\(cycle); the session ends and its transaction is rolled back, retry it"))
    }

    /// What the looks for a lock cycle of this wait found, for the DETAIL of the error that ends it as
    /// a likely cycle: how many the lead answered "no", how many it could not answer and why — both,
    /// when some were answered and others not (on a saturated machine one may time out between
    /// answered ones; until 2026-12-07 the DETAIL then said only that the lead could not be asked).
    private var orderCycleLooksSaid: String {
        var said = ""
        if orderCycleLooksDenied > 0 {
            said += "The lead said \(orderCycleLooksDenied) times that the turn's holder does not wait for this session's locks. "
        }
        if let why = orderCycleLookFailure {
            said += orderCycleLooksDenied > 0
                ? "It could not be asked \(orderCycleLooksFailed) times (\(why)). "
                : "The lead could not be asked whether the turn's holder waits for this session (\(why)). "
        }
        return said
    }

    private func orderTimedOut() {
        guard waitingGroup != nil else { return }
        let holder = shared.sequenceOrdering.holder()
        let waited = NIODeadline.now() - (orderWait?.since ?? .now())
        // A session outside any transaction, with nothing of its own running or sent ahead, holds no
        // lock: no cycle can pass through it, however long the holder's statement takes (a loaded
        // machine, a lock held by a third session).
        let holdsNothing = lastStatus == .idle && !openExtendedGroup && !segments.inProgress && readiesOwed <= 1
        // The holder setting the followers' sequences (pgchorus' own work, bounded by its timeouts) is
        // on its way to giving the turn back, as one whose turn has ended.
        let moved = (orderWait.map { holder != $0.holder } ?? false) || shared.sequenceOrdering.holderIsResyncing()
        // The order moved on meanwhile (another session's turn ended), or nothing of this session can be
        // in the holder's way: a slow node, not a lock cycle — wait on, up to `orderTimeoutLimit` in all.
        if let w = orderWait, moved || holdsNothing, waited < Self.orderTimeoutLimit {
            armOrderTimer(since: w.since)
            return
        }
        let seconds = waited.nanoseconds / 1_000_000_000
        let cycleLikely = !(moved || holdsNothing)
        let message = cycleLikely
            ? "pgchorus waited \(seconds) s for its turn to draw sequence values while no other turn ended (a lock cycle with another session is likely)"
            : "pgchorus waited \(seconds) s for its turn to draw sequence values, the longest a statement waits"
        let detail = cycleLikely ? orderCycleLooksSaid : "Other sessions' statements held the turn that long. "
        // Another session holds the order while its statement waits, perhaps on a lock this session's
        // transaction holds: the statement fails and the transaction is aborted on every backend,
        // which lets those locks go (until 2026-12-06 the session was ended).
        // (A holder stuck while the session may hold a session-level advisory lock: a cycle through it
        // ends only with the session.)
        let inBlock = lastStatus != .idle
        if moved || !leadLocks.sessionLocks, answerWaitingGroup(with: ErrorFields(severity: "ERROR", sqlState: "40P01", message: message,
                                                detail: detail + (inBlock ? "The statement was not run; the transaction is aborted on every backend." : "The statement was not run."),
                                                hint: inBlock ? "Roll the transaction back and retry it." : "Retry it.")) { return }
        abandonOrderWait()
        let rolledBack = inBlock ? " and its transaction is rolled back" : ""
        fatal(ErrorFields(severity: "FATAL", sqlState: "40P01", message: "\(message); the session ends\(rolledBack), retry it"))
    }

    // MARK: the catalog of sequence-drawing tables

    ///
    /// The load is a Query of pgchorus' own on the session's lead (which sees the session's own DDL).
    /// It goes when the lead is idle outside a transaction block, where it is a transaction of its own
    /// whatever befalls it; inside a block only for a group held until it has ended (`heldGroup`,
    /// `holdForCatalog`). In a block, an error of the load aborts the lead's block alone — a client's
    /// cancel landing on it, or the client's `statement_timeout` — and a client statement sent behind
    /// it would then be answered 25P02 by the lead and run by the followers: until 2026-12-07 the
    /// followers were failed so (a cancel of an insert waiting for its turn, in CI).
    func loadSequenceCatalogIfNeeded(heldGroup: Bool = false) {
        guard liveCount > 1, !catalogLoading, !catalogSnapshotOld, !openExtendedGroup, lastStatus != .failed, !copyInProgress,
              phase == .relaying || phase == .connectingBackends, heldGroup || leadIdleOutsideBlock else { return }
        let state = shared.sequenceOrdering.tables(in: database)
        // (Not while DDL through another node is open: what it loaded would be stale at its commit.)
        guard state.tables == nil, !shared.sequenceOrdering.remoteChangeOpen(in: database) else { return }
        catalogLoading = true
        catalogGeneration = state.generation
        catalogRows = SequenceOrdering.Catalog()
        catalogError = nil
        var b = ByteBuffer()
        FrontendMessage.query(SequenceOrdering.catalogSQL).encode(into: &b)
        backends[lead].owed.add(Expectation(seq: nextSeq, kind: .catalog))
        nextSeq += 1
        backends[lead].write(b)
    }

    /// The lead has answered everything it was sent and its last answer said idle, outside a block;
    /// nothing of an extended group went ahead to it.
    var leadIdleOutsideBlock: Bool {
        lastStatus == .idle && openPartial == nil && backends[lead].owed.isEmpty && backends[lead].status == .idle
    }

    func recordCatalogRow(_ frame: PostgresFrame) {
        if frame.type == BackendMessage.Kind.errorResponse.rawValue {
            catalogRows.failed = true
            if case let .errorResponse(fields)? = try? BackendMessage(frame: frame) { catalogError = fields }
        }
        if frame.type == BackendMessage.Kind.dataRow.rawValue, case let .dataRow(columns)? = try? BackendMessage(frame: frame),
           columns.count == 3, let kind = columns[0], let relation = columns[1] {
            catalogRows.add(kind: String(buffer: kind), relation: String(buffer: relation), column: columns[2].map { String(buffer: $0) })
        }
    }

    /// Holds the current group while the catalog loads when one of its statements is an INSERT …
    /// SELECT without ORDER BY or an UPDATE … WHERE calling nextval(), which are judged with the
    /// catalog (`UnorderedInsert`, `StatementAnalysis.nextvalUpdates`), or calls a user function
    /// (one whose body takes rows SKIP LOCKED is refused, `StatementTracker.lockStateRoutines`):
    /// after DDL (a migration creating a table, then filling it from another; a routine created,
    /// then called) it would otherwise pass unjudged. Once only per group: a load that fails or
    /// cannot start lets it pass as before.
    ///
    /// Inside a transaction block (or with anything of the session's still on the lead), where a load
    /// goes only for a held group, every group waits for a load while the catalog is unknown (after
    /// DDL: one round trip to the lead per DDL statement).
    func holdForCatalog() -> Bool {
        let waited = catalogWaited
        catalogWaited = false
        // (The catalog is known nearly always: the group's texts are looked at only when it is not.)
        guard !waited, liveCount > 1, knownCatalog == nil,
              !leadIdleOutsideBlock || currentGroup.contains(where: Self.judgedByCatalog) else { return false }
        loadSequenceCatalogIfNeeded(heldGroup: true)
        guard catalogLoading else { return false }
        catalogWait = true
        holdCurrentGroup()
        noteHoldStarted()
        return true
    }

    /// A Query or Parse whose text has an `INSERT … SELECT … FROM` without ORDER BY, an UPDATE with a
    /// WHERE that calls nextval(), or a call of a function PostgreSQL's own names do not cover.
    static func judgedByCatalog(_ frame: PostgresFrame) -> Bool {
        guard frame.type == FrontendMessage.Kind.query.rawValue || frame.type == FrontendMessage.Kind.parse.rawValue else { return false }
        let sql: String
        switch try? FrontendMessage(frame: frame) {
        case let .query(q)?: sql = q
        case let .parse(p)?: sql = p.query
        default: return false
        }
        let analysis = StatementAnalysis(sql)
        return !analysis.unorderedInsertSelects.isEmpty || !analysis.nextvalUpdates.isEmpty
            || !analysis.unknownCalls.isSubset(of: StatementAnalysis.advisoryLockFunctions)
    }

    /// The first group after a catalog load that aborted the transaction block, or that its client
    /// cancelled while it was held for the load (`catalogAbort`), is answered with that error, not
    /// run, when nothing else of the client's is under way (inside a block, the block is aborted on
    /// every backend). Otherwise it goes on: after an aborted load to every backend, each of which
    /// answers 25P02 (every block is aborted); after a cancel, run (the cancel is lost, as it was for
    /// every held group until 2026-12-07).
    func answerCatalogAbort(cycle: Bool) -> Bool {
        guard let abort = catalogAbort else { return false }
        catalogAbort = nil
        // (Backends still finishing cycles the client has answers for do not keep it from being
        // answered: a follower still running the DDL the lead answered, on a loaded host, left a
        // cancelled insert to run — a clean-clone CI rehearsal, since the cancel no longer ends the
        // load itself.)
        guard cycle, !abort.abortedEverywhere || lastStatus != .idle, !admittingSegment,
              nothingUnderWay(butTheEpochWait: false, answeredAside: true) else { return false }
        currentGroup = []
        currentGroupBytes = 0
        answerUnsentGroup(with: abort.fields, alreadyAborted: abort.abortedEverywhere ? Set(backends.indices) : [])
        return true
    }

    /// The catalog load a group waits for ended (or its lead was replaced): the group goes on.
    func endCatalogWait() {
        guard catalogWait, let context else { return }
        catalogWait = false
        catalogWaited = true
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            guard bound.value.phase == .relaying else { return }
            bound.value.replayHeldFrames()
            bound.value.flushClient()
        }
    }

    func catalogLoaded(leadStatus: BackendMessage.TransactionStatus) {
        defer { endCatalogWait() }
        catalogLoading = false
        if leadStatus == .failed, phase == .relaying {
            // The load aborted the lead's transaction block (or ran in one aborted already): the
            // followers' blocks are aborted too, before the held group goes anywhere, and that group is
            // answered with the load's error (`answerCatalogAbort`) — as PostgreSQL answers a statement
            // its client cancelled, or whose `statement_timeout` ran out.
            let fields = catalogError ?? ErrorFields(severity: "ERROR", sqlState: "25P02",
                                                     message: "current transaction is aborted, commands ignored until end of transaction block")
            for i in backends.indices where i != lead && backends[i].isLive { sendOwn(Self.followLeadAbortSQL, to: i) }
            flushBackends()
            catalogAbort = (fields, true)
            logger.info("pgchorus' catalog load ended the transaction block on the lead (\(fields.sqlState ?? "") \(fields.message ?? "")): the other backends' blocks are aborted too and the client's statement held for the load gets that error")
        } else if catalogCancelled || catalogTimedOut, catalogWait {
            let error = catalogCancelled ? Self.heldStatementCancelled : Self.heldStatementTimedOut
            catalogAbort = (error("The statement waited for pgchorus' catalog load after DDL; it was not run."), false)
            logger.info("a statement held for the catalog load \(catalogCancelled ? "was cancelled by its client" : "ran out of its statement_timeout"): not run")
        }
        catalogCancelled = false
        catalogTimedOut = false
        // A load that failed (e.g. in an aborted transaction) stores nothing: the catalog stays unknown.
        // Nor one that read an older snapshot of the session's REPEATABLE READ transaction: it could
        // miss DDL committed since (a SERIAL table's inserts would take no turn).
        if !catalogRows.failed && catalogRows.fresh { shared.sequenceOrdering.store(catalogRows, database: database, generation: catalogGeneration) }
        if !catalogRows.failed && !catalogRows.fresh { catalogSnapshotOld = true }
        catalogRows = SequenceOrdering.Catalog()
    }
}
