import Synchronization
import Wire

/// Maps the cancel keys pgchorus gave its clients to their sessions, which forward a client's cancel
/// to the backend sessions running its statement (`ClientSessionHandler.clientCancelRequested`).
public final class CancelRegistry: Sendable {
    /// One backend session to cancel: where it is and the key it sent.
    public struct Target: Sendable, Equatable {
        public var host: String
        public var port: Int
        public var processID: Int32
        public var secretKey: [UInt8]
    }

    struct Entry {
        var secretKey: [UInt8]
        /// Told of every cancel of the session, which forwards it to the backends running the client's
        /// statement, and calls the closure it is given once those have taken it.
        var onCancel: (@Sendable (_ delivered: @escaping @Sendable () -> Void) -> Void)?
    }

    private let entries = Mutex<[Int32: Entry]>([:])

    public init() {}

    /// Allocates a positive process id and a random secret for a new session: `preferred` (the lead
    /// backend's own pid, so the client's pid is what `pg_backend_pid()` and notifications say) when no
    /// other session holds it, a random one otherwise.
    public func register<G: RandomNumberGenerator>(preferring preferred: Int32? = nil, using rng: inout G) -> (processID: Int32, secretKey: [UInt8]) {
        let key = (0..<4).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for attempt in 0..<1000 {
            let pid = attempt == 0 && (preferred ?? 0) > 0 ? preferred! : Int32.random(in: 1...Int32.max, using: &rng)
            let inserted = entries.withLock { e -> Bool in
                guard e[pid] == nil else { return false }
                e[pid] = Entry(secretKey: key)
                return true
            }
            if inserted { return (pid, key) }
        }
        preconditionFailure("could not allocate a cancel key after 1000 tries")
    }

    /// `handler` is called (on the canceller's thread) for each valid cancel of the session; it must
    /// call the closure it gets once the cancel has been delivered (or found nothing to cancel).
    public func setCancelHandler(_ handler: @escaping @Sendable (_ delivered: @escaping @Sendable () -> Void) -> Void, for processID: Int32) {
        entries.withLock { $0[processID]?.onCancel = handler }
    }

    public func unregister(_ processID: Int32) {
        _ = entries.withLock { $0.removeValue(forKey: processID) }
    }

    /// The handler of the session a client's CancelRequest is for; nil when the key is unknown or wrong.
    public func handler(for request: CancelRequest) -> (@Sendable (_ delivered: @escaping @Sendable () -> Void) -> Void)? {
        entries.withLock { e in
            guard let entry = e[request.processID], SCRAM.constantTimeEqual(entry.secretKey, request.secretKey) else { return nil }
            return entry.onCancel
        }
    }

    public var count: Int { entries.withLock { $0.count } }
}
