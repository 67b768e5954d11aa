import FoundationEssentials
import Recovery
import State

/// One request to the admin API: a JSON object on one line.
public struct AdminRequest: Sendable, Codable, Equatable {
    public enum Command: String, Sendable, Codable, CaseIterable {
        case status, events, detach, attach, recover, reload
    }

    public var command: Command
    /// For `detach` and `attach`.
    public var backend: String?
    /// For `events`: seconds since the Unix epoch.
    public var since: Double?
    public var limit: Int?
    /// Required on the TCP listener.
    public var token: String?
    /// For `recover`: stop the running recovery instead of starting one.
    public var cancel: Bool?

    public init(command: Command, backend: String? = nil, since: Double? = nil, limit: Int? = nil, token: String? = nil, cancel: Bool? = nil) {
        self.command = command; self.backend = backend; self.since = since; self.limit = limit; self.token = token; self.cancel = cancel
    }
}

/// The answer: `ok` with the command's payload, or `ok: false` with an error a person can act on.
public struct AdminResponse: Sendable, Codable, Equatable {
    public var ok: Bool
    public var error: String?
    public var message: String?
    public var status: ClusterStatus?
    public var events: [ClusterEvent]?

    public init(ok: Bool, error: String? = nil, message: String? = nil, status: ClusterStatus? = nil, events: [ClusterEvent]? = nil) {
        self.ok = ok; self.error = error; self.message = message; self.status = status; self.events = events
    }

    public static func failure(_ error: String) -> AdminResponse { AdminResponse(ok: false, error: error) }
}

/// What `pgchorus status --json` prints; documented field by field in docs/operations.md.
public struct ClusterStatus: Sendable, Codable, Equatable {
    public struct Node: Sendable, Codable, Equatable {
        public var id: String
        public var address: String
        public var version: String
        /// Seconds since the Unix epoch.
        public var startedAt: Double
        public var sessions: Int
        public var stateDatabase: String?

        public init(id: String, address: String, version: String, startedAt: Double, sessions: Int, stateDatabase: String?) {
            self.id = id; self.address = address; self.version = version; self.startedAt = startedAt; self.sessions = sessions
            self.stateDatabase = stateDatabase
        }
    }

    public struct Backend: Sendable, Codable, Equatable {
        public var id: String
        public var host: String
        public var port: Int
        public var status: String
        public var reason: String
        /// Seconds since the Unix epoch.
        public var since: Double
        public var generation: Int
        /// The node that made the last change.
        public var origin: String
        public var lead: Bool
        /// The latest health check from this node (nil when checks are off or not run yet).
        public var check: HealthChecker.Report?
        /// Transactions behind the others, when known (recovery reports it).
        public var lag: Int?

        public init(id: String, host: String, port: Int, status: String, reason: String, since: Double, generation: Int, origin: String,
                    lead: Bool, check: HealthChecker.Report?, lag: Int?) {
            self.id = id; self.host = host; self.port = port; self.status = status; self.reason = reason; self.since = since
            self.generation = generation; self.origin = origin; self.lead = lead; self.check = check; self.lag = lag
        }
    }

    public struct VIP: Sendable, Codable, Equatable {
        /// `none` until a virtual IP is configured.
        public var mode: String
        public var address: String?
        public var owner: String?
        /// The nodes the election sees eligible (DNS mode publishes these).
        public var eligible: [String]?

        public init(mode: String, address: String?, owner: String?, eligible: [String]? = nil) {
            self.mode = mode; self.address = address; self.owner = owner; self.eligible = eligible
        }
    }

    public var node: Node
    public var nodes: [StateService.NodeView]
    public var backends: [Backend]
    public var quorum: Bool
    public var vip: VIP
    /// The recovery this node coordinates (running, or the last one), if any.
    public var recovery: RecoveryProgress?
    /// `healthy`, `degraded` or `critical`.
    public var health: String
    /// Configurations that differ between nodes (backend lists), as sentences; nil or empty: none.
    public var warnings: [String]?

    public init(node: Node, nodes: [StateService.NodeView], backends: [Backend], quorum: Bool, vip: VIP, recovery: RecoveryProgress?, health: String) {
        self.node = node; self.nodes = nodes; self.backends = backends; self.quorum = quorum; self.vip = vip
        self.recovery = recovery; self.health = health
    }

    /// 0 healthy; 1 degraded (a backend or node not online); 2 no quorum or no online backend.
    public var exitCode: Int32 {
        if !quorum || !backends.contains(where: { $0.status == "online" }) { return 2 }
        if backends.contains(where: { $0.status != "online" }) || nodes.contains(where: { !$0.alive }) { return 1 }
        return 0
    }

    public static func health(for code: Int32) -> String {
        switch code {
        case 0: "healthy"
        case 1: "degraded"
        default: "critical"
        }
    }
}

extension AdminRequest {
    public func encodedLine() -> [UInt8] {
        Array(((try? JSONEncoder().encode(self)) ?? Data()) + Data("\n".utf8))
    }
}

extension AdminResponse {
    public func encodedLine() -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return Array(((try? e.encode(self)) ?? Data(#"{"ok":false,"error":"cannot encode the response"}"#.utf8)) + Data("\n".utf8))
    }
}
