import Synchronization

/// How a node waiting for the cluster-wide order lock (the proxy's `ClusterOrder`) asks the other
/// nodes to let it go, through the state service: `announce` sends a small `epoch` message to every
/// peer; a peer's message comes in through `received`.
public final class ClusterOrderSignal: Sendable {
    private struct Hooks {
        var announce: (@Sendable () -> Void)?
        var received: (@Sendable (_ from: String) -> Void)?
        var deadPeers: (@Sendable () -> [String])?
    }

    private let hooks = Mutex(Hooks())

    public init() {}

    /// Set by the state service: sends the request to every peer; tells which peers are dead.
    public func setAnnouncer(_ announce: @escaping @Sendable () -> Void, deadPeers: @escaping @Sendable () -> [String]) {
        hooks.withLock { $0.announce = announce; $0.deadPeers = deadPeers }
    }

    /// The peers the state service has not heard from within the peer timeout.
    public func deadPeers() -> [String] {
        hooks.withLock { $0.deadPeers }?() ?? []
    }

    /// Set by the proxy: another node waits for the lock.
    public func onReceive(_ received: @escaping @Sendable (_ from: String) -> Void) {
        hooks.withLock { $0.received = received }
    }

    public func announce() {
        hooks.withLock { $0.announce }?()
    }

    public func received(from node: String) {
        hooks.withLock { $0.received }?(node)
    }
}
