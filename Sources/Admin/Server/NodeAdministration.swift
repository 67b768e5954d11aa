import Synchronization
import Logging
import NIOPosix
import Recovery
import State

/// Carries out admin requests on this node: reads the state for `status` and `events`, changes a
/// backend's status through the registry (so every peer hears of it) for `detach` and `attach`.
public final class NodeAdministration: Sendable {
    private let current: Mutex<Configuration>
    /// The configuration as last (re)loaded (`update`).
    var configuration: Configuration { current.withLock { $0 } }
    let registry: BackendRegistry
    let store: StateStore?
    let stateService: StateService
    let healthChecker: HealthChecker?
    let sessions: @Sendable () -> Int
    let vip: (@Sendable () -> ClusterStatus.VIP)?
    let recovery: RecoveryCoordinator?
    let reloadHandler = Mutex<Hook<@Sendable () -> Result<String, ConfigurationError>>?>(nil)
    let startedAt: Double
    let logger: Logger

    /// A reload: the next use takes the new settings.
    public func update(_ configuration: Configuration) {
        current.withLock { $0 = configuration }
    }

    public init(configuration: Configuration, registry: BackendRegistry, store: StateStore?, stateService: StateService,
                healthChecker: HealthChecker?, logger: Logger, sessions: @escaping @Sendable () -> Int,
                vip: (@Sendable () -> ClusterStatus.VIP)? = nil, recovery: RecoveryCoordinator? = nil) {
        self.vip = vip
        self.recovery = recovery
        self.current = Mutex(configuration)
        self.registry = registry
        self.store = store
        self.stateService = stateService
        self.healthChecker = healthChecker
        self.sessions = sessions
        self.startedAt = WallClock.unixTime()
        self.logger = logger
    }

    /// What `reload` runs (the daemon's `NodeReloader`).
    public func setReloadHandler(_ handler: @escaping @Sendable () -> Result<String, ConfigurationError>) {
        reloadHandler.withLock { $0 = Hook(handler) }
    }

    public func handle(_ request: AdminRequest) async -> AdminResponse {
        switch request.command {
        case .status:
            return AdminResponse(ok: true, status: status())
        case .events:
            do {
                let events = try store?.events(since: request.since, limit: min(max(request.limit ?? 100, 1), 10_000)) ?? []
                return AdminResponse(ok: true, events: events)
            } catch {
                return .failure("cannot read the event log: \(error)")
            }
        case .detach:
            return detach(request.backend)
        case .attach:
            return await attach(request.backend)
        case .recover:
            return recover(request.backend, cancel: request.cancel ?? false)
        case .reload:
            guard let handler = reloadHandler.withLock({ $0 }) else { return .failure("this node cannot reload") }
            switch handler.call() {
            case let .success(summary): return AdminResponse(ok: true, message: summary)
            case let .failure(why): return .failure("reload refused, the running configuration stays: \(why)")
            }
        }
    }

    public func status() -> ClusterStatus {
        let now = WallClock.unixTime()
        let entries = registry.snapshot()
        let lead = entries.first { $0.status == .online }?.backend.id
        let checks = Dictionary(uniqueKeysWithValues: (healthChecker?.reports() ?? []).map { ($0.backend, $0) })
        let me = configuration.thisNode
        var s = ClusterStatus(
            node: .init(id: me.id, address: me.address, version: PGChorusVersion.current, startedAt: startedAt, sessions: sessions(),
                        stateDatabase: store?.path),
            nodes: stateService.nodes(now: now),
            backends: entries.map { e in
                ClusterStatus.Backend(id: e.backend.id, host: e.backend.host, port: e.backend.port, status: e.status.rawValue, reason: e.reason,
                                      since: e.since, generation: e.state.generation, origin: e.state.origin, lead: e.backend.id == lead,
                                      check: checks[e.backend.id], lag: nil)
            },
            quorum: stateService.hasQuorum(now: now),
            vip: vip?() ?? .init(mode: "none", address: nil, owner: nil),
            recovery: recovery?.progress(), health: "")
        s.health = ClusterStatus.health(for: s.exitCode)
        let warnings = stateService.configurationWarnings()
        s.warnings = warnings.isEmpty ? nil : warnings
        return s
    }

