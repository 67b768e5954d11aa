import NIOCore

/// The bytes read from one connection and not yet decoded, split into messages by `Decoder` inside
/// the handler that uses them.
///
/// Used instead of a `ByteToMessageHandler` in front of the session handlers: that handler is
/// generic across modules, so every message it passes on paid for unspecialized code and a chain of
/// dynamic casts in `NIOAny` (a callgrind profile of `pgbench -S` put that at about a fifth of the
/// proxy's instructions). Here a read arrives as one `ByteBuffer` and its messages are handed to the
/// session by direct calls.
struct InboundFrames<Decoder: NIOSingleStepByteToMessageDecoder> {
    var decoder: Decoder
    private var pending = ByteBuffer()
    /// Read-side bytes kept before compaction, so a long stream of partial messages (COPY data)
    /// does not grow the buffer without bound.
    private static var compactionThreshold: Int { 1 << 20 }

    init(_ decoder: Decoder) {
        self.decoder = decoder
    }

    /// Adds what was just read.
    mutating func append(_ incoming: ByteBuffer) {
        if pending.readableBytes == 0 {
            pending = incoming
            return
        }
        if pending.readerIndex > Self.compactionThreshold { pending.discardReadBytes() }
        var incoming = incoming
        pending.writeBuffer(&incoming)
    }

    /// The length field of the next typed message once its header has arrived (before its body
    /// has), so a large message can be accounted for while it is still coming in.
    func nextTypedMessageLength() -> Int? {
        guard pending.readableBytes >= 5, let length = pending.getInteger(at: pending.readerIndex + 1, as: Int32.self) else { return nil }
        return Int(length)
    }

    /// The next complete message, nil when more bytes are needed. Errors are the decoder's
    /// (malformed or oversized input); after one the connection must be closed.
    mutating func next() throws -> Decoder.InboundOut? {
        try decoder.decode(buffer: &pending)
    }
}
