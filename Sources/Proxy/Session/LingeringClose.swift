import NIOCore

extension ChannelHandlerContext {
    /// Ends a client connection after a final message (a FATAL error) without losing it: the output
    /// closes once what was written has gone (the client reads the message, then the end of the
    /// stream); what the client still sends is read and dropped, and the connection closes when the
    /// client closes it, or after `linger`. Closing at once while the client's data lies unread makes
    /// the kernel reset the connection, and the client may get ECONNRESET instead of the message.
    func closeAfterFinalMessage(linger: TimeAmount = .seconds(5)) {
        let channel = self.channel
        guard channel.isActive else {
            close(promise: nil)
            return
        }
        flush()
        close(mode: .output, promise: nil)
        // Reads go on (even where backpressure had stopped them) so the client's data is drained.
        channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        eventLoop.scheduleTask(in: linger) { channel.close(promise: nil) }
    }
}
