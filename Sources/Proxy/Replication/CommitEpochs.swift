import Logging
import NIOCore
import NIOPosix
import State
import Synchronization

/// Runs the node's `EpochSchedule`: sessions ask for a turn before a statement goes to the backends
/// and before a vote's `COMMIT PREPARED`s, and give it back when every backend has finished.
///
/// Parking: while a turn waits on running statements, the node asks each backend they run on which of
/// their processes wait on a lock or for their client (`pg_stat_activity`, over one libpq connection
/// per backend on threads of its own, every `probeInterval`); those statements are parked. A backend
/// that cannot be asked (no pid, no permission, no answer) is covered by the bound: after
/// `replication.follower_timeout` of waiting the running statements are parked anyway, with a warning,
/// so no stall is unbounded.
public final class CommitEpochs: Sendable {
    /// Where a running statement is now: a backend and the session's process on it.
    public struct Target: Hashable, Sendable {
        public var backend: String
        public var pid: Int32
        public init(backend: String, pid: Int32) { self.backend = backend; self.pid = pid }
    }

    struct State {
        var schedule = EpochSchedule()
        var grants: [Int: @Sendable () -> Void] = [:]
        var targets: [Int: [Target]] = [:]
        var probing = false
        /// When each waiting turn asked (the bound counts from the oldest).
        var waitingSince: [Int: NIODeadline] = [:]
    }

    private let state = Mutex(State())
    let configuration: Configuration
    let logger: Logger
    private let pool = Mutex<NIOThreadPool?>(nil)
    /// Used by the probe loop only, on the pool's single thread.
    private let connections = ProbeConnections()
    static let probeInterval: TimeAmount = .milliseconds(2)

    init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Whether the node orders statements and commits in epochs (`replication.commit_epochs`).
    var enabled: Bool { configuration.replication.commitEpochs }

    /// Asks for a turn; `grant` runs later (on any thread: hop to your event loop) unless it is
    /// granted at once, which the result says.
    func request(_ kind: EpochSchedule.Kind, grant: @escaping @Sendable () -> Void) -> (ticket: Int, now: Bool) {
        let (ticket, others, now) = state.withLock { s -> (Int, [@Sendable () -> Void], Bool) in
            let (ticket, granted) = s.schedule.request(kind)
            let now = granted.contains(ticket)
            if !now {
                s.grants[ticket] = grant
                s.waitingSince[ticket] = .now()
            }
            return (ticket, s.take(granted.filter { $0 != ticket }), now)
        }
        for g in others { g() }
        probeIfBlocked()
        return (ticket, now)
    }

    /// Where a granted statement runs now (the lead, then the followers still running it).
    func running(_ ticket: Int, on targets: [Target]) {
        state.withLock { $0.targets[ticket] = targets }
    }

    /// A turn is over (finished on every backend) or no longer wanted.
    func end(_ ticket: Int) {
        let grants = state.withLock { s -> [@Sendable () -> Void] in
            s.targets[ticket] = nil
            s.grants[ticket] = nil
            s.waitingSince[ticket] = nil
            return s.take(s.schedule.end(ticket))
        }
        for g in grants { g() }
    }

    /// Commit groups applied so far (for tests and status).
    var epoch: Int { state.withLock { $0.schedule.epoch } }

    private func park(_ tickets: [Int]) {
        guard !tickets.isEmpty else { return }
        let grants = state.withLock { s in s.take(s.schedule.park(tickets)) }
        for g in grants { g() }
    }

    // MARK: the probe

    private func threads() -> NIOThreadPool {
        pool.withLock { pool in
            if let pool { return pool }
            let started = NIOThreadPool(numberOfThreads: 1)
            started.start()
            pool = started
            return started
        }
    }

    private func probeIfBlocked() {
        let start = state.withLock { s -> Bool in
            guard !s.probing, !s.schedule.blockers.isEmpty else { return false }
            s.probing = true
            return true
        }
        guard start else { return }
        let me = self
        threads().submit { _ in me.probeLoop() }
    }

