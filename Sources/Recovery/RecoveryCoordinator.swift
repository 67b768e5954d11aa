import Foundation
import Logging
import Metrics
import ServiceLifecycle
import State
import Synchronization

/// What `pgchorus status` and `pgchorus recover` show of a recovery (documented in docs/operations.md).
public struct RecoveryProgress: Sendable, Codable, Equatable {
    public var id: String
    public var backend: String
    public var donor: String
    /// The coordinating node.
    public var node: String
    /// `checking`, `globals`, `copying`, `catching-up`, `gating`, `cutting-over`, `online`, `failed`.
    public var phase: String
    /// What is being done now, e.g. `appdb: dump`.
    public var detail: String
    /// Bytes dumped of the database being copied.
    public var bytes: Int64?
    /// Bytes of the donor's WAL not yet applied on the target.
    public var lagBytes: Int64?
    /// Seconds the write gate was closed at the cut-over.
    public var gateStall: Double?
    public var databases: [String]
    public var copied: Int
    /// Seconds since the Unix epoch.
    public var startedAt: Double
    public var finishedAt: Double?
    public var error: String?
    /// Times the copy started over because DDL ran on the donor, and why the last time (nil: none;
    /// also from nodes of an earlier version).
    public var restarts: Int?
    public var restartReason: String?

    /// Ended, clean-up included.
    public var finished: Bool { finishedAt != nil }
}

/// Runs online recoveries on this node (the coordinator of each one it starts): permission, the
/// `RecoveryPlan`'s steps through `RecoveryRunner`, the cluster-wide write gate at the cut-over, and
/// the backend's status on every node. Also watches for recoveries whose coordinator died.
public final class RecoveryCoordinator: Service, Sendable {
    private let settings: Mutex<Configuration>
    /// The configuration as last (re)loaded (`update`).
    var configuration: Configuration { settings.withLock { $0 } }
    let registry: BackendRegistry
    let stateService: StateService
    let logger: Logger
    let current = Mutex<RecoveryProgress?>(nil)
    let cancelRequested = Atomic<Bool>(false)
    /// Whether a backend's latest health check passed (nil: not checked); for `recovery.auto`.
    let healthy: @Sendable (String) -> Bool?
    /// `recovery.auto`: since when each failed backend has passed its health checks, and when an
    /// automatic recovery of it last failed.
    let automatic = Mutex<(healthySince: [String: Double], lastFailure: [String: Double])>(([:], [:]))
    /// An automatic recovery that failed is not tried again for this long.
    static let autoBackoff: Double = 300

    static let phaseGauge = Gauge(label: "pgchorus_recovery_phase")
    static let lagGauge = Gauge(label: "pgchorus_recovery_lag_bytes")
    static let stallRecorder = Recorder(label: "pgchorus_recovery_gate_stall_seconds")
    static let outcomes = Counter(label: "pgchorus_recoveries_total")

    /// A reload: the next use takes the new settings.
    public func update(_ configuration: Configuration) {
        settings.withLock { $0 = configuration }
    }

    public init(configuration: Configuration, registry: BackendRegistry, stateService: StateService, logger: Logger,
                healthy: @escaping @Sendable (String) -> Bool? = { _ in nil }) {
        self.healthy = healthy
        self.settings = Mutex(configuration)
        self.registry = registry
        self.stateService = stateService
        self.logger = logger
    }

    /// The recovery running on this node, or the last one.
    public func progress() -> RecoveryProgress? { current.withLock { $0 } }

