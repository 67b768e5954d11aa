/// Which clustering nodes are alive, and whether this node holds quorum.
///
/// Pure: time comes in as an argument. Quorum is a strict majority of the configured nodes; in a
/// two-node cluster with a witness, a node alone counts as a majority while it holds the witness.
public struct Membership: Sendable {
    public struct Peer: Sendable, Equatable {
        public var node: Configuration.ClusterNode
        /// Seconds since the Unix epoch of the last authenticated message; nil if never heard.
        public var lastSeen: Double?
        public var reachableBackends: Int?
        public var claimsQuorum: Bool?
        /// The aliveness last reported (to see transitions).
        public var wasAlive: Bool = false
    }

    public let selfID: String
    public let peerTimeout: Double
    public let totalNodes: Int
    public let usesWitness: Bool
    public private(set) var peers: [Peer]

    public init(nodes: [Configuration.ClusterNode], selfID: String, peerTimeout: Double, witness: Bool) {
        self.selfID = selfID
        self.peerTimeout = peerTimeout
        self.totalNodes = nodes.count
        self.usesWitness = witness
        self.peers = nodes.filter { $0.id != selfID }.map { Peer(node: $0) }
    }

    /// Records a message from `id`; false when `id` is not a peer.
    public mutating func heard(from id: String, at time: Double, reachableBackends: Int?, quorum: Bool?) -> Bool {
        guard let i = peers.firstIndex(where: { $0.node.id == id }) else { return false }
        peers[i].lastSeen = time
        if let r = reachableBackends { peers[i].reachableBackends = r }
        if let q = quorum { peers[i].claimsQuorum = q }
        return true
    }

    public func isAlive(_ peer: Peer, now: Double) -> Bool {
        guard let seen = peer.lastSeen else { return false }
        return now - seen <= peerTimeout
    }

    /// Alive nodes, this one included.
    public func aliveCount(now: Double) -> Int {
        1 + peers.filter { isAlive($0, now: now) }.count
    }

    public func hasQuorum(now: Double, holdsWitness: Bool) -> Bool {
        let alive = aliveCount(now: now)
        if alive * 2 > totalNodes { return true }
        return usesWitness && totalNodes == 2 && holdsWitness
    }

    /// Peers whose aliveness changed since the last call, with the new value.
    public mutating func transitions(now: Double) -> [(Peer, Bool)] {
        var out: [(Peer, Bool)] = []
        for i in peers.indices {
            let alive = isAlive(peers[i], now: now)
            if alive != peers[i].wasAlive {
                peers[i].wasAlive = alive
                out.append((peers[i], alive))
            }
        }
        return out
    }
}
