import Logging
import Synchronization

/// The node's view of its backends: which are online, which failed and why.
///
/// Every status change goes through one path: decide under the lock, hand it to the state
/// database's writer thread with its event (in the order memory sees, never waiting for the disk on
/// the caller's event loop), then tell the listeners (the state service sends local changes to the
/// peers). Changes from peers come in through `apply`, where duplicates and stale changes are
/// dropped by `(generation, origin)`. Sessions read `online()` when they start and on every error.
public final class BackendRegistry: Sendable {
    public typealias Status = BackendState.Status

    /// One backend's status, with why and since when.
    public struct Entry: Sendable, Equatable {
        public var backend: Configuration.Backend
        public var state: BackendState
        public var status: Status { state.status }
        public var reason: String { state.reason }
        /// Seconds since the Unix epoch.
        public var since: Double { state.since }
    }

    /// Called after every accepted change; `local` is false for changes learned from a peer.
    public typealias Listener = @Sendable (_ change: BackendState, _ local: Bool) -> Void

    private let entries: Mutex<[Entry]>
    /// What the entries a reload removed had added to `viewGeneration`, plus one for each removal:
    /// kept so that the sum never goes back (raised while `entries` is held, read after it).
    private let retiredGenerations = Mutex(0)
    private let listeners = Mutex<[Listener]>([])
    /// Why this node may not change the cluster's view now (no quorum), nil when it may (see `setFence`).
    private let fence = Mutex<Hook<@Sendable () -> String?>?>(nil)
    private let store: StateStore?
    private let logger: Logger
    public let nodeID: String

    /// Starts from the persisted statuses in `store` (a failed backend stays failed across restarts);
    /// a backend never recorded starts online at generation 0.
    public init(backends: [Configuration.Backend], nodeID: String, store: StateStore? = nil, logger: Logger, now: Double) {
        var persisted: [String: BackendState] = [:]
        if let store {
            do {
                for s in try store.backends() { persisted[s.id] = s }
            } catch {
                logger.error("cannot read the backends' status from the state database: \(error)")
            }
        }
        self.entries = Mutex(backends.map { b in
            Entry(backend: b, state: persisted[b.id] ?? BackendState(id: b.id, status: .online, reason: "configured", since: now, generation: 0, origin: nodeID))
        })
        self.store = store
        self.logger = logger
        self.nodeID = nodeID
    }

    /// Fencing: while `reason` returns a text (the node has lost quorum), this node fails no backend —
    /// a minority side must not take backends out of service and write to the rest. Changes learned
    /// from peers are still applied.
    public func setFence(_ reason: @escaping @Sendable () -> String?) {
        fence.withLock { $0 = Hook(reason) }
    }

    /// Why this node is fenced now, or nil.
    public func fencedReason() -> String? {
        fence.withLock { $0 }?.call()
    }

    public func addListener(_ listener: @escaping Listener) {
        listeners.withLock { $0.append(listener) }
    }

    /// The online backends in configuration order; the first is the lead.
    public func online() -> [Configuration.Backend] {
        entries.withLock { $0.filter { $0.status == .online }.map(\.backend) }
    }

    public func snapshot() -> [Entry] {
        entries.withLock { $0 }
    }

    /// Every backend's agreed state, for the peers.
    public func states() -> [BackendState] {
        entries.withLock { $0.map(\.state) }
    }

    /// Grows with every accepted change and every removal: a session that saw another value has an
    /// outdated backend set. (A removed entry's generation stays counted in `retiredGenerations`: were
    /// it dropped from the sum, a backend set `down` and then removed would bring the value back to
    /// what sessions saw before, and those that had not looked in between would keep it.)
    public var viewGeneration: Int {
        let current = entries.withLock { $0.reduce(0) { $0 + $1.state.generation } }
        return current + retiredGenerations.withLock { $0 }
    }

    public func status(of id: String) -> Status? {
        entries.withLock { $0.first(where: { $0.backend.id == id })?.status }
    }

    public func entry(_ id: String) -> Entry? {
        entries.withLock { $0.first(where: { $0.backend.id == id }) }
    }

    /// Takes an online backend out of service; returns false when it was not online (duplicates are
    /// dropped). With `keepLast`, the last online backend is never failed: with nothing to diverge
    /// from, it stays online and sessions get errors until it answers again.
    @discardableResult
    public func fail(_ id: String, reason: String, now: Double, keepLast: Bool = true) -> Bool {
        if let fenced = fencedReason() {
            logger.error("backend \(id) not failed: \(fenced) (the failure: \(Self.oneLine(reason)))")
            return false
        }
        return change(id, now: now) { entries, i in
            guard entries[i].status == .online else { return nil }
            if keepLast && entries.filter({ $0.status == .online }).count == 1 { return nil }
            return (.failed, reason)
        }
    }