    /// Starts recovering `id`; the answer says why not when it may not.
    public func start(_ id: String, automatic: Bool = false) -> Result<RecoveryProgress, RecoveryRefusal> {
        guard let entry = registry.entry(id) else {
            return .failure(.init("no backend \"\(id)\" in \(configuration.file) (backends: \(configuration.backends.map(\.id).joined(separator: ", ")))"))
        }
        if let p = progress(), !p.finished {
            return .failure(.init("recovery of \(p.backend) is running on this node (phase \(p.phase)); one recovery at a time"))
        }
        if let other = registry.snapshot().first(where: { $0.status == .recovering }) {
            return .failure(.init("backend \(other.backend.id) is being recovered (\(other.reason)); one recovery at a time"))
        }
        switch entry.status {
        case .online: return .failure(.init("backend \(id) is online; only a failed or detached backend is recovered"))
        case .recovering: return .failure(.init("backend \(id) is being recovered already"))
        case .failed, .down: break
        }
        if let fenced = registry.fencedReason() { return .failure(.init("this node \(fenced); recover from a node that has quorum")) }
        let online = registry.online()
        // The donor: the last online backend, to spare the lead (every online backend holds the same data).
        guard let donor = online.last else { return .failure(.init("no backend is online to copy \(id) from")) }
        let recoveryID = "\(configuration.node.id)-\(Int(WallClock.unixTime()))"
        let p = RecoveryProgress(id: recoveryID, backend: id, donor: donor.id, node: configuration.node.id, phase: "checking", detail: "checks",
                                 bytes: nil, lagBytes: nil, gateStall: nil, databases: [], copied: 0, startedAt: WallClock.unixTime(),
                                 finishedAt: nil, error: nil)
        // Claimed here first: the orphan watcher must never see this node's backend `recovering`
        // without this node's recovery of it (and two requests at once start one recovery).
        let previous = current.withLock { c -> RecoveryProgress?? in
            if let running = c, !running.finished { return nil }
            let before = c
            c = p
            return .some(before)
        }
        guard let previous else { return .failure(.init("a recovery is starting or running on this node; one recovery at a time")) }
        guard registry.setStatus(id, .recovering, reason: "being recovered from \(donor.id) by node \(configuration.node.id) (recovery \(recoveryID)\(automatic ? ", automatic" : ""))",
                                 now: WallClock.unixTime(), expected: [.failed, .down]) else {
            current.withLock { $0 = previous }
            return .failure(.init("backend \(id) changed status meanwhile; look at `pgchorus backends` and retry"))
        }
        cancelRequested.store(false, ordering: .releasing)
        let runner = RecoveryRunner(configuration: configuration, target: entry.backend, donor: donor)
        Task.detached { await self.run(runner, id: recoveryID) }
        logger.notice("recovery started", metadata: ["backend": "\(id)", "donor": "\(donor.id)", "recovery": "\(recoveryID)"])
        return .success(p)
    }

    /// Asks the running recovery of `id` to stop (it cleans up and leaves the backend failed).
    public func cancel(_ id: String) -> Result<String, RecoveryRefusal> {
        guard let p = progress(), p.backend == id, !p.finished else {
            return .failure(.init("no recovery of \(id) is running on this node\(registry.status(of: id) == .recovering ? " (another node coordinates it; cancel it there)" : "")"))
        }
        cancelRequested.store(true, ordering: .releasing)
        return .success("cancelling the recovery of \(id); it is cleaned up and the backend stays failed")
    }

    private func update(_ change: (inout RecoveryProgress) -> Void) {
        current.withLock { if var p = $0 { change(&p); $0 = p } }
    }

    // MARK: running

    func run(_ runner: RecoveryRunner, id: String) async {
        runner.onProgress = { [weak self] detail, bytes in self?.update { $0.detail = detail; if let bytes { $0.bytes = bytes } } }
        runner.cancelled = { [weak self] in self?.isCancelled ?? true }
        var plan = RecoveryPlan()
        var actions = plan.handle(.started)
        var gateClosedAt: Double?
        for _ in 0..<10_000 where !actions.isEmpty {
            let action = actions.removeFirst()
            let event = await perform(action, runner: runner, plan: plan, id: id, gateClosedAt: &gateClosedAt)
            if let event {
                let restartsBefore = plan.schemaRestarts
                actions += plan.handle(event)
                if plan.schemaRestarts > restartsBefore, let why = plan.restartReason {
                    logger.warning("recovery starts its copy over: \(why)", metadata: [
                        "backend": "\(runner.target.id)", "recovery": "\(id)",
                        "attempt": "\(plan.schemaRestarts + 1) of \(RecoveryPlan.maxSchemaAttempts)"])
                    let (restarts, reason) = (plan.schemaRestarts, why)
                    update { $0.restarts = restarts; $0.restartReason = reason }
                }
            }
            let (phase, databases, copied, failure) = (plan.phase, plan.databases, plan.copied, plan.failure)
            update {
                $0.phase = phase.rawValue; $0.databases = databases; $0.copied = copied; $0.error = failure
                if phase.isFinal { $0.detail = "cleaning up" }
            }
            Self.phaseGauge.record(Self.phaseNumber(phase))
        }
        update { $0.finishedAt = WallClock.unixTime(); $0.error = plan.failure; if plan.phase == .online { $0.detail = "done" } }
        Self.outcomes.increment()
        if plan.phase == .online {
            logger.notice("recovery finished: backend online", metadata: ["backend": "\(runner.target.id)", "recovery": "\(id)",
                                                                          "gate_stall": "\(progress()?.gateStall ?? 0)"])
        } else {
            logger.error("recovery failed", metadata: ["backend": "\(runner.target.id)", "recovery": "\(id)", "reason": "\(plan.failure ?? "?")"])
        }
    }

    static func phaseNumber(_ p: RecoveryPlan.Phase) -> Double {
        switch p {
        case .checking: 1
        case .globals: 2
        case .copying: 3
        case .catchingUp: 4
        case .gating: 5
        case .cuttingOver: 6
        case .online: 0
        case .failed: -1
        }
    }

