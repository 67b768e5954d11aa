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
        var schedule: EpochSchedule
        var grants: [Int: @Sendable () -> Void] = [:]
        var targets: [Int: [Target]] = [:]
        var probing = false
        /// When each waiting turn asked (the bound counts from the oldest).
        var waitingSince: [Int: NIODeadline] = [:]
        /// The backends each statement has still to finish (sent or not yet).
        var pending: [Int: [String]] = [:]
        /// For each commit granted while statements were parked: those statements.
        var deferrals: [Int: Set<Int>] = [:]
        /// Followers whose COMMIT PREPAREDs wait for parked statements to reach them.
        var followerWaits: [FollowerWait] = []
        /// When a COMMIT PREPARED was last held back on each follower (`heldBack(_:)`).
        var lastHeldBack: [String: NIODeadline] = [:]
        /// How to cancel each running statement on the lead (given by its session).
        var cancels: [Int: @Sendable () -> Void] = [:]
        /// How to doom each running statement's transaction (given by its session): it is rolled back
        /// at its vote and the client gets 40001, where the statement may have seen a commit on some
        /// backends only (see `doom(_:)`).
        var dooms: [Int: @Sendable () -> Void] = [:]
        /// Statements that read no table but the one they write (never cancelled, never waited for once stuck).
        var targetOnly: Set<Int> = []
        /// Writes that must not be cancelled on the lead alone: they commit on each backend at their
        /// own end, outside the vote (an autocommit COPY or DDL), so the followers would commit them
        /// all the same. Waited for like the others (bounded), never cancelled.
        var uncancellable: Set<Int> = []
        /// Statements parked while waiting *before* their snapshot (a relation lock, the sequence turn's
        /// advisory lock): a commit applied meanwhile is seen alike everywhere, and making a follower's
        /// commit wait for them would only form a cycle (they wait for the very lock's holder).
        var preSnapshot: Set<Int> = []
        /// Statements whose session is in `COPY … FROM STDIN`: the backends wait for the client's data.
        /// Only there does a process seen waiting for its client (`ClientRead`) count as waiting: a
        /// backend that has a statement not yet read, or has just finished one, shows the same — and
        /// pg_stat_activity pairs a `state` of some moments ago with the wait of now, so even `active`
        /// does not tell a statement under way. Until 2026-12-06 any such sighting parked the statement,
        /// and a commit went ahead of it on the backend that had not yet started it (psycopg 3's
        /// `INSERT … SELECT count(*)` beside pipelined writers through two nodes: one backend's counts
        /// differed, every backend online, about 1 run in 20).
        var awaitsClient: Set<Int> = []
        /// Statements cancelled to let a follower's commit go, and when.
        var cancelled: [Int: NIODeadline] = [:]
        /// Follower waits that went on without their statements since the probe last logged.
        var deferralsTimedOut = 0
        /// Since when another node waits for the cluster-wide lock (cleared when it is let go).
        var remoteSince: NIODeadline?
        /// Parked statements cancelled before the cluster-wide lock is let go to another node, and when.
        var releaseCancels: [Int: NIODeadline] = [:]
        /// Statements already warned about going on past `releaseCancelBound`.
        var releaseWarned: Set<Int> = []
    }

    struct FollowerWait {
        var commit: Int
        var backend: String
        var since: NIODeadline
        var go: @Sendable () -> Void
    }

    private let state: Mutex<State>
    /// The cluster-wide half of the order (several clustering nodes), nil on a node of its own.
    private let order = Mutex<ClusterOrder?>(nil)
    let configuration: Configuration
    /// The node's backends as reloads leave them: the probe finds a backend here by id (one added by a
    /// reload is asked too) and lets go of its connection to one no longer online (failed, removed).
    private let registry: BackendRegistry
    /// The health-check login as last reloaded, for the probe's new connections.
    private let login: NodeLogin
    let logger: Logger
    private let pool = LazyThreadPool(threads: 1)
    /// Used by the probe loop only, on the pool's single thread.
    private let connections = ProbeConnections()
    static let probeInterval: TimeAmount = .microseconds(300)

    /// With several clustering nodes configured the order is cluster-wide (`signal` carries it).
    init(configuration: Configuration, logger: Logger, registry: BackendRegistry, login: NodeLogin, signal: ClusterOrderSignal? = nil) {
        self.configuration = configuration
        self.registry = registry
        self.login = login
        self.logger = logger
        let clusterWide = configuration.replication.commitEpochs && configuration.replication.clusterOrder
            && configuration.cluster.nodes.count > 1
        self.state = Mutex(State(schedule: EpochSchedule(clusterWide: clusterWide)))
        // A backend that leaves service (failed, detached, removed by a reload) is not asked any more.
        registry.addListener { [weak self] change, _ in
            guard change.status != .online else { return }
            self?.pruneProbeConnections()
        }
        guard clusterWide else { return }
        let signal = signal ?? ClusterOrderSignal()
        let made = ClusterOrder(configuration: configuration, registry: registry, login: login, signal: signal, logger: logger,
                                next: { [weak self] in self?.nextHold() }, reached: { [weak self] in self?.reached($0) })
        order.withLock { $0 = made }
        signal.onReceive { [weak self] from in self?.remoteWants(from) }
    }

    /// Whether the order spans every clustering node.
    var clusterWide: Bool { state.withLock { $0.schedule.clusterWide } }

    /// Asks the cluster order to move when the schedule wants another hold.
    private func moveOrderIfWanted(_ wanted: Bool) {
        if wanted { order.withLock { $0 }?.kick() }
    }

    /// For the cluster order's thread: the hold to take next (nil: keep what is held). Grants stop
    /// under the current hold from now on. Before the lock goes to another node, parked statements that
    /// have not yet reached every backend (and read more than the rows they write) are cancelled on the
    /// lead and waited for, at most `releaseCancelBound`: the other node's commit must not land on a
    /// follower before such a statement starts there.
    private func nextHold() -> EpochSchedule.Hold? {
        let (wanted, cancels, dooms, marked) = state.withLock { s -> (EpochSchedule.Hold?, [@Sendable () -> Void], [@Sendable () -> Void], Bool) in
            let w = s.schedule.wantedHold
            guard w != s.schedule.hold else { return (nil, [], [], false) }
            let go = s.beforeLettingGo(to: w, now: .now(), bound: Self.releaseCancelBound)
            if go.wait { return (nil, go.cancels, [], go.marked > 0) }
            let dooms = go.dooms
            if !go.overdue.isEmpty, s.releaseWarned.insert(go.overdue[0]).inserted {
                let undoomed = go.overdue.count - dooms.count
                self.logger.warning("the cluster-wide order lock is let go (another node's commit may be applied) while \(go.overdue.count) parked statement(s) of this node have not reached every backend within \(Self.releaseCancelBound.nanoseconds / 1_000_000) ms: \(dooms.count) of their transactions roll back at their vote (the clients get 40001 to retry)\(undoomed > 0 ? "; \(undoomed) could not be marked and may see that node's commit on some backends and not on others" : "")")
                ProxyMetrics.clusterOrderForced.increment()
            }
            if s.schedule.hold != .none { _ = s.schedule.held(.none) }
            return (w, [], dooms, false)
        }
        for d in dooms { d() }
        if !cancels.isEmpty {
            ProxyMetrics.epochCancels.increment(by: cancels.count)
            for c in cancels { c() }
        }
        if marked {
            // Statements waited for from now on (cancelled or not): look again once the bound has passed.
            let me = self
            MultiThreadedEventLoopGroup.singleton.next().scheduleTask(in: Self.releaseCancelBound + .milliseconds(5)) { me.order.withLock { $0 }?.kick() }
        }
        return wanted
    }

    /// How long the cluster-wide lock waits for parked statements cancelled before it goes to another node.
    static let releaseCancelBound: TimeAmount = .seconds(1)

    /// The cluster order holds `hold` now.
    private func reached(_ hold: EpochSchedule.Hold) {
        if OrderTrace.enabled { OrderTrace.note(configuration.node.id, "H", "\(hold)") }
        let (grants, again) = state.withLock { s -> ([@Sendable () -> Void], Bool) in
            let granted = s.schedule.held(hold)
            if hold == .none { s.remoteSince = nil }
            s.releaseCancels = [:]
            s.noteGranted(granted)
            return (s.take(granted), s.schedule.wantedHold != s.schedule.hold)
        }
        for g in grants { g() }
        moveOrderIfWanted(again)
        probeIfBlocked()
    }

    /// Another node waits for the cluster-wide lock.
    private func remoteWants(_ node: String) {
        let again = state.withLock { s -> Bool in
            s.schedule.remoteWants()
            if s.schedule.remoteWaiting, s.remoteSince == nil { s.remoteSince = .now() }
            return s.schedule.wantedHold != s.schedule.hold
        }
        moveOrderIfWanted(again)
        probeIfBlocked()
    }

    /// Whether the node orders statements and commits in epochs (`replication.commit_epochs`).
    var enabled: Bool { configuration.replication.commitEpochs }

    /// Asks for a turn; `grant` runs later (on any thread: hop to your event loop) unless it is
    /// granted at once, which the result says.
    /// How many statements (or commits) wait for their turn now.
    public var waitingTurns: Int { state.withLock { $0.waitingSince.count } }

    func request(_ kind: EpochSchedule.Kind, grant: @escaping @Sendable () -> Void) -> (ticket: Int, now: Bool) {
        if order.withLock({ $0 })?.retakeAfterFence() == true { reached(.none) }
        let (ticket, others, now, move) = state.withLock { s -> (Int, [@Sendable () -> Void], Bool, Bool) in
            let (ticket, granted) = s.schedule.request(kind)
            s.noteGranted(granted)
            let now = granted.contains(ticket)
            if !now {
                s.grants[ticket] = grant
                s.waitingSince[ticket] = .now()
            }
            return (ticket, s.take(granted.filter { $0 != ticket }), now, s.schedule.wantedHold != s.schedule.hold)
        }
        for g in others { g() }
        moveOrderIfWanted(move)
        probeIfBlocked()
        return (ticket, now)
    }

    /// Where a granted statement runs now (the lead, then the followers still running it), and the
    /// backends that have still to finish it (including those it has not been sent to yet).
    func running(_ ticket: Int, on targets: [Target], pending: [String], awaitsClient: Bool = false) {
        let ready = state.withLock { s -> [@Sendable () -> Void] in
            s.targets[ticket] = targets
            s.pending[ticket] = pending
            if awaitsClient { s.awaitsClient.insert(ticket) } else if !s.awaitsClient.isEmpty { s.awaitsClient.remove(ticket) }
            return s.readyFollowers(waiting: [])
        }
        for g in ready { g() }
    }

    /// Whether commit `commit`'s COMMIT PREPARED may be applied on follower `backend` now; if not, `go`
    /// runs once it may. It may at once unless statements were parked when the commit was granted. Such a statement (a write waiting on
    /// the lead for a row lock, usually of this very commit) took its snapshot before the commit on the
    /// lead; on a follower it must start before the commit too, so the commit waits there until the
    /// statement has reached that follower and waits on the same lock, or has finished there (at most
    /// `followerDeferral`, then the commit goes on and is logged).
    func applyOnFollower(_ commit: Int, backend: String, later go: @escaping @Sendable () -> Void) -> Bool {
        let now = state.withLock { s -> Bool in
            guard let waitsFor = s.deferrals[commit], !s.unmet(waitsFor, on: backend).isEmpty else { return true }
            s.followerWaits.append(FollowerWait(commit: commit, backend: backend, since: .now(), go: go))
            return false
        }
        if !now { probeIfBlocked() }
        return now
    }

    /// How to cancel statement `ticket` on the lead, should a follower's commit not be able to wait for it.
    /// A statement that reads no table but the one it writes (`readsOnlyItsTarget`) is not cancelled:
    /// the rows it waited for it sees committed on every backend alike (PostgreSQL's re-check on the
    /// lead, the snapshot on the followers).
    /// `doom` marks the statement's transaction to be rolled back at its vote (the client gets 40001):
    /// where the order must go on without the statement before it has reached every backend, it may see
    /// a commit on some backends and not on others, and its transaction must not commit anywhere.
    /// No `cancel`: a write that commits on each backend at its own end (outside the vote), which the
    /// followers would commit whatever the lead did: it is waited for as the others are (bounded), not
    /// cancelled.
    func onCancel(_ ticket: Int, readsOnlyItsTarget: Bool, _ cancel: (@Sendable () -> Void)?,
                  doom: (@Sendable () -> Void)? = nil) {
        state.withLock { s in
            guard s.schedule.isGranted(ticket) else { return }
            if readsOnlyItsTarget {
                s.targetOnly.insert(ticket)
            } else if let cancel {
                s.cancels[ticket] = cancel
            } else {
                s.uncancellable.insert(ticket)
            }
            if !readsOnlyItsTarget, let doom { s.dooms[ticket] = doom }
        }
    }

    /// When the node last held a COMMIT PREPARED back on follower `backend` (now, while it does); nil
    /// if it never did. The follower's statements may wait on that commit's locks meanwhile: its
    /// deadline counts from the end of such a wait, not through it (`FollowerDeadlines`).
    func heldBack(_ backend: String) -> NIODeadline? {
        state.withLock { s in
            s.followerWaits.contains { $0.backend == backend } ? .now() : s.lastHeldBack[backend]
        }
    }

    /// Whether statements were parked when commit `commit` was granted.
    func hasDeferrals(_ commit: Int) -> Bool {
        state.withLock { $0.deferrals[commit] != nil }
    }

    /// How long a follower's COMMIT PREPARED waits for the statements parked at its grant.
    static let followerDeferral: TimeAmount = .milliseconds(200)

    /// A turn is over (finished on every backend) or no longer wanted.
    func end(_ ticket: Int) {
        if OrderTrace.enabled { OrderTrace.note(configuration.node.id, "EE", "\(ticket)") }
        let (grants, move) = state.withLock { s -> ([@Sendable () -> Void], Bool) in
            s.forget(ticket)
            let granted = s.schedule.end(ticket)
            s.noteGranted(granted)
            return (s.take(granted) + s.readyFollowers(waiting: []), s.schedule.wantedHold != s.schedule.hold)
        }
        for g in grants { g() }
        moveOrderIfWanted(move)
    }

    /// Commit groups applied so far (for tests and status).
    var epoch: Int { state.withLock { $0.schedule.epoch } }

    private func park(_ tickets: [Int], preSnapshot: Set<Int> = []) {
        guard !tickets.isEmpty else { return }
        if OrderTrace.enabled { OrderTrace.note(configuration.node.id, "PK", "\(tickets)") }
        let (grants, move) = state.withLock { s -> ([@Sendable () -> Void], Bool) in
            s.preSnapshot.formUnion(preSnapshot.filter { s.schedule.isGranted($0) })
            let granted = s.schedule.park(tickets)
            s.noteGranted(granted)
            return (s.take(granted), s.schedule.wantedHold != s.schedule.hold)
        }
        for g in grants { g() }
        moveOrderIfWanted(move)
    }

    // MARK: the probe

    private func probeIfBlocked() {
        let start = state.withLock { s -> Bool in
            guard !s.probing, !s.schedule.blockers.isEmpty || !s.followerWaits.isEmpty else { return false }
            s.probing = true
            return true
        }
        guard start else { return }
        let me = self
        pool.started.submit { _ in me.probeLoop() }
    }

    /// Asks the backends about the blockers until nothing waits on a running statement (bounded by
    /// the follower timeout, then forced).
    private func probeLoop() {
        let bound = TimeAmount.nanoseconds(Int64(configuration.replication.followerTimeout * 1e9))
        for _ in 0..<1_000_000 {
            let (blockers, since, followerTargets, followersWait) = state.withLock { s -> ([Int], NIODeadline?, [Target], Bool) in
                let b = s.schedule.blockers
                if b.isEmpty && s.followerWaits.isEmpty { s.probing = false }
                // Where the statements the followers' commits wait for run now.
                let followerTargets = s.followerWaits.flatMap { w in
                    s.unmet(s.deferrals[w.commit] ?? [], on: w.backend).flatMap { s.targets[$0] ?? [] }
                }
                let since = (Array(s.waitingSince.values) + [s.remoteSince].compactMap { $0 }).min()
                return (b, since, followerTargets, !s.followerWaits.isEmpty)
            }
            guard !blockers.isEmpty || followersWait else { return }
            if followersWait { releaseFollowers(seen: waitingTargets(followerTargets)) }
            guard !blockers.isEmpty else {
                usleep(UInt32(Self.probeInterval.nanoseconds / 1000))
                continue
            }
            if let since, NIODeadline.now() - since > bound {
                logger.warning("a turn waited \(configuration.replication.followerTimeout) s (replication.follower_timeout) on running statements not seen waiting on a lock; they no longer hold it up (statement order across backends is not guaranteed for them)", metadata: ["statements": "\(blockers)"])
                ProxyMetrics.epochForced.increment()
                park(blockers)
                continue
            }
            usleep(UInt32(Self.probeInterval.nanoseconds / 1000))
            // Most statements finish within the interval: ask only about those that still hold a turn
            // up after it (and where they run now), not about the ones seen before it.
            let (still, stillTargets) = state.withLock { s -> ([Int], [Int: [Target]]) in
                let now = Set(s.schedule.blockers)
                let still = blockers.filter(now.contains)
                return (still, s.targets.filter { still.contains($0.key) })
            }
            guard !still.isEmpty else { continue }
            ProxyMetrics.epochProbes.increment()
            let found = waiting(still, stillTargets)
            park(found.parked, preSnapshot: found.preSnapshot)
        }
        state.withLock { $0.probing = false }
    }

    /// Lets the followers' COMMIT PREPAREDs go where the statements they wait for wait on a lock there
    /// (or after `followerDeferral`).
    private func releaseFollowers(seen: Set<Target>) {
        let (ready, timedOut) = state.withLock { s -> ([@Sendable () -> Void], Int) in
            let ready = s.readyFollowers(waiting: seen)
            defer { s.deferralsTimedOut = 0 }
            return (ready, s.deferralsTimedOut)
        }
        if timedOut > 0 {
            logger.warning("\(timedOut) follower COMMIT PREPARED(s) went ahead of a statement that waited on a lock when they were granted and had not reached that follower within \(Self.followerDeferral.nanoseconds * 5 / 1_000_000) ms of being cancelled (that statement may see the commit there: its transaction, where it can, rolls back at its vote with 40001)")
        }
        for g in ready { g() }
    }

    /// The blockers whose every target process waits on a lock or for its client (in COPY FROM STDIN
    /// only: `State.awaitsClient`), and those of them
    /// that wait before their snapshot everywhere (see `State.preSnapshot`).
    private func waiting(_ blockers: [Int], _ targets: [Int: [Target]]) -> (parked: [Int], preSnapshot: Set<Int>) {
        let seen = waits(blockers.flatMap { targets[$0] ?? [] })
        let found = state.withLock { $0.waitsThatCount(seen) }
        let parked = blockers.filter { t in
            guard let ts = targets[t], !ts.isEmpty else { return false }
            return ts.allSatisfy { found[$0] != nil }
        }
        return (parked, Set(parked.filter { t in (targets[t] ?? []).allSatisfy { found[$0] == .beforeSnapshot } }))
    }

    /// Those of `targets` whose process waits on a lock or for its client (in COPY FROM STDIN only).
    private func waitingTargets(_ targets: [Target]) -> Set<Target> {
        let seen = waits(targets)
        return Set(state.withLock { $0.waitsThatCount(seen) }.keys)
    }

    /// What a process seen waiting waits for: a lock taken before the statement's snapshot, one taken
    /// after it, or its client (which counts only in `COPY … FROM STDIN`: `State.awaitsClient`).
    enum Wait { case beforeSnapshot, afterSnapshot, client }

    /// What each of `targets` that waits waits for (one query per backend): a row lock (`transactionid`,
    /// `tuple`) or its client reading its rows (`ClientWrite`) after its snapshot; the client's data
    /// (`ClientRead`); any other lock (a relation, an advisory lock such as the sequence turn's, taken
    /// before the statement) before it.
    private func waits(_ targets: [Target]) -> [Target: Wait] {
        var byBackend: [String: Set<Int32>] = [:]
        for t in targets where t.pid != 0 { byBackend[t.backend, default: []].insert(t.pid) }
        // Every backend is asked at once, then each answer read: a probe takes the slowest round trip, not their sum.
        let asked = byBackend.compactMap { backend, pids in send(backend, pids).map { (backend, $0) } }
        var seen: [Target: Wait] = [:]
        for (backend, c) in asked {
            for (pid, wait) in answer(backend, c) { seen[Target(backend: backend, pid: pid)] = wait }
        }
        return seen
    }

    /// With the order trace on, also the processes each one waits for.
    static let waitingSQL = "SELECT pid, wait_event_type, wait_event" + (OrderTrace.enabled ? ", pg_catalog.pg_blocking_pids(pid)::text" : "")
        + " FROM pg_catalog.pg_stat_activity WHERE pid = ANY($1::int[]) AND state = 'active' AND wait_event_type IN ('Lock', 'Client')"

    /// The backend `id` as the node knows it now (a reload may have added or removed it).
    private func backend(_ id: String) -> Configuration.Backend? {
        registry.entry(id)?.backend
    }

    /// Closes the probe's connections to backends that are not online any more (failed, detached,
    /// removed by a reload): an idle session on a server that left the cluster helps nobody. One
    /// needed again is opened again by the next probe that asks there. Runs on the probe's thread.
    private func pruneProbeConnections() {
        let (registry, connections) = (self.registry, self.connections)
        // No pool yet: the probe has opened no connection.
        pool.ifStarted?.submit { state in
            guard case .active = state else { return }
            let online = Set(registry.online().map(\.id))
            for id in connections.byBackend.keys where !online.contains(id) {
                connections.byBackend[id] = nil
                connections.traced[id] = nil
            }
        }
    }

    /// Asks `backendID` which of `pids` wait on a lock or for their client; nil when it cannot be asked.
    private func send(_ backendID: String, _ pids: Set<Int32>) -> LibPQConnection? {
        guard let backend = backend(backendID) else { return nil }
        let array = "{" + pids.map(String.init).joined(separator: ",") + "}"
        do {
            let c = try connection(backend)
            // Prepared once per connection: parsing and planning the view took the server ~3× its run.
            try c.sendPrepared("pgchorus_waiting", Self.waitingSQL, [array], timeout: 0.5)
            return c
        } catch {
            connections.byBackend[backendID] = nil
            return nil
        }
    }

    /// The answer to `send`: the processes that wait, and what for.
    private func answer(_ backendID: String, _ c: LibPQConnection) -> [(Int32, Wait)] {
        do {
            let rows = try c.results(timeout: 0.5)
            if OrderTrace.enabled {
                let text = rows.map { r in r.map { $0 ?? "-" }.joined(separator: ":") }.sorted().joined(separator: " ")
                if connections.traced[backendID] != text {
                    connections.traced[backendID] = text
                    OrderTrace.note(configuration.node.id, "P", "\(backendID) \(text)")
                }
            }
            return rows.compactMap { row -> (Int32, Wait)? in
                guard row.count >= 3, let text = row[0], let pid = Int32(text) else { return nil }
                // `ClientWrite`: blocked writing its rows to pgchorus (a client slow to read them), under
                // way after its snapshot. `ClientRead` counts only in COPY FROM STDIN (`waitsThatCount`).
                if row[1] == "Client" { return (pid, row[2] == "ClientWrite" ? .afterSnapshot : .client) }
                let rowLock = row[2] == "transactionid" || row[2] == "tuple"
                return (pid, rowLock ? .afterSnapshot : .beforeSnapshot)
            }
        } catch {
            connections.byBackend[backendID] = nil
            return []
        }
    }

    private func connection(_ backend: Configuration.Backend) throws -> LibPQConnection {
        if let c = connections.byBackend[backend.id] { return c }
        let h = login.healthCheck
        let conninfo = LibPQConnection.conninfo(backend, database: h.database, user: h.user, password: h.password,
                                                connectTimeout: 2, application: "pgchorus-epochs",
                                                extra: "options=\(LibPQConnection.quote("-c statement_timeout=2000"))")
        let c = try LibPQConnection(conninfo, target: backend.description)
        connections.byBackend[backend.id] = c
        return c
    }

    func shutdown() {
        order.withLock { $0 }?.shutdown()
        // The connections close with the pool's thread (the probe loop is their only user).
        pool.shutdown()
    }
}

