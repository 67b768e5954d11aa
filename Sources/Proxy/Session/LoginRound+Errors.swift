import NIOCore
import NIOSSL

extension LoginRound {
    /// What an error that ends a backend's login means. The connection's own failures — a reset, an
    /// end of stream, a refused or timed-out connect, a peer gone in the middle of the TLS handshake —
    /// are the backend's being unreachable (it is dying or dead; the others go on and it is failed),
    /// whatever the login was doing when they came: a backend killed while answering the SSL request
    /// resets the connection, and that says nothing about certificates. Only what TLS itself decides
    /// (a certificate that does not verify, a name that does not match, a handshake the server
    /// refuses, unencrypted bytes behind its `S`) refuses the client and fails nobody.
    static func outcome(of error: Error, negotiatingTLS: Bool) -> Outcome {
        switch error {
        case is IOError, is ChannelError:
            return .unreachable("\(error)")
        case let ssl as NIOSSLError where ssl == .uncleanShutdown || ssl == .handshakeFailed(.sslError([.eofDuringHandshake])):
            return .unreachable("the connection closed during the TLS handshake")
        case is NIOSSLError, is NIOSSLExtraError:
            return .tlsRefused("\(error)")
        default:
            return negotiatingTLS ? .tlsRefused("\(error)") : .unreachable("\(error)")
        }
    }
}
