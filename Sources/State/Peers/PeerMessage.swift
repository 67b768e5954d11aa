import Crypto
import FoundationEssentials

/// What one clustering node tells another. Every message carries the sender's whole view of the
/// backends, so a heartbeat is also anti-entropy: a node that was down converges on its first one.
public struct PeerMessage: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable {
        /// Periodic: "I am alive, and this is my view".
        case heartbeat
        /// Sent at once after a local status change; the receiver answers `ack`.
        case notice
        case ack
        /// "I wait for the cluster-wide order lock: let it go once your running statements are done"
        /// (`ClusterOrderSignal`): no view, not acknowledged.
        case epoch
        /// "The catalogs of these databases change" (`CatalogChange`: DDL through the sender, not yet
        /// ended): the receiver takes its catalogs of them as unknown, then answers `ack`.
        case catalog
    }

    public var kind: Kind
    public var from: String
    /// Seconds since the Unix epoch at the sender.
    public var sentAt: Double
    /// Random, unique per message: a replayed message is refused.
    public var nonce: String
    public var backends: [BackendState]
    /// For `ack`: the nonce of the notice acknowledged.
    public var acknowledges: String?
    /// How many backends the sender's health checks reach.
    public var reachableBackends: Int?
    /// Whether the sender believes it holds quorum.
    public var quorum: Bool?
    /// The sender's state in the virtual-IP election.
    public var vip: VIPBeacon?
    /// The node the message is for (signed with the rest, so it cannot be redirected).
    public var to: String?
    /// A recovery's coordinator asks every node to close its write gate (`WriteGate`) for `lease` more seconds.
    public var gate: GateRequest?
    /// The sender's write gate, while it is closed.
    public var gateState: GateState?
    /// The catalog changes open on the sender (every message but `ack` and `epoch` carries them, so a
    /// lost one is made up by the next heartbeat and an open change is renewed; nil: none).
    public var catalog: [CatalogChange]?
    /// Ids of catalog changes the sender ended lately (the receiver forgets them at once, not at their lease).
    public var catalogClosed: [String]?

    /// DDL of a session of the sender in `databases` that has not ended yet (its transaction is open):
    /// while it is listed, and for `lease` seconds after it was last heard of, the receiver holds what it
    /// loaded of those databases' catalogs (sequence-drawing tables, per-row defaults, routines) for unknown.
    public struct CatalogChange: Sendable, Equatable, Codable {
        public var id: String
        public var databases: [String]
        public var lease: Double
        public init(id: String, databases: [String], lease: Double) { self.id = id; self.databases = databases; self.lease = lease }
    }

    public struct GateRequest: Sendable, Equatable, Codable {
        public var id: String
        public var lease: Double
        public init(id: String, lease: Double) { self.id = id; self.lease = lease }
    }

    public struct GateState: Sendable, Equatable, Codable {
        public var id: String
        /// No session of the sender is in a transaction.
        public var drained: Bool
        public init(id: String, drained: Bool) { self.id = id; self.drained = drained }
    }

    public init(kind: Kind, from: String, sentAt: Double, nonce: String, backends: [BackendState],
                acknowledges: String? = nil, reachableBackends: Int? = nil, quorum: Bool? = nil, vip: VIPBeacon? = nil, to: String? = nil,
                gate: GateRequest? = nil, gateState: GateState? = nil, catalog: [CatalogChange]? = nil, catalogClosed: [String]? = nil) {
        self.gate = gate; self.gateState = gateState; self.catalog = catalog; self.catalogClosed = catalogClosed
        self.kind = kind; self.from = from; self.sentAt = sentAt; self.nonce = nonce; self.backends = backends
        self.acknowledges = acknowledges; self.reachableBackends = reachableBackends; self.quorum = quorum; self.vip = vip; self.to = to
    }

    public static func makeNonce() -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<16).map { _ in String(UInt8.random(in: 0...255, using: &g), radix: 16).leftPadded(2) }.joined()
    }
}

/// Why a peer datagram was refused.
public enum PeerMessageError: Error, Equatable, CustomStringConvertible {
    case notPgchorus
    case badSignature
    case malformed(String)
    case unknownSender(String)
    case clockSkew(seconds: Double)
    case replayed(nonce: String)
    case notForUs(String)

    /// A short name per case, to count refusals by kind.
    public var kind: String {
        switch self {
        case .notPgchorus: "not-pgchorus"
        case .badSignature: "bad-signature"
        case .malformed: "malformed"
        case .unknownSender: "unknown-sender"
        case .clockSkew: "clock-skew"
        case .replayed: "replayed"
        case .notForUs: "not-for-us"
        }
    }

    public var description: String {
        switch self {
        case .notPgchorus: "not a pgchorus peer message"
        case .badSignature: "the HMAC does not match (unsigned, forged, or signed with another cluster key)"
        case let .malformed(why): "malformed message: \(why)"
        case let .unknownSender(id): "sender \"\(id)\" is not one of the configured nodes"
        case let .clockSkew(s): "timestamp is \(Int(s)) s away from this node's clock (replayed, or clocks out of sync)"
        case let .replayed(nonce): "replayed message (nonce \(nonce) already seen)"
        case let .notForUs(to): "message addressed to \(to), not to this node (redirected)"
        }
    }
}

/// The datagram form: `PGCH1`, HMAC-SHA256 (32 bytes) of the JSON body with the cluster key, the body.
public enum PeerEnvelope {
    static let magic = Array("PGCH1".utf8)
    /// Far above any real message (nine backends with long reasons), far below a UDP datagram.
    public static let maximumSize = 60_000

    public static func seal(_ message: PeerMessage, key: SymmetricKey) -> [UInt8] {
        let body = (try? JSONEncoder().encode(message)).map(Array.init) ?? []
        let mac = HMAC<SHA256>.authenticationCode(for: body, using: key)
        return magic + Array(mac) + body
    }

    /// Checks the signature first: nothing of an unauthenticated datagram is parsed.
    public static func open(_ bytes: [UInt8], key: SymmetricKey) throws(PeerMessageError) -> PeerMessage {
        guard bytes.count > magic.count + 32, bytes.count <= maximumSize, Array(bytes.prefix(magic.count)) == magic else { throw .notPgchorus }
        let mac = bytes[magic.count..<(magic.count + 32)]
        let body = bytes[(magic.count + 32)...]
        guard HMAC<SHA256>.isValidAuthenticationCode(Array(mac), authenticating: Array(body), using: key) else { throw .badSignature }
        do {
            return try JSONDecoder().decode(PeerMessage.self, from: Data(body))
        } catch {
            throw .malformed("\(error)")
        }
    }
}

/// Remembers the nonces of recent messages; with the clock-skew bound, a captured message can be
/// neither replayed within the window nor after it.
public struct ReplayGuard: Sendable {
    private var seen: [String: Double] = [:]
    public let maxClockSkew: Double

    public init(maxClockSkew: Double) { self.maxClockSkew = maxClockSkew }

    public mutating func admit(_ m: PeerMessage, now: Double) throws(PeerMessageError) {
        guard abs(now - m.sentAt) <= maxClockSkew else { throw .clockSkew(seconds: now - m.sentAt) }
        guard seen[m.nonce] == nil else { throw .replayed(nonce: m.nonce) }
        seen[m.nonce] = m.sentAt
        if seen.count > 4096 {
            // A nonce older than the window can only come with a timestamp the skew check refuses.
            seen = seen.filter { now - $0.value <= maxClockSkew * 2 }
        }
    }
}

extension String {
    /// Pads with leading zeros to `width` characters (hex bytes, dates).
    public func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
