import Logging
import NIOPosix
import State
import Synchronization

/// Finds a frozen or dead lead backend while sessions wait on it. A statement may legitimately run
/// for minutes on the lead, so silence alone proves nothing; when a session has waited
/// half of `replication.follower_timeout` on its lead, the node opens a fresh connection to that backend
/// (libpq, on threads of its own) and asks `SELECT 1`. A backend that does not answer at all within
/// `follower_timeout` (at least 2 s), twice running, or refuses the TCP connection, is failed cluster-wide, so every
/// session waiting on it goes on with a new lead. An answer of any kind — even an error such as "too many clients" —
/// shows the server is alive. At most one probe per backend runs at a time, shared by all sessions.
///
/// One silent probe is not enough (like keepalived's `fall` and pgpool-II's health check retries):
/// a stall of this node itself — its threads not scheduled for a few seconds on a saturated machine,
/// a paused virtual machine — or a postmaster busy for a moment makes one connection time out while
/// the server is well, and failing a healthy lead costs an online recovery. A second probe at once,
/// with a fresh connection and the full timeout again, separates that from a frozen or cut-off
/// server; a refused connection is a definite answer and fails it at once.
public final class BackendProber: Sendable {
    let configuration: Configuration
    let registry: BackendRegistry
    let login: NodeLogin
    let logger: Logger
    /// Started at the first probe: most nodes never need one. One thread per backend: a probe of a
    /// frozen backend must not hold up another's.
    private let pool: LazyThreadPool
    private let inFlight = Mutex<Set<String>>([])
    /// What the probes of each backend found so far (also counted in `ProxyMetrics`).
    private let outcomes = Mutex<[String: ProbeCounts]>([:])

    /// How many liveness probes of one backend found it answering, silent, or refusing connections.
    public struct ProbeCounts: Equatable, Sendable {
        public var answered = 0
        public var silent = 0
        public var refused = 0
    }

    /// What the probes of `backendID` found since this node started.
    public func counts(of backendID: String) -> ProbeCounts {
        outcomes.withLock { $0[backendID] ?? ProbeCounts() }
    }

    private func record(_ backendID: String, _ silence: String?) {
        outcomes.withLock { all in
            var c = all[backendID] ?? ProbeCounts()
            switch silence {
            case nil: c.answered += 1; ProxyMetrics.probesAnswered.increment()
            case let s? where Self.isRefusal(s): c.refused += 1; ProxyMetrics.probesRefused.increment()
            case _?: c.silent += 1; ProxyMetrics.probesSilent.increment()
            }
            all[backendID] = c
        }
    }

    init(configuration: Configuration, registry: BackendRegistry, login: NodeLogin, logger: Logger) {
        self.configuration = configuration
        self.registry = registry
        self.login = login
        self.logger = logger
        self.pool = LazyThreadPool(threads: configuration.backends.count)
    }

    /// The seconds a probe waits for an answer (libpq's connect_timeout has a floor of 2 s).
    var timeout: Int { max(2, Int(configuration.replication.followerTimeout.rounded(.up))) }

    /// How a probe logs in: as the health checks do, its statement bounded by `timeout`.
    func conninfo(_ backend: Configuration.Backend) -> String {
        let h = login.healthCheck
        return LibPQConnection.conninfo(backend, database: h.database, user: h.user, password: h.password,
                                        connectTimeout: timeout, application: "pgchorus-probe",
                                        extra: "options=\(LibPQConnection.quote("-c statement_timeout=\(timeout * 1000)"))")
    }

    /// Whether a failed connection attempt means nobody answered (as opposed to an answer that is an error).
    static func isSilence(_ message: String) -> Bool {
        ["timeout expired", "Connection refused", "No route to host", "server closed the connection unexpectedly",
         "Connection reset by peer"].contains { message.contains($0) }
    }

    /// A session has waited on `backend` for `waited` seconds: probe it unless a probe is running.
    func suspect(_ backend: Configuration.Backend, waited: Double) {
        let started = inFlight.withLock { $0.insert(backend.id).inserted }
        guard started else { return }
        let me = self
        pool.started.submit { state in
            defer { _ = me.inFlight.withLock { $0.remove(backend.id) } }
            guard state == .active, me.registry.status(of: backend.id) == .online else { return }
            guard var silence = me.silence(of: backend) else { return }
            if !Self.isRefusal(silence) {
                me.logger.warning("backend did not answer a liveness probe; probing it once more",
                                  metadata: ["backend": "\(backend.id)", "timeout": "\(me.timeout) s", "reason": "\(silence)"])
                guard me.registry.status(of: backend.id) == .online, let again = me.silence(of: backend) else { return }
                silence = again
            }
            let tries = Self.isRefusal(silence) ? "" : " twice running"
            let reason = "did not answer a liveness probe within \(me.timeout) s\(tries) while a session had waited \(Int(waited)) s on it (\(silence))"
            me.logger.error("backend does not answer", metadata: ["backend": "\(backend.id)", "reason": "\(reason)"])
            me.registry.fail(backend.id, reason: reason, now: WallClock.unixTime())
        }
    }

    /// One probe on the calling thread: nil when `backend` answered (even with an error), else what
    /// libpq said of the silence.
    private func silence(of backend: Configuration.Backend) -> String? {
        let found: String?
        do {
            try ask(backend)
            found = nil
        } catch let failure as LibPQConnection.Failure {
            found = Self.isSilence(failure.description) ? failure.description : nil
        } catch {
            found = nil
        }
        record(backend.id, found)
        return found
    }

    /// Logs in to `backend` with a fresh connection and asks `SELECT 1`, on the calling thread.
    private func ask(_ backend: Configuration.Backend) throws {
        let c = try LibPQConnection(conninfo(backend), target: backend.description)
        try c.query("SELECT 1")
    }

    /// A refused TCP connection: nothing listens there, no stall explains it.
    static func isRefusal(_ message: String) -> Bool { message.contains("Connection refused") }

    /// Whether `backend` serves a new session now (it logs in and answers `SELECT 1`); `answer` runs on
    /// a probe thread. A server shutting down refuses the login ("the database system is shutting down").
    func checkServing(_ backend: Configuration.Backend, _ answer: @escaping @Sendable (Bool) -> Void) {
        let me = self
        pool.started.submit { state in
            guard state == .active else { return answer(false) }
            answer((try? me.ask(backend)) != nil)
        }
    }

    func shutdown() {
        pool.shutdown()
    }
}