    /// Sets a backend's status (admin attach/detach, recovery); `expected` guards against a race
    /// with another change. Returns false when nothing changed.
    @discardableResult
    public func setStatus(_ id: String, _ status: Status, reason: String, now: Double, expected: Set<Status>? = nil) -> Bool {
        change(id, now: now) { entries, i in
            if let expected, !expected.contains(entries[i].status) { return nil }
            guard entries[i].status != status else { return nil }
            return (status, reason)
        }
    }

    /// A reload's backends (`ConfigurationReload`): a new id joins `down` (it holds no data yet:
    /// `pgchorus recover` brings it in), a missing id leaves service like a detach and is forgotten.
    /// Entries end in the order of `order` (the configuration's), which decides the lead.
    public func reconfigure(added: [Configuration.Backend], removed: [Configuration.Backend], order: [String], now: Double) {
        for b in removed {
            setStatus(b.id, .down, reason: "removed from the configuration by a reload on \(nodeID)", now: now)
        }
        let changes = entries.withLock { entries -> [(BackendState, Entry)] in
            let leaving = entries.filter { e in removed.contains { $0.id == e.backend.id } }
            retiredGenerations.withLock { $0 += leaving.reduce(0) { $0 + $1.state.generation + 1 } }
            entries.removeAll { e in removed.contains { $0.id == e.backend.id } }
            var out: [(BackendState, Entry)] = []
            for b in added where !entries.contains(where: { $0.backend.id == b.id }) {
                let old = BackendState(id: b.id, status: .down, reason: "", since: now, generation: 0, origin: nodeID)
                let state = BackendState(id: b.id, status: .down, reason: "added by a configuration reload on \(nodeID); bring it in with `pgchorus recover \(b.id)`",
                                         since: now, generation: 1, origin: nodeID)
                let entry = Entry(backend: b, state: state)
                entries.append(entry)
                persist(entry, old: old)
                out.append((old, entry))
            }
            let rank = Dictionary(uniqueKeysWithValues: order.enumerated().map { ($0.element, $0.offset) })
            entries.sort { (rank[$0.backend.id] ?? Int.max) < (rank[$1.backend.id] ?? Int.max) }
            return out
        }
        for (old, entry) in changes {
            logChange(entry, old: old)
            for l in listeners.withLock({ $0 }) { l(entry.state, true) }
        }
    }

    /// Applies a change learned from a peer; false when it is a duplicate, stale or unknown.
    @discardableResult
    public func apply(_ remote: BackendState) -> Bool {
        // A generation no real cluster reaches would overflow the next local change.
        guard remote.generation >= 0, remote.generation < Int.max / 2 else { return false }
        let accepted = entries.withLock { entries -> (BackendState, Entry)? in
            guard let i = entries.firstIndex(where: { $0.backend.id == remote.id }), remote.supersedes(entries[i].state) else { return nil }
            let old = entries[i].state
            entries[i].state = remote
            persist(entries[i], old: old)
            return (old, entries[i])
        }
        guard let (old, entry) = accepted else { return false }
        logChange(entry, old: old)
        for l in listeners.withLock({ $0 }) { l(remote, false) }
        return true
    }

    private func change(_ id: String, now: Double, decide: (inout [Entry], Int) -> (Status, String)?) -> Bool {
        let accepted = entries.withLock { entries -> (BackendState, Entry)? in
            guard let i = entries.firstIndex(where: { $0.backend.id == id }), let (status, reason) = decide(&entries, i) else { return nil }
            let old = entries[i].state
            entries[i].state = BackendState(id: id, status: status, reason: Self.oneLine(reason), since: now,
                                            generation: old.generation + 1, origin: nodeID)
            persist(entries[i], old: old)
            return (old, entries[i])
        }
        guard let (old, entry) = accepted else { return false }
        logChange(entry, old: old)
        for l in listeners.withLock({ $0 }) { l(entry.state, true) }
        return true
    }

    /// Reasons are shown in tables and sent in datagrams: one line, bounded.
    static func oneLine(_ reason: String) -> String {
        String(reason.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ").prefix(500))
    }

    /// Runs under the lock, so the database's writer gets changes in the order memory has them; the
    /// write itself happens on the writer's thread (`StateStore.later`).
    private func persist(_ entry: Entry, old: BackendState) {
        guard let store else { return }
        let s = entry.state, host = entry.backend.host, port = entry.backend.port
        let event = ClusterEvent(time: s.since, origin: s.origin, kind: "backend-status", subject: s.id,
                                 detail: "\(old.status.rawValue) → \(s.status.rawValue): \(s.reason) (generation \(s.generation))")
        store.later("the status of backend \(s.id)", logger: logger) { try $0.record(s, host: host, port: port, event: event) }
    }

    private func logChange(_ entry: Entry, old: BackendState) {
        let s = entry.state
        let metadata: Logger.Metadata = [
            "backend": "\(s.id)", "status": "\(s.status.rawValue)", "reason": "\(s.reason)",
            "origin": "\(s.origin)", "generation": "\(s.generation)",
        ]
        if s.status == .failed {
            logger.error("backend failed", metadata: metadata)
        } else {
            logger.notice("backend status changed from \(old.status.rawValue)", metadata: metadata)
        }
    }
}