extension CommitEpochs.State {
    /// The grant callbacks of `tickets` (granted now), taken out with their waiting times.
    mutating func take(_ tickets: [Int]) -> [@Sendable () -> Void] {
        if OrderTrace.enabled, !tickets.isEmpty { OrderTrace.note("-", "EG", "\(tickets) hold=\(schedule.hold) wanted=\(schedule.wantedHold) remote=\(schedule.remoteWaiting)") }
        return tickets.compactMap { t in
            waitingSince[t] = nil
            return grants.removeValue(forKey: t)
        }
    }

    /// Commits granted now remember the statements parked at that moment.
    mutating func noteGranted(_ tickets: [Int]) {
        for t in tickets where schedule.kind(of: t) == .commit {
            // A statement that reads only the rows it writes sees the same rows either way (see `onCancel`).
            let parked = schedule.parkedStatements.filter { !targetOnly.contains($0) && !preSnapshot.contains($0) }
            if !parked.isEmpty { deferrals[t] = Set(parked) }
        }
    }

    /// What must happen before the node's hold changes to `wanted`. Every change but exclusive → shared
    /// lets the lock go for a moment, and a commit of another node waiting for it may be applied then —
    /// not only when that node has said it waits (its signal may not have arrived yet). Parked
    /// statements that have not reached every backend and read more than the rows they write would see
    /// that commit on some backends only: they are cancelled on the lead (`cancels`, once each) and
    /// waited for (`wait`) up to `bound`; past it the lock goes (`overdue`) and their transactions are
    /// doomed (`dooms`).
    struct LetGo {
        var wait = false
        var cancels: [@Sendable () -> Void] = []
        /// Statements waited for from now on (cancelled, or `uncancellable`).
        var marked = 0
        var dooms: [@Sendable () -> Void] = []
        var overdue: [Int] = []
    }

