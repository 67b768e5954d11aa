import Logging
import NIOCore
import NIOSSL
import State
import Wire

/// A group of client messages on its way to the backends.
struct PendingGroup {
    /// The cycle the group's replies belong to; nil for groups without a ReadyForQuery of their own
    /// (Flush, COPY data).
    var seq: Int?
    var kind: CycleKind?
    var bytes: ByteBuffer
    /// Lead-first: the other backends get the group only once the lead has answered it, so row
    /// locks are taken in the lead's order everywhere.
    var waitsForLead: Bool
    var holdReady = false
    var leadDone = false
    /// The client's ReadyForQuery waits until every backend has finished the cycle.
    var answerWhenAll = false
    /// The session was inside a transaction block when the group was sent.
    var startedInTransaction = false
    /// How long the lead took for the cycle (followers get as long, plus `replication.follower_timeout`).
    var leadTook: TimeAmount?
    /// The lead ended the cycle with a timing outcome (see `OutcomeDigest.timingSQLStates`), in this
    /// transaction status: the followers get the same outcome instead of the statement.
    var leadTimingStatus: UInt8?
    /// The group has COMMIT/ROLLBACK among other statements: its effects cannot be substituted.
    var mixesTransactionControl = false
    /// All of the group is here (false while a pipeline's first messages run on the lead before its Sync).
    var complete = true
    /// The group is a FunctionCall creating a large object with an OID the server picks (`lo_creat`,
    /// `lo_create(0)`): the followers get `lo_create(<the lead's OID>)` instead (`largeObjectCreated`).
    var createsLargeObject = false
}

/// What `endGroup` learnt of a client group that the dispatch needs (also while the group waits for its turn).
struct GroupFlags {
    /// Some statement of the group may change data.
    var writes = false
    /// The client's ReadyForQuery waits until every backend has finished the cycle.
    var answerWhenAll = false
    /// COMMIT/ROLLBACK among other statements.
    var mixesTransactionControl = false
    /// The group ends a transaction (COMMIT/END) outside the vote.
    var commits = false
    /// The group is the statements before a COMMIT sent in the same Query: the vote follows them.
    var trailingCommit = false
    /// One statement that reads no table but the one it writes or locks.
    var readsOnlyItsTarget = false
    /// A FunctionCall that creates a large object with an OID of the server's choosing.
    var createsLargeObject = false
    /// A read whose rows are per server (`StatementAnalysis.readsServerState`), or a statement on locks
    /// that live on the lead (`StatementTracker.Result.lockRowsPerBackend`), that goes to every backend
    /// all the same (a named statement's first run, a read behind unreleased cycles): its rows are not
    /// compared (`rowsUncompared`), its kinds, tags and errors still are.
    var perServerRows = false
    /// Named statements of a plain BEGIN the group parses (`StatementTracker.Result.beginParses`).
    var beginParses: [(parse: Int, name: String, token: Int)] = []
    /// The group's Parses and Closes, its named Parses with their `SessionReplay` tokens and its
    /// Closes of statements (`noteParsesSent`).
    var parses = 0
    var closes = 0
    var named: (parses: [(parse: Int, name: String, token: Int)], closes: [(close: Int, name: String)]) = ([], [])
}

/// A cycle's named Parses the lead has not all answered (`ClientSessionHandler.pendingParses`). The
/// lead answers a cycle's Parses in order and skips the rest after an error, so the count of its
/// ParseCompletes says which Parse each answers; the cycle's end settles those left unanswered.
struct PendingParses {
    /// The cycle (nil: parts ended by Flush whose cycle has not been sent; their answers may come first).
    var seq: Int?
    /// Named plain BEGINs (`StatementTracker.beginParsed`), by place among the cycle's Parses.
    var begins: [(parse: Int, name: String, token: Int)] = []
    /// Named statements for a backend taken in later (`SessionReplay.parseAnswered`).
    var named: [(parse: Int, name: String, token: Int)] = []
    /// Closes of statements, by place among the cycle's Closes (`SessionReplay.closeAnswered`).
    var closes: [(close: Int, name: String)] = []
}

extension ClientSessionHandler {
    /// Flushes one backend outside any access to `backends`: a failing flush closes the channel
    /// synchronously, and its callbacks come straight back into this session.
    func flushBackend(_ index: Int) {
        guard backends[index].needsFlush, let channel = backends[index].channel else { return }
        backends[index].needsFlush = false
        channel.flush()
    }

    func flushBackends() {
        for i in backends.indices { flushBackend(i) }
        reportEpochTargets()
        noteGateBusy()
    }

    var liveCount: Int { backends.liveCount }

    // MARK: client → backends

    /// A client message in the relaying phase: collected into groups that end at Sync, Query,
    /// FunctionCall (a reply cycle with a ReadyForQuery) or at Flush and COPY data (sent on at once).
    func handleRelayFrame(_ frame: PostgresFrame) {
        // COPY data continues the cycle that is awaited (COPY FROM STDIN is such a cycle): it never waits for it.
        // So does the Sync that ends an extended-protocol COPY (`extendedCopySyncOwed`).
        let endsExtendedCopy = extendedCopySyncOwed && frame.type == FrontendMessage.Kind.sync.rawValue
        let continuesCopy = Self.continuesCopy(type: frame.type) || endsExtendedCopy
        if OrderTrace.enabled, frame.type == FrontendMessage.Kind.sync.rawValue || frame.type == FrontendMessage.Kind.query.rawValue {
            trace("CR", "held=\(holdsClientFrames(continuesCopy: continuesCopy)) commit=\(commit != nil) group=\(waitingGroup != nil) epoch=\(epochWaiting != nil) wrap=\(wrapPending) catalog=\(catalogWait) all=\(answerWhenAll.awaiting != nil) boundary=\(segments.inProgress)")
        }
        if holdsClientFrames(continuesCopy: continuesCopy) || (segments.inProgress && !admittingSegment && !continuesCopy) {
            heldFrames.append(frame)
            return
        }
        if extendedCopySyncOwed {
            if frame.type == FrontendMessage.Kind.copyDone.rawValue || frame.type == FrontendMessage.Kind.copyFail.rawValue {
                extendedCopyEnded = true
            } else if endsExtendedCopy {
                relayExtendedCopySync(frame)
                return
            }
        }
        guard let kind = FrontendMessage.Kind(rawValue: frame.type) else {
            fatal(ErrorFields(severity: "FATAL", sqlState: "08P01",
                              message: "invalid frontend message type \(frame.type) ('\(WireError.printable(frame.type))')"))
            return
        }
        if kind == .terminate {
            close()
            return
        }
        if !admittingSegment, kind == .query || kind == .sync || kind == .functionCall {
            readiesOwed += 1
            lastCycleEndedWithSync = kind == .sync
        }
        // A Query's text is decoded once here for all that looks at it (`QueryText`).
        let query = kind == .query ? QueryText(frame) : nil
        if let query, currentGroup.isEmpty, !admittingSegment, let parts = transactionSegments(query) {
            replay.note(frame, query: query)
            runSegments(parts)
            return
        }
        if !admittingSegment { replay.note(frame, query: query) }
        tracker.query = query
        currentGroup.append(frame)
        currentGroupBytes += frame.bytes.readableBytes
        switch kind {
        case .sync, .query, .functionCall:
            endGroup(cycle: true)
        case .flush, .copyData, .copyDone, .copyFail:
            endGroup(cycle: false)
        default:
            if currentGroupBytes > configuration.proxy.maxMessageSize { endGroup(cycle: false) }
        }
    }

    /// A Sync while an extended-protocol COPY FROM STDIN runs goes on like its data, in a group of its
    /// own that is no cycle: PostgreSQL ignored the COPY group's own Sync in copy-in mode (and ignores
    /// any sent before the CopyDone); the first after CopyDone or CopyFail is answered with the
    /// COPY cycle's ReadyForQuery. The client, which sent two Syncs, gets one ReadyForQuery, as from
    /// PostgreSQL. Until 2026-12-06 that Sync was a cycle of its own, waiting for a ReadyForQuery that
    /// never came: with two backends or more the session hung (tokio-postgres' `copy_in`, libpq's
    /// `PQexecParams` of a COPY).
    private func relayExtendedCopySync(_ frame: PostgresFrame) {
        if extendedCopyEnded {
            extendedCopySyncOwed = false
            extendedCopyEnded = false
        }
        replay.note(frame)
        dispatch(frame.bytes, kind: nil, waitsForLead: false, continuesCopy: true)
    }

    /// Client messages wait while the session is busy with something of its own (a vote, a turn, a new lead …).
    func holdsClientFrames(continuesCopy: Bool) -> Bool {
        // COPY data continues a COPY FROM STDIN that runs: while its vote is pending (a wrapped autocommit
        // COPY: the vote follows it), and while a new lead catches up with what the failed one ordered
        // (the COPY is among that: it ends only with its data).
        commit != nil || waitingGroup != nil || epochWaiting != nil || ((wrapPending || handoverTicket != nil) && !continuesCopy)
            || terminationCheck != nil || gateTicket != nil || takingIn != nil || catalogWait || (answerWhenAll.awaiting != nil && !continuesCopy)
    }

    /// Handles the client messages held while the session waited (vote, sequence turn, new lead, the
    /// parts of a cut Query); those that must wait again are held again, in order.
    func replayHeldFrames() {
        if segments.ready {
            // The next part of a cut Query goes before the messages that came after the Query.
            guard segments.mayAdmit, !holdsClientFrames(continuesCopy: false) else { return }
            admitNextSegment()
            if segments.inProgress {
                flushBackends()
                return
            }
        }
        let held = heldFrames
        heldFrames = []
        for f in held { handleRelayFrame(f) }
        forwardOpenGroup()
        flushBackends()
    }

