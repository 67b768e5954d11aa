import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Health checks of the backends with libpq: connect and read the settings that must agree, on an
/// interval with a timeout. `failures` consecutive failed checks fail an online backend through the
/// registry (the same path as a lost vote, so the peers hear of it); so does a setting that differs
/// from the other backends' or `max_prepared_transactions = 0`.
///
/// In a two-node cluster with `cluster.witness = "backends"`, it also holds the witness: a session
/// advisory lock on each backend. Only one node can hold it on a backend, and it is released when
/// that node's connection dies, so a node alone keeps quorum only while it holds a majority of them.
public final class HealthChecker: Service, Sendable {
    /// The latest check of one backend.
    public struct Report: Sendable, Equatable, Codable {
        public var backend: String
        public var ok: Bool
        /// Seconds the check took.
        public var latency: Double?
        public var error: String?
        /// Seconds since the Unix epoch.
        public var checkedAt: Double
        public var consecutiveFailures: Int
        public var settings: [String: String]?

        public init(backend: String, ok: Bool, latency: Double? = nil, error: String? = nil, checkedAt: Double, consecutiveFailures: Int,
                    settings: [String: String]? = nil) {
            self.backend = backend; self.ok = ok; self.latency = latency; self.error = error; self.checkedAt = checkedAt
            self.consecutiveFailures = consecutiveFailures; self.settings = settings
        }
    }

    /// The settings that change what clients read; they must be equal on every backend.
    static let comparedSettings = ["server_encoding", "DateStyle", "IntervalStyle", "TimeZone", "standard_conforming_strings", "server_version_num"]
    /// The advisory-lock key of the witness ("pgchorus" in ASCII, as a bigint).
    static let witnessKey: Int64 = 0x7067_6368_6f72_7573

    private let current: Mutex<Configuration>
    /// The configuration as last (re)loaded (`update`).
    var configuration: Configuration { current.withLock { $0 } }
    let registry: BackendRegistry
    let logger: Logger
    let pool: NIOThreadPool
    let latest = Mutex<[String: Report]>([:])
    let witness: WitnessConnections?

    /// A reload: the next use takes the new settings.
    public func update(_ configuration: Configuration) {
        current.withLock { $0 = configuration }
    }

    public init(configuration: Configuration, registry: BackendRegistry, logger: Logger) {
        self.current = Mutex(configuration)
        self.registry = registry
        self.logger = logger
        // One thread per backend: a hung backend must not delay the others' checks.
        self.pool = NIOThreadPool(numberOfThreads: max(1, configuration.backends.count))
        self.witness = configuration.cluster.witness == "backends" ? WitnessConnections() : nil
        pool.start()
    }

    public func reports() -> [Report] {
        let r = latest.withLock { $0 }
        return configuration.backends.compactMap { r[$0.id] }
    }

    /// Backends whose latest check succeeded (nil before the first round).
    public func reachableCount() -> Int? {
        let r = latest.withLock { $0 }
        return r.isEmpty ? nil : r.values.filter(\.ok).count
    }

    /// Whether this node holds the witness lock on a strict majority of the backends.
    public func holdsWitness() -> Bool {
        guard let witness else { return false }
        return witness.heldCount() * 2 > configuration.backends.count
    }

