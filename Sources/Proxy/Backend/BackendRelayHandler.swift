import NIOCore
import Wire

/// Receives what one backend sends, on the client session's event loop, and hands it to the session.
final class BackendRelayHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let session: NIOLoopBound<ClientSessionHandler>
    let index: Int
    private var inbound: InboundFrames<PostgresFrameDecoder>
    private var failed = false
    /// The connection starts with an SSL request: the first byte read is its answer, not a message.
    private var awaitingTLSAnswer: Bool

    init(session: NIOLoopBound<ClientSessionHandler>, index: Int, maximumMessageSize: Int, asksForTLS: Bool = false) {
        self.session = session
        self.index = index
        self.inbound = InboundFrames(PostgresFrameDecoder(maximumMessageSize: maximumMessageSize))
        self.awaitingTLSAnswer = asksForTLS
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        var bytes = unwrapInboundIn(data)
        if awaitingTLSAnswer, let answer = bytes.readInteger(as: UInt8.self) {
            awaitingTLSAnswer = false
            if answer == UInt8(ascii: "S"), bytes.readableBytes > 0 {
                // Bytes behind the 'S' arrived before any encryption: they could be anyone's (CVE-2021-23214).
                failed = true
                errorCaught(context: context, error: WireError.invalidValue(message: "SSL request answer", field: "answer", detail: "unencrypted data after 'S'"))
                return
            }
            session.value.backendTLSAnswer(index, answer)
        }
        inbound.append(bytes)
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