    private func endGroup(cycle: Bool) {
        if lastStatus == .idle && !openExtendedGroup { adoptClusterView() }
        guard phase == .relaying else { return }
        if openPartial == nil, holdAtBoundary() { return }
        if openPartial != nil {
            endOpenGroup(cycle: cycle)
            return
        }
        if answerCatalogAbort(cycle: cycle) { return }
        if holdForCatalog() { return }
        if cycle { ProxyMetrics.statements.increment() }
        let frames = currentGroup
        currentGroup = []
        currentGroupBytes = 0
        if cycle, holdNotification(frames) { return }
        prepareTracker()
        let result = tracker.process(frames) { transactionTimestampLiteral() }
        if !heldNotifications.isEmpty, heldNotificationsDue || result.preventsPrepare || result.createsTemporaryObject || result.usesSavepoint
            || (result.mixesTransactionControl && trailingCommitBody(frames: frames, result: result) == nil) {
            // The transaction cannot wait for the vote any more (or a savepoint could undo what is
            // held): the held notifications go in now, and its COMMIT goes without the vote as before.
            // Not between a part the client ended with Flush and its Sync: after an error in the part
            // PostgreSQL would skip them (the session waiting for an answer that never comes), and
            // their answers would come in the middle of the part's. They go before the next group.
            if openExtendedGroup {
                heldNotificationsDue = true
                transactionPreventsPrepare = true
            } else {
                sendHeldNotifications(intoTransaction: true)
            }
        }
        if result.writes || configuration.cluster.readsWithoutQuorum == "refuse", liveCount > 1,
           let fenced = shared.registry.fencedReason() {
            fatal(fencedError(fenced, detail: result.writes ? "it takes no writes" : "it takes no writes, and no reads either (cluster.reads_without_quorum)"))
            return
        }
        if !result.isCommit { stampTransactionIfNeeded(result) }
        noteEffects(of: result, seq: nextSeq)
        let replicated = liveCount > 1
        let situation = GroupRoute.Session(replicated: replicated, cycle: cycle, status: lastStatus, wroteInTransaction: wroteInTransaction,
                                           twoPhaseCommit: configuration.replication.twoPhaseCommit, votedCommitAvailable: votedCommitAvailable,
                                           transactionPreventsPrepare: transactionPreventsPrepare, openExtendedGroup: openExtendedGroup,
                                           routedReadPending: routedRead != nil, nothingUnreleased: leadFirst.isEmpty,
                                           readRouting: configuration.replication.readRouting)
        var trailingBody: ByteBuffer?
        let route = GroupRoute.decide(result, situation, routinesMayNotify: { routinesMayNotify() }, splitsAtTrailingCommit: {
            trailingBody = trailingCommitBody(frames: frames, result: result)
            return trailingBody != nil
        })
        if lastStatus == .idle {
            snapshotEverywhere = false
            transactionMentionsIsolation = false
            leadLocks.transactionLocks = false
        }
        if result.takesSessionLock {
            sessionLocksBeforeTry = route == .lead && result.barelyTriesSessionLock ? leadLocks.sessionLocks : nil
            leadLocks.sessionLocks = true
        } else if result.releasesSessionLocks {
            leadLocks.sessionLocks = false
        }
        // (Also where such a take goes to every backend, a named statement's: each backend locked the
        // rows it chose, the client's are the lead's.)
        if result.lockRowsPerBackend, lastStatus != .idle { leadLocks.transactionLocks = true }
        if result.mentionsIsolation {
            transactionMentionsIsolation = true
            readCommittedKnown = false
            snapshotIsolationSeq = nil
        }
        if result.takesSnapshot {
            switch route {
            case .all, .statementsThenVote: snapshotEverywhere = true
            case .vote, .lead, .balanced: break
            }
        }
        if replicated, result.containsCommit, !result.isCommit, wroteInTransaction, route != .statementsThenVote {
            logger.warning("COMMIT sent together with other statements in one message, not last or beside other transaction control: committed without the vote")
        }
        switch route {
        case .vote:
            startCommit(frames, changes: result.statementChanges)
        case .statementsThenVote:
            guard let body = trailingBody else { return }
            // The client sees one answer, as from PostgreSQL.
            let flags = GroupFlags(writes: true, mixesTransactionControl: result.mixesTransactionControl, trailingCommit: true,
                                   readsOnlyItsTarget: false)
            decideNotificationHold(result.bytes, containsCommit: true, voted: true)
            if announcesCatalogChange(result) {
                holdForCatalogChange(body, cycle: true, wrap: true, flags: flags, thenOrder: needsSequenceOrder(result))
                return
            }
            if needsSequenceOrder(result) {
                waitForOrder(body, cycle: true, wrap: true, flags: flags)
            } else {
                sendInTurn(body, cycle: true, wrap: true, flags: flags)
            }
        case .lead:
            if replicated, cycle, lastStatus == .inTransaction, result.takesSnapshot, !snapshotEverywhere,
               !readCommittedKnown || transactionMentionsIsolation {
                routeTakingSnapshotEverywhere(result.bytes)
            } else {
                self.route(result.bytes, to: lead)
            }
        case .balanced:
            let live = backends.indices.filter { backends[$0].isLive }
            balanceCursor &+= 1
            self.route(result.bytes, to: live[balanceCursor % live.count])
        case let .all(wrap):
            // An autocommit write outside the vote (DDL, CREATE DATABASE/ROLE, COPY, or the vote off) is
            // answered once every backend has done it: a session the client opens next may rely on it.
            let flags = GroupFlags(writes: result.writes, answerWhenAll: replicated && cycle && result.writes && !wrap && lastStatus == .idle,
                                   mixesTransactionControl: result.mixesTransactionControl, commits: result.isCommit,
                                   readsOnlyItsTarget: result.readsOnlyItsTarget,
                                   createsLargeObject: replicated && frames.count == 1 && Self.largeObjectCreation(frames[0]) != nil,
                                   perServerRows: replicated && ((result.readsServerState && !result.writes) || result.lockRowsPerBackend),
                                   beginParses: result.beginParses, parses: result.parses, closes: result.closes,
                                   named: result.statementChanges.isEmpty ? ([], []) : replay.apply(result.statementChanges))
            if replicated, cycle, !openExtendedGroup {
                decideNotificationHold(result.bytes, containsCommit: result.containsCommit, voted: wrap)
                if result.containsCommit { releaseNotificationsIntoTransaction() }
            }
            if cycle, let answer = result.beginAnswer, lastStatus == .idle, readiesOwed == 1, routedRead == nil, !openExtendedGroup, !segments.inProgress {
                answerBeginAhead(result.bytes, answer)
                return
            }
            if replicated, cycle, announcesCatalogChange(result) {
                holdForCatalogChange(result.bytes, cycle: cycle, wrap: wrap, flags: flags, thenOrder: needsSequenceOrder(result))
                return
            }
            if replicated, needsOrderFirst(cycle: cycle, result) {
                waitForOrder(result.bytes, cycle: cycle, wrap: wrap, flags: flags)
                return
            }
            sendInTurn(result.bytes, cycle: cycle, wrap: wrap, flags: flags)
        }
    }

    /// A plain `BEGIN` / `START TRANSACTION` (simple or extended protocol, `StatementTracker.BeginAnswer`)
    /// with nothing else owed to the client: PostgreSQL answers it from idle with its command tag and
    /// nothing else but the extended protocol's acknowledgements, so the client has that
    /// answer at once and sends its first statement a round trip sooner. The BEGIN itself goes to every backend now, as pgchorus'
    /// own cycle (its reply unseen): each backend's transaction starts when it did before. It needs
    /// no turn in the order of commits (it takes no snapshot), and its statements queue behind it.
    func answerBeginAhead(_ bytes: ByteBuffer, _ answer: StatementTracker.BeginAnswer) {
        ensureCommitLogIfDue()
        beginAheadSeq = nextSeq
        beginAheadAnswers.removeAll(keepingCapacity: true)
        dispatch(bytes, kind: .hidden, waitsForLead: false)
        if answer.extended {
            if answer.parse { writeClient(.parseComplete) }
            writeClient(.bindComplete)
            if answer.noData { writeClient(.noData) }
        }
        writeClient(.commandComplete(answer.tag))
        writeClient(.readyForQuery(.inTransaction))
        lastStatus = .inTransaction
        flushClient()
    }

    /// `parses` Parses went to the lead as (part of) cycle `seq` (nil: a part ended by Flush, whose
    /// cycle follows), with these named ones (their places counted within the group): kept in
    /// `pendingParses`, their places counted from the cycle's first Parse, those of the parts before it included.
    func noteParsesSent(seq: Int?, parses: Int, closes: Int = 0,
                        named: (parses: [(parse: Int, name: String, token: Int)], closes: [(close: Int, name: String)]),
                        begins: [(parse: Int, name: String, token: Int)] = []) {
        let joins = parsesSent.seq == seq || parsesSent.seq == nil
        let offset = joins ? parsesSent.count : 0
        let closeOffset = joins ? parsesSent.closes : 0
        parsesSent = (seq, offset + parses, closeOffset + closes)
        if joins, let i = pendingParses.firstIndex(where: { $0.seq == nil }) {
            // The parts before it: their answers count with this cycle's.
            pendingParses[i].seq = seq
        }
        guard !named.parses.isEmpty || !named.closes.isEmpty || !begins.isEmpty else { return }
        let i = pendingParses.firstIndex { $0.seq == seq } ?? {
            pendingParses.append(PendingParses(seq: seq))
            return pendingParses.count - 1
        }()
        pendingParses[i].named += named.parses.map { ($0.parse + offset, $0.name, $0.token) }
        pendingParses[i].closes += named.closes.map { ($0.close + closeOffset, $0.name) }
        pendingParses[i].begins += begins.map { ($0.parse + offset, $0.name, $0.token) }
    }

    /// The lead answered one more Close of cycle `seq` (nil: between cycles), counted as Parses are
    /// (`parseAnswered`): a Close of a statement PostgreSQL skipped after an error drops nothing.
    func closeAnswered(_ seq: Int?) {
        leadCloses = leadCloses.seq == seq || leadCloses.seq == nil ? (seq, leadCloses.count + 1) : (seq, 1)
        guard !pendingParses.isEmpty, let i = pendingParses.firstIndex(where: { $0.seq == seq }) else { return }
        let n = leadCloses.count - 1
        for c in pendingParses[i].closes where c.close == n { replay.closeAnswered(c.name) }
    }

    /// The lead answered one more Parse of cycle `seq` (nil: between cycles, a Flush-ended part's):
    /// PostgreSQL answers a group's Parses in order (an error skips the rest), so the count of them
    /// (`leadParses`, kept for every cycle: the named Parses may come in a later part than the first)
    /// says which. A named plain BEGIN among them is known to be held from now on
    /// (`StatementTracker.beginStatements`), a named statement is one a backend taken in later must be
    /// given (`SessionReplay`).
    func parseAnswered(_ seq: Int?) {
        // Answers between cycles count with the cycle that follows, as their Parses do (`noteParsesSent`).
        leadParses = leadParses.seq == seq || leadParses.seq == nil ? (seq, leadParses.count + 1) : (seq, 1)
        guard !pendingParses.isEmpty, let i = pendingParses.firstIndex(where: { $0.seq == seq }) else { return }
        let n = leadParses.count - 1
        for p in pendingParses[i].begins where p.parse == n { tracker.beginParsed(p.name, token: p.token) }
        for p in pendingParses[i].named where p.parse == n { replay.parseAnswered(p.token) }
    }

