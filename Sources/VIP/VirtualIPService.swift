import Logging
import NIOPosix
import ServiceLifecycle
import State
import Synchronization

/// Runs the VIP election on the state service's heartbeats and carries out its decisions: adds
/// and announces the virtual IP when this node wins, removes it when it loses, re-adds it if it
/// vanishes while owned, re-announces when another machine claims it, and hands it over at once on
/// shutdown. In DNS mode the winner writes the round-robin records instead.
public final class VirtualIPService: Service, Sendable {
    struct State {
        var election: VIPElection
        var claimedAt: Double?
        var nextAnnouncement: Double = 0
        /// After a failed claim, this node stays ineligible for a while (someone else may succeed).
        var ineligibleUntil: Double = 0
        var lastEligible: Bool?
        /// When a failed renewal was last logged (one line per 5 s).
        var renewalErrorLogged: Double = -.infinity
    }

    let configuration: Configuration
    let stateService: StateService
    let healthChecker: HealthChecker?
    let registry: BackendRegistry
    let store: StateStore?
    let logger: Logger
    let address: VirtualAddress?
    /// The kernel-enforced lifetime of the address (whole seconds), nil when turned off.
    let lifetime: UInt32?
    let injector: PacketInjector?
    let dnsPublisher: DNSPublisher?
    let state: Mutex<State>
    let schedule: AnnouncementSchedule
    let running = Atomic<Bool>(true)
    /// Serialises every change of the interface (or of the DNS writer role); the value is whether
    /// the address is on the interface as far as this node knows.
    let actuator = Mutex<Bool>(false)
    let pool = NIOThreadPool(numberOfThreads: 2)

    public init(configuration: Configuration, stateService: StateService, healthChecker: HealthChecker?, registry: BackendRegistry,
                store: StateStore?, logger: Logger) throws {
        self.configuration = configuration
        self.stateService = stateService
        self.healthChecker = healthChecker
        self.registry = registry
        self.store = store
        self.logger = logger
        let vip = configuration.vip
        lifetime = vip.mode == "address" && vip.addressLifetime > 0 ? UInt32(vip.addressLifetime) : nil
        let beat = configuration.cluster.heartbeatInterval
        let settings = VIPElection.Settings(lease: vip.lease, takeover: vip.takeover, margin: min(max(0.15, 1.5 * beat), vip.lease / 3),
                                            candidateTimeout: vip.lease, grantFreshness: min(2.5 * beat, vip.lease / 2), nopreempt: vip.nopreempt)
        state = Mutex(State(election: VIPElection(selfID: configuration.node.id, priority: configuration.thisNode.priority,
                                                  totalNodes: configuration.cluster.nodes.count, settings: settings, now: WallClock.monotonic())))
        schedule = AnnouncementSchedule(initial: AnnouncementSchedule.standard.initial, refresh: vip.announceRefresh)
        if vip.mode == "address", let text = vip.address, let interface = vip.interface {
            guard let a = VirtualAddress(text) else { throw VIPError.netlink(operation: "parsing \(text)", interface: interface, errno: 22) }
            address = a
            // Not the owner at start: whatever a previous run left is removed.
            // Tagged ones, and the configured address itself (kernels before 6.1 drop the IFA_PROTO tag).
            var stale = Set(try AddressTable.leftovers(interface: interface))
            if try AddressTable.list(interface: interface).contains(where: { $0.address.ip == a.ip }) { stale.insert(a) }
            for old in stale {
                try AddressTable.remove(old, interface: interface)
                logger.notice("removed a virtual IP left by a previous run", metadata: ["address": "\(old)", "interface": "\(interface)"])
            }
            injector = try PacketInjector(interface: interface)
        } else {
            address = nil
            injector = nil
        }
        dnsPublisher = vip.mode == "dns" ? DNSPublisher(configuration: configuration, logger: logger) : nil
        pool.start()
        stateService.setVIPHooks(StateService.VIPHooks(
            tick: { [weak self] in self?.tick() },
            beacon: { [weak self] in self?.state.withLock { $0.election.beacon() } },
            received: { [weak self] from, beacon in self?.received(from: from, beacon: beacon) }))
    }

    public func run() async throws {
        if let address, let interface = configuration.vip.interface {
            logger.info("virtual IP election running", metadata: ["address": "\(address)", "interface": "\(interface)"])
            let me = self
            pool.submit { _ in me.watchAddresses(interface: interface, address: address) }
            pool.submit { _ in me.watchConflicts(interface: interface, address: address) }
        }
        try? await gracefulShutdown()
        // Hand over at once: release, and only once the address is gone tell the peers we resigned.
        _ = state.withLock { $0.election.resign(now: WallClock.monotonic()) }
        reconcile(reason: "shutting down")
        stateService.broadcastNow()
        running.store(false, ordering: .relaxed)
        try? await pool.shutdownGracefully()
    }

