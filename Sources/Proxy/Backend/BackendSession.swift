import NIOCore
import State
import Wire

/// What a backend's replies to one cycle (up to its ReadyForQuery) are for.
enum CycleKind: Equatable {
    /// A client's statements: the lead's replies go to the client, every backend's are compared.
    case client
    /// The first phase of the commit vote (commit-log insert + PREPARE TRANSACTION).
    case prepare
    /// The second phase: COMMIT PREPARED or ROLLBACK PREPARED.
    case finish
    /// pgchorus' own housekeeping (e.g. creating the commit log); replies are only logged.
    case internalQuery
    /// Loading the tables that draw sequence values (lead only).
    case catalog
    /// A read sent to this backend alone (`read_routing`): its replies go to the client, uncompared.
    case routedRead
    /// A statement pgchorus adds around the client's (BEGIN/ROLLBACK of a wrapped autocommit write).
    case hidden
}

/// One cycle a backend owes replies for.
struct Expectation {
    var seq: Int
    var kind: CycleKind
    /// The lead's ReadyForQuery is kept back: an autocommit write waits for its commit vote.
    var holdReady = false
    /// Sent to this backend as a follower, in the lead's order (counted by `LeadHandover`).
    var ordered = false
    /// The client's ReadyForQuery of this cycle waits until every backend has finished it (an
    /// autocommit write outside the vote: another session may rely on it at once).
    var answerWhenAll = false
    /// When the cycle was written to this backend.
    var sentAt = NIODeadline.now()
    /// How long a follower may work on the cycle once it has reached it (half as long again as the
    /// lead took, plus `replication.follower_timeout`); nil while the lead has not answered it.
    var allowance: TimeAmount?
}

extension Array where Element == BackendSession {
    /// The backends of a session that take statements now.
    var liveCount: Int { reduce(0) { $0 + ($1.isLive ? 1 : 0) } }
}

/// One client session's connection to one backend.
struct BackendSession {
    enum Phase {
        case connecting
        /// The SSL request is sent; its one-byte answer decides (`sslmode`).
        case negotiatingTLS
        case loggingIn
        case ready
        case closed
    }

    let backend: Configuration.Backend
    var phase: Phase = .connecting
    var channel: Channel?
    var login: BackendLogin
    /// Bytes written to the backend but not flushed yet.
    var needsFlush = false
    /// Cycles sent to this backend whose ReadyForQuery has not come back yet, oldest first.
    var expected: [Expectation] = []
    /// The outcome of the cycle being answered now.
    var digest = OutcomeDigest()
    /// The first ErrorResponse of the current prepare or finish cycle, byte-exact.
    var cycleError: PostgresFrame?
    /// The command tag of the current prepare or finish cycle.
    var cycleTag: String?
    /// The backend said FATAL: its connection is about to end.
    var dying = false
    /// What the backend said in its FATAL, for the failure reason.
    var lastWords: String?

    init(backend: Configuration.Backend, login: BackendLogin) {
        self.backend = backend
        self.login = login
    }

    var isLive: Bool { phase == .ready && !dying }

    /// When the oldest cycle started counting: when the previous one finished, or when the backend
    /// last sent something (progress).
    var headSince = NIODeadline.now()
    /// Large statements being written to this backend (`largeFollowerWrite`): no deadline runs
    /// meanwhile — the time is the node's, not the backend's.
    var largeWritesInFlight = 0
    var largeWriteStarted: NIODeadline?

    /// The deadline this backend is held to: while a large write to it is in flight, no earlier than
    /// 30 s after that write began (a frozen backend that stops reading is still failed).
    var effectiveDeadline: NIODeadline? {
        guard largeWritesInFlight > 0, let started = largeWriteStarted else { return headDeadline }
        let bound = started + .seconds(30)
        return headDeadline.map { max($0, bound) } ?? bound
    }

    /// By when this backend must finish its oldest cycle; nil when nothing is owed or no allowance is set.
    var headDeadline: NIODeadline? {
        guard let head = expected.first, let allowance = head.allowance else { return nil }
        return max(headSince, head.sentAt) + allowance
    }

    /// The oldest cycle is finished: the next one starts counting `now`.
    mutating func finishHead(at now: NIODeadline) {
        expected.removeFirst()
        headSince = now
    }

    /// CancelRequests sent to this backend session whose connection the server has not yet closed, and
    /// what was written meanwhile: held back, so a cancel that arrives late cannot land on what comes
    /// after the statement it was meant for (pgchorus' own statements of the transaction included).
    var cancelsInFlight = 0
    var heldWrites: [(ByteBuffer, EventLoopPromise<Void>?)] = []

    /// A cancel sent to this backend session was processed by the server: what was held goes now.
    mutating func cancelDelivered() {
        cancelsInFlight = max(0, cancelsInFlight - 1)
        guard cancelsInFlight == 0, !heldWrites.isEmpty else { return }
        let held = heldWrites
        heldWrites = []
        for (bytes, promise) in held { write(bytes, promise: promise) }
    }

    mutating func write(_ bytes: ByteBuffer, promise: EventLoopPromise<Void>? = nil) {
        guard let channel, phase != .closed else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        if cancelsInFlight > 0 {
            heldWrites.append((bytes, promise))
            return
        }
        // NIOAny built here, for a concrete ByteBuffer: the generic `write(_:)` wraps it at run time.
        channel.write(NIOAny(bytes), promise: promise)
        needsFlush = true
    }
}