    /// The lead ended cycle `seq`: Parses of it (and of earlier ones) not answered were refused or skipped.
    func parsesSettled(upTo seq: Int) {
        pendingParses.removeAll { entry in
            guard let s = entry.seq, s <= seq else { return false }
            for p in entry.named { replay.parseUnanswered(p.token) }
            return true
        }
    }

    /// Backend `index` answered the BEGIN answered ahead (`beginAheadSeq`), in a transaction or not.
    /// It can miss one way on its own: a CancelRequest of the client's reached that server while it ran
    /// the BEGIN. Every backend misses alike when the BEGIN was not what the session judged it to be
    /// (a named statement dropped where the tracker cannot see it, by a function running `DEALLOCATE`):
    /// then the backends agree and none is at fault. So the lead decides: if it is in a transaction, a
    /// follower that is not has left the others and is failed; if the lead missed, the client's view
    /// (in a transaction) can be kept nowhere, the session ends and no backend is failed.
    func beginAheadAnswered(_ index: Int, status: BackendMessage.TransactionStatus) {
        beginAheadAnswers[backends[index].backend.id] = status
        decideBeginAhead()
    }

    /// Acts on the answers to the BEGIN answered ahead once the lead's is in (`beginAheadAnswered`);
    /// also when a new lead takes over, which may have answered already.
    func decideBeginAhead() {
        guard beginAheadSeq != nil, let leadStatus = beginAheadAnswers[backends[lead].backend.id] else { return }
        func why(_ index: Int, _ status: BackendMessage.TransactionStatus) -> String {
            "BEGIN, answered ahead to the client, left backend \(backends[index].backend.description) outside a transaction (status \(status))"
        }
        if leadStatus != .inTransaction {
            let missed = backends.indices.filter { beginAheadAnswers[backends[$0].backend.id].map { $0 != .inTransaction } ?? false }
            beginAheadSeq = nil
            beginAheadAnswers = [:]
            let reason = why(lead, leadStatus)
            logger.warning("\(reason) (and \(missed.count - 1) other backend(s) so far): a cancel that reached it during the BEGIN, or a prepared statement dropped where pgchorus cannot see it (a function running DEALLOCATE); the session ends, no backend is failed")
            fatal(ErrorFields(severity: "FATAL", sqlState: "08006", message: "pgchorus ends the session: \(reason)"))
            return
        }
        for i in backends.indices where i != lead && backends[i].isLive {
            guard let status = beginAheadAnswers[backends[i].backend.id], status != .inTransaction else { continue }
            beginAheadAnswers[backends[i].backend.id] = .inTransaction // failed once
            failBackend(i, reason: why(i, status))
        }
    }

    /// What the tracker needs to know before it processes a group: whether more than one backend is
    /// live (else statements pass unchanged) and the database's per-row volatile defaults.
    func prepareTracker() {
        tracker.rewrite = liveCount > 1
        let known = knownCatalog
        // (Set again only when the catalog changed: each assignment released and retained collections.)
        if catalogRead == nil || catalogRead?.at != trackerCatalogAt {
            tracker.rowOrder = known?.rowOrder ?? RowOrderCatalog()
            tracker.rowOrderKnown = known != nil
            tracker.readers = known?.readers
            tracker.lockStateRoutines = known?.lockStateRoutines ?? []
            tracker.lockStateTriggers = known?.lockStateTriggers ?? [:]
            trackerCatalogAt = catalogRead?.at
        }
        if tracker.readers == nil && tracker.rewrite { loadSequenceCatalogIfNeeded() }
    }

    /// What is loaded of this session's database's catalog, nil while it is unknown: read from the
    /// node's `SequenceOrdering` again only when that counted a change (asked several times a statement,
    /// each ask a lock, a look-up by the database's name and a copy of the entry).
    var knownCatalog: SequenceOrdering.View? {
        let at = shared.sequenceOrdering.changes
        if let read = catalogRead, read.at == at { return read.view }
        let (view, lasting) = shared.sequenceOrdering.view(in: database)
        catalogRead = lasting ? (at, view) : nil
        return view
    }

    /// The time literal of the current transaction (one per transaction, see `StatementTracker`).
    func transactionTimestampLiteral() -> String {
        if let t = transactionTimestamp { return t }
        let t = WallClock.timestampLiteral()
        transactionTimestamp = t
        return t
    }

    /// Before a transaction's first statement, in a database whose definitions use the `pgchorus`
    /// functions: the transaction's stamp on every backend (its reply unseen by the client), so
    /// `pgchorus.now()` is this transaction's time and the per-row values are drawn afresh.
    func stampTransactionIfNeeded(_ result: StatementTracker.Result) {
        guard tracker.deterministic, !transactionStamped, !openExtendedGroup, !copyInProgress, lastStatus != .failed,
              result.usesDeterministicValues || knownCatalog?.deterministic ?? true else { return }
        loadSequenceCatalogIfNeeded()
        transactionStamped = true
        stampedTransactions += 1
        var b = ByteBuffer()
        FrontendMessage.query(DeterministicValues.stampSQL(transaction: stampedTransactions, timestamp: transactionTimestampLiteral())).encode(into: &b)
        dispatch(b, kind: .hidden, waitsForLead: false)
    }

    /// `NOTIFY c, 'p'` or `SELECT pg_notify('c', 'p')` inside a transaction that will be voted: held
    /// by pgchorus and answered as PostgreSQL answers it, then sent once the vote has committed
    /// (`sendHeldNotifications`), never on rollback. PostgreSQL cannot PREPARE a transaction that
    /// ran NOTIFY, so a transaction that sent one itself would commit without the vote.
    func holdNotification(_ frames: [PostgresFrame]) -> Bool {
        guard liveCount > 1, lastStatus == .inTransaction, votedCommitAvailable, !transactionPreventsPrepare, !transactionUsedSavepoint,
              configuration.replication.twoPhaseCommit, frames.count == 1, frames[0].type == FrontendMessage.Kind.query.rawValue,
              backends[lead].owed.isEmpty, leadFirst.isEmpty, routedRead == nil, !answerWhenAll.holdsReady, !openExtendedGroup,
              // (Asked of every statement in a transaction: most are ruled out before their text is decoded.)
              frames[0].bytes.withUnsafeReadableBytes({ StatementAnalysis.mentionsNotify(bytes: $0) }),
              case let .query(sql)? = try? FrontendMessage(frame: frames[0]),
              let held = StatementAnalysis.heldNotification(of: sql), !routinesMayNotify() else { return false }
        heldNotifications.append(held.sql)
        // The COMMIT goes through the vote even if nothing else writes.
        wroteInTransaction = true
        if held.isSelect {
            writeClient(.rowDescription([BackendMessage.Field(name: "pg_notify", tableOID: 0, columnNumber: 0, typeOID: 2278, typeSize: 4,
                                                              typeModifier: -1, format: 0)]))
            writeClient(.dataRow([ByteBuffer()]))
            writeClient(.commandComplete("SELECT 1"))
        } else {
            writeClient(.commandComplete("NOTIFY"))
        }
        writeClient(.readyForQuery(.inTransaction))
        flushClient()
        return true
    }

    /// A routine of this database (a trigger, a function) may notify, and PostgreSQL refuses to
    /// PREPARE a transaction that did: its writes then commit without the vote, as a transaction that
    /// notified does. While unknown (a database not yet looked at; the session that ran DDL loads it
    /// again at once) the vote is tried and the catalog loaded; a refused PREPARE marks the database.
    func routinesMayNotify() -> Bool {
        if let known = shared.sequenceOrdering.routinesNotify(in: database) { return known }
        loadSequenceCatalogIfNeeded()
        return false
    }

    /// Sends the held notifications to every backend: after the vote committed (their own implicit
    /// transaction: each backend notifies its listeners, and a listener's session passes on its
    /// lead's), or into the open transaction when it can no longer be voted.
    func sendHeldNotifications(intoTransaction: Bool) {
        heldNotificationsDue = false
        guard !heldNotifications.isEmpty else { return }
        let sql = heldNotifications.map { $0.hasSuffix(";") ? String($0.dropLast()) : $0 }.joined(separator: ";\n")
        heldNotifications = []
        var b = ByteBuffer()
        FrontendMessage.query(sql).encode(into: &b)
        dispatch(b, kind: .hidden, waitsForLead: false)
        if intoTransaction { transactionPreventsPrepare = true }
    }

    /// The Query of `BEGIN; …; COMMIT` (from idle) or `…; COMMIT` (inside a transaction) without its
    /// COMMIT, as processed (rewritten) bytes; nil when the group is anything else.
    func trailingCommitBody(frames: [PostgresFrame], result: StatementTracker.Result) -> ByteBuffer? {
        guard frames.count == 1, frames[0].type == FrontendMessage.Kind.query.rawValue,
              case let .query(sql)? = try? FrontendMessage(frame: PostgresFrame(bytes: result.bytes)),
              let split = StatementAnalysis.trailingCommit(of: sql),
              split.opensTransaction ? lastStatus == .idle : lastStatus == .inTransaction else { return nil }
        var b = ByteBuffer()
        FrontendMessage.query(split.body).encode(into: &b)
        return b
    }

