import Admin
import Logging
import Proxy
import Recovery
import ServiceLifecycle
import State
import Synchronization
import UnixSignals

/// Every logger's level: `log.level`, changed by a reload (unless `--log-level` fixed it).
let liveLogLevel = Atomic<Int>(2)

/// A stream log handler whose level is `liveLogLevel`.
struct ReloadableLogHandler: LogHandler {
    var inner: StreamLogHandler
    static let levels = Logger.Level.allCases

    static func set(_ level: Logger.Level) {
        liveLogLevel.store(levels.firstIndex(of: level) ?? 2, ordering: .relaxed)
    }

    var logLevel: Logger.Level {
        get { Self.levels[liveLogLevel.load(ordering: .relaxed)] }
        set {}
    }
    var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        inner.log(event: event)
    }
}

/// Reloads the configuration (SIGHUP, `pgchorus reload`): reads and validates the whole file, then
/// applies what may change live (`ConfigurationReload`) to every part of the node; an invalid file
/// changes nothing. Each reload is logged and recorded in the event log.
final class NodeReloader: Sendable {
    struct Parts: Sendable {
        let context: ProxyContext
        let registry: BackendRegistry
        let health: HealthChecker
        let recovery: RecoveryCoordinator
        let administration: NodeAdministration
    }

    let path: String
    /// The running configuration; held for the whole of a reload, so reloads run one at a time.
    let running: Mutex<Configuration>
    let parts: Parts
    let store: StateStore?
    let logger: Logger
    /// `--log-level` given on the command line: the file's `log.level` does not apply.
    let fixedLogLevel: Bool
    /// For the event log (`node.id` changes only with a restart).
    let nodeID: String

    init(path: String, configuration: Configuration, parts: Parts, store: StateStore?, logger: Logger, fixedLogLevel: Bool) {
        self.path = path
        self.running = Mutex(configuration)
        self.parts = parts
        self.store = store
        self.logger = logger
        self.fixedLogLevel = fixedLogLevel
        self.nodeID = configuration.node.id
    }

    /// Reloads; the answer says what changed, or why nothing did.
    func reload() -> Result<String, ConfigurationError> {
        running.withLock { running in
            do throws(ConfigurationError) {
                let plan = ConfigurationReload(running: running, file: try Configuration.load(path: path))
                try parts.context.reload(plan.effective)
                parts.health.update(plan.effective)
                parts.recovery.update(plan.effective)
                parts.administration.update(plan.effective)
                if !plan.backendsAdded.isEmpty || !plan.backendsRemoved.isEmpty {
                    parts.registry.reconfigure(added: plan.backendsAdded, removed: plan.backendsRemoved, order: plan.effective.backends.map(\.id),
                                               now: WallClock.unixTime())
                }
                if !fixedLogLevel, let level = Logger.Level(rawValue: plan.effective.log.level) { ReloadableLogHandler.set(level) }
                running = plan.effective
                var said: [String] = []
                if plan.changesNothing { said.append("no change") }
                if !plan.applied.isEmpty { said.append("applied: \(plan.applied.joined(separator: ", "))") }
                if !plan.backendsAdded.isEmpty { said.append("backends added (down until recovered): \(plan.backendsAdded.map(\.id).joined(separator: ", "))") }
                if !plan.backendsRemoved.isEmpty { said.append("backends removed: \(plan.backendsRemoved.map(\.id).joined(separator: ", "))") }
                if !plan.needsRestart.isEmpty { said.append("needs a restart (running values kept): \(plan.needsRestart.joined(separator: ", "))") }
                let summary = "configuration reloaded from \(path): " + said.joined(separator: "; ")
                logger.notice("\(summary)")
                record("reload", summary)
                return .success(summary)
            } catch {
                logger.error("reload refused, the running configuration stays: \(error)")
                record("reload-refused", "\(error)")
                return .failure(error)
            }
        }
    }

    private func record(_ kind: String, _ detail: String) {
        try? store?.append(ClusterEvent(time: WallClock.unixTime(), origin: nodeID, kind: kind, subject: nodeID, detail: detail))
    }
}

/// Reloads on SIGHUP (`systemctl reload pgchorusd`).
struct ReloadOnHangup: Service {
    let reloader: NodeReloader

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in signals {
                _ = reloader.reload()
            }
        }
    }
}