    /// `mode`, address and the owner as this node believes, for `pgchorus status`.
    public func status() -> (mode: String, address: String?, owner: String?, eligible: [String]) {
        let now = WallClock.monotonic()
        let (owner, eligible) = state.withLock { ($0.election.owner(now: now), $0.election.eligibleNodes(now: now)) }
        let shown = configuration.vip.mode == "dns" ? configuration.vip.dns.name : address?.description
        return (configuration.vip.mode, shown, owner, eligible.sorted())
    }

    // MARK: election

    func eligible(now: Double) -> Bool {
        guard stateService.hasQuorum() else { return false }
        // The proxy must reach a majority of the online backends.
        let online = registry.online().map(\.id)
        if let reports = healthChecker?.reports(), configuration.healthCheck.enabled {
            // Not before the first round has answered; a backend counts as lost only after as many
            // failed checks in a row as fail it.
            if reports.isEmpty { return false }
            let lost = reports.filter { online.contains($0.backend) && !$0.ok && $0.consecutiveFailures >= configuration.healthCheck.failures }.count
            if (online.count - lost) * 2 <= online.count { return false }
        }
        return true
    }

    func tick() {
        let now = WallClock.monotonic()
        let ok = eligible(now: now)
        let (action, announce, eligibilityChanged) = state.withLock { s -> (VIPElection.Action?, Bool, Bool?) in
            let e = ok && now >= s.ineligibleUntil
            let changed = s.lastEligible != e ? e : nil
            s.lastEligible = e
            let a = s.election.step(now: now, eligible: e)
            var announce = false
            if a == nil, s.election.holding, let at = s.claimedAt, now - at >= s.nextAnnouncement {
                announce = true
                s.nextAnnouncement = schedule.next(after: now - at)
            }
            return (a, announce, changed)
        }
        if let e = eligibilityChanged {
            logger.notice(e ? "eligible for the virtual IP" : "not eligible for the virtual IP (no quorum, or the backends are out of reach)")
        }
        // Every tick reconciles (a failed removal is retried); a decision is also told to the peers at once.
        reconcile(reason: "lost the election or the lease")
        renew()
        if action != nil { stateService.broadcastNow() }
        if announce { self.announce() }
        if state.withLock({ $0.election.holding }), dnsPublisher != nil { publishDNS() }
    }

    func received(from: String, beacon: VIPBeacon) {
        let now = WallClock.monotonic()
        let before = state.withLock { $0.election.owner(now: now) }
        let action = state.withLock { s -> VIPElection.Action? in
            s.election.receive(from: from, beacon: beacon, now: now)
            // React at once to a resignation or a higher holder rather than at the next tick.
            guard beacon.resigned || beacon.holding || (beacon.grant?.to == configuration.node.id) else { return nil }
            return s.election.step(now: now, eligible: (s.lastEligible ?? false) && now >= s.ineligibleUntil)
        }
        perform(action)
        if beacon.resigned && before == from { stateService.broadcastNow() }
    }

    private func perform(_ action: VIPElection.Action?) {
        guard action != nil else { return }
        reconcile(reason: "lost the election or the lease")
        stateService.broadcastNow()
    }

    /// Makes the interface match the election, one change at a time (level-triggered: whoever
    /// steps, the last reconcile sees the latest decision). Until a removal has really happened,
    /// the election keeps saying "holding" and keeps its self-grant, so no peer can claim early.
    func reconcile(reason: String) {
        actuator.withLock { applied in
            let want = state.withLock { $0.election.holding }
            if want && !applied {
                let now = WallClock.monotonic()
                let term = state.withLock { $0.election.claimTerm }
                if let address, let interface = configuration.vip.interface {
                    do {
                        try AddressTable.add(address, interface: interface, lifetime: lifetime)
                    } catch {
                        logger.error("cannot claim the virtual IP: \(error)")
                        state.withLock { s in
                            s.ineligibleUntil = now + 5
                            _ = s.election.step(now: now, eligible: false)
                        }
                        return
                    }
                }
                applied = true
                state.withLock { s in
                    s.election.addressHeld = true
                    s.claimedAt = now
                    s.nextAnnouncement = schedule.next(after: 0)
                }
                announce()
                logger.notice("this node owns the virtual IP", metadata: ["term": "\(term)", "address": "\(address?.description ?? configuration.vip.dns.name ?? "")"])
                record(kind: "vip-claimed", detail: "term \(term)")
                if dnsPublisher != nil { publishDNS() }
            } else if !want && applied {
                removeAddress(&applied, reason: reason)
            }
        }
    }

    /// Removes the address (under the actuator); on failure the election keeps saying "holding"
    /// and the next tick tries again.
    private func removeAddress(_ applied: inout Bool, reason: String) {
        if let address, let interface = configuration.vip.interface {
            do {
                try AddressTable.remove(address, interface: interface)
            } catch {
                logger.error("cannot remove the virtual IP (will retry): \(error)")
                return
            }
        }
        applied = false
        state.withLock { s in
            s.election.addressHeld = false
            s.claimedAt = nil
        }
        logger.notice("this node released the virtual IP: \(reason)")
        record(kind: "vip-released", detail: reason)
    }