    /// What a processed group (or a part of one sent early) does to the session, `seq` being its cycle:
    /// a write marks the transaction, a temporary table ends the vote for the session, DDL makes the
    /// sequence catalog stale.
    func noteEffects(of result: StatementTracker.Result, seq: Int) {
        if result.writes { wroteInTransaction = true }
        if result.usesSavepoint { transactionUsedSavepoint = true }
        if result.preventsPrepare && !transactionPreventsPrepare && lastStatus != .idle {
            logger.debug("the transaction ran NOTIFY, LISTEN, UNLISTEN or declared a WITH HOLD cursor: it commits without the vote")
        }
        if result.preventsPrepare { transactionPreventsPrepare = true }
        // PostgreSQL refuses PREPARE TRANSACTION for a transaction that used a temporary table: the
        // one that creates it commits without the vote, and while a table outlives it (not ON COMMIT
        // DROP) every later one, until DISCARD ALL/TEMP outside a transaction (what a pooler sends
        // before it hands the connection on) drops them all.
        if result.createsTemporaryObject { transactionPreventsPrepare = true }
        if result.createsSessionTemporaryObject && votedCommitAvailable {
            votedCommitAvailable = false
            votedCommitLostToTemporaryTables = true
            logger.info("the session created a temporary table: its commits go without the vote until DISCARD ALL or DISCARD TEMP")
        } else if result.discardsTemporaryObjects, votedCommitLostToTemporaryTables, lastStatus == .idle, !openExtendedGroup,
                  !result.createsTemporaryObject {
            votedCommitAvailable = true
            votedCommitLostToTemporaryTables = false
            logger.info("the session's temporary tables were discarded: its commits go through the vote again")
        }
        if liveCount > 1, result.mayChangeCatalog {
            shared.sequenceOrdering.invalidate(database)
            ddlSeqs.insert(seq)
            if var change = catalogChange {
                // A change still open for an earlier transaction whose end is not delivered yet
                // (pipelined): it now covers this DDL too, until this transaction ends.
                change.from = max(change.from, seq)
                catalogChange = change
            } else {
                catalogChangeDue = true
            }
            ddlInTransaction = true
        }
    }

    /// The schema is made again before the next transaction once a vote found it gone (`schemaCheckDue`).
    func ensureCommitLogIfDue() {
        // (Not between a Flush-ended part and its Sync: see `sendHeldNotifications`' caller.)
        guard schemaCheckDue, lastStatus == .idle, commit == nil, !openExtendedGroup else { return }
        schemaCheckDue = false
        ensureCommitLog()
    }

    /// Dispatches a client group, wrapped for the vote when `wrap`; returns the group's cycle.
    @discardableResult
    func send(_ bytes: ByteBuffer, cycle: Bool, wrap: Bool, flags: GroupFlags) -> Int {
        ensureCommitLogIfDue()
        if wrap {
            if !flags.trailingCommit {
                var begin = ByteBuffer()
                FrontendMessage.query("BEGIN").encode(into: &begin)
                dispatch(begin, kind: .hidden, waitsForLead: false)
            }
            wrapPending = true
            trailingCommitPending = flags.trailingCommit
        }
        let seq = nextSeq
        if cycle && flags.writes { comparison.noteWrite(seq) }
        // (Not a cycle that follows parts ended by Flush: a follower may count the parts' answers with
        // the cycle or before it, the lead before it, so their rows are hashed alike only as before.)
        if flags.perServerRows, cycle, !openExtendedGroup { noteRowsUncompared(seq) }
        // (Not after a part ended by Flush: that part's replies are counted with this cycle's, so the
        // count would not say which Parse was answered.)
        if flags.parses > 0 || flags.closes > 0 || parsesSent.seq == nil {
            noteParsesSent(seq: cycle ? seq : nil, parses: flags.parses, closes: flags.closes, named: flags.named,
                           begins: cycle && !openExtendedGroup ? flags.beginParses : [])
        }
        dispatch(bytes, kind: cycle ? .client : nil, waitsForLead: cycle && liveCount > 1, holdReady: wrap,
                 answerWhenAll: cycle && flags.answerWhenAll, mixesTransactionControl: flags.mixesTransactionControl,
                 createsLargeObject: flags.createsLargeObject)
        // COPY data continues its cycle: it leaves no extended-protocol group open.
        if cycle { openExtendedGroup = false } else if !Self.continuesCopy(bytes) { openExtendedGroup = true }
        return seq
    }

    /// The group is COPY data, CopyDone or CopyFail: it continues the COPY FROM STDIN that runs.
    static func continuesCopy(_ bytes: ByteBuffer) -> Bool {
        bytes.getInteger(at: bytes.readerIndex, as: UInt8.self).map(continuesCopy(type:)) ?? false
    }

    /// A client message of this type continues the COPY FROM STDIN that runs.
    static func continuesCopy(type: UInt8) -> Bool {
        type == FrontendMessage.Kind.copyData.rawValue || type == FrontendMessage.Kind.copyDone.rawValue || type == FrontendMessage.Kind.copyFail.rawValue
    }

    /// The rows of cycle `seq` are per server: they are not hashed for the comparison. Cycles every
    /// live backend has finished are forgotten here.
    func noteRowsUncompared(_ seq: Int) {
        let oldest = backends.indices.filter { backends[$0].isLive }.compactMap { backends[$0].owed.head?.seq }.min() ?? seq
        rowsUncompared = rowsUncompared.filter { $0 >= oldest }
        rowsUncompared.insert(seq)
    }

    /// Whether the rows of cycle `seq` are hashed for the comparison.
    func hashesRows(_ seq: Int) -> Bool {
        configuration.replication.compareRows && (rowsUncompared.isEmpty || !rowsUncompared.contains(seq))
    }

    /// Sends a group to the lead now and to the others when `releaseGroups` lets it go.
    func dispatch(_ bytes: ByteBuffer, kind: CycleKind?, waitsForLead: Bool, holdReady: Bool = false,
                  answerWhenAll: Bool = false, mixesTransactionControl: Bool = false, complete: Bool = true, createsLargeObject: Bool = false,
                  continuesCopy: Bool = false) {
        var seq: Int?
        if kind != nil {
            seq = nextSeq
            nextSeq += 1
        }
        if handoverTicket != nil, kind == nil, leadFirst.isEmpty, continuesCopy || Self.continuesCopy(bytes) {
            // A new lead waits for its handover — for what the failed lead ordered to end on it, the
            // COPY FROM STDIN that runs on every backend among it (nothing older is held back): its
            // data goes to all of them at once, or that COPY would never end.
            for i in backends.indices where backends[i].isLive { backends[i].write(bytes) }
            return
        }
        leadFirst.add(PendingGroup(seq: seq, kind: kind, bytes: bytes, waitsForLead: waitsForLead, holdReady: holdReady,
                                       answerWhenAll: answerWhenAll, startedInTransaction: lastStatus != .idle,
                                       mixesTransactionControl: mixesTransactionControl, complete: complete,
                                       createsLargeObject: createsLargeObject && waitsForLead))
        // A new lead waiting for its handover gets this group with the others once it may.
        guard handoverTicket == nil else { return }
        if answerWhenAll, let seq { self.answerWhenAll.expect(seq) }
        if let kind, let seq {
            backends[lead].owed.add(Expectation(seq: seq, kind: kind, holdReady: holdReady, answerWhenAll: answerWhenAll))
            if OrderTrace.enabled, kind == .client { trace("W", "\(seq) \(backends[lead].backend.id)@\(backends[lead].login.processID) \(traceText(of: bytes))") }
        }
        backends[lead].write(bytes)
        epochTargetsDirty = true
        releaseGroups()
    }

    /// `lo_creat(mode)` (OID 957) or `lo_create(0)` (OID 715) as a FunctionCall — what libpq's
    /// `lo_creat`/`lo_create` send: the call, when its large object's OID is the server's choice.
    static func largeObjectCreation(_ frame: PostgresFrame) -> FrontendMessage.FunctionCall? {
        guard frame.type == FrontendMessage.Kind.functionCall.rawValue, case let .functionCall(call)? = try? FrontendMessage(frame: frame) else { return nil }
        switch call.functionOID {
        case 957: return call
        case 715:
            guard call.arguments.count == 1, var a = call.arguments[0] else { return nil }
            let binary = (call.argumentFormats.first ?? 0) == 1
            let oid = binary ? a.readInteger(as: UInt32.self) : a.readString(length: a.readableBytes).flatMap { UInt32($0) }
            return oid == 0 ? call : nil
        default: return nil
        }
    }

    /// The lead created a large object with an OID of its choosing: the followers create it with
    /// that OID (`lo_create(oid)`), so every backend has the same large objects under the same OIDs
    /// (each server's OID counter is its own: temporary tables and TOAST move it).
    func largeObjectCreated(_ frame: PostgresFrame, seq: Int) {
        guard let held = leadFirst.groups.first(where: { $0.seq == seq && $0.createsLargeObject })?.bytes,
              case let .functionCallResponse(value)? = try? BackendMessage(frame: frame), var v = value,
              let original = Self.largeObjectCreation(PostgresFrame(bytes: held)) else { return }
        let oid = original.resultFormat == 1 ? v.readInteger(as: UInt32.self) : v.readString(length: v.readableBytes).flatMap { UInt32($0) }
        guard let oid, oid != 0 else { return }
        var arg = ByteBuffer()
        arg.writeInteger(oid)
        var b = ByteBuffer()
        FrontendMessage.functionCall(FrontendMessage.FunctionCall(functionOID: 715, argumentFormats: [1], arguments: [arg],
                                                                  resultFormat: original.resultFormat)).encode(into: &b)
        leadFirst.update(seq: seq) {
            $0.bytes = b
            $0.createsLargeObject = false
        }
    }

    /// Sends a read to one backend; its reply goes to the client as it comes.
    func route(_ bytes: ByteBuffer, to index: Int, seq existing: Int? = nil) {
        let seq = existing ?? nextSeq
        if existing == nil { nextSeq += 1 }
        routedRead = (seq, bytes, index)
        backends[index].owed.add(Expectation(seq: seq, kind: .routedRead))
        backends[index].write(bytes)
        if !clientWritable { applyClientBackpressure() }
    }

    private func routedFrame(_ index: Int, _ exp: Expectation, _ frame: PostgresFrame) {
        if let before = sessionLocksBeforeTry, index == lead {
            if frame.type == BackendMessage.Kind.dataRow.rawValue, case let .dataRow(columns)? = try? BackendMessage(frame: frame),
               columns.count == 1, let value = columns[0], value.readableBytes == 1,
               let byte = value.getInteger(at: value.readerIndex, as: UInt8.self), byte == UInt8(ascii: "f") || byte == 0 {
                // The try took no lock (text `f`, or binary false): the session holds what it held before.
                leadLocks.sessionLocks = before
            }
            if frame.type == BackendMessage.Kind.readyForQuery.rawValue { sessionLocksBeforeTry = nil }
        }
        if delivery.routedMessage(frame.type, seq: exp.seq, fromLead: index == lead) { forwardToClient(frame) }
    }

    /// The lead's 57014 is the node's own cancel (`cancelForEpochs`), not the client's.
    private func isOwnEpochCancel(_ frame: PostgresFrame, seq: Int) -> Bool {
        guard frame.type == BackendMessage.Kind.errorResponse.rawValue,
              seq == epochCancelSeq || epochCancelUntil.map({ NIODeadline.now() < $0 }) == true,
              case let .errorResponse(fields)? = try? BackendMessage(frame: frame) else { return false }
        return fields.sqlState == "57014"
    }

