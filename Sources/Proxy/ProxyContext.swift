import FoundationEssentials
import Logging
import NIOSSL
import State
import Synchronization

/// What every client session of one node shares: configuration, users, TLS and the cancel keys.
public final class ProxyContext: Sendable {
    /// What a reload may change (`reload`): each new session takes the values of its start.
    struct Live {
        var configuration: Configuration
        var users: UserDirectory
        var tlsContext: NIOSSLContext?
        /// TLS to each backend (by id) whose `sslmode` is not `disable`.
        var backendTLS: [String: NIOSSLContext] = [:]
    }

    private let live: Mutex<Live>
    /// The configuration as last (re)loaded; a session keeps the one it started with.
    public var configuration: Configuration { live.withLock { $0.configuration } }
    public var users: UserDirectory { live.withLock { $0.users } }
    public var tlsContext: NIOSSLContext? { live.withLock { $0.tlsContext } }
    func backendTLSContext(_ id: String) -> NIOSSLContext? { live.withLock { $0.backendTLS[id] } }
    public let cancelRegistry = CancelRegistry()
    public let logger: Logger
    /// The node's view of which backends are online.
    public let registry: BackendRegistry
    let activeSessions = Atomic<Int>(0)
    /// Serial numbers of global transaction ids (`pgchorus:<node>:<serial>`), unique within this run.
    let transactionSerial: Atomic<Int>
    /// (backend id, database) pairs where `pgchorus.commit_log` is known to exist.
    let commitLogReady = Mutex<Set<String>>([])

    /// Forgets where pgchorus' schema was made: everywhere (a database was dropped: its name may come
    /// back as a new database), or for one backend and database (found missing there).
    func forgetSchemas(backend: String? = nil, database: String? = nil) {
        commitLogReady.withLock { ready in
            if let backend, let database { ready.remove("\(backend)/\(database)") } else { ready.removeAll() }
        }
    }
    /// The node-wide order of statements that draw sequence values.
    let sequenceOrdering = SequenceOrdering()
    /// Holds back a new lead until the statements the failed lead ordered have run on it.
    let leadHandover = LeadHandover()
    /// Test hook (environment `PGCHORUS_TEST_HOOK`): stop the process at a point of the commit protocol.
    let testHook: String?
    /// Open sessions told at once when a backend leaves service.
    let viewBoard = ClusterViewBoard()
    /// Finishes the prepared transactions of sessions that ended in the middle of their vote.
    let abandonedVotes: InDoubtResolver
    /// The votes this node's sessions are carrying out: the periodic resolver leaves them alone.
    public let votesInFlight = VotesInFlight()
    /// How the node's own connections to the backends log in (the health-check login, kept live).
    let login: NodeLogin
    /// Probes a lead backend that sessions have waited on for long.
    public let prober: BackendProber
    /// The node's order of commits and statements (`replication.commit_epochs`).
    public let epochs: CommitEpochs
    /// The node's budget for large client messages (`proxy.message_memory`).
    let messageMemory: MessageMemory
    /// Closed for a moment at an online recovery's cut-over: sessions start no transaction meanwhile.
    public let gate: WriteGate
    /// Requests for the cluster-wide order lock, to and from the peers (through the state service).
    public let orderSignal: ClusterOrderSignal

    /// Every database's catalog is loaded again before it is used next (an in-doubt transaction, perhaps
    /// DDL, was committed by a resolver).
    public func catalogsMayBeStale() {
        sequenceOrdering.invalidateAll()
    }

    /// `registry` is the node's (backed by the state database); tests and tools may leave it out.
    public init(configuration: Configuration, logger: Logger, registry: BackendRegistry? = nil, gate: WriteGate = WriteGate(),
                orderSignal: ClusterOrderSignal = ClusterOrderSignal()) throws {
        self.gate = gate
        self.orderSignal = orderSignal
        self.logger = logger
        let now = WallClock.unixTime()
        self.registry = registry ?? BackendRegistry(backends: configuration.backends, nodeID: configuration.node.id, logger: logger, now: now)
        // Seeded from the clock so ids of a restarted node never repeat those of its previous run.
        self.transactionSerial = Atomic(Int(now * 1000) * 1000)
        self.testHook = WallClock.environment("PGCHORUS_TEST_HOOK")
        let ordering = sequenceOrdering
        self.abandonedVotes = InDoubtResolver(configuration: configuration, registry: self.registry, logger: logger, inFlight: votesInFlight,
                                              committed: { ordering.invalidateAll() })
        self.login = NodeLogin(configuration)
        self.prober = BackendProber(configuration: configuration, registry: self.registry, login: login, logger: logger)
        self.epochs = CommitEpochs(configuration: configuration, logger: logger, registry: self.registry, login: login, signal: orderSignal)
        self.messageMemory = MessageMemory(limit: configuration.proxy.messageMemory)
        self.live = Mutex(Live(configuration: configuration, users: try Self.loadUsers(configuration), tlsContext: try Self.loadTLS(configuration),
                               backendTLS: try Self.loadBackendTLS(configuration)))
        let board = viewBoard
        orderSignal.onCatalogChanges(received: { node, open, closed in
            ordering.remoteChanges(from: node, open: open.map { ($0.id, $0.databases, $0.lease) }, closed: closed)
        }, stale: { ordering.invalidateAll() })
        self.registry.addListener { change, _ in
            if change.status != .online { board.changed() }
        }
    }

    /// The users file of `configuration` (empty without one).
    static func loadUsers(_ configuration: Configuration) throws(ConfigurationError) -> UserDirectory {
        try configuration.auth.usersFile.map { path throws(ConfigurationError) in try UserDirectory.load(path: path) } ?? UserDirectory()
    }