    public func run() async throws {
        guard configuration.healthCheck.enabled || witness != nil else {
            try? await gracefulShutdown()
            try? await pool.shutdownGracefully()
            return
        }
        let interval = configuration.healthCheck.interval
        for _ in 0..<Int.max {
            if Task.isCancelled || Task.isShuttingDownGracefully { break }
            await round()
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(Int(interval * 1000))) }
            } catch {
                break
            }
        }
        witness?.releaseAll()
        try? await pool.shutdownGracefully()
    }

    /// One check of every backend that is not detached, in parallel, then the decisions.
    public func round() async {
        let targets = registry.snapshot().filter { $0.status != .down }.map(\.backend)
        let results = await withTaskGroup(of: (Configuration.Backend, Result<(Double, [String: String]), LibPQConnection.Failure>).self) { group in
            for b in targets {
                group.addTask { [self] in
                    let r = (try? await pool.runIfActive { self.checkBlocking(b) }) ?? .failure(LibPQConnection.Failure(description: "health-check pool stopped"))
                    return (b, r)
                }
            }
            var out: [(Configuration.Backend, Result<(Double, [String: String]), LibPQConnection.Failure>)] = []
            for await r in group { out.append(r) }
            return out
        }
        let now = WallClock.unixTime()
        var toFail: [(String, String)] = []
        latest.withLock { latest in
            for (b, result) in results {
                var report = latest[b.id] ?? Report(backend: b.id, ok: true, checkedAt: now, consecutiveFailures: 0)
                report.checkedAt = now
                switch result {
                case let .success((latency, settings)):
                    report.ok = true; report.latency = latency; report.error = nil; report.consecutiveFailures = 0; report.settings = settings
                case let .failure(e):
                    report.ok = false; report.latency = nil; report.error = e.description; report.consecutiveFailures += 1
                }
                latest[b.id] = report
            }
            guard configuration.healthCheck.enabled else { return }
            let online = registry.snapshot().filter { $0.status == .online }.map(\.backend.id)
            for id in online {
                guard let r = latest[id], !r.ok, r.consecutiveFailures >= configuration.healthCheck.failures else { continue }
                toFail.append((id, "health check failed \(r.consecutiveFailures) times in a row: \(r.error ?? "")"))
            }
            toFail += Self.settingsDisagreements(online: online, reports: latest, twoPhaseCommit: configuration.replication.twoPhaseCommit)
        }
        for (id, reason) in toFail {
            registry.fail(id, reason: reason, now: now)
        }
        if let witness {
            let me = self
            _ = try? await pool.runIfActive { witness.refresh(me.configuration.backends, conninfo: me.conninfo) }
        }
    }

    /// Online backends whose settings differ from the majority's (on a tie, from the lead's), and
    /// backends that cannot prepare transactions, with the reason to fail them.
    static func settingsDisagreements(online: [String], reports: [String: Report], twoPhaseCommit: Bool) -> [(String, String)] {
        var out: [(String, String)] = []
        let checked = online.compactMap { id in reports[id].flatMap { r in r.ok ? r.settings.map { (id, $0) } : nil } }
        if twoPhaseCommit && online.count > 1 {
            for (id, s) in checked where s["max_prepared_transactions"] == "0" {
                out.append((id, "max_prepared_transactions is 0: this backend cannot take part in the commit vote; set it above 0 and restart it"))
            }
        }
        guard checked.count > 1 else { return out }
        func signature(_ s: [String: String]) -> [String] { comparedSettings.map { s[$0] ?? "" } }
        var counts: [[String]: Int] = [:]
        for (_, s) in checked { counts[signature(s), default: 0] += 1 }
        let best = counts.values.max() ?? 0
        let leadSignature = signature(checked[0].1)
        let majority = counts[leadSignature] == best ? leadSignature : counts.first { $0.value == best }!.key
        for (id, s) in checked where signature(s) != majority && !out.contains(where: { $0.0 == id }) {
            let diffs = zip(comparedSettings, zip(signature(s), majority)).filter { $0.1.0 != $0.1.1 }
                .map { "\($0.0) is '\($0.1.0)' here but '\($0.1.1)' on the others" }
            out.append((id, "settings differ from the other backends: " + diffs.joined(separator: ", ")))
        }
        return out
    }

    func conninfo(_ backend: Configuration.Backend) -> String {
        let h = configuration.healthCheck
        // A backend host that vanishes must not hang a check (or the witness session) for the kernel's retransmission time.
        let extra = "keepalives=1 keepalives_idle=2 keepalives_interval=1 keepalives_count=2 tcp_user_timeout=\(Int(h.timeout * 1000) + 1000) "
            + "options=\(LibPQConnection.quote("-c statement_timeout=\(Int(h.timeout * 1000))"))"
        return LibPQConnection.conninfo(backend, database: h.database, user: h.user, password: h.password,
                                        connectTimeout: max(2, Int(h.timeout.rounded(.up))), application: "pgchorus-health", extra: extra)
    }

    func checkBlocking(_ backend: Configuration.Backend) -> Result<(Double, [String: String]), LibPQConnection.Failure> {
        let start = WallClock.unixTime()
        do {
            let c = try LibPQConnection(conninfo(backend), target: backend.description)
            let names = Self.comparedSettings + ["max_prepared_transactions"]
            let sql = "SELECT " + names.map { "current_setting('\($0)')" }.joined(separator: ", ")
            guard let row = try c.query(sql).first else { return .failure(.init(description: "\(backend.description): no row from the settings query")) }
            var settings: [String: String] = [:]
            for (n, v) in zip(names, row) { settings[n] = v ?? "" }
            // Only the major version changes output.
            if let v = settings["server_version_num"], let n = Int(v) { settings["server_version_num"] = String(n / 10000) }
            return .success((WallClock.unixTime() - start, settings))
        } catch let e as LibPQConnection.Failure {
            return .failure(e)
        } catch {
            return .failure(.init(description: "\(backend.description): \(error)"))
        }
    }
}

/// The witness connections of a two-node cluster: one libpq session per backend holding the
/// advisory lock. Only touched from the health checker's pool threads, one round at a time.
final class WitnessConnections: @unchecked Sendable {
    // @unchecked: `connections` is only used inside `lock`, and a LibPQConnection by one thread at a time.
    private let lock = Mutex<Void>(())
    private nonisolated(unsafe) var connections: [String: LibPQConnection] = [:]
    private let held = Atomic<Int>(0)

    func heldCount() -> Int { held.load(ordering: .relaxed) }

    func refresh(_ backends: [Configuration.Backend], conninfo: (Configuration.Backend) -> String) {
        lock.withLock { _ in
            var count = 0
            for b in backends {
                if let c = connections[b.id] {
                    // Still our session? Then still our lock.
                    if (try? c.query("SELECT 1")) != nil { count += 1; continue }
                    connections[b.id] = nil
                }
                guard let c = try? LibPQConnection(conninfo(b), target: b.description),
                      let got = try? c.query("SELECT pg_try_advisory_lock(\(HealthChecker.witnessKey))").first?.first ?? nil else { continue }
                if got == "t" {
                    connections[b.id] = c
                    count += 1
                }
            }
            held.store(count, ordering: .relaxed)
        }
    }

    func releaseAll() {
        lock.withLock { _ in connections = [:] }
        held.store(0, ordering: .relaxed)
    }
}
