import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import State

/// Prometheus `GET /metrics`: the counters the proxy records through swift-metrics, plus gauges
/// read from the node's state at scrape time (sessions, backend status, peers, quorum, health-check
/// latency).
public final class MetricsEndpoint: Service, Sendable {
    let registry: PrometheusCollectorRegistry
    let administration: NodeAdministration
    let channel: Channel
    let logger: Logger

    /// `registry` is the one pgchorusd bootstrapped swift-metrics with.
    public init(address: String, port: Int, registry: PrometheusCollectorRegistry, administration: NodeAdministration, logger: Logger,
                group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws {
        self.registry = registry
        self.administration = administration
        self.logger = logger
        let handler = MetricsHTTPHandler.Source(render: { [registry, administration] in Self.render(registry: registry, administration: administration) })
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { ch in
                    ch.pipeline.configureHTTPServerPipeline().flatMapThrowing {
                        try ch.pipeline.syncOperations.addHandler(MetricsHTTPHandler(source: handler))
                    }
                }
                .bind(host: address, port: port).get()
        } catch {
            throw AdminServerError("cannot listen for /metrics on \(address):\(port): \(error)")
        }
    }

    public var port: Int? { channel.localAddress?.port }

    public func run() async throws {
        logger.info("metrics endpoint listening", metadata: ["port": "\(port ?? 0)"])
        try await withGracefulShutdownHandler {
            try? await channel.closeFuture.get()
        } onGracefulShutdown: { [channel] in
            channel.close(promise: nil)
        }
    }

    static func render(registry: PrometheusCollectorRegistry, administration: NodeAdministration) -> [UInt8] {
        let s = administration.status()
        registry.makeGauge(name: "pgchorus_sessions", help: "Client sessions open on this node").set(to: Double(s.node.sessions))
        registry.makeGauge(name: "pgchorus_quorum", help: "1 when this node holds quorum").set(to: s.quorum ? 1 : 0)
        for b in s.backends {
            for status in BackendState.Status.allCases {
                registry.makeGauge(name: "pgchorus_backend_status", labels: [("backend", b.id), ("status", status.rawValue)],
                                   help: "1 for the backend's current status").set(to: b.status == status.rawValue ? 1 : 0)
            }
            if let latency = b.check?.latency {
                registry.makeGauge(name: "pgchorus_health_check_latency_seconds", labels: [("backend", b.id)],
                                   help: "Duration of the latest successful health check").set(to: latency)
            }
        }
        for n in s.nodes where !n.isSelf {
            registry.makeGauge(name: "pgchorus_peer_alive", labels: [("node", n.id)], help: "1 while the peer node answers").set(to: n.alive ? 1 : 0)
        }
        return registry.emitToBuffer()
    }
}

/// Answers `GET /metrics`; anything else is 404.
final class MetricsHTTPHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    struct Source: Sendable {
        let render: @Sendable () -> [UInt8]
    }

    let source: Source
    init(source: Source) { self.source = source }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case let .head(head) = unwrapInboundIn(data) else { return }
        let found = head.method == .GET && (head.uri == "/metrics" || head.uri.hasPrefix("/metrics?"))
        let body = found ? source.render() : Array("not found; try /metrics\n".utf8)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: found ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: found ? .ok : .notFound, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