    mutating func beforeLettingGo(to wanted: EpochSchedule.Hold, now: NIODeadline, bound: TimeAmount) -> LetGo {
        var go = LetGo()
        guard schedule.hold != .none, !(schedule.hold == .exclusive && wanted == .shared) else { return go }
        let early = schedule.parkedStatements.filter { t in
            !targetOnly.contains(t) && !preSnapshot.contains(t) && (cancels[t] != nil || uncancellable.contains(t))
                && (pending[t]?.count ?? 0) > (targets[t]?.count ?? 0)
        }
        for t in early where releaseCancels[t] == nil {
            releaseCancels[t] = now
            go.marked += 1
            if let c = cancels[t] { go.cancels.append(c) }
        }
        if early.contains(where: { t in releaseCancels[t].map { now - $0 < bound } ?? false }) {
            go.wait = true
            return go
        }
        go.overdue = early.filter { t in releaseCancels[t].map { now - $0 >= bound } ?? false }
        // The lock goes without them: their transactions must not commit anywhere.
        go.dooms = doom(go.overdue)
        return go
    }

    /// Of what the probe saw, the waits that count: every lock wait, and a wait for the client only
    /// where a statement in `COPY … FROM STDIN` runs (`awaitsClient`).
    func waitsThatCount(_ seen: [CommitEpochs.Target: CommitEpochs.Wait]) -> [CommitEpochs.Target: CommitEpochs.Wait] {
        guard seen.values.contains(.client) else { return seen }
        let copying = Set(awaitsClient.flatMap { targets[$0] ?? [] })
        return seen.filter { $0.value != .client || copying.contains($0.key) }
    }

