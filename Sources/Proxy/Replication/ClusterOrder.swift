import Logging
import NIOCore
import NIOPosix
import State
import Synchronization

/// The cluster-wide half of the order of commits and statements (`EpochSchedule.clusterWide`): the
/// node holds one advisory lock on the lead backend — which every node shares — through a libpq
/// connection of its own: *shared* while its statements run, *exclusive* while its commits (and
/// exclusive statements) are applied. PostgreSQL's lock manager then orders the epochs of all nodes:
/// no node applies a commit while another node's statement runs, and a request waiting for the lock
/// is served before later ones (a node asking for it again queues behind a waiting node).
///
/// A node keeps the lock shared while it is idle, so that its next statement starts at once; a node
/// that waits for it exclusive tells the others (`ClusterOrderSignal`, through the state service), and
/// they let it go as soon as their running statements have finished or wait on a lock.
///
/// Bounded: a lock not granted within `replication.follower_timeout` is held by a node that is frozen
/// or cut off: its order connection is terminated on the lead (its locks go with it) and the request
/// is made once more; if that fails too the node goes on without the lock, with a warning
/// (`pgchorus_cluster_order_forced_total`). A lead that changes (or a lost connection) is connected
/// anew and the lock taken again there.
final class ClusterOrder: Sendable {
    /// The advisory lock (two-key form; the sequence turn uses `7451037, 1`).
    static let lockKeys = (7_451_037, 2)
    static var lock: String { "\(lockKeys.0), \(lockKeys.1)" }
    static let applicationName = "pgchorus-order"

    struct Inner {
        var running = false
        /// Kicked since the thread last asked what is wanted.
        var dirty = false
        var stopped = false
        /// The lead the lock should be held on, when it changed since the connection was made.
        var leadChanged = false
        var announcing: RepeatedTask?
        /// The look at the idle order connection (`watchLink`), and whether one is queued or running.
        var watching: RepeatedTask?
        var checking = false
    }

    private let inner = Mutex(Inner())
    private let pool = NIOThreadPool(numberOfThreads: 1)
    /// Used only on the pool's thread.
    private let link = OrderLink()
    let configuration: Configuration
    let registry: BackendRegistry
    /// The health-check login as last reloaded, for the order connection's next login.
    let login: NodeLogin
    let logger: Logger
    let signal: ClusterOrderSignal
    /// Asks the schedule what to hold next; the schedule stops granting under the current hold when
    /// the answer differs (see `EpochSchedule.wantedHold`).
    let next: @Sendable () -> EpochSchedule.Hold?
    /// Tells the schedule what the node holds now.
    let reached: @Sendable (EpochSchedule.Hold) -> Void

    init(configuration: Configuration, registry: BackendRegistry, login: NodeLogin, signal: ClusterOrderSignal, logger: Logger,
         next: @escaping @Sendable () -> EpochSchedule.Hold?, reached: @escaping @Sendable (EpochSchedule.Hold) -> Void) {
        self.configuration = configuration
        self.registry = registry
        self.login = login
        self.signal = signal
        self.logger = logger
        self.next = next
        self.reached = reached
        pool.start()
        registry.addListener { [weak self] _, _ in self?.leadMayHaveChanged() }
        // Another node that found this one's hold stuck disconnects its order connection on the lead
        // (`terminateHolders`); an idle node would not notice until its next change of hold, and meanwhile
        // count on a lock it no longer has. Looked at every 50 ms while nothing else runs on the order's thread.
        let watch = MultiThreadedEventLoopGroup.singleton.next().scheduleRepeatedTask(initialDelay: .milliseconds(50), delay: .milliseconds(50)) { [weak self] _ in
            self?.watchLink()
        }
        inner.withLock { $0.watching = watch }
    }

    /// Submits a look at the idle order connection (see `init`).
    private func watchLink() {
        onOrderThread({ s in
            guard !s.running, !s.stopped, !s.checking else { return false }
            s.checking = true
            return true
        }, { $0.checkLink() })
    }

    /// Runs `body` on the order's thread when `claim` (under the lock) says it is to run.
    private func onOrderThread(_ claim: (inout Inner) -> Bool, _ body: @escaping @Sendable (ClusterOrder) -> Void) {
        guard inner.withLock({ claim(&$0) }) else { return }
        let me = self
        pool.submit { _ in body(me) }
    }

    /// On the order's thread: an order connection the lead closed while the node held the lock through
    /// it means the lock is gone: the schedule is told it holds nothing, and it is taken again.
    private func checkLink() {
        defer { inner.withLock { $0.checking = false } }
        guard let c = link.connection, link.held != .none, c.closedByServer() else { return }
        logger.warning("the cluster-wide order connection was closed on the lead while this node held the lock \(link.held == .shared ? "shared" : "exclusive") (another node found it stuck and disconnected it, or the lead restarted): it is taken again")
        link.close()
        reached(.none)
        kick()
    }

