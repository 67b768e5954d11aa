import Crypto
import Logging
import Metrics
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The state service: tells every peer node of this node's backend status changes, applies theirs,
/// heartbeats, and keeps membership and quorum.
///
/// Transport: signed UDP datagrams (`PeerEnvelope`) on the node's cluster address. Every message
/// carries the sender's whole backend view, so a lost datagram costs one heartbeat interval and a
/// node that restarts converges on the first heartbeat it receives (anti-entropy). A local change is
/// sent at once as a `notice`, re-sent (fresh nonce) every heartbeat until the peer acknowledges.
public final class StateService: Service, Sendable {
    /// One clustering node as this node sees it.
    public struct NodeView: Sendable, Equatable, Codable {
        public var id: String
        public var address: String
        public var port: Int
        public var priority: Int
        public var alive: Bool
        public var isSelf: Bool
        /// Seconds since the Unix epoch of the last authenticated message (nil: never; self: now).
        public var lastSeen: Double?
        public var reachableBackends: Int?
        public var quorum: Bool?

        public init(id: String, address: String, port: Int, priority: Int, alive: Bool, isSelf: Bool, lastSeen: Double?,
                    reachableBackends: Int?, quorum: Bool?) {
            self.id = id; self.address = address; self.port = port; self.priority = priority; self.alive = alive; self.isSelf = isSelf
            self.lastSeen = lastSeen; self.reachableBackends = reachableBackends; self.quorum = quorum
        }
    }

    struct Inner {
        var membership: Membership
        var replayGuard: ReplayGuard
        /// Peers that have not acknowledged this node's latest change yet.
        var unacknowledged: Set<String> = []
        /// Nonces of the notices sent, by peer, to match acks.
        var noticeNonces: [String: Set<String>] = [:]
        /// Per kind of refusal: when it was last logged, and how many since.
        var refusals: [String: (logged: Double, count: Int)] = [:]
        var hadQuorum: Bool?
        /// The write gate this node, coordinating a recovery, asks every peer to hold closed, and until when (monotonic).
        var gateRequest: (id: String, until: Double)?
        /// The gate request each peer last sent (to open the local gate when it is withdrawn).
        var peerRequests: [String: String] = [:]
        /// Each peer's gate, as it last reported it.
        var peerGates: [String: PeerMessage.GateState] = [:]
        /// The backend ids each peer last reported (its configuration's).
        var peerBackends: [String: Set<String>] = [:]
        /// Catalog changes open on this node (sessions' DDL whose transaction has not ended), by id.
        var openCatalog: [String: PeerMessage.CatalogChange] = [:]
        /// Changes ended lately, and until when (monotonic) the messages still say so.
        var closedCatalog: [String: Double] = [:]
        /// Announcements of changes waiting for the peers' acks, by change id.
        var catalogWaits: [String: CatalogWait] = [:]
    }

    /// An open catalog change told to the peers, until each has acknowledged it or `deadline` (monotonic).
    struct CatalogWait {
        var waiting: Set<String>
        /// The nonce of each message sent, and to which peer.
        var nonces: [String: String] = [:]
        var deadline: Double
        var done: @Sendable (_ unacknowledged: [String]) -> Void
    }

    let configuration: Configuration
    let registry: BackendRegistry
    let store: StateStore?
    let logger: Logger
    /// The cluster key's bytes (SymmetricKey is not Sendable; one is made per message).
    let keyBytes: [UInt8]?
    var key: SymmetricKey? { keyBytes.map { SymmetricKey(data: $0) } }
    let inner: Mutex<Inner>
    /// The listening peer socket (nil for a single node). Nothing is sent through it (see
    /// `sendSockets`); should it close all the same, it is bound again at the next heartbeat (`rebindIfClosed`).
    private let socket = Mutex<Channel?>(nil)
    var channel: Channel? { socket.withLock { $0 } }
    let group: EventLoopGroup
    /// A rebind in progress, or the service stopping (no rebind then).
    private let rebinding = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    /// One sending socket per peer (the node's address, an ephemeral port): NIO closes a datagram
    /// socket on most send errors, so a peer whose datagrams fail (EPERM from a firewall rule) must
    /// not take the listening socket, or the other peers' sockets, with it. Re-opened when closed.
    private let sendSockets = Mutex<[String: Channel]>([:])
    private let openingSendSockets = Mutex<Set<String>>([])
    /// When a failed send was last logged (monotonic seconds): one line per 5 s at most.
    private let sendFailureLogged = Mutex<Double>(0)
    /// When the sockets were last opened afresh because no peer was heard (`reopenIfDeaf`).
    private let lastReopen = Mutex<Double>(0)
    static let sendErrors = Counter(label: "pgchorus_peer_send_errors_total")
    let startedAt = WallClock.unixTime()
    let hooks = Mutex<(witness: Hook<@Sendable () -> Bool>?, reachable: Hook<@Sendable () -> Int?>?)>((nil, nil))
    let vipHooks = Mutex<VIPHooks?>(nil)
    /// This node's write gate (online recovery's cut-over).
    public let gate: WriteGate
    /// Requests for the cluster-wide order lock, to and from the peers.
    public let orderSignal: ClusterOrderSignal