    /// Takes out the doom callbacks of `tickets` (each runs once), to be run outside the lock.
    mutating func doom(_ tickets: [Int]) -> [@Sendable () -> Void] {
        tickets.compactMap { dooms.removeValue(forKey: $0) }
    }

    /// The statements among `tickets` still running that have not finished on `backend`.
    func unmet(_ tickets: Set<Int>, on backend: String) -> [Int] {
        tickets.filter { t in schedule.isGranted(t) && (pending[t]?.contains(backend) ?? false) }.sorted()
    }

    /// Takes out the follower waits that may go now: every statement they wait for has finished on
    /// that follower or is seen (`waiting`) waiting on a lock there. A statement that cannot get there
    /// first — it waits on the lead again, for a later commit, or has not finished on the lead within
    /// `followerDeferral` — is cancelled on the lead (its client gets 40001) and waited for; returns
    /// the callbacks to run (grants and cancels).
    mutating func readyFollowers(waiting: Set<CommitEpochs.Target>) -> [@Sendable () -> Void] {
        guard !followerWaits.isEmpty else { return [] }
        let now = NIODeadline.now()
        var ready: [@Sendable () -> Void] = []
        var kept: [CommitEpochs.FollowerWait] = []
        for w in followerWaits {
            var stuck: [Int] = []
            let open = unmet(deferrals[w.commit] ?? [], on: w.backend).filter { t in
                let all = targets[t] ?? []
                let there = all.filter { $0.backend == w.backend }
                if !there.isEmpty { return !there.allSatisfy { waiting.contains($0) } }
                // Not on this follower yet: waiting on a lock again where it runs (the lead commits first,
                // so that is a later commit), or still running there after `followerDeferral`.
                if (!all.isEmpty && all.allSatisfy { waiting.contains($0) }) || now - w.since > CommitEpochs.followerDeferral {
                    if targetOnly.contains(t) || preSnapshot.contains(t) { return false }
                    stuck.append(t)
                }
                return true
            }
            for t in stuck where cancelled[t] == nil {
                cancelled[t] = now
                if let c = cancels[t] { ready.append(c) }
            }
            // A cancel that did not end the statement in time (lost, or it ignored it): go on, logged. A
            // statement that runs on no other backend by now — finished on the lead (the cancel came too
            // late), on its way to this follower or running there — is about to finish here too, and
            // only the overall bound gives up on it (on a loaded host carrying it over may take more
            // than a second after the cancel).
            let hopeless = !open.isEmpty && open.allSatisfy { t in
                (targets[t] ?? []).contains { $0.backend != w.backend }
                    && cancelled[t].map { now - $0 > CommitEpochs.followerDeferral * 5 } ?? false
            } || now - w.since > CommitEpochs.followerDeferral * 25
            lastHeldBack[w.backend] = now
            if open.isEmpty || hopeless {
                if hopeless {
                    deferralsTimedOut += 1
                    // The commit lands on this follower before those statements: their transactions must not commit.
                    ready += doom(open)
                }
                ready.append(w.go)
            } else {
                kept.append(w)
            }
        }
        followerWaits = kept
        return ready
    }
}

