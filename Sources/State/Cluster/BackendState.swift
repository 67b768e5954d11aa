/// A backend's status as the cluster agrees on it: what, why, since when, and which change set it.
///
/// Every change carries `(generation, origin)`; a node keeps the change with the higher generation,
/// and on equal generations the more severe status (then the higher origin id), so every node ends
/// with the same view whatever order notices arrive in, and duplicates change nothing.
public struct BackendState: Sendable, Equatable, Codable {
    public enum Status: String, Sendable, Equatable, Codable, CaseIterable {
        case online, failed, recovering, down

        /// Which of two changes of the same generation wins: the more cautious one.
        var severity: Int {
            switch self {
            case .online: 0
            case .recovering: 1
            case .failed: 2
            case .down: 3
            }
        }
    }

    public var id: String
    public var status: Status
    public var reason: String
    /// Seconds since the Unix epoch.
    public var since: Double
    public var generation: Int
    /// The node that made this change.
    public var origin: String

    public init(id: String, status: Status, reason: String, since: Double, generation: Int, origin: String) {
        self.id = id; self.status = status; self.reason = reason; self.since = since; self.generation = generation; self.origin = origin
    }

    /// True when `self` replaces `current` (newer, or the same generation and more severe).
    public func supersedes(_ current: BackendState) -> Bool {
        if generation != current.generation { return generation > current.generation }
        // Generation 0 is every node's starting point, not a change.
        if generation == 0 { return false }
        if status.severity != current.status.severity { return status.severity > current.status.severity }
        return origin > current.origin
    }
}

/// One line of the append-only event log.
public struct ClusterEvent: Sendable, Equatable, Codable {
    public var sequence: Int64
    /// Seconds since the Unix epoch.
    public var time: Double
    /// The node that caused the event.
    public var origin: String
    /// `backend-status`, `node-up`, `node-down`, `peer-refused`, `health`, `admin`, `start`.
    public var kind: String
    /// The backend or node it is about.
    public var subject: String
    public var detail: String

    public init(sequence: Int64 = 0, time: Double, origin: String, kind: String, subject: String, detail: String) {
        self.sequence = sequence; self.time = time; self.origin = origin; self.kind = kind; self.subject = subject; self.detail = detail
    }
}