    /// Restarts the kernel's countdown of the address, only while the lease holds (every
    /// heartbeat): an owner that stops renewing — frozen, killed, starved — loses the address when
    /// its lifetime runs out, without running any code.
    func renew() {
        guard let lifetime, let address, let interface = configuration.vip.interface else { return }
        actuator.withLock { applied in
            let before = WallClock.monotonic()
            guard applied, state.withLock({ $0.election.holdsLease(now: before) }) else { return }
            do {
                try AddressTable.renew(address, interface: interface, lifetime: lifetime)
            } catch {
                let log = state.withLock { s in
                    guard before - s.renewalErrorLogged >= 5 else { return false }
                    s.renewalErrorLogged = before
                    return true
                }
                if log { logger.error("cannot renew the virtual IP's lifetime (it lapses in \(lifetime) s unless a renewal succeeds): \(error)") }
                return
            }
            // Stopped between the check and the call (SIGSTOP, a long stall), this node may just have
            // renewed an address whose lease ran out meanwhile: it gives it up at once.
            let after = WallClock.monotonic()
            guard !state.withLock({ $0.election.holdsLease(now: after) }) else { return }
            let released = state.withLock { s in
                s.election.step(now: after, eligible: (s.lastEligible ?? false) && after >= s.ineligibleUntil) == .release
            }
            if released || !state.withLock({ $0.election.holding }) {
                removeAddress(&applied, reason: "the lease ran out while the address was being renewed")
            }
        }
    }

    private func announce() {
        guard let injector, let address else { return }
        do {
            try injector.inject(injector.announcement(for: address))
        } catch {
            logger.error("\(error)")
        }
    }

    /// Off the election's path: a slow fsync must never delay a beacon (the lease would lapse).
    private func record(kind: String, detail: String) {
        guard let store else { return }
        let event = ClusterEvent(time: WallClock.unixTime(), origin: configuration.node.id, kind: kind, subject: configuration.node.id, detail: detail)
        store.later("an event", logger: logger) { try $0.append(event) }
    }

    // MARK: DNS mode

    private func publishDNS() {
        guard let dnsPublisher else { return }
        let now = WallClock.monotonic()
        let nodes = stateService.nodes()
        let healthy = state.withLock { s in s.election.eligibleNodes(now: now) }
        let chosen = nodes.filter { healthy.contains($0.id) }
        NIOThreadPool.singleton.submit { _ in dnsPublisher.publish(nodes: chosen) }
    }

    // MARK: watchers (blocking, on the pool's threads)

    /// Re-adds the VIP at once when it disappears from the interface while owned.
    func watchAddresses(interface: String, address: VirtualAddress) {
        let watcher: AddressWatcher
        do {
            watcher = try AddressWatcher(interface: interface)
        } catch {
            logger.error("cannot watch the addresses of \(interface): \(error)")
            return
        }
        while running.load(ordering: .relaxed) {
            let removed = watcher.nextRemovals()
            guard removed.contains(address) else { continue }
            guard running.load(ordering: .relaxed) else { continue }
            actuator.withLock { applied in
                // Only while the lease holds: an owner that was frozen finds its address expired by
                // the kernel, and must not bring it back before its election has caught up.
                guard applied, state.withLock({ $0.election.holdsLease(now: WallClock.monotonic()) }) else { return }
                logger.warning("the virtual IP vanished from \(interface) while owned; adding it again")
                do {
                    try AddressTable.add(address, interface: interface, lifetime: lifetime)
                    announce()
                    record(kind: "vip-readded", detail: "\(address) was removed from \(interface) by someone else")
                } catch {
                    logger.error("cannot re-add the virtual IP: \(error)")
                }
            }
        }
    }

    /// Announces again when another machine claims the VIP on the segment.
    func watchConflicts(interface: String, address: VirtualAddress) {
        guard !address.isIPv6, let injector else { return }
        let capture: ARPCapture
        do {
            capture = try ARPCapture(interface: interface)
        } catch {
            logger.error("cannot watch for conflicting claims of the virtual IP: \(error)")
            return
        }
        while running.load(ordering: .relaxed) {
            let result = capture.next()
            if case .failed = result {
                // Interface gone or down: do not spin; try again in a second.
                usleep(1_000_000)
                continue
            }
            guard case let .claim(claim) = result, claim.ip == address.ip.bytes, claim.mac != injector.mac else { continue }
            let owned = state.withLock { $0.election.holding }
            guard owned else { continue }
            logger.warning("another machine (\(claim.mac.map { String($0, radix: 16) }.joined(separator: ":"))) announces the virtual IP; announcing again")
            state.withLock { s in
                s.claimedAt = WallClock.monotonic()
                s.nextAnnouncement = schedule.next(after: 0)
            }
            announce()
        }
    }
}