    /// Asks the backends about the blockers until nothing waits on a running statement (bounded by
    /// the follower timeout, then forced).
    private func probeLoop() {
        let bound = TimeAmount.nanoseconds(Int64(configuration.replication.followerTimeout * 1e9))
        for _ in 0..<1_000_000 {
            let (blockers, targets, since) = state.withLock { s -> ([Int], [Int: [Target]], NIODeadline?) in
                let b = s.schedule.blockers
                if b.isEmpty { s.probing = false }
                return (b, s.targets.filter { b.contains($0.key) }, s.waitingSince.values.min())
            }
            guard !blockers.isEmpty else { return }
            if let since, NIODeadline.now() - since > bound {
                logger.warning("a turn waited \(configuration.replication.followerTimeout) s (replication.follower_timeout) on running statements not seen waiting on a lock; they no longer hold it up (statement order across backends is not guaranteed for them)", metadata: ["statements": "\(blockers)"])
                park(blockers)
                continue
            }
            usleep(UInt32(Self.probeInterval.nanoseconds / 1000))
            park(waiting(blockers, targets))
        }
        state.withLock { $0.probing = false }
    }

    /// The blockers whose every target process waits on a lock or for its client.
    private func waiting(_ blockers: [Int], _ targets: [Int: [Target]]) -> [Int] {
        var byBackend: [String: Set<Int32>] = [:]
        for t in blockers {
            for target in targets[t] ?? [] where target.pid != 0 { byBackend[target.backend, default: []].insert(target.pid) }
        }
        var waitingPIDs: Set<Target> = []
        for (backend, pids) in byBackend {
            for pid in ask(backend, pids) { waitingPIDs.insert(Target(backend: backend, pid: pid)) }
        }
        return blockers.filter { t in
            guard let ts = targets[t], !ts.isEmpty else { return false }
            return ts.allSatisfy { waitingPIDs.contains($0) }
        }
    }

    static let waitingSQL = """
    SELECT pid FROM pg_catalog.pg_stat_activity WHERE pid = ANY($1::int[]) AND state = 'active' AND wait_event_type IN ('Lock', 'Client')
    """

    /// The processes among `pids` of `backendID` that wait on a lock or for their client.
    private func ask(_ backendID: String, _ pids: Set<Int32>) -> [Int32] {
        guard let backend = configuration.backends.first(where: { $0.id == backendID }) else { return [] }
        let array = "{" + pids.map(String.init).joined(separator: ",") + "}"
        do {
            let c = try connection(backend)
            let rows = try c.query(Self.waitingSQL, [array], timeout: 0.5)
            return rows.compactMap { row -> Int32? in
                guard let first = row.first, let text = first else { return nil }
                return Int32(text)
            }
        } catch {
            connections.byBackend[backendID] = nil
            return []
        }
    }

    private func connection(_ backend: Configuration.Backend) throws -> LibPQConnection {
        if let c = connections.byBackend[backend.id] { return c }
        let h = configuration.healthCheck
        let conninfo = LibPQConnection.conninfo(backend, database: h.database, user: h.user, password: h.password,
                                                connectTimeout: 2, application: "pgchorus-epochs",
                                                extra: "options=\(LibPQConnection.quote("-c statement_timeout=2000"))")
        let c = try LibPQConnection(conninfo, target: backend.description)
        connections.byBackend[backend.id] = c
        return c
    }

    func shutdown() {
        // The connections close with the pool's thread (the probe loop is their only user).
        pool.withLock { $0?.shutdownGracefully { _ in }; $0 = nil }
    }
}

extension CommitEpochs.State {
    /// The grant callbacks of `tickets` (granted now), taken out with their waiting times.
    mutating func take(_ tickets: [Int]) -> [@Sendable () -> Void] {
        tickets.compactMap { t in
            waitingSince[t] = nil
            return grants.removeValue(forKey: t)
        }
    }
}

/// The probe's libpq connections, one per backend: touched only by the probe loop, which runs on the
/// single thread of `CommitEpochs`' pool, one loop at a time.
private final class ProbeConnections: @unchecked Sendable {
    var byBackend: [String: LibPQConnection] = [:]
}