    /// How the virtual-IP election rides on the peer messages.
    public struct VIPHooks: Sendable {
        /// Runs at every heartbeat, before the beacons go out.
        public var tick: @Sendable () -> Void
        /// This node's current beacon.
        public var beacon: @Sendable () -> VIPBeacon?
        /// A peer's beacon arrived.
        public var received: @Sendable (_ from: String, _ beacon: VIPBeacon) -> Void

        public init(tick: @escaping @Sendable () -> Void, beacon: @escaping @Sendable () -> VIPBeacon?,
                    received: @escaping @Sendable (_ from: String, _ beacon: VIPBeacon) -> Void) {
            self.tick = tick; self.beacon = beacon; self.received = received
        }
    }

    /// Binds the peer socket at once (a single-node cluster has none), so errors surface before `run`.
    public init(configuration: Configuration, registry: BackendRegistry, store: StateStore?, logger: Logger,
                group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton, gate: WriteGate = WriteGate(),
                orderSignal: ClusterOrderSignal = ClusterOrderSignal()) async throws {
        self.gate = gate
        self.orderSignal = orderSignal
        self.configuration = configuration
        self.registry = registry
        self.store = store
        self.logger = logger
        self.keyBytes = configuration.cluster.key
        let cluster = configuration.cluster
        self.inner = Mutex(Inner(
            membership: Membership(nodes: cluster.nodes, selfID: configuration.node.id, peerTimeout: cluster.peerTimeout,
                                   witness: cluster.witness == "backends"),
            replayGuard: ReplayGuard(maxClockSkew: cluster.maxClockSkew)))
        self.group = group
        if cluster.nodes.count > 1 {
            let me = configuration.thisNode
            do {
                try await bindSocket()
            } catch {
                throw StateServiceError.cannotListen(address: me.address, port: me.port, reason: "\(error)")
            }
            for peer in cluster.nodes where peer.id != configuration.node.id {
                if let c = try? await openSendSocket().get() { sendSockets.withLock { $0[peer.id] = c } }
            }
        }
        registry.addListener { [weak self] _, local in
            if local { self?.changedLocally() }
        }
        gate.onChange { [weak self] in self?.broadcastNow() }
        orderSignal.setAnnouncer({ [weak self] in self?.announceOrderRequest() }, deadPeers: { [weak self] in self?.deadPeers() ?? [] })
        if cluster.nodes.count > 1 {
            orderSignal.setCatalogAnnouncer(open: { [weak self] change, done in
                guard let self else { return done([]) }
                self.openCatalogChange(change, acknowledged: done)
            }, close: { [weak self] id in self?.closeCatalogChange(id: id) })
        }
    }

