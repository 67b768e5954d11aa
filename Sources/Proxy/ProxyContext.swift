import Logging
import NIOSSL
import State
import Synchronization

/// What every client session of one node shares: configuration, users, TLS and the cancel keys.
public final class ProxyContext: Sendable {
    public let configuration: Configuration
    public let users: UserDirectory
    public let cancelRegistry = CancelRegistry()
    public let tlsContext: NIOSSLContext?
    public let logger: Logger
    let activeSessions = Atomic<Int>(0)

    public init(configuration: Configuration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        self.users = try configuration.auth.usersFile.map { path throws(ConfigurationError) in try UserDirectory.load(path: path) } ?? UserDirectory()
        if let tls = configuration.proxy.tls {
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(tls.certificateFile).map { NIOSSLCertificateSource.certificate($0) }
                let key = try NIOSSLPrivateKey(file: tls.privateKeyFile, format: .pem)
                let tlsConfiguration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
                self.tlsContext = try NIOSSLContext(configuration: tlsConfiguration)
            } catch {
                throw ConfigurationError(file: configuration.file, line: nil, key: "proxy.tls",
                                         message: "cannot load the TLS certificate \(tls.certificateFile) or key \(tls.privateKeyFile): \(error)")
            }
        } else {
            self.tlsContext = nil
        }
    }

    /// The number of client sessions open right now.
    public var sessionCount: Int { activeSessions.load(ordering: .relaxed) }
}