    func detach(_ id: String?) -> AdminResponse {
        guard let id, let entry = registry.entry(id) else { return .failure(unknownBackend(id)) }
        if entry.status == .down { return AdminResponse(ok: true, message: "backend \(id) is already detached (down)") }
        if entry.status == .online && registry.online().count == 1 {
            return .failure("backend \(id) is the last online backend; detaching it would stop the service")
        }
        guard registry.setStatus(id, .down, reason: "detached by an administrator on \(configuration.node.id)", now: WallClock.unixTime()) else {
            return .failure("backend \(id) changed status meanwhile; look at `pgchorus backends` and retry")
        }
        return AdminResponse(ok: true, message: "backend \(id) detached (down); sessions stop using it at their next transaction")
    }

    func attach(_ id: String?) async -> AdminResponse {
        guard let id, let entry = registry.entry(id) else { return .failure(unknownBackend(id)) }
        if entry.status == .online { return AdminResponse(ok: true, message: "backend \(id) is already online") }
        if entry.status == .recovering { return .failure("backend \(id) is being recovered; wait for the recovery to finish") }
        guard let reference = registry.online().first else {
            return .failure("no backend is online to compare \(id) with")
        }
        let comparison = BackendComparison { [configuration] backend, database in
            LibPQConnection.conninfo(backend, database: database, user: configuration.replication.resolverUser,
                                     password: configuration.replication.resolverPassword, connectTimeout: 5, application: "pgchorus-attach")
        }
        let target = entry.backend
        func compare() async -> Result<[BackendComparison.Difference], Error> {
            (try? await NIOThreadPool.singleton.runIfActive { Result { try comparison.differences(target: target, reference: reference) } })
                ?? .failure(LibPQConnection.Failure(description: "thread pool stopped"))
        }
        switch await compare() {
        case let .failure(error):
            return .failure("cannot compare \(id) with \(reference.id): \(error)")
        case let .success(diffs) where !diffs.isEmpty:
            logger.warning("attach of \(id) refused: it differs from \(reference.id)", metadata: ["differences": "\(diffs.count)"])
            let shown = diffs.prefix(10).map { "  \($0)" }.joined(separator: "\n")
            return .failure("backend \(id) differs from \(reference.id) in \(diffs.count) place(s); it must be recovered, not attached:\n\(shown)")
        case .success:
            break
        }
        guard registry.setStatus(id, .online, reason: "attached by an administrator on \(configuration.node.id) (identical to \(reference.id))",
                                 now: WallClock.unixTime(), expected: [entry.status]) else {
            return .failure("backend \(id) changed status meanwhile; look at `pgchorus backends` and retry")
        }
        // A write committed between the comparison and the attach would be missing on it: compare
        // again now that it takes every write, and take it back out if it still differs.
        var last: [BackendComparison.Difference] = []
        for attempt in 0..<3 {
            if attempt > 0 { try? await Task.sleep(for: .milliseconds(300)) }
            guard case let .success(d) = await compare() else { continue }
            last = d
            if d.isEmpty { return AdminResponse(ok: true, message: "backend \(id) verified identical to \(reference.id) and attached (online)") }
        }
        registry.fail(id, reason: "diverged while being attached (\(last.first.map(\.description) ?? "comparison failed")); recover it", now: WallClock.unixTime())
        return .failure("backend \(id) missed a write while being attached and was failed again; recover it")
    }

    func recover(_ id: String?, cancel: Bool) -> AdminResponse {
        guard let id, registry.entry(id) != nil else { return .failure(unknownBackend(id)) }
        guard let recovery else { return .failure("this node runs no recovery coordinator") }
        if cancel {
            switch recovery.cancel(id) {
            case let .success(m): return AdminResponse(ok: true, message: m)
            case let .failure(r): return .failure(r.description)
            }
        }
        switch recovery.start(id) {
        case let .success(p):
            var s = status()
            s.recovery = p
            return AdminResponse(ok: true, message: "recovery of \(id) from \(p.donor) started on node \(p.node) (recovery \(p.id))", status: s)
        case let .failure(r):
            return .failure(r.description)
        }
    }

    private func unknownBackend(_ id: String?) -> String {
        guard let id else { return "name a backend (one of: \(configuration.backends.map(\.id).joined(separator: ", ")))" }
        return "no backend \"\(id)\" in \(configuration.file) (backends: \(configuration.backends.map(\.id).joined(separator: ", ")))"
    }
}
