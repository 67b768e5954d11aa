/// The virtual-IP election's part of every peer message (see `VIPElection` in the VIP module).
public struct VIPBeacon: Sendable, Equatable, Codable {
    /// A node's lease grant: "I support `to` holding the VIP", echoing the `stamp` of `to`'s
    /// latest beacon; `to` counts the grant valid for a lease from that stamp (its own clock).
    public struct Grant: Sendable, Equatable, Codable {
        public var to: String
        public var echo: Double

        public init(to: String, echo: Double) { self.to = to; self.echo = echo }
    }

    /// The highest term the sender has seen; a holder that sees a higher holder's term releases.
    public var term: Int
    /// The sender may own the VIP (reaches the backends, holds quorum).
    public var eligible: Bool
    public var priority: Int
    /// The sender holds the VIP now.
    public var holding: Bool
    /// The sender's monotonic clock when it sent this beacon.
    public var stamp: Double
    public var grant: Grant?
    /// The sender released the VIP for good (shutdown, lost eligibility): grants to it end at once.
    public var resigned: Bool

    public init(term: Int, eligible: Bool, priority: Int, holding: Bool, stamp: Double, grant: Grant?, resigned: Bool) {
        self.term = term; self.eligible = eligible; self.priority = priority; self.holding = holding
        self.stamp = stamp; self.grant = grant; self.resigned = resigned
    }
}