    /// The schedule wants another hold: the order's thread works until it holds what is wanted.
    func kick() {
        onOrderThread({ s in
            s.dirty = true
            guard !s.running, !s.stopped else { return false }
            s.running = true
            return true
        }, { $0.work() })
    }

    private func leadMayHaveChanged() {
        inner.withLock { $0.leadChanged = true }
        kick()
    }

    private func work() {
        for _ in 0..<1_000_000 {
            let moved = inner.withLock { s -> Bool in
                defer { s.leadChanged = false; s.dirty = false }
                return s.leadChanged
            }
            if moved, link.leadID != nil, registry.online().first?.id != link.leadID {
                // The lock on the old lead orders nothing any more: what is held is taken anew on the new one.
                logger.notice("the lead changed: the cluster-wide order lock is taken again on the new lead")
                reached(.none)
                link.close()
            }
            guard let want = next() else {
                let again = inner.withLock { s -> Bool in
                    if s.dirty || s.leadChanged { return true }
                    s.running = false
                    return false
                }
                if again { continue }
                return
            }
            let got = take(want)
            reached(got)
        }
        inner.withLock { $0.running = false }
    }

    /// Set while the node, fenced (no quorum), goes without the lock; cleared by `retakeAfterFence`.
    private let skippedWhileFenced = Atomic<Bool>(false)

    /// Whether the node went without the lock while fenced and has quorum again: then what it holds
    /// must be taken anew (the caller tells the schedule it holds nothing).
    func retakeAfterFence() -> Bool {
        guard skippedWhileFenced.load(ordering: .relaxed), registry.fencedReason() == nil else { return false }
        return skippedWhileFenced.compareExchange(expected: true, desired: false, ordering: .relaxed).exchanged
    }

    /// Moves from what is held on the lead to `want`; returns what the node may rely on.
    private func take(_ want: EpochSchedule.Hold) -> EpochSchedule.Hold {
        if OrderTrace.enabled { OrderTrace.note(configuration.node.id, "HW", "\(want) held=\(link.held)") }
        // A node without quorum takes no writes and fails no backend; holding the lock would only
        // stall the nodes that do (it hears no request to let it go). Its reads go unordered.
        if want != .none, let fenced = registry.fencedReason() {
            if let c = link.connection, link.held != .none {
                _ = try? move(c, to: .none)
            }
            if !skippedWhileFenced.exchange(true, ordering: .relaxed) {
                logger.notice("the cluster-wide order lock is not taken while \(fenced): this node's reads are not ordered against other nodes' commits until it hears a majority")
            }
            return want
        }
        for attempt in 0..<3 {
            do {
                let c = try link.connection(lead: registry.online().first, configuration: configuration, login: login.healthCheck)
                try move(c, to: want)
                return want
            } catch let failure as LibPQConnection.Failure where failure.sqlState == "55P03" {
                // Not granted in time: whoever holds it is frozen or cut off.
                terminateHolders(attempt: attempt)
            } catch {
                logger.warning("cluster-wide order: \(error); connecting again", metadata: ["attempt": "\(attempt + 1)"])
                link.close()
            }
        }
        logger.warning("the cluster-wide order lock could not be taken \(want == .shared ? "shared" : "exclusive") on the lead: this node goes on without it (statement order across nodes is not guaranteed until it is taken again)")
        ProxyMetrics.clusterOrderForced.increment()
        link.held = .none
        return want
    }

    /// Lets go of what is held and tries for `want` in one round trip; waits for it when another node
    /// holds it (an exclusive request tells the others until it is granted).
    private func move(_ c: LibPQConnection, to want: EpochSchedule.Hold) throws {
        guard link.held != want else { return }
        if link.held == .exclusive, want == .shared {
            // Down without a gap: shared is granted at once to the holder of exclusive (PostgreSQL
            // puts a holder's request ahead of the waiters it blocks), then exclusive is let go. No
            // other node's commit can slip in between this node's own commits and its next statements.
            _ = try c.simpleQuery("SELECT pg_catalog.pg_advisory_lock_shared(\(Self.lock)), pg_catalog.pg_advisory_unlock(\(Self.lock))")
            link.held = .shared
            return
        }
        var calls: [String] = []
        switch link.held {
        case .shared: calls.append("pg_catalog.pg_advisory_unlock_shared(\(Self.lock))")
        case .exclusive: calls.append("pg_catalog.pg_advisory_unlock(\(Self.lock))")
        case .none: break
        }
        let exclusive = want == .exclusive
        if want != .none { calls.append("pg_catalog.\(exclusive ? "pg_try_advisory_lock" : "pg_try_advisory_lock_shared")(\(Self.lock))") }
        // The target list is evaluated left to right: the lock is let go before it is tried for.
        let row = try c.simpleQuery("SELECT " + calls.joined(separator: ", ")).first
        link.held = .none
        guard want != .none else { return }
        if row?.last == "t" {
            link.held = want
            return
        }
        if exclusive { startAnnouncing() }
        defer { if exclusive { stopAnnouncing() } }
        try c.simpleQuery("SELECT pg_catalog.\(exclusive ? "pg_advisory_lock" : "pg_advisory_lock_shared")(\(Self.lock))")
        link.held = want
    }