    /// Binds the peer socket; its handler reaches this service.
    private func bindSocket() async throws {
        let me = configuration.thisNode
        let handler = PeerDatagramHandler()
        let bound = try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65_536))
            .channelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(handler) } }
            .bind(host: me.address, port: me.port)
            .get()
        handler.service.withLock { [self] s in s = self }
        socket.withLock { $0 = bound }
    }

    private func openSendSocket() -> EventLoopFuture<Channel> {
        DatagramBootstrap(group: group).bind(host: configuration.thisNode.address, port: 0)
    }

    /// The socket to send to `peer` through, nil while a closed one is being re-opened (that message is
    /// dropped: the next heartbeat goes).
    private func sendSocket(for peer: String) -> Channel? {
        if let c = sendSockets.withLock({ $0[peer] }), c.isActive { return c }
        guard !stopping.load(ordering: .relaxed), openingSendSockets.withLock({ $0.insert(peer).inserted }) else { return nil }
        openSendSocket().whenComplete { [self] result in
            openingSendSockets.withLock { _ = $0.remove(peer) }
            if case .success(let c) = result { sendSockets.withLock { $0[peer] = c } }
        }
        return nil
    }

    /// A listening socket that closed (sends go through `sendSockets`, so not by a failed send; a
    /// safety net for any other cause) is bound again, so the node is never left deaf. Called at every heartbeat.
    func rebindIfClosed() {
        guard configuration.cluster.nodes.count > 1, !stopping.load(ordering: .relaxed), channel?.isActive != true else { return }
        guard rebinding.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        Task { [self] in
            defer { rebinding.store(false, ordering: .releasing) }
            do {
                try await bindSocket()
                logger.notice("the peer socket had closed; bound again", metadata: ["address": "\(configuration.thisNode.address)", "port": "\(configuration.thisNode.port)"])
                record(ClusterEvent(time: WallClock.unixTime(), origin: configuration.node.id, kind: "peer-socket", subject: configuration.node.id,
                                    detail: "the listening peer socket had closed and was bound again"))
            } catch {
                logger.warning("the peer socket is closed and cannot be bound again yet: \(error)")
            }
        }
    }

    /// A node that has heard no peer for twice `cluster.peer_timeout` — all of them down, or a
    /// socket wedged in a way no error showed — opens its peer sockets afresh: the sending ones are
    /// closed (re-opened at the next send) and the listening one is closed and bound again at once
    /// (`rebindIfClosed`). At most once per twice the peer timeout; a few milliseconds deaf at worst.
    func reopenIfDeaf(now: Double) {
        let quiet = 2 * configuration.cluster.peerTimeout
        guard configuration.cluster.nodes.count > 1, !stopping.load(ordering: .relaxed), now - startedAt >= quiet else { return }
        let heard = inner.withLock { $0.membership.peers.compactMap(\.lastSeen).max() } ?? startedAt
        let due = lastReopen.withLock { last -> Bool in
            guard now - max(heard, last) >= quiet else { return false }
            last = now
            return true
        }
        guard due else { return }
        logger.notice("no peer heard for \(Int(now - heard)) s: opening the peer sockets afresh")
        record(ClusterEvent(time: WallClock.unixTime(), origin: configuration.node.id, kind: "peer-socket", subject: configuration.node.id,
                            detail: "no peer heard for \(Int(now - heard)) s: the peer sockets were opened afresh"))
        let senders = sendSockets.withLock { all -> [Channel] in
            defer { all = [:] }
            return Array(all.values)
        }
        for c in senders { c.close(promise: nil) }
        channel?.close(promise: nil)
    }

    /// Tells every peer this node waits for the cluster-wide order lock (a small message: no view).
    func announceOrderRequest() {
        for peer in configuration.cluster.nodes where peer.id != configuration.node.id { send(.epoch, to: peer) }
    }

    // MARK: catalog changes

    /// Tells every peer not declared dead of `change` (a `catalog` message, sent again every 20 ms to
    /// those that have not acknowledged it); `acknowledged` runs once all have, or after one peer
    /// timeout with those that have not. Heartbeats carry the change from now on until it is closed.
    func openCatalogChange(_ change: PeerMessage.CatalogChange, acknowledged: @escaping @Sendable ([String]) -> Void) {
        let dead = Set(deadPeers())
        let peers = configuration.cluster.nodes.filter { $0.id != configuration.node.id && !dead.contains($0.id) }.map(\.id)
        let deadline = WallClock.monotonic() + configuration.cluster.peerTimeout
        let waits = channel != nil && !peers.isEmpty
        inner.withLock { s in
            s.openCatalog[change.id] = change
            s.closedCatalog[change.id] = nil
            if waits { s.catalogWaits[change.id] = CatalogWait(waiting: Set(peers), deadline: deadline, done: acknowledged) }
        }
        guard waits else { return acknowledged([]) }
        sendCatalogChange(change.id)
    }

    private func sendCatalogChange(_ id: String) {
        let now = WallClock.monotonic()
        let (targets, expired) = inner.withLock { s -> ([String], CatalogWait?) in
            guard let w = s.catalogWaits[id] else { return ([], nil) }
            if now >= w.deadline {
                s.catalogWaits[id] = nil
                return ([], w)
            }
            return (Array(w.waiting), nil)
        }
        if let expired { return expired.done(expired.waiting.sorted()) }
        guard !targets.isEmpty else { return }
        for peer in configuration.cluster.nodes where targets.contains(peer.id) {
            let nonce = PeerMessage.makeNonce()
            inner.withLock { $0.catalogWaits[id]?.nonces[nonce] = peer.id }
            send(.catalog, to: peer, nonce: nonce)
        }
        group.next().scheduleTask(in: .milliseconds(20)) { [weak self] in self?.sendCatalogChange(id) }
    }

    /// The change's transaction has ended: the peers are told at once (and by the next messages, for
    /// one lease), unacknowledged; a peer that misses it all lets the change go when its lease runs out.
    func closeCatalogChange(id: String) {
        let wait = inner.withLock { s -> CatalogWait? in
            guard let change = s.openCatalog.removeValue(forKey: id) else { return nil }
            s.closedCatalog[id] = WallClock.monotonic() + change.lease
            return s.catalogWaits.removeValue(forKey: id)
        }
        // (Closed before every ack came: the session ended meanwhile; nothing waits for them now.)
        wait?.done([])
        for peer in configuration.cluster.nodes where peer.id != configuration.node.id { send(.catalog, to: peer) }
    }

    /// The open changes and those closed lately, for a message (nil for none).
    private func catalogFields() -> ([PeerMessage.CatalogChange]?, [String]?) {
        let now = WallClock.monotonic()
        return inner.withLock { s in
            s.closedCatalog = s.closedCatalog.filter { $0.value > now }
            return (s.openCatalog.isEmpty ? nil : s.openCatalog.values.sorted { $0.id < $1.id },
                    s.closedCatalog.isEmpty ? nil : s.closedCatalog.keys.sorted())
        }
    }

    /// A peer acknowledged message `nonce`: the announcement it was part of waits no longer for that peer.
    private func catalogAcknowledged(_ nonce: String, from peer: String) {
        let done = inner.withLock { s -> CatalogWait? in
            guard let (id, w) = s.catalogWaits.first(where: { $0.value.nonces[nonce] == peer }) else { return nil }
            var wait = w
            wait.waiting.remove(peer)
            guard wait.waiting.isEmpty else {
                s.catalogWaits[id] = wait
                return nil
            }
            s.catalogWaits[id] = nil
            return wait
        }
        done?.done([])
    }

    /// Where the peers' backend lists differ from this node's (a reload done on some nodes only).
    public func configurationWarnings() -> [String] {
        let mine = Set(registry.snapshot().map(\.backend.id))
        return inner.withLock { s in
            s.peerBackends.keys.sorted().flatMap { peer -> [String] in
                let theirs = s.peerBackends[peer] ?? []
                var out: [String] = []
                let missing = mine.subtracting(theirs).sorted(), extra = theirs.subtracting(mine).sorted()
                if !missing.isEmpty { out.append("node \(peer) does not know backend(s) \(missing.joined(separator: ", ")) of this node's configuration") }
                if !extra.isEmpty { out.append("node \(peer) has backend(s) \(extra.joined(separator: ", ")) that this node's configuration lacks") }
                return out
            }
        }
    }

    // MARK: write gate

    /// Asks every peer to close its write gate for recovery `id` for `lease` seconds (renewed by asking again).
    public func requestGate(id: String, lease: Double) {
        inner.withLock { $0.gateRequest = (id, WallClock.monotonic() + lease) }
        broadcastNow()
    }

    /// Withdraws the request: the peers open their gates on the next message.
    public func withdrawGate(id: String) {
        let withdrawn = inner.withLock { s -> Bool in
            guard s.gateRequest?.id == id else { return false }
            s.gateRequest = nil
            return true
        }
        if withdrawn { broadcastNow() }
    }

    /// The peers whose gate is closed for `id` with no session of theirs in a transaction.
    public func drainedPeers(gate id: String) -> Set<String> {
        inner.withLock { s in Set(s.peerGates.filter { $0.value.id == id && $0.value.drained }.keys) }
    }

    private func gateFields() -> (PeerMessage.GateRequest?, PeerMessage.GateState?) {
        let now = WallClock.monotonic()
        let request = inner.withLock { s -> PeerMessage.GateRequest? in
            guard let r = s.gateRequest, r.until > now else { return nil }
            return PeerMessage.GateRequest(id: r.id, lease: r.until - now)
        }
        let state = gate.closure(now: now).map { PeerMessage.GateState(id: $0.id, drained: gate.drained(id: $0.id)) }
        return (request, state)
    }

    private func receivedGate(_ message: PeerMessage) {
        if message.kind == .ack { return }
        let withdrawn = inner.withLock { s -> String? in
            if let g = message.gateState { s.peerGates[message.from] = g } else { s.peerGates[message.from] = nil }
            let previous = s.peerRequests[message.from]
            s.peerRequests[message.from] = message.gate?.id
            return previous != nil && previous != message.gate?.id ? previous : nil
        }
        if let withdrawn { gate.open(id: withdrawn) }
        if let r = message.gate {
            // Never longer than a minute, whatever a peer asks: a lost coordinator holds nothing for long.
            if gate.closure()?.id != r.id { logger.notice("write gate closed for recovery \(r.id) at the request of \(message.from)") }
            gate.close(id: r.id, lease: min(max(r.lease, 0), 60))
        }
    }

    /// The UDP port actually bound (nil for a single node).
    public var port: Int? { channel?.localAddress?.port }

    /// Sets how this node learns whether it holds the witness and how many backends it reaches.
    public func setHooks(witness: (@Sendable () -> Bool)?, reachable: (@Sendable () -> Int?)?) {
        hooks.withLock { $0 = (witness.map(Hook.init), reachable.map(Hook.init)) }
    }

    public func setVIPHooks(_ h: VIPHooks) {
        vipHooks.withLock { $0 = h }
    }

    /// Sends a heartbeat to every peer now (the VIP election calls it on a change that must not wait).
    public func broadcastNow() {
        for p in configuration.cluster.nodes where p.id != configuration.node.id {
            let pending = inner.withLock { $0.unacknowledged.contains(p.id) }
            send(pending ? .notice : .heartbeat, to: p)
        }
    }

    public func run() async throws {
        if channel != nil {
            logger.info("state service listening", metadata: ["address": "\(configuration.thisNode.address)", "port": "\(port ?? 0)",
                                                          "peers": "\(configuration.cluster.nodes.count - 1)"])
        }
        // A single node still ticks: the VIP election runs on it.
        do {
            try await cancelWhenGracefulShutdown {
                for _ in 0..<Int.max {
                    self.tick(now: WallClock.unixTime())
                    try await Task.sleep(for: .milliseconds(Int(self.configuration.cluster.heartbeatInterval * 1000)))
                }
            }
        } catch is CancellationError {}
        stopping.store(true, ordering: .relaxed)
        try? await channel?.close()
        for c in sendSockets.withLock({ Array($0.values) }) { try? await c.close() }
    }

    // MARK: views

    /// Peers declared dead by this node while it holds quorum (a minority declares nobody dead);
    /// empty until one peer timeout after start, when nobody could have been heard yet.
    public func deadPeers(now: Double = WallClock.unixTime()) -> [String] {
        guard now - startedAt >= configuration.cluster.peerTimeout, hasQuorum(now: now) else { return [] }
        return inner.withLock { s in s.membership.peers.filter { !s.membership.isAlive($0, now: now) }.map(\.node.id) }
    }

    public func hasQuorum(now: Double = WallClock.unixTime()) -> Bool {
        let witness = hooks.withLock { $0.witness }?.call() ?? false
        return inner.withLock { $0.membership.hasQuorum(now: now, holdsWitness: witness) }
    }

    public func nodes(now: Double = WallClock.unixTime()) -> [NodeView] {
        let me = configuration.thisNode
        let reachable = hooks.withLock { $0.reachable }?.call()
        let quorum = hasQuorum(now: now)
        return inner.withLock { s in
            configuration.cluster.nodes.map { n in
                if n.id == me.id {
                    return NodeView(id: n.id, address: n.address, port: n.port, priority: n.priority, alive: true, isSelf: true,
                                    lastSeen: now, reachableBackends: reachable, quorum: quorum)
                }
                let p = s.membership.peers.first { $0.node.id == n.id }!
                return NodeView(id: n.id, address: n.address, port: n.port, priority: n.priority, alive: s.membership.isAlive(p, now: now),
                                isSelf: false, lastSeen: p.lastSeen, reachableBackends: p.reachableBackends, quorum: p.claimsQuorum)
            }
        }
    }

    // MARK: sending

    private func changedLocally() {
        let peers = configuration.cluster.nodes.filter { $0.id != configuration.node.id }
        guard channel != nil, !peers.isEmpty else { return }
        inner.withLock { $0.unacknowledged = Set(peers.map(\.id)) }
        for p in peers { send(.notice, to: p) }
    }

    func tick(now: Double) {
        reopenIfDeaf(now: now)
        rebindIfClosed()
        gate.expire()
        vipHooks.withLock { $0 }?.tick()
        broadcastNow()
        let witness = hooks.withLock { $0.witness }?.call() ?? false
        let settled = now - startedAt >= configuration.cluster.peerTimeout
        let (changes, quorum, quorumChanged) = inner.withLock { s in
            let t = s.membership.transitions(now: now)
            let q = s.membership.hasQuorum(now: now, holdsWitness: witness)
            // Right after start nobody has been heard yet: wait one peer timeout before judging.
            guard settled || q else { return (t, q, false) }
            let changed = s.hadQuorum != q
            s.hadQuorum = q
            return (t, q, changed)
        }
        // A peer heard again, or quorum regained: DDL may have gone by unheard meanwhile.
        if changes.contains(where: { $0.1 }) || (quorumChanged && quorum) { orderSignal.catalogsMayBeStale() }
        for (peer, alive) in changes {
            if alive {
                logger.notice("peer node is alive", metadata: ["peer": "\(peer.node.id)"])
            } else {
                logger.warning("peer node is not answering", metadata: ["peer": "\(peer.node.id)", "timeout": "\(configuration.cluster.peerTimeout)"])
            }
            record(ClusterEvent(time: now, origin: configuration.node.id, kind: alive ? "node-up" : "node-down", subject: peer.node.id,
                                detail: alive ? "heartbeats received" : "no message for \(configuration.cluster.peerTimeout) s"))
            if let store {
                let node = peer.node, seen = peer.lastSeen
                store.later("node \(node.id) as last seen", logger: logger) { try $0.saveNode(node, alive: alive, lastSeen: seen) }
            }
        }
        if quorumChanged {
            let alive = inner.withLock { $0.membership.aliveCount(now: now) }
            let detail = "\(alive) of \(configuration.cluster.nodes.count) nodes alive\(witness ? ", witness held" : "")"
            if quorum { logger.notice("quorum held: \(detail)") } else { logger.error("quorum lost: \(detail)") }
            record(ClusterEvent(time: now, origin: configuration.node.id, kind: quorum ? "quorum" : "no-quorum", subject: configuration.node.id, detail: detail))
        }
    }

    private func send(_ kind: PeerMessage.Kind, to peer: Configuration.ClusterNode, acknowledging: String? = nil,
                      nonce: String = PeerMessage.makeNonce()) {
        guard channel != nil, let key else { return }
        let brief = kind == .ack || kind == .epoch || kind == .catalog
        let reachable = brief ? nil : hooks.withLock { $0.reachable }?.call()
        let (gateRequest, gateState) = brief ? (nil, nil) : gateFields()
        let (catalog, closed) = kind == .ack || kind == .epoch ? (nil, nil) : catalogFields()
        let message = PeerMessage(kind: kind, from: configuration.node.id, sentAt: WallClock.unixTime(), nonce: nonce,
                                  backends: brief ? [] : registry.states(), acknowledges: acknowledging,
                                  reachableBackends: reachable, quorum: brief ? nil : hasQuorum(),
                                  vip: brief ? nil : vipHooks.withLock { $0 }?.beacon(), to: peer.id,
                                  gate: gateRequest, gateState: gateState, catalog: catalog, catalogClosed: closed)
        if kind == .notice {
            // Only the latest notice counts: an ack of an older one does not cover a newer change.
            inner.withLock { $0.noticeNonces[peer.id] = [message.nonce] }
        }
        let bytes = PeerEnvelope.seal(message, key: key)
        guard let address = try? SocketAddress(ipAddress: peer.address, port: peer.port) else { return }
        guard let out = sendSocket(for: peer.id) else { return }
        let promise = out.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenFailure { [self] error in
            Self.sendErrors.increment()
            let now = WallClock.monotonic()
            let log = sendFailureLogged.withLock { last -> Bool in
                guard now - last >= 5 else { return false }
                last = now
                return true
            }
            if log { logger.warning("a peer message could not be sent: \(error)", metadata: ["peer": "\(peer.id)"]) }
        }
        out.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: out.allocator.buffer(bytes: bytes)), promise: promise)
    }

    // MARK: receiving

    func receive(_ bytes: [UInt8], from source: SocketAddress) {
        guard let key else { return }
        let now = WallClock.unixTime()
        let message: PeerMessage
        do {
            message = try PeerEnvelope.open(bytes, key: key)
            guard message.from != configuration.node.id, configuration.cluster.node(message.from) != nil else {
                throw PeerMessageError.unknownSender(message.from)
            }
            // A datagram captured on its way to another node is not for us.
            if let to = message.to, to != configuration.node.id { throw PeerMessageError.notForUs(to) }
            try inner.withLock { s throws(PeerMessageError) in try s.replayGuard.admit(message, now: now) }
        } catch let error as PeerMessageError {
            refused(error, from: source, now: now)
            return
        } catch {
            return
        }
        if message.kind == .epoch {
            orderSignal.received(from: message.from)
            return
        }
        if message.kind == .catalog {
            // Taken in before the ack goes: the sender's DDL may commit once it has it.
            orderSignal.receivedCatalogChanges(from: message.from, open: message.catalog ?? [], closed: message.catalogClosed ?? [])
            if let peer = configuration.cluster.node(message.from) { send(.ack, to: peer, acknowledging: message.nonce) }
            return
        }
        if message.kind == .ack, let n = message.acknowledges { catalogAcknowledged(n, from: message.from) }
        inner.withLock { s in
            _ = s.membership.heard(from: message.from, at: now, reachableBackends: message.reachableBackends, quorum: message.quorum)
            if message.kind == .ack, let n = message.acknowledges, s.noticeNonces[message.from]?.contains(n) == true {
                s.unacknowledged.remove(message.from)
                s.noticeNonces[message.from] = nil
            }
            if message.kind != .ack { s.peerBackends[message.from] = Set(message.backends.map(\.id)) }
        }
        if let beacon = message.vip { vipHooks.withLock { $0 }?.received(message.from, beacon) }
        var applied = 0
        for b in message.backends where registry.apply(b) { applied += 1 }
        // After the backends: a gate withdrawn at a cut-over opens only once the backend is known online.
        receivedGate(message)
        if message.kind != .ack {
            orderSignal.receivedCatalogChanges(from: message.from, open: message.catalog ?? [], closed: message.catalogClosed ?? [])
        }
        if applied > 0 {
            logger.info("applied \(applied) backend change(s) from a peer", metadata: ["peer": "\(message.from)", "kind": "\(message.kind.rawValue)"])
        }
        if message.kind == .notice, let peer = configuration.cluster.node(message.from) {
            send(.ack, to: peer, acknowledging: message.nonce)
        }
    }

    private func refused(_ error: PeerMessageError, from source: SocketAddress, now: Double) {
        let (logIt, count) = inner.withLock { s -> (Bool, Int) in
            // One line and one event per kind and second at most: a flood must not fill the disk.
            var r = s.refusals[error.kind] ?? (logged: 0, count: 0)
            r.count += 1
            defer { s.refusals[error.kind] = r }
            guard now - r.logged >= 1 else { return (false, r.count) }
            let c = r.count
            r = (logged: now, count: 0)
            return (true, c)
        }
        guard logIt else { return }
        let from = source.ipAddress.map { "\($0):\(source.port ?? 0)" } ?? "\(source)"
        logger.warning("peer message refused: \(error)", metadata: ["source": "\(from)", "count": "\(count)"])
        record(ClusterEvent(time: now, origin: configuration.node.id, kind: "peer-refused", subject: from, detail: "\(error)"))
    }

    /// Off the heartbeat's path: a slow fsync must never delay a heartbeat.
    private func record(_ event: ClusterEvent) {
        guard let store else { return }
        store.later("an event", logger: logger) { try $0.append(event) }
    }
}

/// Hands each datagram to the state service.
final class PeerDatagramHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let service = Mutex<StateService?>(nil)

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let bytes = Array(envelope.data.readableBytesView)
        service.withLock { $0 }?.receive(bytes, from: envelope.remoteAddress)
    }
}

/// Why the state service could not start.
public enum StateServiceError: Error, CustomStringConvertible {
    case cannotListen(address: String, port: Int, reason: String)

    public var description: String {
        switch self {
        case let .cannotListen(address, port, reason): "state service cannot listen on \(address):\(port) (UDP): \(reason)"
        }
    }
}
