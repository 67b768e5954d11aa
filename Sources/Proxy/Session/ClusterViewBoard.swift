import Synchronization

/// The open sessions of a node that want to hear when the cluster takes a backend out of service,
/// so that a session waiting on a frozen or dead backend drops it at once instead of at its next
/// transaction boundary. Each callback hops to its session's event loop itself.
final class ClusterViewBoard: Sendable {
    private let watchers = Mutex<(next: Int, callbacks: [Int: @Sendable () -> Void])>((1, [:]))

    /// Registers a callback; returns the id to remove it with.
    func add(_ callback: @escaping @Sendable () -> Void) -> Int {
        watchers.withLock { w in
            let id = w.next
            w.next += 1
            w.callbacks[id] = callback
            return id
        }
    }

    func remove(_ id: Int) {
        _ = watchers.withLock { $0.callbacks.removeValue(forKey: id) }
    }

    /// Tells every registered session that the cluster's view changed.
    func changed() {
        for callback in watchers.withLock({ Array($0.callbacks.values) }) { callback() }
    }

    var count: Int { watchers.withLock { $0.callbacks.count } }
}
