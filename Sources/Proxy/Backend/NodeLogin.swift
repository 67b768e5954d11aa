import State
import Synchronization

/// How the node's own connections to the backends log in — `health_check.user`, `password` and
/// `database` as last (re)loaded. The order's lock probe (`pgchorus-epochs`), the cluster-wide order
/// lock (`pgchorus-order`) and the silent-backend prober (`pgchorus-probe`) read it for every new
/// connection, so a reload that changes the health-check login (a rotated password, another role)
/// reaches them as it reaches the health checks; a connection already open stays as it is.
final class NodeLogin: Sendable {
    private let current: Mutex<Configuration.HealthCheck>

    init(_ configuration: Configuration) {
        current = Mutex(configuration.healthCheck)
    }

    /// The login now.
    var healthCheck: Configuration.HealthCheck { current.withLock { $0 } }

    /// A reload.
    func update(_ configuration: Configuration) {
        current.withLock { $0 = configuration.healthCheck }
    }
}
