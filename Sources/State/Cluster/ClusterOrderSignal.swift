import Synchronization

/// How a node waiting for the cluster-wide order lock (the proxy's `ClusterOrder`) asks the other
/// nodes to let it go, through the state service: `announce` sends a small `epoch` message to every
/// peer; a peer's message comes in through `received`.
///
/// It also carries the catalog changes that ride the order: before a session's first DDL of a
/// transaction runs, `openCatalogChange` tells every live peer (and waits for their acks), so no
/// peer classifies statements by a catalog loaded before that DDL commits; `closeCatalogChange`
/// when the transaction has ended.
public final class ClusterOrderSignal: Sendable {
    public typealias CatalogAnnouncer = @Sendable (PeerMessage.CatalogChange, @escaping @Sendable (_ unacknowledged: [String]) -> Void) -> Void

    private struct Hooks {
        var announce: (@Sendable () -> Void)?
        var received: (@Sendable (_ from: String) -> Void)?
        var deadPeers: (@Sendable () -> [String])?
        var openCatalog: CatalogAnnouncer?
        var closeCatalog: (@Sendable (_ id: String) -> Void)?
        var catalogReceived: (@Sendable (_ from: String, _ open: [PeerMessage.CatalogChange], _ closed: [String]) -> Void)?
        var catalogsStale: (@Sendable () -> Void)?
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

    // MARK: catalog changes

    /// Set by the state service: `open` sends a change to every live peer and calls back with the
    /// peers that did not acknowledge it within the bound; `close` ends it.
    public func setCatalogAnnouncer(open: @escaping CatalogAnnouncer, close: @escaping @Sendable (_ id: String) -> Void) {
        hooks.withLock { $0.openCatalog = open; $0.closeCatalog = close }
    }

    /// Set by the proxy: a peer's open and lately closed changes (`received`), and "every catalog may
    /// be stale" (a peer heard again after it was lost, quorum regained: DDL may have gone unheard).
    public func onCatalogChanges(received: @escaping @Sendable (_ from: String, _ open: [PeerMessage.CatalogChange], _ closed: [String]) -> Void,
                                 stale: @escaping @Sendable () -> Void) {
        hooks.withLock { $0.catalogReceived = received; $0.catalogsStale = stale }
    }

    /// Tells every live peer of `change`; `acknowledged` runs (on any thread) once each has answered or
    /// the bound has passed, with those that did not. Without peers (one node, no state service) at once.
    public func openCatalogChange(_ change: PeerMessage.CatalogChange, acknowledged: @escaping @Sendable (_ unacknowledged: [String]) -> Void) {
        guard let open = hooks.withLock({ $0.openCatalog }) else {
            acknowledged([])
            return
        }
        open(change, acknowledged)
    }

    public func closeCatalogChange(id: String) {
        hooks.withLock { $0.closeCatalog }?(id)
    }

    public func receivedCatalogChanges(from node: String, open: [PeerMessage.CatalogChange], closed: [String]) {
        guard !open.isEmpty || !closed.isEmpty else { return }
        hooks.withLock { $0.catalogReceived }?(node, open, closed)
    }

    public func catalogsMayBeStale() {
        hooks.withLock { $0.catalogsStale }?()
    }
}
