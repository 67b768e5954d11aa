import NIOCore
import State
import Wire

extension Array where Element == BackendSession {
    /// The backends of a session that take statements now.
    var liveCount: Int {
        // (By index: asked many times a statement, and `reduce` copied each backend's session.)
        var n = 0
        for i in indices where self[i].isLive { n += 1 }
        return n
    }
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
    /// The cycles sent to this backend whose ReadyForQuery has not come back yet, and the time it is held to.
    var owed = OwedCycles()
    /// The outcome of the cycle being answered now.
    var digest = OutcomeDigest()
    /// Answers arriving between cycles are not counted until the next group is sent: they answer a
    /// part (ended by Flush) of a cycle the lead's timing outcome replaced on this follower.
    var skipsPartAnswers = false
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

    /// The transaction status of the backend's last ReadyForQuery.
    var status = BackendMessage.TransactionStatus.idle

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
