import Admin
import ArgumentParser
import Logging
import Metrics
import Prometheus
import Proxy
import Recovery
import ServiceLifecycle
import State
import VIP

/// The pgchorus clustering-node daemon: `pgchorusd`, the same binary as `pgchorus` called by that name
/// (the `pgchorus` executable's entry point chooses by the name it was started with).
public struct PGChorusDaemon: AsyncParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "pgchorusd",
        abstract: "pgchorus clustering-node daemon: speaks the PostgreSQL protocol to clients and relays to the backends.",
        discussion: """
            pgchorusd accepts PostgreSQL clients on proxy.listen_address:proxy.listen_port and sends every \
            statement to every online backend; transactions end with a two-phase commit vote. It shares the \
            backends' status with the other clustering nodes (state service, UDP cluster.port), runs the health \
            checks, serves the admin API that `pgchorus status` reads (admin.socket) and, with vip.mode set, \
            holds the virtual IP when elected.

            Files: /etc/pgchorus/pgchorus.toml (configuration; `pgchorus config check` validates it), \
            /etc/pgchorus/users.txt (client users), /var/lib/pgchorus/state.sqlite (state database), \
            /run/pgchorus/admin.sock (admin API). Documentation: /usr/share/doc/pgchorus/.

            Signals: SIGTERM or SIGINT stop the node gracefully (the virtual IP is handed over first); SIGHUP \
            reloads the configuration (`pgchorus reload` does the same; docs/configuration.md says what applies live). \
            Under systemd (Type=notify) READY=1 is sent once the listeners are open.

            Exit status: 0 after a clean stop, 1 when the node cannot start (a port in use, the state \
            directory unwritable), 2 for an invalid configuration (the message names the file, line and key).
            """,
        version: PGChorusVersion.current)

    @Option(name: .long, help: "The configuration file.")
    var config: String = "/etc/pgchorus/pgchorus.toml"

    @Option(name: .long, help: "Override log.level from the configuration (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String?

    public func run() async throws {
        let configuration: Configuration
        do {
            configuration = try Configuration.load(path: config)
        } catch {
            printError("pgchorusd: \(error)")
            throw ExitCode(2)
        }
        let level = Logger.Level(rawValue: logLevel ?? configuration.log.level) ?? .info
        ReloadableLogHandler.set(level)
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .trace
            return ReloadableLogHandler(inner: handler)
        }
        var logger = Logger(label: "pgchorusd")
        logger[metadataKey: "node"] = "\(configuration.node.id)"
        let metricsRegistry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metricsRegistry))

        let store: StateStore
        do {
            store = try StateStore(directory: configuration.node.stateDirectory)
        } catch {
            logger.critical("cannot start: \(error) (node.state_directory in \(configuration.file))")
            throw ExitCode(1)
        }
        let registry = BackendRegistry(backends: configuration.backends, nodeID: configuration.node.id, store: store, logger: logger,
                                       now: WallClock.unixTime())
        try? store.append(ClusterEvent(time: WallClock.unixTime(), origin: configuration.node.id, kind: "start", subject: configuration.node.id,
                                       detail: "pgchorusd \(PGChorusVersion.current) started; backends: "
                                           + registry.snapshot().map { "\($0.backend.id) \($0.status.rawValue)" }.joined(separator: ", ")))

        let server: ProxyServer
        let resolver: InDoubtResolver
        var services: [any Service] = []
        do {
            let context = try ProxyContext(configuration: configuration, logger: logger, registry: registry)
            let stateService = try await StateService(configuration: configuration, registry: registry, store: store, logger: logger,
                                                      gate: context.gate, orderSignal: context.orderSignal)
            if configuration.cluster.nodes.count > 1 {
                let me = configuration.node.id, total = configuration.cluster.nodes.count
                registry.setFence {
                    guard !stateService.hasQuorum() else { return nil }
                    let alive = stateService.nodes().filter(\.alive).count
                    return "node \(me) has lost quorum (it hears \(alive) of \(total) nodes)"
                }
            }
            // Nothing of this run is in flight yet: every prepared transaction of this node is in doubt.
            // Periodically, also those of peers the cluster declared dead (after the grace period).
            resolver = InDoubtResolver(configuration: configuration, registry: context.registry, logger: logger,
                                       deadNodes: { stateService.deadPeers() }, inFlight: context.votesInFlight,
                                       committed: { context.catalogsMayBeStale() })
            if configuration.replication.twoPhaseCommit && configuration.backends.count > 1 {
                for (backend, reason) in await resolver.backendsWithoutPreparedTransactions() {
                    logger.error("backend refused: \(reason)")
                    context.registry.fail(backend.id, reason: reason, now: WallClock.unixTime())
                }
            }
            let report = await resolver.resolve(minimumAge: 0)
            if !report.committed.isEmpty || !report.rolledBack.isEmpty {
                logger.notice("in-doubt transactions resolved at start-up: \(report.committed.count) committed, \(report.rolledBack.count) rolled back")
            }
            server = try await ProxyServer(context: context)
            let health = HealthChecker(configuration: configuration, registry: registry, logger: logger)
            stateService.setHooks(witness: { health.holdsWitness() }, reachable: { health.reachableCount() })
            var vipService: VirtualIPService?
            if configuration.vip.mode != "none" {
                vipService = try VirtualIPService(configuration: configuration, stateService: stateService, healthChecker: health,
                                                  registry: registry, store: store, logger: logger)
            }
            var vipStatus: (@Sendable () -> ClusterStatus.VIP)?
            if let v = vipService {
                vipStatus = { @Sendable in
                    let s = v.status()
                    return ClusterStatus.VIP(mode: s.mode, address: s.address, owner: s.owner, eligible: s.eligible)
                }
            }
            let recovery = RecoveryCoordinator(configuration: configuration, registry: registry, stateService: stateService, logger: logger,
                                               healthy: { id in health.reports().first { $0.backend == id }?.ok })
            let administration = NodeAdministration(configuration: configuration, registry: registry, store: store, stateService: stateService,
                                                    healthChecker: health, logger: logger, sessions: { context.sessionCount }, vip: vipStatus,
                                                    recovery: recovery)
            let admin = configuration.admin
            let adminServer = try await AdminServer(socketPath: admin.socket, tcp: admin.tcpAddress.map { ($0, admin.tcpPort, admin.token ?? "") },
                                                    administration: administration, logger: logger)
            // Shut down in reverse: the VIP is handed over first (while the proxy still serves and the
            // state service still talks to the peers).
            let reloader = NodeReloader(path: config, configuration: configuration,
                                        parts: .init(context: context, registry: registry, health: health, recovery: recovery, administration: administration),
                                        store: store, logger: logger, fixedLogLevel: logLevel != nil)
            administration.setReloadHandler { reloader.reload() }
            services = [stateService, health, server, resolver, adminServer, recovery, ReloadOnHangup(reloader: reloader)]
            if let vipService { services.append(vipService) }
            if let address = admin.metricsAddress {
                services.append(try await MetricsEndpoint(address: address, port: admin.metricsPort, registry: metricsRegistry,
                                                          administration: administration, logger: logger))
            }
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        logger.info("pgchorusd ready", metadata: [
            "address": "\(configuration.proxy.listenAddress)", "port": "\(server.port)",
            "backends": "\(configuration.backends.map(\.description).joined(separator: ", "))",
        ])
        let systemd = SystemdNotifier()
        if let problem = systemd.notify("READY=1\nSTATUS=serving on \(configuration.proxy.listenAddress):\(server.port)") {
            logger.warning("\(problem)")
        }
        let group = ServiceGroup(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        try await group.run()
        store.waitForWrites()
        logger.info("pgchorusd stopped")
    }
}
