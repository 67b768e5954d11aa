import Logging
import NIOCore
import NIOPosix
import NIOSSL
import State
import Wire

/// One authenticated client connection (start-up and authentication are `ClientStartupHandler`'s,
/// which hands the channel over): the backend logins, then the relay of messages in both directions.
///
/// Everything here runs on the client channel's event loop; the backend channels are created on
/// the same loop, so no state is shared across threads.
final class ClientSessionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Phase {
        case connectingBackends
        case relaying
        /// The client has gone; the other backends finish what they were sent so their outcomes
        /// are still compared (a last autocommit statement that diverged must not go unnoticed).
        case draining
        case closed
    }

    static let drainTimeout: TimeAmount = .seconds(30)

    static let handoverTimeout: TimeAmount = .seconds(30)

    let shared: ProxyContext
    /// The node's configuration when this session started (a reload applies to new sessions).
    let configuration: Configuration
    var logger: Logger
    var phase = Phase.connectingBackends
    var context: ChannelHandlerContext?
    /// Who the client is, where it wants to go, what the backend logins answer with.
    let start: SessionStart
    var startup: StartupMessage { start.startup }
    var backends: [BackendSession] = []
    var virtualProcessID: Int32 = 0
    var virtualSecretKey: [UInt8] = []
    var counted = false
    var fatalForwarded = false
    var clientNeedsFlush = false
    /// The lead's reply to the client's cycle is written but for its ReadyForQuery, which waits for the
    /// vote (an autocommit write) or for every backend (a write outside the vote), or a Query cut at
    /// its COMMITs runs (its parts' replies go with its last ReadyForQuery): the reply is not
    /// flushed before it (`flushClient`). PostgreSQL sends a cycle's replies with its ReadyForQuery
    /// (or when its 8 KB buffer fills); a client that reads a reply's results until the next one
    /// blocks on the missing ReadyForQuery otherwise — pgbench does, and with it every other session
    /// of its thread, some holding the locks the vote waits for (followers failed for a missed
    /// deadline, 2026-12-06).
    var clientReadyWithheld = false
    /// Bytes written to the client since its last flush.
    var clientUnflushed = 0
    /// The client's channel takes more output (see `applyClientBackpressure`).
    var clientWritable = true
    /// The client's channel is read (see `readClientWhileBackendsTakeMore`).
    var clientReading = true
    /// Live backends whose connection takes no more writes now (NIO's writability), and since when:
    /// while there is one, the client is not read. Kept apart from `backends`: NIO reports it from
    /// inside a write to one.
    var unwritableSince: [Int: NIODeadline] = [:]
    /// Small messages for the client, gathered until the next flush (see `writeClientBytes`).
    var clientOutput = ByteBuffer()
    static let gatherLimit = 8192
    /// Where pgchorus' own messages for the client are encoded before they are gathered (`writeClient`).
    var clientScratch = ByteBuffer()
    /// The last gathered buffer handed to the channel inside a transaction: taken up again for the next
    /// batch (its storage reused once the channel has written it out, as it has after a flush; a new
    /// one otherwise). Not kept once the client is outside a transaction, so an idle session holds none.
    var spareClientOutput: ByteBuffer?
    /// Frames a client sent before its session was ready (a pipelining client may do this).
    var earlyFrames: [PostgresFrame] = []
    var startupTimer: Scheduled<Void>?
    var database: String { start.database }
    /// How the logins to the backends ended (see `LoginRound`).
    var loginRound = LoginRound(backends: 0)

    // Replication state (see ClientSessionHandler+Relay.swift).
    var lead = 0
    var nextSeq = 1
    /// How far the client's view of the replies has got (see `ClientDelivery`).
    var delivery = ClientDelivery()
    /// Cycles sent to the lead but not yet to the other backends (see `LeadFirstRelease`).
    var leadFirst = LeadFirstRelease()
    /// Client messages since the last group boundary.
    var currentGroup: [PostgresFrame] = []
    var currentGroupBytes = 0
    var lastStatus = BackendMessage.TransactionStatus.idle
    var wroteInTransaction = false
    var transactionTimestamp: String?
    /// The current transaction's stamp went to the backends (`DeterministicValues.stampSQL`), and how
    /// many transactions this session has stamped.
    var transactionStamped = false
    /// The open transaction has taken its snapshot on every backend: a statement that takes one has
    /// gone to all of them (`routeTakingSnapshotEverywhere`). Unset by every group sent from idle.
    var snapshotEverywhere = false
    /// The session's transactions are READ COMMITTED, as its lead answered when the snapshot was
    /// taken everywhere in a transaction that set no isolation level (`snapshotIsolationSeq`);
    /// forgotten at any statement that may change it (`StatementAnalysis.mentionsIsolation`). Each
    /// statement of such a transaction takes a snapshot of its own: none need be taken everywhere.
    var readCommittedKnown = false
    /// The open transaction ran a statement that may change its isolation level.
    var transactionMentionsIsolation = false
    /// The hidden cycle that took the snapshot everywhere and asks the lead the transaction's isolation level.
    var snapshotIsolationSeq: Int?
    /// Locks that live on the lead alone and that the session may hold: a session-level advisory lock
    /// (`sessionLocks`, until `pg_advisory_unlock_all()` or `DISCARD ALL`), or, in the open transaction,
    /// rows taken `FOR UPDATE … SKIP LOCKED` and transaction-level advisory locks (`transactionLocks`,
    /// unset by every group sent from idle). The session cannot go on without the backend that holds
    /// them (`leadLocksLostError`).
    var leadLocks = (sessionLocks: false, transactionLocks: false)
    /// What `leadLocks.sessionLocks` was before a bare `SELECT pg_try_advisory_lock(…)` sent to the
    /// lead alone: its answer `f` (no lock taken) puts it back (a leader election's poll that lost).
    var sessionLocksBeforeTry: Bool?
    /// The transaction ran something PostgreSQL cannot PREPARE after (NOTIFY, LISTEN …): it commits without the vote.
    var transactionPreventsPrepare = false
    /// Notifications held until the vote commits (`holdNotification`).
    var heldNotifications: [String] = []
    /// `pgchorus.hold_notifications` on this session's backends: whether routines' notifications are
    /// held (see ClientSessionHandler+Notifications.swift); nil when unknown (after RESET ALL).
    var notificationHold: Bool? = false
    /// The transaction used a savepoint: nothing more is held (a rollback to it must undo it).
    var transactionUsedSavepoint = false
    var stampedTransactions = 0
    var tracker = StatementTracker(refuseVolatile: true)
    /// Named statements' SQL, kept only while the order trace is on (`traceText(of:)`).
    var traceTexts: [String: String] = [:]
    /// The commit vote running for the client's COMMIT (see `CommitRound`).
    var commit: CommitRound?
    /// Client messages that arrived while a commit vote was running.
    var heldFrames: [PostgresFrame] = []
    var votedCommitAvailable = true
    /// `votedCommitAvailable` is off only because the session has temporary tables (DISCARD turns it on again).
    var votedCommitLostToTemporaryTables = false
    /// pgchorus' schema was found missing in this database (dropped and created again under the same
    /// name): it is made again before the session's next group.
    var schemaCheckDue = false

    // Sequence ordering (see ClientSessionHandler+Order.swift).
    /// The turn held for the statement in `orderSeq`, and the one asked for by `waitingGroup`.
    var orderTicket: Int?
    var waitingTicket: Int?
    /// The cycle running under the order, and the backends that have still to finish it.
    var orderSeq: Int?
    var orderPending: Set<Int> = []
    /// The backend on which this session holds the cluster-wide sequence lock (see `takeClusterOrder`).
    var clusterOrderOn: Int?
    /// The cycle of the cluster-wide sequence lock the statement in `waitingGroup` waits for.
    var clusterOrderLockSeq: Int?
    /// The lead's error in that cycle: the lock was not taken (a timeout, a deadlock, an aborted block).
    var clusterOrderLockError: ErrorFields?
    /// What the lock's cycle read of the holders' marks on the lead (`ClusterOrderMarks`): this
    /// holder's number, and the last number released cleanly (nil: never). Nil when the marks' sequences
    /// are missing (a schema made by an earlier version, or a user who may not create them).
    var clusterOrderMarks: (taken: Int64, released: Int64?)?
    /// This session's number as holder of the cluster-wide lock, released with it (`sendClusterUnlock`),
    /// and whether the holder before it had not released its own (the release then realigns them).
    var clusterOrderTakenMark: Int64?
    var clusterOrderRealign = false
    /// The cycles that let the cluster-wide sequence lock go (`releaseClusterOrder`), and, per backend,
    /// how many of them ran in an aborted transaction (and so let nothing go): sent again once the
    /// backend's transaction is no longer aborted (`retryClusterUnlocks`).
    var clusterUnlockSeqs: Set<Int> = []
    var clusterUnlocksOwed: [Int: Int] = [:]
    /// The statement under the order ended so that the backends may have drawn different counts of
    /// sequence values: they are set equal before its turn is let go (`resyncSequencesThenRelease`).
    var orderResyncDue = false
    /// The cycle of the last BEGIN answered ahead (`answerBeginAhead`): every backend must end it in a transaction.
    var beginAheadSeq: Int?
    /// A part of a group the client ended with Flush has gone to the followers, its cycle not yet.
    var followersHavePartAhead = false
    /// The backends' answers so far to the BEGIN answered ahead, by backend id (`beginAheadAnswered`).
    var beginAheadAnswers: [String: BackendMessage.TransactionStatus] = [:]
    /// Cycles sent with named Parses the lead has not answered yet (`noteParsesSent`, `parseAnswered`).
    var pendingParses: [PendingParses] = []
    /// The cycle whose Parses were sent last (nil: parts ended by Flush, their cycle not sent yet), and
    /// how many went with it so far: a later part of it counts its Parses on from there.
    var parsesSent: (seq: Int?, count: Int, closes: Int) = (-1, 0, 0)
    /// The cycle the lead answered a Parse of last (nil: between cycles), and how many of its Parses
    /// it has answered; the same for Closes.
    var leadParses: (seq: Int?, count: Int) = (-1, 0)
    var leadCloses: (seq: Int?, count: Int) = (-1, 0)
    /// A backend ended the session with 57P01 and the node is asking whether its server still serves
    /// (`backendLost`): which, and the cause of the loss, while the answer is awaited.
    var terminationCheck: String?
    var terminationCheckIndex: Int?
    /// A group waiting for the order, with whether it is a reply cycle.
    var waitingGroup: (bytes: ByteBuffer, cycle: Bool, wrap: Bool, flags: GroupFlags)?
    // Catalog changes told to the other nodes (see ClientSessionHandler+Catalog.swift).
    /// The change this session's open DDL transaction has told the peers of, and the first cycle it covers.
    var catalogChange: (id: String, from: Int)?
    /// DDL ran in this transaction that the peers have not been told of yet.
    var catalogChangeDue = false
    /// DDL ran in this transaction: the catalog is loaded again once it has ended.
    var ddlInTransaction = false
    /// A catalog load of this transaction read an older snapshot (not kept): no other is sent before
    /// the transaction ends, since none could be kept either.
    var catalogSnapshotOld = false
    /// `waitingGroup` waits for the peers' acks of the catalog change (then for the sequence turn when `catalogHoldThenOrder`).
    var catalogHold = false
    var catalogHoldThenOrder = false
    /// What goes on once the peers have acknowledged the change (`announceCatalogChange`).
    var pendingCatalogBody: (id: String, body: () -> Void)?
    // The client's statement_timeout over held statements (see ClientSessionHandler+StatementTimeout.swift).
    /// The lead's last answer to `SHOW statement_timeout`, in ms (0: none), asked once known to be due.
    var statementTimeoutMilliseconds = 0
    var statementTimeoutKnown = false
    /// The hidden cycle asking it.
    var statementTimeoutSeq: Int?
    /// When the statement held now started waiting and runs out of its timeout, and the one timer
    /// that looks (with its deadline).
    var heldSince: NIODeadline?
    var heldDeadline: NIODeadline?
    var heldTimer: (task: Scheduled<Void>, deadline: NIODeadline)?
    // Commit epochs (see ClientSessionHandler+Epochs.swift).
    /// A group waiting for its turn in the node's order of commits and statements.
    var epochWaiting: EpochWait?
    /// The turns of cycles sent, by cycle, with the backends that have still to finish each.
    var epochTurns: [Int: EpochTurn] = [:]
    /// Something changed where the session's turns run (a cycle sent, released or finished, a backend lost).
    var epochTargetsDirty = false
    /// The turn of this session's vote's COMMIT PREPAREDs, and what runs once it is granted.
    var commitTurn: Int?
    var pendingCommitTurn: (() -> Void)?
    /// Until when a 57014 from the lead is the node's own cancel (`cancelForEpochs`; a cancel may land on
    /// the statement after the one meant): it reaches the client as a serialization failure (40001).
    var epochCancelUntil: NIODeadline?
    /// The cycle `cancelForEpochs` last cancelled: the lead's 57014 on it is the node's own at any time.
    var epochCancelSeq: Int?
    /// Client cancels waiting for a statement of pgchorus' own to end on a backend before the client's
    /// cycle `seq` behind it starts there (`clientCancelRequested`), each done when sent or moot.
    var deferredCancels: [(backend: String, seq: Int, done: EventLoopPromise<Void>)] = []
    /// An autocommit write is between its BEGIN and its vote: client messages wait.
    var wrapPending = false
    /// Followers past their deadline were held back by the node's order lately: no deadline check before this.
    var deadlineHeldBackUntil: NIODeadline?
    /// Order trace only: a ReadyForQuery was written to the client and not flushed yet.
    var readyUnflushed = false
    /// The wrapped group is the statements before a COMMIT of the same Query (`GroupFlags.trailingCommit`).
    var trailingCommitPending = false
    /// The parts of a Query cut at its COMMITs (see `QuerySegments`).
    var segments = QuerySegments()
    /// A part goes through `handleRelayFrame` now (it is not held behind itself).
    var admittingSegment = false
    /// ReadyForQuery messages the client is owed for cycles (Query, Sync, FunctionCall) taken in.
    var readiesOwed = 0
    /// An extended-protocol group ended by Flush is open on the lead: no query of ours may go in between.
    var openExtendedGroup = false
    /// The registry's view generation when this session last adopted the cluster's backend set.
    var seenViewGeneration = 0
    var orderTimer: Scheduled<Void>?
    /// The next look for a lock cycle with the turn's holder (`checkOrderCycle`), and whether one is
    /// being answered.
    var orderCycleTimer: Scheduled<Void>?
    var orderCycleChecking = false
    /// Counts this session's waits for the turn: a look's answer belongs to the wait that asked.
    var orderWaitNumber = 0
    /// Why the lead could not be asked about a lock cycle in this wait for the turn, the last time it
    /// could not (nil: every look was answered); logged the first time, said in `orderTimedOut`'s error.
    var orderCycleLookFailure: String?
    /// How many looks in this wait the lead answered "the holder does not wait for this session".
    var orderCycleLooksDenied = 0
    /// How many looks in this wait the lead could not answer.
    var orderCycleLooksFailed = 0
    /// The key of the looks' connection this wait used (`SequenceResync.lookKey`): closed when the wait ends.
    var orderCycleLookKey: String?
    /// When this session began waiting for the sequence turn, and who held it at the last look.
    var orderWait: (since: NIODeadline, holder: Int?)?
    /// What the session last read of its database's catalog (`knownCatalog`) and at which count of
    /// the node's catalog changes; nil when that answer may change uncounted (a remote change open).
    var catalogRead: (at: Int, view: SequenceOrdering.View?)?
    /// The count of catalog changes at which the tracker's catalog fields were last set (`prepareTracker`).
    var trackerCatalogAt: Int?
    var catalogLoading = false
    /// Cycles whose rows are per server and not compared (`noteRowsUncompared`).
    var rowsUncompared: Set<Int> = []
    /// The current group waits for the catalog load (`holdForCatalog`).
    var catalogWait = false
    /// The group replayed after such a wait does not wait again.
    var catalogWaited = false
    var catalogGeneration = 0
    var catalogRows = SequenceOrdering.Catalog()
    /// The error the lead answered the catalog load with, if any.
    var catalogError: ErrorFields?
    /// The group held for the catalog load is answered with this error, not run (`answerCatalogAbort`):
    /// the load failed on the lead and aborted its block (a client's cancel or `statement_timeout` landed
    /// on it; the followers' blocks were aborted too: `abortedEverywhere`), or the client cancelled
    /// while the group was held (`catalogCancelled`).
    var catalogAbort: (fields: ErrorFields, abortedEverywhere: Bool)?
    /// The client cancelled while its group was held for the catalog load.
    var catalogCancelled = false
    /// The same for the client's `statement_timeout` running out meanwhile (`heldTimerFired`).
    var catalogTimedOut = false
    /// A read sent to one backend only: kept until answered, to send it elsewhere if that backend fails.
    var routedRead: (seq: Int, bytes: ByteBuffer, target: Int)?
    var balanceCursor = Int.random(in: 0..<1024)
    /// Cycles with DDL: when the lead finishes one, the sequence catalog may be stale.
    var ddlSeqs: Set<Int> = []
    /// Bytes from the client not yet split into start-up packets and messages.
    var inbound: InboundFrames<ClientMessageDecoder>
    /// The client sent malformed bytes: whatever follows is ignored while the session closes.
    var inboundFailed = false
    /// The lead this session is counted under in `LeadHandover` (it has statements waiting on it).
    var orderingLead: String?
    /// A new lead waits for the statements its failed predecessor ordered (see `LeadHandover`).
    var handoverTicket: Int?
    /// The failed lead the handover waited for is from (for the error of a wait that timed out).
    var handoverFrom: String?
    var handoverTimer: Scheduled<Void>?
    /// The backends' finished cycles, until compared (see `CycleComparison`).
    var comparison = CycleComparison()
    /// An autocommit write outside the vote answered once every backend has done it (`AnswerWhenAll`).
    var answerWhenAll = AnswerWhenAll()
    /// The open transaction rolls back at its vote, the client getting 40001 (`doomForEpochs`); its
    /// cycles from `doomFrom` on are not compared (a statement in it may have seen a commit on some
    /// backends only), nor those of the ranges of earlier such transactions.
    var transactionDoomed = false
    var doomFrom: Int?
    var uncomparedRanges: [ClosedRange<Int>] = []
    /// The lead is in COPY FROM STDIN: a client's cancel then reaches every backend (they all read the data).
    var copyInProgress = false
    /// The client's latest reply cycle ended with Sync (an extended-protocol group), not a Query.
    var lastCycleEndedWithSync = false
    /// A COPY FROM STDIN started by an extended-protocol group runs: PostgreSQL ignored that group's
    /// Sync in copy-in mode, so the Sync the client sends after its CopyDone or CopyFail is the one the
    /// backends answer with the COPY cycle's ReadyForQuery. That Sync continues the COPY like its data
    /// (no cycle of its own); `extendedCopyEnded` once the client's CopyDone/CopyFail has gone.
    var extendedCopySyncOwed = false
    var extendedCopyEnded = false
    /// The earliest follower deadline a timer is set for.
    var deadlineTimer: (at: NIODeadline, task: Scheduled<Void>)?
    /// Since when deadline checks have been put off because they ran late (`FollowerDeadlines.recheck`).
    var deadlineDeferredSince: NIODeadline?
    /// A follower's time for a cycle, the lead's probe (`replication.follower_timeout`).
    let deadlines: FollowerDeadlines
    /// When this session last asked for its silent lead to be probed.
    var leadProbedAt: NIODeadline?
    /// The cycle of a pipeline whose first messages were sent to the lead before its Sync arrived
    /// (see `forwardOpenGroup`), and whether any of it writes.
    var openPartial: Int?
    var openPartialWrites = false
    /// Bytes of large messages this session holds in the node's budget (`MessageMemory`): the one
    /// still arriving, and those received but not yet passed to every backend.
    var arrivingReservation = 0
    var heldReservation = 0
    /// This session's registration on `ProxyContext.viewBoard`.
    var viewWatch: Int?
    // Online recovery (see ClientSessionHandler+Recovery.swift).
    /// This session counts as busy in the node's write gate.
    var gateBusy = false
    /// Waiting at the closed write gate.
    var gateTicket: Int?
    /// What a backend taken into the session gets replayed.
    var replay = SessionReplay()
    /// Backends being taken into the session (`takeIn`), and the timer bounding their login.
    /// The held notifications must go into the transaction before the next group (`endGroup`).
    var heldNotificationsDue = false
    var takingIn: Set<Int>?
    var takeInTimer: Scheduled<Void>?
    /// The lead's answer to `SessionReplay.settingsQuery` while a take-in waits for it (`takeIn`):
    /// the statements that give a backend taken in the session's settings (nil: none asked).
    var takeInSettings: [String]?
    /// That question's cycle on the lead, until answered (nil: answered, or the lead was lost).
    var takeInSettingsSeq: Int?
    /// The question failed: the settings as the client's SETs recorded them are given instead.
    var takeInSettingsFailed = false
    /// The names of the prepared statements the lead holds, from the same answer.
    var takeInPrepared: Set<String> = []
    /// Backends taken in whose login is done, waiting for the settings (`finishTakeIn`).
    var takenIn: [Int] = []
    /// The registry's view generation when the session last found no backend to take in.
    var joinCheckedGeneration = -1
    /// The start-up message the backends got (with the session's seed), for backends taken in later.
    var backendStartup: StartupMessage?

    init(shared: ProxyContext, start: SessionStart, logger: Logger) {
        self.inbound = InboundFrames(ClientMessageDecoder(maximumMessageSize: shared.configuration.proxy.maxMessageSize))
        self.shared = shared
        self.start = start
        self.configuration = shared.configuration
        self.logger = logger
        self.deadlines = FollowerDeadlines(followerTimeout: .milliseconds(Int64(configuration.replication.followerTimeout * 1000)))
        tracker = StatementTracker(refuseVolatile: configuration.replication.volatileFunctions == "refuse")
        tracker.refusePhysicalOrder = configuration.replication.physicalOrderWrites == "refuse"
        tracker.deterministic = configuration.backends.count > 1
    }

    // MARK: client channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// Takes the channel over from `ClientStartupHandler`: this connection's count against
    /// `proxy.max_clients`, and what the client sent behind its authentication (decoded as frames).
    func begin(counted: Bool, unread: InboundFrames<ClientMessageDecoder>) {
        self.counted = counted
        inbound = unread
        connectBackends()
        readInbound()
        forwardOpenGroup()
        flushBackends()
    }

    func channelInactive(context: ChannelHandlerContext) {
        shutDown()
    }

    /// Accounts for a large message as soon as its length is known (`MessageMemory`); false when the
    /// node's budget cannot take it: the client is told and the session ends.
    private func reserveArrivingMessage() -> Bool {
        guard arrivingReservation == 0, phase == .relaying || phase == .connectingBackends,
              let length = inbound.nextTypedMessageLength(), length >= MessageMemory.largeMessage,
              length <= configuration.proxy.maxMessageSize + 4 else { return true }
        if shared.messageMemory.reserve(length) {
            arrivingReservation = length
            return true
        }
        let mib = { (n: Int) in n >> 20 }
        logger.warning("large message refused: node message memory exhausted", metadata: [
            "bytes": "\(length)", "in_use": "\(shared.messageMemory.inUse)", "limit": "\(shared.messageMemory.limit)"])
        inboundFailed = true
        writeClient(.errorResponse(ErrorFields(severity: "FATAL", sqlState: "53200",
                          message: "pgchorus is out of memory for large client messages: this message of \(mib(length)) MiB does not fit in the \(mib(shared.messageMemory.limit)) MiB the node keeps for them (proxy.message_memory), \(mib(shared.messageMemory.inUse)) MiB in use",
                          hint: "Retry later, or send the data in smaller statements (COPY streams rows in small messages).")))
        flushClient(force: true)
        // The rest of the message is still coming: what it still sends is dropped (`closeAfterFinalMessage`).
        if let context {
            context.closeAfterFinalMessage()
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .seconds(5)) { bound.value.close() }
        }
        return false
    }

    /// Gives the large messages back to the node's budget once every backend has been sent them.
    func releaseHeldMessages(force: Bool = false) {
        guard heldReservation > 0, force || (leadFirst.isEmpty && currentGroup.isEmpty && heldFrames.isEmpty && waitingGroup == nil && epochWaiting == nil) else { return }
        shared.messageMemory.release(heldReservation)
        heldReservation = 0
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // (Once the session has ended, what the client still sends is dropped: `closeAfterFinalMessage`.)
        guard phase != .closed, phase != .draining, !inboundFailed else { return }
        inbound.append(unwrapInboundIn(data))
        readInbound()
    }

    /// Handles every complete message read so far.
    private func readInbound() {
        guard let context else { return }
        do {
            while phase != .closed, phase != .draining, !inboundFailed {
                guard reserveArrivingMessage() else { return }
                guard let message = try inbound.next() else { break }
                switch message {
                case .startupPhase:
                    fatal(ErrorFields(severity: "FATAL", sqlState: "08P01", message: "unexpected start-up packet"))
                case let .frame(frame):
                    // A large message is in: its reservation lasts until every backend has it.
                    heldReservation += arrivingReservation
                    arrivingReservation = 0
                    handleClientFrame(frame)
                }
            }
        } catch {
            inboundFailed = true
            errorCaught(context: context, error: error)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        forwardOpenGroup()
        flushBackends()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let fields = ClientStartupHandler.clientError(error, logger: logger) { fatal(fields) } else { close() }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        clientWritable = context.channel.isWritable
        applyClientBackpressure()
    }

    /// Backpressure: while the client cannot take more, the backends whose replies go to it (the lead,
    /// a backend answering a read routed to it) are not read. The followers' replies are only digested:
    /// they are read on, so a client slow to read one statement's answer never makes a follower miss
    /// its deadline on an earlier one.
    func applyClientBackpressure() {
        for i in backends.indices {
            let read = clientWritable || !(i == lead || routedRead?.target == i)
            backends[i].channel?.setOption(ChannelOptions.autoRead, value: read).whenFailure { _ in }
        }
    }

    private func handleClientFrame(_ frame: PostgresFrame) {
        switch phase {
        case .connectingBackends:
            earlyFrames.append(frame)
        case .relaying:
            handleRelayFrame(frame)
        case .draining, .closed:
            break
        }
    }

    // MARK: backends (see ClientSessionHandler+Backends.swift), relay (+Relay), commit vote (+Commit)

    // MARK: output and teardown

    func writeClient(_ message: BackendMessage) {
        // (Into a buffer the session keeps: a new one for each message was an allocation, and a BEGIN
        // answered ahead or a vote's answer is several of them.)
        clientScratch.clear()
        message.encode(into: &clientScratch)
        writeClientBytes(clientScratch)
        // (A large one is not kept for the rest of the session.)
        if clientScratch.capacity > Self.gatherLimit { clientScratch = ByteBuffer() }
    }

    /// Queues bytes for the client. Small messages are gathered into one buffer written at the next
    /// flush: one pipeline write per batch instead of one per message (each write through the
    /// pipeline costs more than copying a few hundred bytes). Large ones go as they are, after what
    /// was gathered, so nothing is reordered.
    func writeClientBytes(_ bytes: ByteBuffer) {
        guard let context else { return }
        if segments.inProgress, !segmentPassesToClient(bytes) { return }
        if bytes.readableBytes == 6, bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) == BackendMessage.Kind.readyForQuery.rawValue {
            readiesOwed = max(0, readiesOwed - 1)
            // (A cut Query's reply is open until its last part's ReadyForQuery: `runSegments`.)
            if !segments.inProgress { clientReadyWithheld = false }
            if OrderTrace.enabled { trace("RQ", "unflushed"); readyUnflushed = true }
        }
        clientNeedsFlush = true
        clientUnflushed += bytes.readableBytes
        if bytes.readableBytes >= Self.gatherLimit {
            writeGatheredClientBytes(context)
            context.write(NIOAny(bytes), promise: nil)
        } else {
            if clientOutput.capacity == 0 {
                // (An 8 KiB buffer allocated for each flush was 2.4 % of a TPC-B transaction's instructions.)
                if var spare = spareClientOutput {
                    spareClientOutput = nil
                    spare.clear()
                    clientOutput = spare
                } else {
                    clientOutput = context.channel.allocator.buffer(capacity: Self.gatherLimit)
                }
            }
            clientOutput.appendReadableBytes(of: bytes)
        }
    }

    private func writeGatheredClientBytes(_ context: ChannelHandlerContext) {
        guard clientOutput.readableBytes > 0 else { return }
        context.write(NIOAny(clientOutput), promise: nil)
        spareClientOutput = lastStatus == .idle ? nil : clientOutput
        clientOutput = ByteBuffer()
    }

    /// Sends what was written to the client. Not while its cycle's ReadyForQuery is withheld
    /// (`clientReadyWithheld`) and less than `gatherLimit` waits, unless `force` (the session ends)
    /// or the client is to send COPY data (it waits for the CopyInResponse).
    func flushClient(force: Bool = false) {
        noteGateBusy()
        guard clientNeedsFlush, let context else { return }
        if clientReadyWithheld, !force, !copyInProgress, clientUnflushed < Self.gatherLimit { return }
        clientNeedsFlush = false
        clientUnflushed = 0
        writeGatheredClientBytes(context)
        context.flush()
        if readyUnflushed { readyUnflushed = false; trace("RF", "flushed") }
        if statementTimeoutDue { askStatementTimeoutIfDue() }
    }

    /// Sends a final error to the client and ends the session (the client reads the error even if it
    /// is still sending: `closeAfterFinalMessage`).
    func fatal(_ fields: ErrorFields) {
        guard phase != .closed else { return }
        writeClient(.errorResponse(fields))
        flushClient(force: true)
        context?.closeAfterFinalMessage()
        shutDown()
    }

    func close() {
        guard phase != .closed else { return }
        flushClient(force: true)
        // A backend's FATAL forwarded to the client is its final message like pgchorus' own.
        if fatalForwarded { context?.closeAfterFinalMessage() } else { context?.close(promise: nil) }
        shutDown()
    }

    func shutDown() {
        if phase == .draining || phase == .closed { return }
        abandonOrderWait()
        closeCatalogChange()
        abandonEpochWait()
        if copyInProgress, phase == .relaying {
            // The client left in the middle of COPY FROM STDIN: every backend ends the COPY (and rolls
            // it back) now, instead of waiting for data that never comes while holding the sequence turn.
            var fail = ByteBuffer()
            FrontendMessage.copyFail("pgchorus: the client disconnected during COPY").encode(into: &fail)
            // (An extended-protocol COPY's backends then discard everything up to a Sync.)
            if extendedCopySyncOwed && !extendedCopyEnded { FrontendMessage.sync.encode(into: &fail) }
            for i in backends.indices where backends[i].isLive { backends[i].write(fail) }
            copyInProgress = false
            flushBackends()
        }
        if phase == .relaying, liveCount > 1, backends.contains(where: { $0.isLive && !$0.owed.isEmpty }) {
            phase = .draining
            startupTimer?.cancel()
            if let loop = backends.first(where: { $0.channel != nil })?.channel?.eventLoop {
                let bound = NIOLoopBound(self, eventLoop: loop)
                startupTimer = loop.scheduleTask(in: Self.drainTimeout) {
                    bound.value.logger.warning("backends did not finish within the drain time; closing")
                    bound.value.finishSession()
                }
            }
            return
        }
        finishSession()
    }

    /// Ends a draining session once every live backend has answered everything it was sent.
    func finishDrainIfDone() {
        guard phase == .draining, backends.allSatisfy({ !$0.isLive || $0.owed.isEmpty }) else { return }
        finishSession()
    }

    func finishSession() {
        guard phase != .closed else { return }
        phase = .closed
        if let c = commit {
            // Ended in the middle of its vote: its prepared transaction must not hold its locks until
            // the periodic resolver comes by.
            logger.warning("session ended during its commit vote; resolving it now", metadata: ["gid": "\(c.gid)"])
            shared.resolveAbandonedVote(c.gid)
            commit = nil
        }
        if let w = viewWatch {
            shared.viewBoard.remove(w)
            viewWatch = nil
        }
        deadlineTimer?.task.cancel()
        deadlineTimer = nil
        if let t = gateTicket { shared.gate.cancelWait(t); gateTicket = nil }
        takeInTimer?.cancel()
        takeInTimer = nil
        if gateBusy { gateBusy = false; shared.gate.sessionBusy(false) }
        releaseHeldMessages(force: true)
        shared.messageMemory.release(arrivingReservation)
        arrivingReservation = 0
        releaseOrder()
        abandonEpochWait()
        endEpochTurns()
        abandonHandover()
        noteLeadOrdering()
        startupTimer?.cancel()
        startupTimer = nil
        for i in backends.indices { dropExpectations(i) }
        for i in backends.indices where backends[i].phase != .closed {
            if let channel = backends[i].channel {
                // A polite Terminate spares the backend log an "unexpected EOF" line.
                if backends[i].phase == .ready { channel.writeAndFlush(FrontendMessage.terminate.frame.bytes, promise: nil) }
                channel.close(promise: nil)
            }
            backends[i].phase = .closed
        }
        if virtualProcessID != 0 {
            shared.cancelRegistry.unregister(virtualProcessID)
            virtualProcessID = 0
        }
        if counted {
            counted = false
            shared.activeSessions.wrappingSubtract(1, ordering: .relaxed)
        }
    }
}
