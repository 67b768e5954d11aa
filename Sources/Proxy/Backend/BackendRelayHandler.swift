import NIOCore
import Wire

/// Receives what one backend sends, on the client session's event loop, and hands it to the session.
final class BackendRelayHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let session: NIOLoopBound<ClientSessionHandler>
    let index: Int
    private var inbound: InboundFrames<PostgresFrameDecoder>
    private var failed = false

    init(session: NIOLoopBound<ClientSessionHandler>, index: Int, maximumMessageSize: Int) {
        self.session = session
        self.index = index
        self.inbound = InboundFrames(PostgresFrameDecoder(maximumMessageSize: maximumMessageSize))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        inbound.append(unwrapInboundIn(data))
        do {
            while let frame = try inbound.next() {
                session.value.backendFrame(index, frame)
            }
        } catch {
            // Malformed or oversized bytes from the backend: nothing after them can be trusted.
            failed = true
            errorCaught(context: context, error: error)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        session.value.backendReadComplete(index)
    }

    func channelInactive(context: ChannelHandlerContext) {
        session.value.backendClosed(index)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        session.value.backendFailed(index, error)
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        session.value.backendWritabilityChanged(index, context.channel.isWritable)
    }
}
