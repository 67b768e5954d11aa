import NIOCore
import Wire

/// Receives what one backend sends, on the client session's event loop, and hands it to the session.
final class BackendRelayHandler: ChannelInboundHandler {
    typealias InboundIn = PostgresFrame

    let session: NIOLoopBound<ClientSessionHandler>
    let index: Int

    init(session: NIOLoopBound<ClientSessionHandler>, index: Int) {
        self.session = session
        self.index = index
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        session.value.backendFrame(index, unwrapInboundIn(data))
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
