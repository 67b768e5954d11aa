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

    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
        inner.log(level: level, message: message, metadata: metadata, source: source, file: file, function: function, line: line)
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
    let running: Mutex<Configuration>
    let parts: Parts
    let store: StateStore?
    let logger: Logger
    /// `--log-level` given on the command line: the file's `log.level` does not apply.
    let fixedLogLevel: Bool
    let serial = Mutex<Void>(())

    init(path: String, configuration: Configuration, parts: Parts, store: StateStore?, logger: Logger, fixedLogLevel: Bool) {
        self.path = path
        self.running = Mutex(configuration)
        self.parts = parts
        self.store = store
        self.logger = logger
        self.fixedLogLevel = fixedLogLevel
    }

    /// Reloads; the answer says what changed, or why nothing did.
    func reload() -> Result<String, ConfigurationError> {
        serial.withLock { _ in reloadLocked() }
    }

    private func reloadLocked() -> Result<String, ConfigurationError> {
        let old = running.withLock { $0 }
        let new: Configuration
        do {
            new = try Configuration.load(path: path)
            let plan = ConfigurationReload(running: old, file: new)
            try parts.context.reload(plan.effective)
            parts.health.update(plan.effective)
            parts.recovery.update(plan.effective)
            parts.administration.update(plan.effective)
            if !plan.backendsAdded.isEmpty || !plan.backendsRemoved.isEmpty {
                parts.registry.reconfigure(added: plan.backendsAdded, removed: plan.backendsRemoved, order: plan.effective.backends.map(\.id),
                                           now: WallClock.unixTime())
            }
            if !fixedLogLevel, let level = Logger.Level(rawValue: plan.effective.log.level) { ReloadableLogHandler.set(level) }
            running.withLock { $0 = plan.effective }
            var parts: [String] = []
            if plan.changesNothing { parts.append("no change") }
            if !plan.applied.isEmpty { parts.append("applied: \(plan.applied.joined(separator: ", "))") }
            if !plan.backendsAdded.isEmpty { parts.append("backends added (down until recovered): \(plan.backendsAdded.map(\.id).joined(separator: ", "))") }
            if !plan.backendsRemoved.isEmpty { parts.append("backends removed: \(plan.backendsRemoved.map(\.id).joined(separator: ", "))") }
            if !plan.needsRestart.isEmpty { parts.append("needs a restart (running values kept): \(plan.needsRestart.joined(separator: ", "))") }
            let summary = "configuration reloaded from \(path): " + parts.joined(separator: "; ")
            logger.notice("\(summary)")
            record("reload", summary)
            return .success(summary)
        } catch {
            logger.error("reload refused, the running configuration stays: \(error)")
            record("reload-refused", "\(error)")
            return .failure(error)
        }
    }

    private func record(_ kind: String, _ detail: String) {
        let me = running.withLock { $0.node.id }
        try? store?.append(ClusterEvent(time: WallClock.unixTime(), origin: me, kind: kind, subject: me, detail: detail))
    }
}

/// Reloads on SIGHUP (`systemctl reload pgchorusd`).
struct ReloadOnHangup: Service {
    let reloader: NodeReloader

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        try await cancelWhenGracefulShutdown {
            for await _ in signals {
                _ = reloader.reload()
            }
        }
    }
}