    var isCancelled: Bool { cancelRequested.load(ordering: .acquiring) }

    private func perform(_ action: RecoveryPlan.Action, runner: RecoveryRunner, plan: RecoveryPlan, id: String,
                         gateClosedAt: inout Double?) async -> RecoveryPlan.Event? {
        if isCancelled, !plan.phase.isFinal, action != .cleanUp, action != .openGate {
            if case .markFailed = action {} else { return .cancelled }
        }
        let target = runner.target.id
        do {
            switch action {
            case .runChecks:
                let dbs = try await blocking { try runner.check() }
                return .checked(databases: dbs)
            case .copyGlobals:
                try await blocking {
                    try runner.copyGlobals()
                    try runner.dropExtraDatabases(keeping: plan.databases)
                }
                return .globalsCopied
            case let .copyDatabase(db):
                update { $0.detail = "\(db): starting"; $0.bytes = nil }
                try await blocking { try runner.copyDatabase(db) }
                return .databaseCopied(db)
            case .waitForCatchUp:
                return try await waitForCatchUp(runner, databases: plan.databases)
            case .closeGate:
                return try await closeGate(runner, id: id, closedAt: &gateClosedAt)
            case .cutOver:
                let deadline = WallClock.monotonic() + max(0.2, configuration.recovery.gateTimeout - (WallClock.monotonic() - (gateClosedAt ?? WallClock.monotonic())))
                update { $0.detail = "cut-over: waiting for the last commits, setting sequences" }
                try await blocking { try runner.cutOver(databases: plan.databases, deadline: deadline) }
                return .cutOver
            case .markOnline:
                // (The gate's stall is recorded when it opens, the next action.)
                if !registry.setStatus(target, .online, reason: "recovered from \(runner.donor.id) by node \(configuration.node.id) (recovery \(id))",
                                       now: WallClock.unixTime(), expected: [.recovering]) {
                    logger.error("the recovered backend \(target) changed status during its cut-over; it was not set online")
                }
                return nil
            case .openGate:
                stateService.gate.open(id: id)
                stateService.withdrawGate(id: id)
                if let at = gateClosedAt {
                    let stall = WallClock.monotonic() - at
                    Self.stallRecorder.record(stall)
                    update { $0.gateStall = stall }
                    gateClosedAt = nil
                }
                return nil
            case .cleanUp:
                let backends = registry.snapshot().filter { $0.status == .online || $0.backend.id == runner.donor.id }.map(\.backend)
                let config = configuration
                let problems = (try? await blocking { RecoveryRunner.cleanUp(configuration: config, target: runner.target, backends: backends) }) ?? []
                for p in problems { logger.warning("recovery clean-up: \(p)") }
                return nil
            case let .markFailed(why):
                registry.setStatus(target, .failed, reason: "recovery failed: \(why)", now: WallClock.unixTime(), expected: [.recovering])
                update { $0.error = why }
                return nil
            }
        } catch let t as RecoveryRunner.GateTimeout {
            return .gateTimedOut(t.description)
        } catch let s as RecoveryRunner.SchemaChanged {
            return .schemaChanged(s.description)
        } catch {
            return .failed("\(error)")
        }
    }

