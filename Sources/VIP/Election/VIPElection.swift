import State

/// Who holds the virtual IP: a lease-based election on the peers' beacons. Pure — time comes in
/// as an argument (a monotonic clock, seconds), beacons in and out as values.
///
/// - The owner is the eligible node with the highest priority, then the lowest id (with
///   `nopreempt`, a healthy holder keeps it when a higher-priority node returns).
/// - Every node grants its lease to the node it prefers, in each beacon, echoing that node's
///   latest stamp. A node holds the VIP only while grants from a strict majority of the configured
///   nodes (itself included) echo one of its stamps younger than `lease - margin`; otherwise it
///   releases, before its lease can expire.
/// - A node that granted to X grants to nobody else until `takeover` (> `lease`) has passed since
///   the arrival of the X beacon its last grant to X echoed, unless X resigned. Since X's stamps are
///   older than their arrival, X's lease has always ended before any granter can support another
///   node: no two holders.
/// - A holder that sees another holder with a higher term releases at once.
///
/// The kernel enforces the same lease (`VirtualIPService`): the address carries a lifetime of
/// `vip.address_lifetime` whole seconds, restarted at every heartbeat only while `holdsLease`, so
/// a frozen, killed or cut-off owner loses it without running any code. Margin arithmetic: the
/// owner's last renewal happens at t_r < h + lease − margin, where h is the arrival, at a granter
/// its majority shares with the successor's, of the stamp that granter's last grant echoed (the
/// stamp is older than its arrival); Linux removes an address whose lifetime has
/// run out at the next run of its lifetime worker, which is the expiry rounded up to a whole second
/// when that is within 0.25 s (measured: 1.02–1.20 s after the last renewal for a 1 s lifetime).
/// So the address is gone by h + lease − margin + lifetime + 0.25 s + timer slack, while the
/// granter supports another node only from h + takeover: the configuration requires
/// takeover ≥ lease + lifetime + 0.3 s (the default), which leaves the margin (≥ 0.15 s) for slack.
public struct VIPElection: Sendable {
    public struct Settings: Sendable, Equatable {
        /// How long a grant keeps a holder's lease (from the holder's stamp it echoes).
        public var lease: Double
        /// A granter switches to another node only this long after the arrival of the stamp its
        /// last grant echoed (> lease).
        public var takeover: Double
        /// A holder releases when its lease has less than this left (covers a tick and the netlink call).
        public var margin: Double
        /// A peer whose beacon is older than this is not a candidate.
        public var candidateTimeout: Double
        /// A grant goes only to a node heard from within this (a silent node gets no renewal, so a
        /// crashed owner's grants start expiring before it stops being a candidate).
        public var grantFreshness: Double
        public var nopreempt: Bool

        public init(lease: Double = 0.5, takeover: Double = 0.65, margin: Double = 0.15, candidateTimeout: Double = 0.5,
                    grantFreshness: Double = 0.25, nopreempt: Bool = false) {
            self.lease = lease; self.takeover = takeover; self.margin = margin; self.candidateTimeout = candidateTimeout
            self.grantFreshness = grantFreshness; self.nopreempt = nopreempt
        }
    }

    /// What the caller must do after a step.
    public enum Action: Sendable, Equatable {
        case claim
        case release
    }

    struct Peer {
        var beacon: VIPBeacon
        var receivedAt: Double
    }

    public let selfID: String
    public let priority: Int
    public let totalNodes: Int
    public let settings: Settings
    public private(set) var term = 0
    /// The term of this node's own current claim (0 when not holding).
    public private(set) var claimTerm = 0
    public private(set) var holding = false
    /// The address (or writer role) may still be in place: set by the service until a release has
    /// really happened, so the beacon keeps saying "holding" and the self-grant stays until then.
    public var addressHeld = false
    public private(set) var resigned = false
    var eligible = false
    var peers: [String: Peer] = [:]
    /// The last grant this node sent: to whom, when, and the stamp it echoed (fixed at step time).
    /// `heard`: when the beacon whose stamp it echoes arrived (now, for a grant to itself).
    var lastGrant: (to: String, at: Double, echo: Double, heard: Double)?
    /// Grants for this node: granter → echoed stamp (this node's clock).
    var grantsForMe: [String: Double] = [:]
    /// This node's latest stamp.
    var stamp = 0.0
    /// A restarted node does not remember whom it granted before: it grants nobody for `takeover`.
    let quietUntil: Double

    public init(selfID: String, priority: Int, totalNodes: Int, settings: Settings, now: Double) {
        self.selfID = selfID; self.priority = priority; self.totalNodes = totalNodes; self.settings = settings
        self.quietUntil = now + settings.takeover
    }

    /// Takes a peer's beacon.
    public mutating func receive(from id: String, beacon: VIPBeacon, now: Double) {
        guard id != selfID, beacon.term >= 0, beacon.term < Int.max / 2 else { return }
        // A beacon older than one already seen from that node (delayed or replayed) changes nothing.
        if let known = peers[id], beacon.stamp < known.beacon.stamp { return }
        peers[id] = Peer(beacon: beacon, receivedAt: now)
        if beacon.holding { term = max(term, beacon.term) }
        if let g = beacon.grant, g.to == selfID {
            grantsForMe[id] = max(grantsForMe[id] ?? -.infinity, g.echo)
        } else if beacon.grant != nil || beacon.resigned {
            grantsForMe[id] = nil
        }
        // A beacon without a grant (the granter has not heard this node lately: lost datagrams)
        // takes nothing back: the earlier grant ages out with its echo, as if this beacon were lost.
    }

