import FoundationEssentials
import NIOCore
import NIOPosix

/// Sends one request to a node's admin API and reads the answer.
public enum AdminClient {
    /// Why a request did not get an answer, worded for the operator.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public static func send(_ request: AdminRequest, socketPath: String, timeout: Double = 120) async throws(Failure) -> AdminResponse {
        if access(socketPath, F_OK) != 0 {
            throw Failure(description: "no admin socket at \(socketPath): is pgchorusd running with this configuration? (systemctl status pgchorusd)")
        }
        if access(socketPath, R_OK | W_OK) != 0 {
            throw Failure(description: "permission denied on the admin socket \(socketPath): run as root or as a member of its group")
        }
        return try await exchange(request, timeout: timeout) { $0.connect(unixDomainSocketPath: socketPath) }
    }

    public static func send(_ request: AdminRequest, host: String, port: Int, timeout: Double = 120) async throws(Failure) -> AdminResponse {
        try await exchange(request, timeout: timeout) { $0.connect(host: host, port: port) }
    }

    private static func exchange(_ request: AdminRequest, timeout: Double, connect: (ClientBootstrap) -> EventLoopFuture<Channel>) async throws(Failure) -> AdminResponse {
        let group = MultiThreadedEventLoopGroup.singleton
        let collector = ResponseCollector(promise: group.next().makePromise(of: [UInt8].self))
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .channelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(collector) } }
        let channel: Channel
        do {
            channel = try await connect(bootstrap).get()
        } catch {
            collector.promise.fail(error)
            throw Failure(description: "cannot connect to pgchorusd: \(error) (is it running?)")
        }
        do {
            try await channel.writeAndFlush(channel.allocator.buffer(bytes: request.encodedLine()))
            let timer = channel.eventLoop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) { channel.close(promise: nil) }
            defer { timer.cancel() }
            let bytes = try await collector.promise.futureResult.get()
            guard !bytes.isEmpty else { throw Failure(description: "the daemon closed the connection without an answer (timeout \(Int(timeout)) s?)") }
            return try JSONDecoder().decode(AdminResponse.self, from: Data(bytes))
        } catch let e as Failure {
            throw e
        } catch {
            throw Failure(description: "cannot talk to pgchorusd: \(error)")
        }
    }
}

/// Collects the answer until the daemon closes the connection.
final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: `bytes` is touched only on the channel's event loop.
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<[UInt8]>
    var bytes: [UInt8] = []

    init(promise: EventLoopPromise<[UInt8]>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        bytes += unwrapInboundIn(data).readableBytesView
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.succeed(bytes)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}