    private func startAnnouncing() {
        signal.announce()
        let signal = signal
        let task = MultiThreadedEventLoopGroup.singleton.next().scheduleRepeatedTask(initialDelay: .milliseconds(10), delay: .milliseconds(10)) { _ in
            signal.announce()
        }
        inner.withLock { $0.announcing = task }
    }

    private func stopAnnouncing() {
        inner.withLock { s in
            s.announcing?.cancel()
            s.announcing = nil
        }
    }

    /// Terminates, on the lead, the other nodes' order connections that hold the lock: those of nodes
    /// the state service finds dead when there are any (frozen or cut off), else every holder.
    private func terminateHolders(attempt: Int) {
        guard attempt == 0, let c = try? link.connection(lead: registry.online().first, configuration: configuration, login: login.healthCheck) else { return }
        let holders = """
        SELECT a.pid, a.application_name
          FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.classid = \(Self.lockKeys.0) AND l.objid = \(Self.lockKeys.1) AND l.objsubid = 2
           AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()
        """
        do {
            let rows = try c.simpleQuery(holders).compactMap { row -> (pid: String, name: String)? in
                guard row.count == 2, let pid = row[0] else { return nil }
                return (pid, row[1] ?? "")
            }
            let deadPeers = signal.deadPeers()
            let dead = Set(deadPeers.map { "\(Self.applicationName) \($0)" })
            // Holders of live nodes while a peer is dead are waiting on that node's prepared
            // transactions (their row locks stay until the resolver ends them): not frozen, and
            // disconnecting them would only cost their node its order.
            if !deadPeers.isEmpty, !rows.contains(where: { dead.contains($0.name) }) {
                logger.notice("the cluster-wide order lock was not granted within \(configuration.replication.followerTimeout) s (replication.follower_timeout); its holders are live nodes while \(deadPeers.sorted()) is dead: waiting for them",
                              metadata: ["holders": "\(rows.map { "\($0.name) (pid \($0.pid))" })"])
                return
            }
            let chosen = rows.contains { dead.contains($0.name) } ? rows.filter { dead.contains($0.name) } : rows
            for h in chosen { try c.simpleQuery("SELECT pg_catalog.pg_terminate_backend(\(h.pid))") }
            logger.warning("the cluster-wide order lock was not granted within \(configuration.replication.followerTimeout) s (replication.follower_timeout): its holders are frozen or cut off and were disconnected from the lead",
                           metadata: ["holders": "\(chosen.map { "\($0.name) (pid \($0.pid))" })"])
            ProxyMetrics.clusterOrderTerminations.increment(by: chosen.count)
        } catch {
            logger.warning("cluster-wide order: cannot disconnect the lock's holders: \(error)")
            link.close()
        }
    }

    func shutdown() {
        inner.withLock { s in
            s.stopped = true
            s.announcing?.cancel()
            s.announcing = nil
            s.watching?.cancel()
            s.watching = nil
        }
        pool.shutdownGracefully { _ in }
    }
}

/// The order's connection to the lead and what it holds there: touched only on the order's thread.
private final class OrderLink: @unchecked Sendable {
    var connection: LibPQConnection?
    var leadID: String?
    var held: EpochSchedule.Hold = .none

    func connection(lead: Configuration.Backend?, configuration: Configuration, login h: Configuration.HealthCheck) throws -> LibPQConnection {
        if let connection, lead?.id == leadID { return connection }
        close()
        guard let lead else { throw LibPQConnection.Failure(description: "no backend is online") }
        let timeout = max(1, Int(configuration.replication.followerTimeout * 1000))
        let conninfo = LibPQConnection.conninfo(lead, database: h.database, user: h.user, password: h.password, connectTimeout: 2,
                                                application: "\(ClusterOrder.applicationName) \(configuration.node.id)",
                                                extra: "options=\(LibPQConnection.quote("-c lock_timeout=\(timeout) -c statement_timeout=0"))")
        let c = try LibPQConnection(conninfo, target: lead.description)
        connection = c
        leadID = lead.id
        return c
    }

    func close() {
        connection = nil
        leadID = nil
        held = .none
    }
}