    /// One step: decides the grant, whether to claim or release. `eligible` is this node's own
    /// health (reaches the backends, holds quorum).
    public mutating func step(now rawNow: Double, eligible: Bool) -> Action? {
        // Time never runs backwards here, whichever thread steps.
        let now = max(rawNow, stamp)
        self.eligible = eligible && !resigned
        stamp = now
        let preferred = preferredOwner(now: now)
        // Grant: to the preferred node, once any earlier grant to another has certainly expired.
        if let target = preferred, now >= quietUntil {
            if target != selfID, let p = peers[target], now - p.receivedAt > settings.grantFreshness {
                // Silent target: no renewal.
            } else if let last = lastGrant, last.to != target, !grantMayMove(from: last.to, now: now) {
                // Keep silent: no renewal for the old one, nothing yet for the new one.
            } else {
                let echo = target == selfID ? now : (peers[target]?.beacon.stamp ?? 0)
                lastGrant = (target, now, echo, target == selfID ? now : (peers[target]?.receivedAt ?? now))
            }
        }
        // This node's own grant counts only while it goes to itself.
        if let last = lastGrant, last.to == selfID, last.at == now { grantsForMe[selfID] = now } else { grantsForMe[selfID] = nil }
        if holding {
            let higher = peers.contains { id, p in
                isFresh(p, now) && p.beacon.holding && !p.beacon.resigned && (p.beacon.term > claimTerm || (p.beacon.term == claimTerm && id < selfID))
            }
            if !self.eligible || preferred != selfID || higher || !leaseHolds(now: now, within: settings.lease - settings.margin) {
                holding = false
                return .release
            }
            return nil
        }
        if self.eligible, preferred == selfID, leaseHolds(now: now, within: settings.lease - settings.margin) {
            holding = true
            term += 1
            claimTerm = term
            return .claim
        }
        return nil
    }

    /// True while this node holds the VIP and its lease is good for at least `margin` more: the
    /// only state in which the address may be renewed (or re-added).
    public func holdsLease(now: Double) -> Bool {
        holding && leaseHolds(now: now, within: settings.lease - settings.margin)
    }

    /// This node's beacon for its peers, as of the last step.
    public func beacon() -> VIPBeacon {
        var grant: VIPBeacon.Grant?
        if let last = lastGrant, last.at == stamp, !resigned {
            grant = VIPBeacon.Grant(to: last.to, echo: last.echo)
        }
        let held = holding || addressHeld
        return VIPBeacon(term: held ? max(claimTerm, 1) : term, eligible: eligible, priority: priority, holding: held, stamp: stamp, grant: grant,
                         resigned: resigned && !addressHeld)
    }

    /// Gives the VIP up for good (shutdown): the caller releases the address and sends the beacon at once.
    public mutating func resign(now: Double) -> Action? {
        resigned = true
        eligible = false
        stamp = now
        lastGrant = nil
        defer { holding = false }
        return holding ? .release : nil
    }

    /// The node believed to hold the VIP now (this one or a peer), if any.
    public func owner(now: Double) -> String? {
        if holding { return selfID }
        return peers.filter { isFresh($0.value, now) && $0.value.beacon.holding && !$0.value.beacon.resigned }
            .max { ($0.value.beacon.term, $1.key) < ($1.value.beacon.term, $0.key) }?.key
    }

    /// The nodes that could own the VIP now (fresh and eligible), this one included when it is.
    public func eligibleNodes(now: Double) -> Set<String> {
        var out = Set(peers.filter { isFresh($0.value, now) && $0.value.beacon.eligible && !$0.value.beacon.resigned }.keys)
        if eligible { out.insert(selfID) }
        return out
    }

    // MARK: rules

    func isFresh(_ p: Peer, _ now: Double) -> Bool { now - p.receivedAt <= settings.candidateTimeout }

    /// The eligible node with the highest priority, then the lowest id; with `nopreempt`, an
    /// eligible holder stays preferred.
    func preferredOwner(now: Double) -> String? {
        var candidates: [(id: String, priority: Int, holding: Bool, term: Int)] = peers.compactMap { id, p in
            isFresh(p, now) && p.beacon.eligible && !p.beacon.resigned ? (id, p.beacon.priority, p.beacon.holding, p.beacon.term) : nil
        }
        if eligible { candidates.append((selfID, priority, holding, claimTerm)) }
        // The newest claim wins should two say "holding" for a moment (an owner that was frozen).
        if settings.nopreempt, let holder = candidates.filter(\.holding).max(by: { ($0.term, $1.id) < ($1.term, $0.id) }) { return holder.id }
        return candidates.max { ($0.priority, $1.id) < ($1.priority, $0.id) }?.id
    }

    /// A grant may move away from `previous` once `takeover` has passed since it was last renewed,
    /// or at once if `previous` resigned or is this node and not holding.
    func grantMayMove(from previous: String, now: Double) -> Bool {
        if previous == selfID { return !holding && !addressHeld }
        if let p = peers[previous], p.beacon.resigned { return true }
        guard let last = lastGrant else { return true }
        // From when the echoed stamp arrived, not from the grant: X cannot use this node's grants
        // beyond that stamp + lease, and the stamp is older than its arrival.
        return now - last.heard >= settings.takeover
    }

    /// True while a strict majority of the nodes' grants echo a stamp of this node younger than `within`.
    func leaseHolds(now: Double, within: Double) -> Bool {
        let fresh = grantsForMe.values.filter { now - $0 < within }.count
        return fresh * 2 > totalNodes
    }
}
