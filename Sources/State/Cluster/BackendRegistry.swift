import Logging
import Synchronization

/// The node's view of its backends: which are online, which failed and why.
///
/// Every status change goes through `fail`/`setStatus`, so the state service (which will persist
/// changes and tell the peers) can take this path over without touching the callers. Sessions read
/// `online()` when they start and whenever a backend misbehaves.
public final class BackendRegistry: Sendable {
    public enum Status: String, Sendable, Equatable {
        case online, failed, recovering, down
    }

    /// One backend's status, with why and since when.
    public struct Entry: Sendable, Equatable {
        public var backend: Configuration.Backend
        public var status: Status
        public var reason: String
        /// Seconds since the Unix epoch.
        public var since: Double
    }

    struct State {
        var entries: [Entry]
        var generation: Int
    }

    private let state: Mutex<State>
    private let logger: Logger

    public init(backends: [Configuration.Backend], logger: Logger, now: Double) {
        self.state = Mutex(State(entries: backends.map { Entry(backend: $0, status: .online, reason: "configured", since: now) }, generation: 1))
        self.logger = logger
    }

    /// The online backends in configuration order; the first is the lead.
    public func online() -> [Configuration.Backend] {
        state.withLock { $0.entries.filter { $0.status == .online }.map(\.backend) }
    }

    public func snapshot() -> (entries: [Entry], generation: Int) {
        state.withLock { ($0.entries, $0.generation) }
    }

    public func status(of id: String) -> Status? {
        state.withLock { $0.entries.first(where: { $0.backend.id == id })?.status }
    }

    /// Takes an online backend out of service; returns false when it was not online (duplicates are
    /// dropped). With `keepLast`, the last online backend is never failed: with nothing to diverge
    /// from, it stays online and sessions get errors until it answers again.
    @discardableResult
    public func fail(_ id: String, reason: String, now: Double, keepLast: Bool = true) -> Bool {
        let changed = state.withLock { s -> Bool in
            guard let i = s.entries.firstIndex(where: { $0.backend.id == id }), s.entries[i].status == .online else { return false }
            if keepLast && s.entries.filter({ $0.status == .online }).count == 1 { return false }
            s.entries[i].status = .failed
            s.entries[i].reason = reason
            s.entries[i].since = now
            s.generation += 1
            return true
        }
        if changed {
            logger.error("backend failed", metadata: ["backend": "\(id)", "reason": "\(reason)"])
        }
        return changed
    }

    /// Sets a backend's status (admin attach/detach, recovery).
    public func setStatus(_ id: String, _ status: Status, reason: String, now: Double) {
        state.withLock { s in
            guard let i = s.entries.firstIndex(where: { $0.backend.id == id }) else { return }
            s.entries[i].status = status
            s.entries[i].reason = reason
            s.entries[i].since = now
            s.generation += 1
        }
        logger.notice("backend status changed", metadata: ["backend": "\(id)", "status": "\(status.rawValue)", "reason": "\(reason)"])
    }
}