/// The probe's libpq connections, one per backend: touched only by the probe loop, which runs on the
/// single thread of `CommitEpochs`' pool, one loop at a time.
private final class ProbeConnections: @unchecked Sendable {
    var byBackend: [String: LibPQConnection] = [:]
    /// What the order trace last wrote of each backend's waits (`OrderTrace`).
    var traced: [String: String] = [:]
}

extension CommitEpochs.State {
    /// Drops whatever is kept of turn `ticket` (it ended). The collections that hold nothing (most of
    /// them, at most moments: they are for writes, waits, parked statements) are not asked, which
    /// saves hashing the ticket a dozen times for every statement.
    mutating func forget(_ ticket: Int) {
        if !targets.isEmpty { targets[ticket] = nil }
        if !pending.isEmpty { pending[ticket] = nil }
        if !grants.isEmpty { grants[ticket] = nil }
        if !waitingSince.isEmpty { waitingSince[ticket] = nil }
        if !deferrals.isEmpty { deferrals[ticket] = nil }
        if !cancels.isEmpty { cancels[ticket] = nil }
        if !dooms.isEmpty { dooms[ticket] = nil }
        if !cancelled.isEmpty { cancelled[ticket] = nil }
        if !releaseCancels.isEmpty { releaseCancels[ticket] = nil }
        if !releaseWarned.isEmpty { releaseWarned.remove(ticket) }
        if !targetOnly.isEmpty { targetOnly.remove(ticket) }
        if !uncancellable.isEmpty { uncancellable.remove(ticket) }
        if !preSnapshot.isEmpty { preSnapshot.remove(ticket) }
        if !awaitsClient.isEmpty { awaitsClient.remove(ticket) }
    }
}