    /// Sends the followers what `LeadFirstRelease` lets go now.
    func releaseGroups() {
        // Nothing goes to the followers that a new lead waiting for its handover has not had.
        guard handoverTicket == nil else { return }
        epochTargetsDirty = true
        let now = NIODeadline.now()
        // One at a time: carrying out a release may send more groups, which queue behind the rest.
        for _ in 0..<1_000_000 {
            guard let release = leadFirst.next(handoverPending: handoverTicket != nil) else { break }
            switch release {
            case let .followLeadOutcome(g, seq, status):
                releaseLeadTimingOutcome(g, seq: seq, leadStatus: status)
            case let .send(g, leadTook):
                // Lead-first: a follower gets half as long again as the lead took, and the follower timeout on top.
                sendToFollowers(g, allowance: leadTook.map { deadlines.allowance(leadTook: $0) }, now: now)
            }
        }
        armFollowerDeadline()
        releaseHeldMessages()
        // After the releases above: a session waiting for a new lead counts them first.
        noteLeadOrdering()
    }

    /// Writes a released group to every live follower, each owing its cycle from `now`.
    private func sendToFollowers(_ g: PendingGroup, allowance: TimeAmount?, now: NIODeadline) {
        if g.kind == nil { followersHavePartAhead = true } else if g.kind == .client { followersHavePartAhead = false }
        for i in backends.indices where i != lead && backends[i].isLive {
            backends[i].skipsPartAnswers = false
            if let kind = g.kind, let seq = g.seq {
                backends[i].owed.add(Expectation(seq: seq, kind: kind, holdReady: g.holdReady, ordered: g.waitsForLead,
                                                        sentAt: now, allowance: allowance))
                if g.waitsForLead { shared.leadHandover.released(to: backends[i].backend.id) }
                if OrderTrace.enabled, kind == .client { trace("W", "\(seq) \(backends[i].backend.id)@\(backends[i].login.processID) \(traceText(of: g.bytes))") }
            }
            if g.bytes.readableBytes >= Self.largeFollowerWrite, let context, let channel = backends[i].channel {
                // A follower's time counts from when it has the whole statement: writing many
                // megabytes to it (psycopg2's 50 MB query) is the node's time, not the follower's.
                let promise = context.eventLoop.makePromise(of: Void.self)
                let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
                promise.futureResult.whenComplete { _ in bound.value.followerHasStatement(channel) }
                backends[i].owed.largeWriteBegan(at: now)
                backends[i].write(g.bytes, promise: promise)
            } else {
                backends[i].write(g.bytes)
            }
        }
    }

    /// Statements at least this large restart a follower's deadline once they are written to it.
    static let largeFollowerWrite = 1 << 20

    /// The backend of this session on `channel` (nil once that connection is no longer the session's).
    func backendIndex(of channel: Channel) -> Int? {
        backends.indices.first { backends[$0].channel === channel }
    }

    /// A large statement has been written to the follower on `channel`: its deadline counts from now.
    func followerHasStatement(_ channel: Channel) {
        guard let index = backendIndex(of: channel) else { return }
        backends[index].owed.largeWriteDone(at: .now())
        guard backends[index].isLive else { return }
        armFollowerDeadline()
    }

    func markLeadDone(_ seq: Int, took: TimeAmount? = nil, timingStatus: UInt8? = nil) {
        if leadFirst.leadAnswered(seq: seq, took: took, timingStatus: timingStatus) { releaseGroups() }
    }

    // MARK: backends → client

    func backendFrame(_ index: Int, _ frame: PostgresFrame) {
        switch backends[index].phase {
        case .loggingIn:
            backendLoginFrame(index, frame)
        case .ready:
            guard phase == .relaying || phase == .draining, !backends[index].dying else { return }
            if frame.type == BackendMessage.Kind.errorResponse.rawValue,
               case let .errorResponse(fields)? = try? BackendMessage(frame: frame),
               fields.severity == "FATAL" || fields.severity == "PANIC" {
                // Kept also from the last live backend: when every backend ends the session at once (the
                // client's idle timeouts), the last one's close may come before the others', and its
                // last words decide how the session ends (until 2026-12-06 the client then got 08006
                // "lost the connection" instead of PostgreSQL's 25P03 on a loaded host).
                backends[index].lastWords = "\(fields.sqlState ?? "") \(fields.message ?? "")"
                if liveCount > 1 {
                    // This backend is going away while others can carry on: its last words are logged, not forwarded.
                    logger.warning("backend \(backends[index].backend.description) ended the session: \(fields.sqlState ?? "") \(fields.message ?? "")")
                    backends[index].dying = true
                    return
                }
            }
            if frame.type == BackendMessage.Kind.noticeResponse.rawValue, liveCount > 1,
               case let .noticeResponse(fields)? = try? BackendMessage(frame: frame), fields.sqlState?.hasPrefix("57P") == true {
                // "terminating connection due to immediate shutdown": the session carries on without this backend.
                logger.warning("backend \(backends[index].backend.description) is shutting down: \(fields.message ?? "")")
                return
            }
            if index == lead { leadFrame(frame) } else { followerFrame(index, frame) }
        case .connecting, .negotiatingTLS, .closed:
            break
        }
    }

    static let dropDatabaseTag = Array("DROP DATABASE\0".utf8)

    private func leadFrame(_ frame: PostgresFrame) {
        guard let exp = backends[lead].owed.head else {
            // Between cycles: asynchronous messages (notifications, notices, parameter changes, which
            // the digest skips), or the answers to a part of a group the client ended with Flush, which
            // count with the cycle that follows, on every backend alike (`followerFrame`).
            if liveCount > 1 { backends[lead].digest.add(frame, hashRows: configuration.replication.compareRows) }
            if frame.type == BackendMessage.Kind.parseComplete.rawValue { parseAnswered(nil) }
            if frame.type == BackendMessage.Kind.closeComplete.rawValue { closeAnswered(nil) }
            forwardToClient(frame)
            return
        }
        if frame.type == BackendMessage.Kind.parseComplete.rawValue { parseAnswered(exp.seq) }
        if frame.type == BackendMessage.Kind.closeComplete.rawValue { closeAnswered(exp.seq) }
        if frame.type == BackendMessage.Kind.notificationResponse.rawValue, exp.kind != .client, exp.kind != .routedRead {
            // Another session's notification, sent by PostgreSQL just before the ReadyForQuery of one of
            // pgchorus' own cycles (the transaction stamp, the vote, the catalog): it is the client's.
            forwardToClient(frame)
            return
        }
        switch exp.kind {
        case .client:
            if liveCount > 1 { backends[lead].digest.add(frame, hashRows: hashesRows(exp.seq)) }
            if frame.type == BackendMessage.Kind.functionCallResponse.rawValue { largeObjectCreated(frame, seq: exp.seq) }
            if frame.type == BackendMessage.Kind.commandComplete.rawValue, frame.body.readableBytesView.elementsEqual(Self.dropDatabaseTag) {
                // Its name may come back as a new database, without pgchorus' schema.
                shared.forgetSchemas()
            }
            switch delivery.leadMessage(frame.type, seq: exp.seq, holdReady: exp.holdReady, answerWhenAll: exp.answerWhenAll,
                                        replicated: liveCount > 1, ownCancel: isOwnEpochCancel(frame, seq: exp.seq)) {
            case .forward:
                forwardToClient(frame)
            case .drop:
                // The vote answers the client: the reply waits for its ReadyForQuery (`clientReadyWithheld`).
                if exp.holdReady, frame.type == BackendMessage.Kind.readyForQuery.rawValue, delivery.owes(exp.seq) { clientReadyWithheld = true }
            case .holdUntilAll:
                // Kept back until every backend has done this autocommit write (`releaseHeldReady`).
                answerWhenAll.hold(exp.seq, frame: frame)
                clientReadyWithheld = true
            case .serializationFailure:
                epochCancelUntil = nil
                epochCancelSeq = nil
                writeClient(.errorResponse(Self.epochSerializationFailure))
            }
            if frame.type == BackendMessage.Kind.copyInResponse.rawValue || frame.type == BackendMessage.Kind.copyBothResponse.rawValue {
                // The client now sends COPY data: the others must be in COPY too, and a cancel must reach them all.
                copyInProgress = true
                // (Its backends now wait for the client's data: the order's probe may count that as a wait.)
                epochTargetsDirty = true
                reportEpochTargets()
                if lastCycleEndedWithSync {
                    extendedCopySyncOwed = true
                    extendedCopyEnded = false
                }
                markLeadDone(exp.seq)
            }
        case .prepare, .finish:
            recordCommitMessage(lead, frame)
        case .internalQuery:
            recordInternalMessage(lead, frame)
        case .catalog:
            recordCatalogRow(frame)
        case .sessionSettings:
            recordSessionSetting(frame)
        case .routedRead:
            routedFrame(lead, exp, frame)
        case .hidden:
            if exp.seq == clusterOrderLockSeq, frame.type == BackendMessage.Kind.errorResponse.rawValue,
               case let .errorResponse(fields)? = try? BackendMessage(frame: frame) {
                clusterOrderLockError = fields
            }
            if exp.seq == clusterOrderLockSeq, frame.type == BackendMessage.Kind.dataRow.rawValue,
               case let .dataRow(columns)? = try? BackendMessage(frame: frame), columns.count == 2,
               let taken = columns[0].flatMap({ Int64(String(buffer: $0)) }) {
                clusterOrderMarks = (taken, columns[1].flatMap { Int64(String(buffer: $0)) })
            }
            if exp.seq == statementTimeoutSeq, frame.type == BackendMessage.Kind.dataRow.rawValue { noteStatementTimeout(frame) }
            if exp.seq == snapshotIsolationSeq, frame.type == BackendMessage.Kind.dataRow.rawValue,
               case let .dataRow(columns)? = try? BackendMessage(frame: frame), columns.count == 1 {
                readCommittedKnown = columns[0].map { String(buffer: $0) } == "read committed"
                snapshotIsolationSeq = nil
            }
        }
        if frame.type == BackendMessage.Kind.readyForQuery.rawValue { finishCycle(lead, exp, frame) }
    }

