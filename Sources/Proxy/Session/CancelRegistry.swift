import Synchronization
import Wire

/// Maps the cancel keys pgchorus gave its clients to the keys of their backend sessions.
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
        var targets: [Target]
        /// Told of every cancel of the session (a statement it holds back from the backends).
        var onCancel: (@Sendable () -> Void)?
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
                e[pid] = Entry(secretKey: key, targets: [])
                return true
            }
            if inserted { return (pid, key) }
        }
        preconditionFailure("could not allocate a cancel key after 1000 tries")
    }

    public func setTargets(_ targets: [Target], for processID: Int32) {
        entries.withLock { $0[processID]?.targets = targets }
    }

    /// `handler` is called (on the canceller's thread) for each valid cancel of the session.
    public func setCancelHandler(_ handler: @escaping @Sendable () -> Void, for processID: Int32) {
        entries.withLock { $0[processID]?.onCancel = handler }
    }

    public func unregister(_ processID: Int32) {
        _ = entries.withLock { $0.removeValue(forKey: processID) }
    }

    /// The backend sessions to cancel for a client's CancelRequest, and the session's own handler;
    /// none when the key is unknown or wrong.
    public func targets(for request: CancelRequest) -> (targets: [Target], session: (@Sendable () -> Void)?) {
        entries.withLock { e in
            guard let entry = e[request.processID], SCRAM.constantTimeEqual(entry.secretKey, request.secretKey) else { return ([], nil) }
            return (entry.targets, entry.onCancel)
        }
    }

    public var count: Int { entries.withLock { $0.count } }
}
