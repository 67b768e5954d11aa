import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import State
import Wire

/// The client-facing listener of one node: accepts PostgreSQL connections and runs a
/// `ClientSessionHandler` for each. Runs as a service until graceful shutdown.
public final class ProxyServer: Service, Sendable {
    public let context: ProxyContext
    let group: EventLoopGroup
    let boundChannel: Channel

    /// Binds the listener at once, so start-up errors (address in use) surface before `run`.
    public init(context: ProxyContext, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws {
        self.context = context
        self.group = group
        let shared = context
        let maxMessage = context.configuration.proxy.maxMessageSize
        let proxy = context.configuration.proxy
        do {
            boundChannel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelOption(.socketOption(.so_keepalive), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            ClientStartupHandler(shared: shared, maximumMessageSize: maxMessage))
                    }
                }
                .bind(host: proxy.listenAddress, port: proxy.listenPort)
                .get()
        } catch {
            throw ProxyStartError.cannotListen(address: proxy.listenAddress, port: proxy.listenPort, reason: "\(error)")
        }
    }

    /// The port actually bound (useful when the configuration asked for port 0).
    public var port: Int { boundChannel.localAddress?.port ?? 0 }

    public func run() async throws {
        context.logger.info("listening", metadata: ["address": "\(context.configuration.proxy.listenAddress)", "port": "\(port)"])
        try await withGracefulShutdownHandler {
            try await boundChannel.closeFuture.get()
        } onGracefulShutdown: { [boundChannel] in
            boundChannel.close(promise: nil)
        }
    }

    /// Stops accepting connections (open sessions run on until their clients leave).
    public func close() async {
        try? await boundChannel.close()
        context.prober.shutdown()
        context.epochs.shutdown()
        context.sequenceOrdering.shutdown()
    }
}

/// Why the proxy could not start.
public enum ProxyStartError: Error, CustomStringConvertible {
    case cannotListen(address: String, port: Int, reason: String)

    public var description: String {
        switch self {
        case let .cannotListen(address, port, reason): "cannot listen on \(address):\(port): \(reason)"
        }
    }
}
