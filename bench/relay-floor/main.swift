// relay-floor: the least a SwiftNIO relay can cost — for issue 16's question of how much of
// pgchorusd's CPU per statement is its own and how much any relay built on SwiftNIO pays on this host.
//
//   relay-floor LISTEN_PORT BACKEND_PORT [raw|framed]
//
// Listens on 127.0.0.1:LISTEN_PORT; for each client opens one connection to 127.0.0.1:BACKEND_PORT on
// the client's own event loop (as pgchorusd does) and copies bytes both ways, flushing once per read
// batch. `raw` forwards each read buffer as it came; `framed` cuts the bytes into PostgreSQL messages
// first (the untyped startup message, then type byte + length; the client must not ask for TLS:
// PGSSLMODE=disable) and writes each message on its own, as a relay that looks at every message but
// decides nothing would. No authentication, no state, no decisions: not a product, a measuring stick.
// Event loops: SwiftNIO's singleton group (one per core), as pgchorusd's.
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// Cuts a stream into PostgreSQL messages: `untyped` messages first (the startup message), then typed.
final class FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    var untyped: Int
    init(untyped: Int) { self.untyped = untyped }

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let header = untyped > 0 ? 4 : 5
        guard buffer.readableBytes >= header,
              let length = buffer.getInteger(at: buffer.readerIndex + header - 4, as: UInt32.self) else { return .needMoreData }
        let total = header - 4 + Int(length)
        guard total >= header, buffer.readableBytes >= total else { return .needMoreData }
        if untyped > 0 { untyped -= 1 }
        context.fireChannelRead(Self.wrapInboundOut(buffer.readSlice(length: total)!))
        return .continue
    }
}

/// Writes what its channel reads to `peer`, flushing once the read batch is done; what it reads
/// before the peer is attached (the client's startup message while the backend connects) waits.
final class Forward: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var peer: Channel?
    var early: [ByteBuffer] = []
    var pending = false

    /// On the event loop both channels share.
    func attach(_ channel: Channel) {
        peer = channel
        guard !early.isEmpty else { return }
        for buffer in early { channel.write(buffer, promise: nil) }
        early = []
        channel.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let peer else { early.append(unwrapInboundIn(data)); return }
        peer.write(unwrapInboundIn(data), promise: nil)
        pending = true
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if pending, let peer { pending = false; peer.flush() }
    }

    func channelInactive(context: ChannelHandlerContext) { peer?.close(promise: nil) }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        print("relay-floor: \(error)")
        context.close(promise: nil)
    }
}

let arguments = CommandLine.arguments
guard arguments.count >= 3, let listenPort = Int(arguments[1]), let backendPort = Int(arguments[2]) else {
    print("usage: relay-floor LISTEN_PORT BACKEND_PORT [raw|framed]")
    exit(2)
}
let framed = arguments.count > 3 && arguments[3] == "framed"
setvbuf(stdout, nil, _IOLBF, 0)

let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .serverChannelOption(.backlog, value: 256)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { client in
        let toBackend = Forward()
        let toClient = Forward()
        do {
            if framed { try client.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(untyped: 1))) }
            try client.pipeline.syncOperations.addHandler(toBackend)
        } catch {
            return client.eventLoop.makeFailedFuture(error)
        }
        ClientBootstrap(group: client.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { backend in
                backend.eventLoop.makeCompletedFuture {
                    if framed { try backend.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(untyped: 0))) }
                    try backend.pipeline.syncOperations.addHandler(toClient)
                }
            }
            .connect(host: "127.0.0.1", port: backendPort)
            .whenComplete { result in
                switch result {
                case .success(let backend):
                    toClient.attach(client)
                    toBackend.attach(backend)
                case .failure(let error):
                    print("relay-floor: cannot reach the backend: \(error)")
                    client.close(promise: nil)
                }
            }
        return client.eventLoop.makeSucceededVoidFuture()
    }
    .bind(host: "127.0.0.1", port: listenPort).get()
print("relay-floor listening on 127.0.0.1:\(listenPort), backend 127.0.0.1:\(backendPort), \(framed ? "framed" : "raw")")
try await server.closeFuture.get()