    static func loadTLS(_ configuration: Configuration) throws(ConfigurationError) -> NIOSSLContext? {
        guard let tls = configuration.proxy.tls else { return nil }
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(tls.certificateFile).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(file: tls.privateKeyFile, format: .pem)
            var tlsConfiguration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            // TLS 1.0 and 1.1 are broken and deprecated (RFC 8996); PostgreSQL's own default minimum is 1.2 too.
            tlsConfiguration.minimumTLSVersion = .tlsv12
            return try NIOSSLContext(configuration: tlsConfiguration)
        } catch {
            throw ConfigurationError(file: configuration.file, line: nil, key: "proxy.tls",
                                     message: "cannot load the TLS certificate \(tls.certificateFile) or key \(tls.privateKeyFile): \(error)")
        }
    }

    /// TLS to the backends: one client context per backend that may encrypt, its certificates read
    /// now (at start and at every reload, so certificates replaced in place take effect on reload).
    static func loadBackendTLS(_ configuration: Configuration) throws(ConfigurationError) -> [String: NIOSSLContext] {
        var contexts: [String: NIOSSLContext] = [:]
        for b in configuration.backends where b.tls.mode != .disable {
            /// Reads one of the backend's files; an error names the setting and the file.
            func loaded<T>(_ key: String, _ path: String, _ load: () throws -> T) throws(ConfigurationError) -> T {
                guard FileManager.default.isReadableFile(atPath: path) else {
                    throw ConfigurationError(file: configuration.file, line: nil, key: key,
                                             message: "backend \(b.id): cannot read \(path) (\(FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file"))")
                }
                do { return try load() } catch {
                    throw ConfigurationError(file: configuration.file, line: nil, key: key,
                                             message: "backend \(b.id): cannot use \(path) (not PEM, or not what \(key) needs): \(error)")
                }
            }
            var t = TLSConfiguration.makeClientConfiguration()
            t.minimumTLSVersion = .tlsv12
            switch b.tls.mode {
            case .verifyFull: t.certificateVerification = .fullVerification
            case .verifyCA: t.certificateVerification = .noHostnameVerification
            case .disable, .prefer, .require: t.certificateVerification = .none
            }
            if b.tls.mode.verifies, let root = b.tls.rootCertificateFile {
                t.trustRoots = .certificates(try loaded("sslrootcert", root) { try NIOSSLCertificate.fromPEMFile(root) })
            }
            if let cert = b.tls.certificateFile, let privateKey = b.tls.privateKeyFile {
                t.certificateChain = try loaded("sslcert", cert) { try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) } }
                t.privateKey = .privateKey(try loaded("sslkey", privateKey) { try NIOSSLPrivateKey(file: privateKey, format: .pem) })
            }
            do {
                contexts[b.id] = try NIOSSLContext(configuration: t)
            } catch {
                throw ConfigurationError(file: configuration.file, line: nil, key: "sslmode",
                                         message: "backend \(b.id): cannot use its TLS settings: \(error)")
            }
        }
        return contexts
    }

    /// A reload: the users file and TLS material are read first (an error changes nothing), then
    /// new sessions use `configuration` (sessions already open keep theirs).
    public func reload(_ configuration: Configuration) throws(ConfigurationError) {
        let users = try Self.loadUsers(configuration)
        let tls = try Self.loadTLS(configuration)
        let backendTLS = try Self.loadBackendTLS(configuration)
        live.withLock { $0 = Live(configuration: configuration, users: users, tlsContext: tls, backendTLS: backendTLS) }
        login.update(configuration)
    }

    /// Takes a backend out of service on every node, with why.
    func failBackendClusterWide(_ id: String, reason: String) {
        registry.fail(id, reason: reason, now: WallClock.unixTime())
    }

    /// A session ended while its commit vote was undecided or unfinished: its prepared transaction is
    /// resolved now (presumed abort with the in-band evidence), not by the periodic resolver minutes
    /// later, so the row locks it holds are freed at once. Run again shortly after, for a PREPARE that
    /// was still in flight when the session's connections closed.
    func resolveAbandonedVote(_ gid: String) {
        votesInFlight.ended(gid)
        let resolver = abandonedVotes
        let logger = self.logger
        Task.detached {
            for delay in [0, 1, 4] {
                if delay > 0 { try? await Task.sleep(for: .seconds(delay)) }
                let report = await resolver.resolve(minimumAge: 0, only: [gid])
                if !report.committed.isEmpty || !report.rolledBack.isEmpty {
                    logger.notice("finished the vote of an ended session", metadata: [
                        "gid": "\(gid)", "decision": "\(report.committed.isEmpty ? "rollback" : "commit")"])
                }
            }
        }
    }

    /// `pgchorus:<node>:<serial>-<random>`: the node names its own (the resolver's rule), the serial
    /// keeps them unique, and the random part makes the next one impossible to guess — so no role can
    /// insert a `pgchorus.commit_log` row for a transaction before it exists (a commit-log row is the
    /// resolver's evidence of a commit; a prepared transaction's own row holds its key until it ends).
    func nextGlobalTransactionID() -> String {
        let serial = transactionSerial.wrappingAdd(1, ordering: .relaxed).newValue
        let random = UInt64.random(in: 0...UInt64.max)
        let hex = String(random, radix: 16)
        return "pgchorus:\(configuration.node.id):\(serial)-\(String(repeating: "0", count: 16 - hex.count))\(hex)"
    }

    /// Bytes of large client messages held by the node right now (`proxy.message_memory`).
    public var largeMessageBytesInUse: Int { messageMemory.inUse }

    /// The number of client sessions open right now.
    public var sessionCount: Int { activeSessions.load(ordering: .relaxed) }
}
