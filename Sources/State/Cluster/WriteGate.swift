import Synchronization

/// The node's write gate: closed for a moment at an online recovery's cut-over, so that no transaction
/// starts while the recovered backend changes from "fed by replication" to "in every session".
///
/// While it is closed, a session that is *quiet* (no transaction open, nothing sent unanswered) starts
/// nothing new: its client's next messages wait until the gate opens. Sessions that are not quiet go on
/// until they are; the gate is *drained* when no session of the node is busy. The recovery's coordinator
/// closes the gate on its own node and asks the peers to close theirs (`PeerMessage.gate`); a closed
/// gate opens by itself when its lease runs out, so a coordinator that dies holds nothing.
public final class WriteGate: Sendable {
    public struct Closure: Sendable, Equatable {
        /// The recovery that closed it.
        public var id: String
        /// Monotonic seconds (`WallClock.monotonic`) when it opens by itself.
        public var until: Double
    }

    struct Inner {
        var closure: Closure?
        var waiters: [Int: @Sendable () -> Void] = [:]
        var nextWaiter = 0
        var changeListeners: [@Sendable () -> Void] = []
    }

    private let inner = Mutex(Inner())
    /// Sessions not quiet now.
    private let busySessions = Atomic<Int>(0)
    /// Mirrors `closure != nil` (sequentially consistent, with `busySessions`): a session announces
    /// itself busy *then* looks at the gate, the coordinator closes the gate *then* counts the busy
    /// sessions — so a session that found the gate open is always counted.
    private let closedFlag = Atomic<Bool>(false)

    public init() {}

    /// The current closure, nil when open (an expired lease counts as open).
    public func closure(now: Double = WallClock.monotonic()) -> Closure? {
        inner.withLock { s in s.closure.flatMap { $0.until > now ? $0 : nil } }
    }

    public var isClosed: Bool { closure() != nil }

    /// How many sessions of this node are busy (in a transaction, or with statements unanswered).
    public var busy: Int { busySessions.load(ordering: .sequentiallyConsistent) }

    /// Whether the gate may be closed (a fast check for every statement; `waitForOpening` decides).
    public var mayBeClosed: Bool { closedFlag.load(ordering: .sequentiallyConsistent) }

    /// Closed and no session busy: every transaction open when it closed has ended.
    public func drained(id: String) -> Bool {
        closure()?.id == id && busy == 0
    }

    /// Closes the gate for recovery `id` for at most `lease` seconds (renewed by closing again).
    public func close(id: String, lease: Double) {
        let until = WallClock.monotonic() + lease
        let changed = inner.withLock { s -> Bool in
            let was = s.closure
            s.closure = Closure(id: id, until: until)
            closedFlag.store(true, ordering: .sequentiallyConsistent)
            return was?.id != id
        }
        if changed { notifyChange() }
        Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(Int(lease * 1000) + 10))
            self?.expire()
        }
    }

    /// Opens the gate closed by `id` (nil: whichever closed it) and wakes the sessions waiting at it.
    public func open(id: String? = nil) {
        let waiters = inner.withLock { s -> [@Sendable () -> Void]? in
            guard let c = s.closure, id == nil || c.id == id else { return nil }
            s.closure = nil
            closedFlag.store(false, ordering: .sequentiallyConsistent)
            let w = Array(s.waiters.values)
            s.waiters = [:]
            return w
        }
        guard let waiters else { return }
        for w in waiters { w() }
        notifyChange()
    }

    /// Opens the gate if its lease has run out.
    public func expire(now: Double = WallClock.monotonic()) {
        let expired = inner.withLock { s in s.closure.map { $0.until <= now } ?? false }
        if expired { open() }
    }

    /// Calls `wake` once the gate opens; nil when it is open now (nothing registered).
    public func waitForOpening(_ wake: @escaping @Sendable () -> Void) -> Int? {
        let now = WallClock.monotonic()
        return inner.withLock { s -> Int? in
            guard let c = s.closure, c.until > now else { return nil }
            s.nextWaiter += 1
            s.waiters[s.nextWaiter] = wake
            return s.nextWaiter
        }
    }

    public func cancelWait(_ ticket: Int) {
        _ = inner.withLock { $0.waiters.removeValue(forKey: ticket) }
    }

    /// A session turned busy (`true`) or quiet (`false`); each session reports only its changes.
    public func sessionBusy(_ busy: Bool) {
        let now = busySessions.wrappingAdd(busy ? 1 : -1, ordering: .sequentiallyConsistent).newValue
        if !busy, now == 0, isClosed { notifyChange() }
    }

    /// Called when the gate closes, opens or drains (the state service tells the peers at once).
    public func onChange(_ listener: @escaping @Sendable () -> Void) {
        inner.withLock { $0.changeListeners.append(listener) }
    }

    private func notifyChange() {
        for l in inner.withLock({ $0.changeListeners }) { l() }
    }
}