    private func followerFrame(_ index: Int, _ frame: PostgresFrame) {
        guard let exp = backends[index].owed.head else {
            // The answers to a part the client ended with Flush, sent ahead of its cycle (which a
            // follower gets only once the lead has answered it): they count with that cycle, as on the
            // lead, whichever came first there. (Asynchronous messages: the digest skips them.)
            if !backends[index].skipsPartAnswers { backends[index].digest.add(frame, hashRows: configuration.replication.compareRows) }
            return
        }
        switch exp.kind {
        case .client:
            backends[index].digest.add(frame, hashRows: hashesRows(exp.seq))
        case .prepare, .finish:
            recordCommitMessage(index, frame)
        case .internalQuery:
            recordInternalMessage(index, frame)
        case .catalog, .sessionSettings:
            break
        case .routedRead:
            routedFrame(index, exp, frame)
        case .hidden:
            break
        }
        if frame.type == BackendMessage.Kind.readyForQuery.rawValue { finishCycle(index, exp, frame) }
    }

    private func finishCycle(_ index: Int, _ exp: Expectation, _ frame: PostgresFrame) {
        backends[index].owed.finishHead(at: .now())
        if !deferredCancels.isEmpty { settleDeferredCancels() }
        if exp.ordered { shared.leadHandover.finished(on: backends[index].backend.id) }
        let status = frame.bytes.getInteger(at: frame.bytes.readerIndex + 5, as: UInt8.self).flatMap(BackendMessage.TransactionStatus.init) ?? .idle
        backends[index].status = status
        if index == lead, exp.kind != .routedRead, exp.kind != .catalog, exp.kind != .sessionSettings { leadAnswered(exp.seq, sentAt: exp.sentAt) }
        if index == lead {
            // Parses and Closes answered from here on are the next cycle's.
            leadParses = (-1, 0)
            leadCloses = (-1, 0)
            if !pendingParses.isEmpty { parsesSettled(upTo: exp.seq) }
        }
        switch exp.kind {
        case .client:
            var compared = liveCount > 1
            if index == lead {
                let fresh = delivery.owes(exp.seq)
                if fresh { cycleDelivered(exp.seq, status: status) }
                if copyInProgress {
                    copyInProgress = false
                    epochTargetsDirty = true
                    extendedCopySyncOwed = false
                    extendedCopyEnded = false
                }
                // A timing outcome of the lead (cancel, timeout, deadlock, serialization failure) is the
                // session's: followers not sent the statement yet get that outcome instead of it.
                let digest = backends[index].digest
                var timingStatus: UInt8?
                if compared, digest.timingSQLState != nil,
                   leadFirst.groups.first(where: { $0.seq == exp.seq })?.mixesTransactionControl == false {
                    timingStatus = digest.statusAfter
                    compared = false
                    logger.info("the lead ended a statement with \(digest.timingSQLState ?? ""): the other backends follow its outcome")
                }
                markLeadDone(exp.seq, took: NIODeadline.now() - exp.sentAt, timingStatus: timingStatus)
                if answerWhenAll.leadFinished(exp.seq) { replayHeldFrames() }
                if ddlSeqs.remove(exp.seq) != nil {
                    shared.sequenceOrdering.invalidate(database)
                    // Loaded again at once when the lead is idle outside a block, else before the
                    // session's next group (`holdForCatalog`; on the lead, which sees this session's own
                    // DDL), so the statements that follow are judged by the new definitions.
                    loadSequenceCatalogIfNeeded()
                }
                if exp.holdReady && fresh { autocommitStatementDone(status: status) }
            }
            noteOrderOutcome(exp.seq, on: index)
            if exp.seq == orderSeq { orderFinished(on: index) }
            if OrderTrace.enabled { trace("D", "\(exp.seq) \(backends[index].backend.id)") }
            epochCycleFinished(exp.seq, on: index)
            if compared {
                comparison.finished(index, seq: exp.seq, digest: backends[index].digest)
            }
            backends[index].digest = OutcomeDigest()
            compareCompleted()
        case .prepare:
            commitPrepareFinished(index, status: status)
        case .finish:
            commitFinishFinished(index)
        case .internalQuery:
            internalQueryFinished(index)
        case .catalog:
            catalogLoaded(leadStatus: status)
        case .sessionSettings:
            sessionSettingsAnswered()
        case .routedRead:
            if delivery.owes(exp.seq) { cycleDelivered(exp.seq, status: status) }
            routedRead = nil
            if index == lead, status == .failed, liveCount > 1 {
                // The read failed inside a transaction block on the lead alone: the others' blocks are aborted too.
                for i in backends.indices where i != lead && backends[i].isLive {
                    sendOwn(Self.followLeadAbortSQL, to: i)
                }
                flushBackends()
            }
        case .hidden:
            epochCycleFinished(exp.seq, on: index)
            if index == lead, exp.seq == clusterOrderLockSeq { clusterOrderTaken(leadStatus: status) }
            if exp.seq == beginAheadSeq { beginAheadAnswered(index, status: status) }
        }
        if !clusterUnlocksOwed.isEmpty || !clusterUnlockSeqs.isEmpty { retryClusterUnlocks(index, cycle: exp.seq, status: status) }
        if statementTimeoutDue { askStatementTimeoutIfDue() }
        releaseHeldReady()
        finishDrainIfDone()
    }

    /// The client has the whole reply of cycle `seq` (or everything it will get of it).
    func cycleDelivered(_ seq: Int, status: BackendMessage.TransactionStatus) {
        delivery.delivered(seq)
        lastStatus = status
        if status == .idle {
            if commit == nil && !wrapPending { endDoom() }
            tracker.transactionEnded()
            // Not sent by the vote's commit: the transaction rolled back (or ended otherwise).
            heldNotifications = []
            heldNotificationsDue = false
            transactionUsedSavepoint = false
            wroteInTransaction = false
            transactionTimestamp = nil
            transactionStamped = false
            transactionPreventsPrepare = false
            closeCatalogChange(afterCycle: seq)
            catalogSnapshotOld = false
            catalogAbort = nil
            if ddlInTransaction {
                // What the reload after the DDL saw inside the transaction may have been rolled back
                // (`ALTER FUNCTION f() STABLE; ROLLBACK` left f a reader): loaded again.
                ddlInTransaction = false
                shared.sequenceOrdering.invalidate(database)
            }
        }
    }

    /// Forwards one of the lead's messages, with the client's own process id in notifications it caused.
    private func forwardToClient(_ frame: PostgresFrame) {
        switch frame.type {
        case BackendMessage.Kind.notificationResponse.rawValue:
            if case let .notificationResponse(pid, channel, payload)? = try? BackendMessage(frame: frame),
               pid == backends[lead].login.processID {
                writeClient(.notificationResponse(processID: virtualProcessID, channel: channel, payload: payload))
                return
            }
        case BackendMessage.Kind.errorResponse.rawValue:
            guard case var .errorResponse(fields)? = try? BackendMessage(frame: frame) else { break }
            if let severity = fields.severity, severity == "FATAL" || severity == "PANIC" {
                fatalForwarded = true
            }
            if fields.sqlState == "0A000", fields.message?.hasPrefix("pgchorus refuses") == true {
                // pgchorus' own refusal is raised by a DO block: its "PL/pgSQL function … at RAISE" context
                // and position say nothing about the client's statement.
                fields.fields.removeAll { $0.code == UInt8(ascii: "W") || $0.code == UInt8(ascii: "P") || $0.code == UInt8(ascii: "q") }
                writeClient(.errorResponse(fields))
                return
            }
        default:
            break
        }
        writeClientBytes(frame.bytes)
    }

    // MARK: comparison and failures

    /// Compares the finished cycles of all live backends, oldest first (`CycleComparison`), and carries
    /// out what `OutcomeJudge` decides: backends out of step are failed, a follower whose transaction
    /// block is healthy where the lead's is aborted gets it aborted too.
    func compareCompleted() {
        // (Asked at each backend's finish of each cycle: until every live backend has finished one there
        // is nothing to compare, told so without building the list of the live backends; with one live
        // backend nothing is ever compared, and `next` only lets its finished cycles go.)
        guard liveCount > 1 else {
            _ = comparison.next(live: [], lead: lead, uncompared: { _ in false })
            return
        }
        if backends.indices.contains(where: { backends[$0].isLive && !comparison.hasFinished($0) }) { return }
        for _ in 0..<10_000 {
            let live = backends.indices.filter { backends[$0].isLive }
            guard let judged = comparison.next(live: live, lead: lead, uncompared: { isUncompared($0) }) else { return }
            let verdict = judged.verdict
            for i in verdict.abortTransaction where backends[i].isLive {
                sendOwn(Self.followLeadAbortSQL, to: i)
                flushBackend(i)
            }
            for i in verdict.leaveToVote {
                logger.info("backend \(backends[i].backend.description) ended a statement with \(judged.entries.first { $0.index == i }?.digest.timingSQLState ?? "") where the lead did not: the commit vote will judge it (a serialization failure or deadlock rolls the transaction back everywhere)")
            }
            for f in verdict.fail { failBackend(f.index, reason: f.reason) }
        }
    }

    /// Aborts a follower's transaction block the way the lead's was (the SQLSTATE is the cancel's).
    static let followLeadAbortSQL = "DO $pgchorus$ BEGIN RAISE EXCEPTION USING ERRCODE = '57014', MESSAGE = 'pgchorus: the lead backend ended this statement with a timing outcome; this transaction follows it'; END $pgchorus$"

    /// Sends messages of pgchorus' own to one backend, answered as `kind` in cycle `seq` (a cycle of
    /// their own when nil); `.hidden` replies are dropped.
    func sendOwn(_ bytes: ByteBuffer, to index: Int, kind: CycleKind = .hidden, seq: Int? = nil) {
        let cycle = seq ?? nextSeq
        if seq == nil { nextSeq += 1 }
        backends[index].owed.add(Expectation(seq: cycle, kind: kind))
        if OrderTrace.enabled, kind == .finish { trace("CP", "\(commit?.gid ?? "-") \(backends[index].backend.id)@\(backends[index].login.processID) \(traceText(of: bytes))") }
        backends[index].write(bytes)
    }

