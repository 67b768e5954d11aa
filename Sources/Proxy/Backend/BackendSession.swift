import NIOCore
import State
import Wire

/// One client session's connection to one backend.
struct BackendSession {
    enum Phase {
        case connecting
        case loggingIn
        case ready
        case closed
    }

    let backend: Configuration.Backend
    var phase: Phase = .connecting
    var channel: Channel?
    var login: BackendLogin
    /// Bytes written to the backend but not flushed yet.
    var needsFlush = false

    init(backend: Configuration.Backend, login: BackendLogin) {
        self.backend = backend
        self.login = login
    }

    mutating func write(_ bytes: ByteBuffer) {
        guard let channel, phase != .closed else { return }
        channel.write(bytes, promise: nil)
        needsFlush = true
    }

    mutating func flushIfNeeded() {
        guard needsFlush, let channel else { return }
        needsFlush = false
        channel.flush()
    }
}