    private func waitForCatchUp(_ runner: RecoveryRunner, databases: [String]) async throws -> RecoveryPlan.Event {
        let started = WallClock.monotonic()
        // Test hook: stay in the catch-up this many seconds (to act on a recovery in flight).
        let hold = Double(WallClock.environment("PGCHORUS_TEST_RECOVERY_HOLD") ?? "") ?? 0
        update { $0.detail = "catching up" }
        for _ in 0..<10_000_000 {
            if isCancelled { return .cancelled }
            let (lag, problem) = try await blocking { (try runner.lag(), try runner.problems(databases: databases)) }
            update { $0.lagBytes = lag }
            Self.lagGauge.record(Double(lag))
            if let problem { return .failed(problem) }
            if lag <= Int64(configuration.recovery.catchUpLag), WallClock.monotonic() - started >= hold { return .caughtUp }
            guard WallClock.monotonic() - started < configuration.recovery.catchUpTimeout else {
                return .failed("the target did not catch up within recovery.catch_up_timeout (\(configuration.recovery.catchUpTimeout) s); \(lag) bytes behind")
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        return .failed("catch-up did not end")
    }

    /// Closes the gate on this node and every live peer, and waits until no session anywhere has a
    /// transaction open and no vote is unfinished on the donor.
    private func closeGate(_ runner: RecoveryRunner, id: String, closedAt: inout Double?) async throws -> RecoveryPlan.Event {
        guard stateService.hasQuorum() else { return .failed("this node lost quorum") }
        let timeout = configuration.recovery.gateTimeout
        let lease = timeout + 5
        let start = WallClock.monotonic()
        closedAt = start
        update { $0.detail = "write gate closing" }
        stateService.gate.close(id: id, lease: lease)
        stateService.requestGate(id: id, lease: lease)
        var waiting = ""
        for _ in 0..<1_000_000 {
            guard WallClock.monotonic() - start < timeout else { break }
            let peers = stateService.nodes().filter { $0.alive && !$0.isSelf }.map(\.id)
            let drainedPeers = stateService.drainedPeers(gate: id)
            let busyPeers = peers.filter { !drainedPeers.contains($0) }
            if !stateService.gate.drained(id: id) {
                waiting = "\(stateService.gate.busy) session(s) of this node in a transaction"
            } else if !busyPeers.isEmpty {
                waiting = "node(s) \(busyPeers.joined(separator: ", ")) not drained"
            } else {
                let votes = try await blocking { try runner.openVotes() }
                if votes == 0 { return .gateClosed }
                waiting = "\(votes) vote(s) unfinished on the donor"
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        return .gateTimedOut("after \(timeout) s (recovery.gate_timeout): \(waiting)")
    }

    /// Runs blocking libpq and child-process work on its own thread.
    func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in
            let t = Thread { c.resume(with: Result { try body() }) }
            t.stackSize = 1 << 20
            t.start()
        }
    }

    // MARK: watching

    /// A recovery whose coordinator is gone leaves the backend `recovering`: after the peer timeout
    /// the backend is failed and the replication objects are dropped (also those of this node's own
    /// recovery interrupted by a restart).
    public func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                for _ in 0..<Int.max {
                    self.reapOrphans()
                    self.recoverAutomatically(now: WallClock.unixTime())
                    try await Task.sleep(for: .seconds(1))
                }
            }
        } catch is CancellationError {}
    }

    /// `recovery.auto`: a failed backend (not one an administrator detached) whose health checks have
    /// passed for `recovery.auto_after` seconds is recovered — by one node only: the first alive node
    /// in configuration order, while it holds quorum.
    func recoverAutomatically(now: Double) {
        guard configuration.recovery.auto else { return }
        if let p = progress(), !p.finished { return }
        if let p = progress(), p.phase == "failed", let at = p.finishedAt {
            automatic.withLock { $0.lastFailure[p.backend] = max($0.lastFailure[p.backend] ?? 0, at) }
        }
        let failed = registry.snapshot().filter { $0.status == .failed }.map(\.backend.id)
        let candidate = automatic.withLock { a -> String? in
            for id in a.healthySince.keys where !failed.contains(id) { a.healthySince[id] = nil }
            var ready: String?
            for id in failed {
                guard healthy(id) == true else { a.healthySince[id] = nil; continue }
                let since = a.healthySince[id] ?? now
                a.healthySince[id] = since
                let backedOff = now - (a.lastFailure[id] ?? 0) >= Self.autoBackoff
                if ready == nil, now - since >= configuration.recovery.autoAfter, backedOff { ready = id }
            }
            return ready
        }
        guard let id = candidate, stateService.hasQuorum(),
              stateService.nodes().first(where: { $0.alive })?.isSelf == true else { return }
        switch start(id, automatic: true) {
        case .success:
            logger.notice("recovering backend \(id) automatically (recovery.auto): its health checks have passed for \(configuration.recovery.autoAfter) s")
        case let .failure(why):
            automatic.withLock { $0.lastFailure[id] = now }
            logger.warning("automatic recovery of \(id) not started: \(why)")
        }
    }

    func reapOrphans() {
        let dead = Set(stateService.deadPeers())
        let mine = progress().flatMap { $0.finished ? nil : $0.backend }
        for e in registry.snapshot() where e.status == .recovering {
            let origin = e.state.origin
            let orphan = (origin == configuration.node.id && mine != e.backend.id) || dead.contains(origin)
            guard orphan, registry.fencedReason() == nil else { continue }
            let why = origin == configuration.node.id ? "its coordinator (this node) restarted" : "its coordinator \(origin) stopped"
            guard registry.setStatus(e.backend.id, .failed, reason: "recovery abandoned: \(why)", now: WallClock.unixTime(), expected: [.recovering]) else { continue }
            logger.error("recovery of \(e.backend.id) abandoned: \(why); cleaning up")
            let config = configuration, target = e.backend, backends = registry.online()
            let logger = logger
            Thread {
                for p in RecoveryRunner.cleanUp(configuration: config, target: target, backends: backends) { logger.warning("recovery clean-up: \(p)") }
            }.start()
        }
    }
}

/// Why a recovery may not start or be cancelled, as an operator reads it.
public struct RecoveryRefusal: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}
