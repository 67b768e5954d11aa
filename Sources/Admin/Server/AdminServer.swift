import Crypto
import FoundationEssentials
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// The admin API: one JSON request per line, one JSON answer per line, then the connection closes.
/// On a Unix socket (mode 0660: root and the socket's group) and optionally on TCP, where every
/// request must carry the configured token.
public final class AdminServer: Service, Sendable {
    let administration: NodeAdministration
    let logger: Logger
    let channels: [Channel]
    public let socketPath: String

    public init(socketPath: String, tcp: (address: String, port: Int, token: String)?, administration: NodeAdministration, logger: Logger,
                group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws {
        self.administration = administration
        self.logger = logger
        self.socketPath = socketPath
        let directory = socketPath.contains("/") ? String(socketPath[..<socketPath.lastIndex(of: "/")!]) : "."
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw AdminServerError("cannot create the directory of the admin socket \(directory): \(error.localizedDescription)")
        }
        func bootstrap(token: String?) -> ServerBootstrap {
            ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers([
                            ByteToMessageHandler(AdminLineDecoder()),
                            AdminConnectionHandler(administration: administration, token: token, logger: logger),
                        ])
                    }
                }
        }
        var bound: [Channel] = []
        do {
            // No umask(): it is the whole process's, and a process started meanwhile (initdb, pg_dump)
            // would inherit it. Until the chmod the socket has the default mode, which lets nobody
            // but its owner (and root) connect: it takes write permission.
            bound.append(try await bootstrap(token: nil).bind(unixDomainSocketPath: socketPath, cleanupExistingSocketFile: true).get())
            guard chmod(socketPath, 0o660) == 0 else {
                throw AdminServerError("cannot set the mode of the admin socket \(socketPath): \(String(cString: strerror(errno)))")
            }
        } catch {
            throw AdminServerError("cannot listen on the admin socket \(socketPath): \(error)")
        }
        if let tcp {
            do {
                bound.append(try await bootstrap(token: tcp.token).bind(host: tcp.address, port: tcp.port).get())
            } catch {
                try? await bound[0].close()
                throw AdminServerError("cannot listen for the admin API on \(tcp.address):\(tcp.port): \(error)")
            }
        }
        channels = bound
    }

    /// The TCP port actually bound, if any.
    public var tcpPort: Int? { channels.count > 1 ? channels[1].localAddress?.port : nil }

    public func run() async throws {
        logger.info("admin API listening", metadata: ["socket": "\(socketPath)", "tcp": "\(tcpPort.map(String.init) ?? "off")"])
        try await withGracefulShutdownHandler {
            for c in channels { try? await c.closeFuture.get() }
        } onGracefulShutdown: { [channels] in
            for c in channels { c.close(promise: nil) }
        }
        unlink(socketPath)
    }
}

/// Why the admin API could not start.
public struct AdminServerError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}

/// Splits the stream at newlines; a line longer than 64 KiB is an error.
struct AdminLineDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let i = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > 65_536 { throw AdminServerError("request longer than 64 KiB") }
            return .needMoreData
        }
        let line = buffer.readSlice(length: i - buffer.readerIndex)!
        buffer.moveReaderIndex(forwardBy: 1)
        context.fireChannelRead(wrapInboundOut(line))
        return .continue
    }
}

/// Answers one request per connection.
final class AdminConnectionHandler: ChannelInboundHandler, Sendable {
    /// Compares SHA-256 digests of the two tokens (swift-crypto compares digests in constant time):
    /// how long a refusal takes says nothing about how much of the token was right.
    static func tokenMatches(_ given: String?, _ expected: String) -> Bool {
        SHA256.hash(data: Array((given ?? "").utf8)) == SHA256.hash(data: Array(expected.utf8))
    }

    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let administration: NodeAdministration
    let token: String?
    let logger: Logger

    init(administration: NodeAdministration, token: String?, logger: Logger) {
        self.administration = administration; self.token = token; self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = Array(unwrapInboundIn(data).readableBytesView)
        let channel = context.channel
        let request: AdminRequest
        do {
            request = try JSONDecoder().decode(AdminRequest.self, from: Data(line))
        } catch {
            reply(.failure("malformed request (one JSON object per line, e.g. {\"command\":\"status\"}): \(error)"), on: channel)
            return
        }
        if let token, !Self.tokenMatches(request.token, token) {
            logger.warning("admin request refused: wrong or missing token", metadata: ["remote": "\(channel.remoteAddress.map { "\($0)" } ?? "?")"])
            reply(.failure("wrong or missing token"), on: channel)
            return
        }
        let administration = administration
        let logger = logger
        Task {
            if request.command == .attach || request.command == .detach || request.command == .recover {
                logger.notice("admin request", metadata: ["command": "\(request.command.rawValue)", "backend": "\(request.backend ?? "")"])
            }
            let response = await administration.handle(request)
            self.reply(response, on: channel)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        reply(.failure("\(error)"), on: context.channel)
    }

    private func reply(_ response: AdminResponse, on channel: Channel) {
        let bytes = response.encodedLine()
        channel.writeAndFlush(channel.allocator.buffer(bytes: bytes)).whenComplete { _ in channel.close(promise: nil) }
    }
}