    /// The SQL of a client group for the order trace: its first Query or Parse, else the named
    /// statement its first Bind runs (`[name] sql`, as its Parse was seen), else `-`. Every named
    /// Parse of the group is kept (only while tracing), for the Binds of later groups.
    func traceText(of bytes: ByteBuffer) -> String {
        var b = bytes
        var decoder = PostgresFrameDecoder()
        var first: String?
        for _ in 0..<100_000 {
            guard let frame = try? decoder.decode(buffer: &b) else { break }
            switch try? FrontendMessage(frame: frame) {
            case let .query(q)?: first = first ?? q
            case let .parse(p)?:
                if !p.name.isEmpty { traceTexts[p.name] = p.query }
                first = first ?? p.query
            case let .bind(bind)?: first = first ?? "[\(bind.statement)] " + (traceTexts[bind.statement] ?? "?")
            default: break
            }
        }
        return first.map(OrderTrace.clip) ?? "-"
    }

    /// One event of this session in the order trace (`OrderTrace`).
    func trace(_ what: String, _ fields: String) {
        OrderTrace.note(configuration.node.id, what, "s\(UInt(bitPattern: ObjectIdentifier(self).hashValue)) \(fields)")
    }

    /// Sends one statement of pgchorus' own to one backend (see `sendOwn(_:to:kind:seq:)`).
    func sendOwn(_ sql: String, to index: Int, kind: CycleKind = .hidden, seq: Int? = nil) {
        var b = ByteBuffer()
        FrontendMessage.query(sql).encode(into: &b)
        sendOwn(b, to: index, kind: kind, seq: seq)
    }

    /// The lead ended group `g` with a timing outcome: each follower gets, instead of the statements,
    /// what makes its state the lead's — the named statements the group prepared before its first
    /// Execute, then an aborted transaction block (if the lead's is) or the end of the implicit one.
    func releaseLeadTimingOutcome(_ g: PendingGroup, seq: Int, leadStatus: UInt8) {
        var named = ByteBuffer()
        var bytes = g.bytes
        var frames = PostgresFrameDecoder()
        // (The group's bytes were decoded once already: they split again without error.)
        while let frame = try? frames.decode(buffer: &bytes), frame.type != FrontendMessage.Kind.execute.rawValue {
            if frame.type == FrontendMessage.Kind.parse.rawValue || frame.type == FrontendMessage.Kind.close.rawValue {
                named.writeImmutableBuffer(frame.bytes)
            }
        }
        // The lead's error rolled back the implicit transaction this group's parts ended by Flush ran in
        // on it; the followers ran those parts already: an Execute of a portal that does not exist
        // fails there too, and the Sync rolls their implicit transaction back (it used to commit it).
        if followersHavePartAhead, leadStatus == OutcomeJudge.idle, !g.startedInTransaction {
            FrontendMessage.execute(portal: "pgchorus_roll_back_parts", maxRows: 0).encode(into: &named)
        }
        followersHavePartAhead = false
        if named.readableBytes > 0 { FrontendMessage.sync.encode(into: &named) }
        for i in backends.indices where i != lead && backends[i].isLive {
            // The answers it gave to a part of this group ended by Flush count with no cycle now
            // (those given so far, unless a cycle before this one is still being answered, and those to come).
            if backends[i].owed.isEmpty { backends[i].digest = OutcomeDigest() }
            backends[i].skipsPartAnswers = true
            if named.readableBytes > 0 { sendOwn(named, to: i) }
            if leadStatus == OutcomeJudge.failedTransaction {
                sendOwn(Self.followLeadAbortSQL, to: i)
            } else if leadStatus == OutcomeJudge.idle && g.startedInTransaction {
                sendOwn("ROLLBACK", to: i)
            }
            if seq == orderSeq { orderFinished(on: i) }
            if OrderTrace.enabled { trace("X", "\(seq) \(backends[i].backend.id)") }
            epochCycleFinished(seq, on: i)
        }
        comparison.forget(seq)
    }

    /// Sends the lead's ReadyForQuery of an autocommit write once no live backend still owes that cycle.
    func releaseHeldReady() {
        guard phase == .relaying, let held = answerWhenAll.releasable(stillOwed: { seq in
            leadFirst.holds(seq: seq) || backends.contains { $0.isLive && $0.owed.owes(seq) }
        }) else { return }
        writeClientBytes(held.frame.bytes)
        flushClient()
        answeredAll(held.seq)
    }

    /// The answer of an autocommit write outside the vote has gone to the client (held until every
    /// backend had it, or sent at once with one backend left): the client's next messages go on.
    func answeredAll(_ seq: Int) {
        guard answerWhenAll.answered(seq) else { return }
        replayHeldFrames()
    }

    // MARK: deadlines (decided by `FollowerDeadlines`)

    /// The lead finished cycle `seq`: followers already sent it (the vote, COPY data, what is not
    /// lead-first) must finish it within the follower timeout from now.
    func leadAnswered(_ seq: Int, sentAt: NIODeadline) {
        let allowance = deadlines.allowance(leadTook: NIODeadline.now() - sentAt)
        for i in backends.indices where i != lead && backends[i].isLive {
            backends[i].owed.leadAnswered(seq, allowance: allowance)
        }
        armFollowerDeadline()
    }

    /// Sets the timer for the earliest follower deadline (or lead probe) still pending.
    func armFollowerDeadline() {
        // With one live backend there is nobody to fail (and a past deadline must not re-arm at once).
        guard let context, phase == .relaying || phase == .draining,
              var earliest = deadlines.nextCheck(backends, lead: lead, probedAt: leadProbedAt) else { return }
        // A follower the node held back has its time from then (`followerDeadlinePassed`): not sooner.
        if let held = deadlineHeldBackUntil { if held > .now() { earliest = max(earliest, held) } else { deadlineHeldBackUntil = nil } }
        if let t = deadlineTimer, t.at <= earliest { return }
        scheduleDeadlineCheck(at: earliest, on: context.eventLoop)
    }

    /// Runs `followerDeadlinePassed` at `deadline` (instead of any check set before).
    private func scheduleDeadlineCheck(at deadline: NIODeadline, on loop: EventLoop) {
        deadlineTimer?.task.cancel()
        let bound = NIOLoopBound(self, eventLoop: loop)
        deadlineTimer = (deadline, loop.scheduleTask(deadline: deadline) { bound.value.followerDeadlinePassed() })
    }

    /// Fails every follower that has not finished its oldest cycle in time (a frozen or hung backend
    /// costs the cluster at most the follower timeout, and a vote decides without it); asks for a
    /// silent lead to be probed.
    func followerDeadlinePassed() {
        let due = deadlineTimer?.at
        deadlineTimer = nil
        guard phase == .relaying || phase == .draining else { return }
        let now = NIODeadline.now()
        if let due, let again = deadlines.recheck(due: due, now: now, deferringSince: deadlineDeferredSince), let context {
            // The loop was busy past the check's time: the replies that came meanwhile are read first.
            if deadlineDeferredSince == nil { deadlineDeferredSince = now }
            scheduleDeadlineCheck(at: again, on: context.eventLoop)
            return
        }
        deadlineDeferredSince = nil
        let epochs = shared.epochs
        let check = deadlines.check(backends, lead: lead, probedAt: leadProbedAt, now: now) { epochs.heldBack(self.backends[$0].backend.id) }
        for i in check.fail where backends[i].isLive {
            failBackend(i, reason: "did not answer within replication.follower_timeout (\(deadlines.timeoutSeconds) s) after the lead backend had")
        }
        if let again = check.recheckAt, let context {
            deadlineHeldBackUntil = again
            scheduleDeadlineCheck(at: again, on: context.eventLoop)
        }
        if let waited = check.probeLead, backends.indices.contains(lead), backends[lead].isLive {
            // The lead has been silent for long: the node checks whether it is alive (`BackendProber`).
            leadProbedAt = now
            shared.prober.suspect(backends[lead].backend, waited: Double(waited.nanoseconds) / 1e9)
        }
        flushBackends()
        flushClient()
        armFollowerDeadline()
    }

    /// Drops the backends the cluster took out of service since the session last looked (a health
    /// check or a peer failed one, an admin detached one): between transactions, and at once when the
    /// cluster tells (`ClusterViewBoard`), so a session waiting on a frozen backend goes on without it.
    /// A backend brought online joins new sessions only: an open session has state (prepared
    /// statements, settings) it would lack.
    func adoptClusterView() {
        guard phase == .relaying || phase == .draining else { return }
        let generation = shared.registry.viewGeneration
        guard generation != seenViewGeneration else { return }
        seenViewGeneration = generation
        let online = Set(shared.registry.online().map(\.id))
        let gone = backends.indices.filter { backends[$0].isLive && !online.contains(backends[$0].backend.id) }
        guard !gone.isEmpty else { return }
        if let ending = BackendLoss.clusterTookOut(gone: gone.count, live: liveCount) {
            fatal(ending)
            return
        }
        for i in gone {
            failBackend(i, reason: "taken out of service by the cluster (\(shared.registry.entry(backends[i].backend.id)?.reason ?? "status changed"))")
        }
    }

    /// The cluster took a backend out of service: drop it from this session now, whatever phase.
    func clusterViewChanged() {
        adoptClusterView()
        flushBackends()
        flushClient()
    }

    /// The error that ends a session of a node without quorum (`BackendRegistry.setFence`): it may
    /// neither write nor take a backend out of service.
    func fencedError(_ fenced: String, detail: String) -> ErrorFields {
        ErrorFields(severity: "FATAL", sqlState: "57P03", message: "pgchorus \(fenced): \(detail)",
                    hint: "A node that cannot hear a majority of the cluster takes no writes and fails no backend; connect through another node (the virtual IP moves to one that has quorum).")
    }

    /// Takes a backend out of this session and out of service.
    func failBackend(_ index: Int, reason: String) {
        guard backends[index].phase != .closed else { return }
        if let fenced = shared.registry.fencedReason() {
            // It cannot be failed cluster-wide, and the session must not go on without it.
            logger.error("backend \(backends[index].backend.description) could not be failed (\(fenced)): \(reason); the session ends")
            fatal(fencedError(fenced, detail: "backend \(backends[index].backend.id) cannot be taken out of service (\(reason)), so this session ends"))
            return
        }
        shared.failBackendClusterWide(backends[index].backend.id, reason: reason)
        logger.error("backend \(backends[index].backend.description) dropped from the session: \(reason)")
        ProxyMetrics.backendsDropped.increment()
        backends[index].phase = .closed
        dropExpectations(index)
        comparison.backendGone(index)
        backends[index].channel?.close(promise: nil)
        if index == lead { promoteLead() }
        if clusterOrderLockSeq != nil, clusterOrderOn == index {
            // The lock went with that lead: the statement goes without it, as when a lead that holds it fails.
            clusterOrderOn = nil
            clusterOrderTaken()
        }
        unwritableSince[index] = nil
        readClientWhileBackendsTakeMore()
        // The failed lead will release nothing more (closed, or the session waits for a new lead).
        noteLeadOrdering()
        if let r = routedRead, r.target == index, phase == .relaying {
            // The backend serving a read failed: another one answers it, unless part of the reply was out.
            if let ending = BackendLoss.routedReadLost(deliveringBytes: delivery.deliveringBytes) {
                fatal(ending)
            } else {
                route(r.bytes, to: lead, seq: r.seq)
                flushBackend(lead)
            }
        }
        commitParticipantLost(index)
        orderFinished(on: index)
        epochBackendLost(index)
        releaseHeldReady()
        finishDrainIfDone()
    }

