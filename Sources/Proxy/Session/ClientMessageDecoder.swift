import NIOCore
import Wire

/// What arrives from a client: first one startup-phase packet (possibly after an SSL/GSS
/// negotiation), then typed frames.
public enum ClientInbound: Sendable, Equatable {
    case startupPhase(StartupPhaseMessage)
    case frame(PostgresFrame)
}

/// Decodes a client's byte stream: startup-phase packets (small limit) until a StartupMessage,
/// then typed frames (large, configurable limit).
public struct ClientMessageDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = ClientInbound

    var startup = StartupPhaseDecoder()
    var frames: PostgresFrameDecoder
    var startupDone = false

    public init(maximumMessageSize: Int) {
        frames = PostgresFrameDecoder(maximumMessageSize: maximumMessageSize)
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> ClientInbound? {
        if startupDone {
            return try frames.decode(buffer: &buffer).map(ClientInbound.frame)
        }
        guard let m = try startup.decode(buffer: &buffer) else { return nil }
        if case .startup = m { startupDone = true }
        return .startupPhase(m)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> ClientInbound? {
        try decode(buffer: &buffer)
    }
}