    /// The lead is gone: the next live backend becomes the lead and, once its handover allows,
    /// gets every cycle not yet released, unless the client already saw part of the old lead's reply.
    private func promoteLead() {
        guard phase == .relaying else { return }
        let next: Int
        switch BackendLoss.promotion(nextLive: backends.indices.first { backends[$0].isLive }, deliveringBytes: delivery.deliveringBytes,
                                     fatalForwarded: fatalForwarded) {
        case let .endSession(error?):
            fatal(error)
            return
        case .endSession(nil):
            close()
            return
        case let .promote(index):
            next = index
        }
        let old = backends[lead].backend
        if let error = leadLocksLostError(lead: old.id, becauseOf: "failed") {
            logger.warning("session ends: its lead backend \(old.description) failed while the session held locks that live on the lead alone")
            fatal(error)
            return
        }
        lead = next
        catalogLoading = false
        catalogCancelled = false
        catalogTimedOut = false
        endCatalogWait()
        delivery.leadReplaced()
        logger.warning("lead backend of the session changed from \(old.description) to \(backends[lead].backend.description)")
        if !clientWritable { applyClientBackpressure() }
        leadFirst.leadReplaced()
        // The new lead gets every cycle the old one had not finished from its start: its ParseCompletes count from the first.
        leadParses = (-1, 0)
        leadCloses = (-1, 0)
        if takeInSettingsSeq != nil {
            // The old lead will not answer the settings question of a take-in.
            takeInSettingsFailed = true
            sessionSettingsAnswered()
        }
        awaitHandover(after: old.id)
        decideBeginAhead()
    }

    /// The error that ends a session whose lead `lead` stops leading it (`becauseOf`: "failed", or
    /// hands the lead to a backend taken in) while it holds locks that live there alone
    /// (`leadLocks`): another session could take them on the next lead while this client goes on
    /// believing it holds them (two workers on one job, two leaders elected). As when a PostgreSQL
    /// server crashes, the connection ends; the backends roll back the open transaction. Nil when
    /// the session holds none.
    func leadLocksLostError(lead: String, becauseOf what: String) -> ErrorFields? {
        let held: String
        if leadLocks.sessionLocks {
            held = "a session-level advisory lock (pg_advisory_lock, pg_try_advisory_lock)"
        } else if leadLocks.transactionLocks, lastStatus != .idle, commit == nil {
            // (Once its COMMIT is being voted, its writes by the keys it took hold their rows on every
            // backend: the vote decides, as for any lead lost then.)
            held = "locks of its open transaction (rows taken FOR UPDATE SKIP LOCKED, advisory locks)"
        } else {
            return nil
        }
        return ErrorFields(severity: "FATAL", sqlState: "08006",
                           message: "pgchorus ended this session: its lead backend \(lead) \(what), and this session held \(held) there, which another session may now take",
                           hint: "Reconnect and take the locks again; the open transaction, if any, was rolled back on every backend.")
    }

    func backendReadComplete(_ index: Int) {
        // A backend that sends is not silent: its deadline (and the lead's probe) counts from now. A
        // follower streaming a large answer more slowly than the lead (pgchorus digests its rows) is
        // not failed for it; a frozen one sends nothing.
        if backends.indices.contains(index), backends[index].phase == .ready { backends[index].owed.progress(at: .now()) }
        flushBackends()
        flushClient()
    }

    /// Called from inside a write to `backends[index]` (NIO reports writability synchronously): it
    /// must not touch `backends`.
    func backendWritabilityChanged(_ index: Int, _ writable: Bool) {
        if writable {
            unwritableSince[index] = nil
        } else if unwritableSince[index] == nil, let context {
            // A follower that takes nothing for follower_timeout (frozen in the middle of a COPY the
            // client streams, which the lead answers only at its end) is failed then, so the client is
            // read again; a lead that stops is the prober's (`FollowerDeadlines`).
            unwritableSince[index] = .now()
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: deadlines.followerTimeout) { bound.value.unwritableTooLong(index) }
        }
        readClientWhileBackendsTakeMore()
    }

    /// Fails follower `index` if its connection has been full for the whole follower timeout (a check
    /// armed for an earlier time it was full finds it full only since later, and does nothing).
    func unwritableTooLong(_ index: Int) {
        guard let since = unwritableSince[index], NIODeadline.now() - since >= deadlines.followerTimeout,
              phase == .relaying || phase == .draining, backends.indices.contains(index), backends[index].isLive, index != lead else { return }
        failBackend(index, reason: "took no data for replication.follower_timeout (\(deadlines.timeoutSeconds) s): its connection stayed full")
        flushBackends()
        flushClient()
    }

    /// Backpressure: the client is read only while every live backend can take more. (One backend's
    /// writability alone must not decide: another may still be full, and a failed one never says
    /// again that it is writable.)
    func readClientWhileBackendsTakeMore() {
        let read = unwritableSince.isEmpty
        guard read != clientReading else { return }
        clientReading = read
        context?.channel.setOption(ChannelOptions.autoRead, value: read).whenFailure { _ in }
    }

    func backendClosed(_ index: Int) {
        guard index < backends.count, backends[index].phase != .closed, phase != .closed else { return }
        if takingIn?.contains(index) == true {
            takeInEnded(index, .unreachable("the connection closed while logging in"))
            return
        }
        if phase == .connectingBackends {
            loginEnded(index, .unreachable("the connection closed while logging in"))
            return
        }
        backendLost(index, cause: "connection lost")
    }

    func backendFailed(_ index: Int, _ error: Error) {
        guard phase != .closed, index < backends.count, backends[index].phase != .closed else { return }
        if takingIn?.contains(index) == true {
            takeInEnded(index, .unreachable("\(error)"))
            return
        }
        if phase == .connectingBackends {
            loginEnded(index, LoginRound.outcome(of: error, negotiatingTLS: backends[index].phase == .negotiatingTLS))
            return
        }
        if let wire = error as? WireError {
            logger.error("invalid message from backend \(backends[index].backend.description): \(wire)")
            backendLost(index, cause: "invalid message: \(wire)")
        } else {
            backendLost(index, cause: "connection error: \(error)")
        }
    }

    /// Whether the session is idle as its client sees it, for a session timeout of the client's that
    /// backend `index` ended it with: nothing of the client's held, waiting, in a vote or unanswered,
    /// and that backend had finished all it was sent. Other backends may still be finishing cycles
    /// whose answers the client already has (a read that every backend runs: on a loaded host a
    /// follower may answer it later than the client's `idle_in_transaction_session_timeout`; until
    /// 2026-12-07 the lead whose timer fired meanwhile was failed, in a full test run).
    func idleForSessionTimeout(lost index: Int) -> Bool {
        guard waitingGroup == nil, heldFrames.isEmpty, !catalogWait, backends[index].owed.isEmpty,
              nothingUnderWay(butTheEpochWait: false, answeredAside: true) else { return false }
        return true
    }

    /// The one path for losing a backend once the session is relaying, whatever the cause (a clean
    /// close, a FATAL, a reset, a read/write/TLS error): `BackendLoss` decides.
    func backendLost(_ index: Int, cause: String) {
        let situation = BackendLoss.Situation(isLead: index == lead, othersLive: liveCount - (backends[index].isLive ? 1 : 0),
                                              draining: phase == .draining, fatalForwarded: fatalForwarded,
                                              lastWords: backends[index].lastWords,
                                              checkingTermination: terminationCheck != nil && terminationCheckIndex == index,
                                              checkingAnother: terminationCheck != nil && terminationCheckIndex != index,
                                              sessionIdle: idleForSessionTimeout(lost: index))
        switch BackendLoss.lost(situation, name: backends[index].backend.description, cause: cause) {
        case .awaitTerminationCheck:
            return
        case let .endSession(error):
            backends[index].phase = .closed
            dropExpectations(index)
            if let error, BackendLoss.sessionTimeoutStates.contains(error.sqlState ?? "") {
                logger.info("backend \(backends[index].backend.description) ended the idle session with the client's own timeout (\(error.sqlState ?? "") \(error.message ?? "")): the session ends, no backend is failed")
                fatal(error)
            } else if let error {
                logger.warning("backend \(backends[index].backend.description) lost: \(cause)")
                fatal(error)
            } else {
                close()
                finishSession()
            }
        case .checkServing:
            guard let context else {
                failBackend(index, reason: BackendLoss.reason(lastWords: backends[index].lastWords, cause: cause))
                return
            }
            terminationCheck = cause
            terminationCheckIndex = index
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            shared.prober.checkServing(backends[index].backend) { serving in
                loop.execute { bound.value.terminationChecked(index, serving: serving) }
            }
        case let .fail(reason):
            failBackend(index, reason: reason)
        }
    }

    /// The answer for a backend that ended this session with 57P01 (see `BackendLoss.Step.checkServing`).
    func terminationChecked(_ index: Int, serving: Bool) {
        guard let cause = terminationCheck, terminationCheckIndex == index else { return }
        terminationCheck = nil
        terminationCheckIndex = nil
        guard phase == .relaying || phase == .draining else { return }
        switch BackendLoss.terminationChecked(serving: serving, lastWords: backends[index].lastWords, cause: cause) {
        case let .endSession(error):
            logger.info("backend \(backends[index].backend.description)\(index == lead ? " (the lead)" : "") ended this session (pg_terminate_backend) and still serves: the session ends, no backend is failed")
            backends[index].phase = .closed
            dropExpectations(index)
            fatalForwarded = true
            if let error { fatal(error) } else { close() }
        case let .fail(reason):
            failBackend(index, reason: reason)
            replayHeldFrames()
        case .awaitTerminationCheck, .checkServing:
            break
        }
    }
}
