import FoundationEssentials

/// The whole configuration of one clustering node, read from one TOML file.
/// Every key is documented in docs/configuration.md with its default.
public struct Configuration: Sendable, Equatable {
    public struct Node: Sendable, Equatable {
        public var id: String
        /// Where the state database lives.
        public var stateDirectory: String
    }

    /// One clustering node as every node's configuration lists it.
    public struct ClusterNode: Sendable, Equatable, Codable {
        public var id: String
        /// The address the node's state service listens on and peers send to.
        public var address: String
        public var port: Int
        /// Higher wins the VIP election.
        public var priority: Int

        public init(id: String, address: String, port: Int, priority: Int) {
            self.id = id; self.address = address; self.port = port; self.priority = priority
        }
    }

    /// The clustering nodes and how they talk to each other.
    public struct Cluster: Sendable, Equatable {
        /// Every node of the cluster, this one included; a single node when no `[[cluster.nodes]]` are listed.
        public var nodes: [ClusterNode]
        /// The shared key of the peer messages' HMAC (read from `key_file`); nil for a single node.
        public var key: [UInt8]?
        public var heartbeatInterval: Double
        /// A peer not heard from for this long is dead.
        public var peerTimeout: Double
        /// Peer messages whose timestamp is further than this from the local clock are refused.
        public var maxClockSkew: Double
        /// `none`, or `backends`: in a two-node cluster, a node alone holds quorum only while it holds
        /// the witness lock on a majority of the backends.
        public var witness: String
        /// What a node without quorum does with reads: `allow` (they go on; it takes no writes either
        /// way) or `refuse` (its sessions end with 57P03 at their next statement).
        public var readsWithoutQuorum = "allow"

        public func node(_ id: String) -> ClusterNode? { nodes.first { $0.id == id } }
    }

    /// The virtual IP (or the round-robin DNS records) that clients connect to.
    public struct VIP: Sendable, Equatable {
        /// `none`, `address` (a virtual IP on an interface) or `dns`.
        public var mode: String
        public var interface: String?
        /// Address with prefix, e.g. `10.0.0.100/24`.
        public var address: String?
        public var nopreempt: Bool
        public var lease: Double
        public var takeover: Double
        /// Whole seconds the kernel keeps the address after its owner last renewed it (0: no
        /// lifetime, the address stays until removed). Renewed every heartbeat while the lease holds.
        public var addressLifetime: Int
        /// Seconds between two announcement refreshes while owned.
        public var announceRefresh: Double
        public var dns: DNS
    }

    /// What the DNS mode writes.
    public struct DNS: Sendable, Equatable {
        /// `bind` (zone file), `dnsmasq` (hosts file) or `nsupdate` (script).
        public var format: String
        public var file: String?
        /// The name clients resolve, e.g. `db.example.com.` (a trailing dot is added).
        public var name: String?
        public var ttl: Int
        /// BIND: the zone origin, name server and responsible mailbox of the SOA.
        public var zone: String?
        public var nameServer: String?
        public var mailbox: String?
        /// nsupdate: the server to send the update to.
        public var server: String?
        /// Run after each write (e.g. `rndc reload example.com`, `pkill -HUP dnsmasq`).
        public var reloadCommand: String?
        /// Address each node is published with (node id → address); default: the node's cluster address.
        public var addresses: [String: String]

        public init(format: String, file: String?, name: String?, ttl: Int, zone: String?, nameServer: String?, mailbox: String?,
                    server: String?, reloadCommand: String?, addresses: [String: String]) {
            self.format = format; self.file = file; self.name = name; self.ttl = ttl; self.zone = zone; self.nameServer = nameServer
            self.mailbox = mailbox; self.server = server; self.reloadCommand = reloadCommand; self.addresses = addresses
        }
    }

    /// The health checks of the backends.
    public struct HealthCheck: Sendable, Equatable {
        public var enabled: Bool
        public var interval: Double
        public var timeout: Double
        /// Consecutive failed checks that fail a backend.
        public var failures: Int
        public var user: String
        public var password: String?
        public var database: String
    }

    /// The admin API and metrics endpoints.
    public struct Admin: Sendable, Equatable {
        /// The Unix socket of the admin API (mode 0660).
        public var socket: String
        /// Optional TCP listener of the admin API (requires `token_file`).
        public var tcpAddress: String?
        public var tcpPort: Int
        /// The bearer token of the TCP admin API.
        public var token: String?
        /// Optional Prometheus `/metrics` listener.
        public var metricsAddress: String?
        public var metricsPort: Int
    }

    public struct Proxy: Sendable, Equatable {
        public var listenAddress: String
        public var listenPort: Int
        /// The largest message body accepted after startup, in bytes.
        public var maxMessageSize: Int
        /// Bytes of large client messages (1 MiB and more) the node holds at once, all sessions together.
        public var messageMemory: Int
        public var maxClients: Int
        /// Seconds allowed to connect to and log in to a backend.
        public var backendConnectTimeout: Double
        public var tls: TLS?
    }

    public struct TLS: Sendable, Equatable {
        public var certificateFile: String
        public var privateKeyFile: String

        public init(certificateFile: String, privateKeyFile: String) {
            self.certificateFile = certificateFile; self.privateKeyFile = privateKeyFile
        }
    }

    /// One client authentication rule; the first rule that matches decides.
    public struct AuthRule: Sendable, Equatable {
        public enum Method: String, Sendable, Equatable, CaseIterable {
            case trust, reject, md5
            case scramSHA256 = "scram-sha-256"
            case password
        }
        /// "all" or a database name.
        public var database: String
        /// "all" or a user name.
        public var user: String
        public var address: CIDR
        public var method: Method
        /// The line of the rule in the configuration file, for the log.
        public var line: Int?

        public init(database: String, user: String, address: CIDR, method: Method, line: Int?) {
            self.database = database; self.user = user; self.address = address; self.method = method; self.line = line
        }

        public func matches(database db: String, user u: String, address a: IPAddressBytes?) -> Bool {
            (database == "all" || database == db) && (user == "all" || user == u) && (a.map { address.contains($0) } ?? address.isAll)
        }
    }

    public struct Auth: Sendable, Equatable {
        /// A file of `"user" "secret"` lines (SCRAM-SHA-256 secret, md5 hash, or plain password).
        public var usersFile: String?
        public var rules: [AuthRule]
    }

    /// A PostgreSQL server holding a full copy of the data.
    public struct Backend: Sendable, Equatable {
        public var id: String
        public var host: String
        public var port: Int
        /// How every connection to this backend is encrypted (client sessions and pgchorus' own).
        public var tls: BackendTLS
        public var description: String { "\(id) (\(host):\(port))" }

        public init(id: String, host: String, port: Int, tls: BackendTLS = BackendTLS()) {
            self.id = id; self.host = host; self.port = port; self.tls = tls
        }
    }

    /// TLS to a backend, as libpq names and means it (`[backend_tls]` for every backend, the same keys
    /// on a `[[backends]]` entry for one).
    public struct BackendTLS: Sendable, Equatable {
        public enum Mode: String, Sendable, CaseIterable {
            /// Never encrypted.
            case disable
            /// Encrypted when the server offers it, plaintext otherwise; the certificate is not checked.
            case prefer
            /// Always encrypted; the certificate is not checked.
            case require
            /// Always encrypted; the certificate must be signed by `sslrootcert`.
            case verifyCA = "verify-ca"
            /// As `verify-ca`, and the certificate must name the backend's `host`.
            case verifyFull = "verify-full"

            /// Whether the server's certificate is checked against `sslrootcert`.
            public var verifies: Bool { self == .verifyCA || self == .verifyFull }
        }

        public var mode: Mode = .prefer
        /// The CA certificates (PEM) a verifying mode trusts.
        public var rootCertificateFile: String?
        /// A client certificate and its key (PEM) for PostgreSQL's `cert` authentication or `clientcert`.
        public var certificateFile: String?
        public var privateKeyFile: String?

        public init(mode: Mode = .prefer, rootCertificateFile: String? = nil, certificateFile: String? = nil, privateKeyFile: String? = nil) {
            self.mode = mode
            self.rootCertificateFile = rootCertificateFile
            self.certificateFile = certificateFile
            self.privateKeyFile = privateKeyFile
        }

        /// The same settings as libpq connection string keywords.
        public var libpqKeywords: [(String, String)] {
            var k = [("sslmode", mode.rawValue)]
            if let rootCertificateFile { k.append(("sslrootcert", rootCertificateFile)) }
            if let certificateFile { k.append(("sslcert", certificateFile)) }
            if let privateKeyFile { k.append(("sslkey", privateKeyFile)) }
            return k
        }
    }

    public struct Log: Sendable, Equatable {
        public var level: String
    }

    /// Online recovery of a failed backend (`pgchorus recover`; docs/recovery.md).
    public struct Recovery: Sendable, Equatable {
        /// Where pg_dump, pg_dumpall and pg_restore are; nil: the newest /usr/lib/postgresql/*/bin, else PATH.
        public var binDirectory: String?
        /// Scratch space for the dumps (removed after each database is restored).
        public var workDirectory: String
        /// Parallel jobs of pg_dump and pg_restore per database.
        public var jobs: Int
        /// Seconds the write gate may take to close (open transactions to finish) and the cut-over to
        /// complete; beyond it the recovery is abandoned, never the clients.
        public var gateTimeout: Double
        /// The catch-up lag (bytes of the donor's WAL) under which the gate is closed.
        public var catchUpLag: Int
        /// Seconds the catch-up may take before the recovery is abandoned.
        public var catchUpTimeout: Double
        /// Recover a failed backend without an operator once its health checks have passed for `autoAfter` seconds.
        public var auto: Bool
        public var autoAfter: Double
        /// Seconds to wait for the donor's replication slot, which waits for the transactions open there.
        public var slotTimeout: Double

        public init(binDirectory: String? = nil, workDirectory: String = "/var/lib/pgchorus/recovery", jobs: Int = 2, gateTimeout: Double = 5,
                    catchUpLag: Int = 1_048_576, catchUpTimeout: Double = 3600, auto: Bool = false, autoAfter: Double = 60,
                    slotTimeout: Double = 60) {
            self.binDirectory = binDirectory; self.workDirectory = workDirectory; self.jobs = jobs; self.gateTimeout = gateTimeout
            self.catchUpLag = catchUpLag; self.catchUpTimeout = catchUpTimeout
            self.auto = auto; self.autoAfter = autoAfter; self.slotTimeout = slotTimeout
        }
    }

    /// How statements are replicated to the backends.
    public struct Replication: Sendable, Equatable {
        /// `refuse`: a statement calling a function whose value differs per backend (random(),
        /// clock_timestamp(), gen_random_uuid() …) gets an error naming the function; `allow`: it runs
        /// anyway and the backends may diverge (the comparison then fails the minority).
        public var volatileFunctions: String
        /// Compare a hash of the returned rows across backends, not only kinds, SQLSTATEs and tags.
        public var compareRows: Bool
        /// End every transaction that wrote with PREPARE TRANSACTION and the commit vote.
        public var twoPhaseCommit: Bool
        /// Where reads outside a transaction go: `all` (every backend, compared), `lead`, or `balance`
        /// (one backend per statement, round robin).
        public var readRouting: String
        /// The user the in-doubt resolver logs in to the backends as (it must be allowed to
        /// COMMIT/ROLLBACK PREPARED every user's transactions: a superuser).
        public var resolverUser: String
        /// Its password, if the backends ask for one.
        public var resolverPassword: String?
        /// Seconds between two runs of the in-doubt resolver.
        public var resolveInterval: Double
        /// A prepared transaction of this node younger than this is left alone by the periodic run.
        public var inDoubtGrace: Double
        /// Seconds a follower backend may take to finish a cycle beyond the lead's own time for it
        /// (or, for what goes to every backend at once, after the lead answered); then it is failed.
        public var followerTimeout: Double
        /// Order commits and statements in epochs so every statement sees the same committed
        /// transactions on every backend (see docs/replication.md, "One order of commits and statements").
        public var commitEpochs: Bool
        /// With several clustering nodes, order the epochs of every node against each other's through
        /// a lock on the lead backend (docs/replication.md, "Across clustering nodes").
        public var clusterOrder: Bool
        /// Writes that choose rows by physical order (LIMIT/OFFSET/FETCH/DISTINCT ON without ORDER BY,
        /// ctid predicates): `refuse` (an error naming the clause) or `allow`.
        public var physicalOrderWrites: String
        /// Seconds a `pgchorus.commit_log` row is kept after its commit (and after the oldest prepared
        /// transaction of any backend): older rows are deleted in the background.
        public var commitLogRetention: Double

        public init(volatileFunctions: String = "refuse", compareRows: Bool = true, twoPhaseCommit: Bool = true, readRouting: String = "all",
                    resolverUser: String = "postgres", resolverPassword: String? = nil, resolveInterval: Double = 60, inDoubtGrace: Double = 60,
                    followerTimeout: Double = 3, commitEpochs: Bool = true, physicalOrderWrites: String = "refuse",
                    commitLogRetention: Double = 3600, clusterOrder: Bool = true) {
            self.commitLogRetention = commitLogRetention
            self.clusterOrder = clusterOrder
            self.followerTimeout = followerTimeout
            self.commitEpochs = commitEpochs
            self.physicalOrderWrites = physicalOrderWrites
            self.volatileFunctions = volatileFunctions; self.compareRows = compareRows; self.twoPhaseCommit = twoPhaseCommit
            self.readRouting = readRouting
            self.resolverUser = resolverUser; self.resolverPassword = resolverPassword
            self.resolveInterval = resolveInterval; self.inDoubtGrace = inDoubtGrace
        }
    }

    public var file: String
    public var node: Node
    public var proxy: Proxy
    public var auth: Auth
    public var backends: [Backend]
    public var replication: Replication
    public var cluster: Cluster
    public var healthCheck: HealthCheck
    public var admin: Admin
    public var vip: VIP
    public var log: Log
    public var recovery: Recovery = Recovery()

    /// This node as the cluster lists it.
    public var thisNode: ClusterNode { cluster.node(node.id)! }

    /// Reads and validates `path`; every error names the file, line and key.
    public static func load(path: String) throws(ConfigurationError) -> Configuration {
        let text: String
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            guard let t = String(data: data, encoding: .utf8) else {
                throw ConfigurationError(file: path, line: nil, key: nil, message: "the file is not valid UTF-8")
            }
            text = t
        } catch let e as ConfigurationError {
            throw e
        } catch {
            throw ConfigurationError(file: path, line: nil, key: nil, message: "cannot read the configuration file: \(error.localizedDescription)")
        }
        return try parse(text: text, file: path)
    }

    /// Parses configuration text; `file` names it in errors.
    /// Only `admin.socket` of a file that may be invalid otherwise (so `pgchorus reload` reaches the
    /// daemon, which reports the file's errors itself); nil when even that cannot be read.
    public static func adminSocket(path: String) -> String? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8), let doc = try? TOMLDocument(text: text, file: path) else { return nil }
        let base = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        guard case let .table(admin)? = doc.root["admin"], case let .string(socket)? = admin["socket"] else { return "/run/pgchorus/admin.sock" }
        return socket.hasPrefix("/") ? socket : "\(base)/\(socket)"
    }

    /// The TLS keys of `[backend_tls]` or of one `[[backends]]` entry, over `defaults`.
    static func readBackendTLS(_ t: inout TableReader, defaults: BackendTLS, resolve: (String) -> String) throws(ConfigurationError) -> BackendTLS {
        var tls = defaults
        let mode = try t.oneOf("sslmode", BackendTLS.Mode.allCases.map(\.rawValue), default: defaults.mode.rawValue)
        tls.mode = BackendTLS.Mode(rawValue: mode)!
        if let root = try t.string("sslrootcert") { tls.rootCertificateFile = resolve(root) }
        if let cert = try t.string("sslcert") { tls.certificateFile = resolve(cert) }
        if let key = try t.string("sslkey") { tls.privateKeyFile = resolve(key) }
        if tls.mode.verifies && tls.rootCertificateFile == nil {
            throw t.error("sslmode", "sslmode \"\(mode)\" checks the server's certificate, so sslrootcert (the CA certificates to trust, PEM) is required")
        }
        if (tls.certificateFile == nil) != (tls.privateKeyFile == nil) {
            throw t.error(tls.certificateFile == nil ? "sslcert" : "sslkey", "sslcert and sslkey go together: set both or neither")
        }
        return tls
    }

    public static func parse(text: String, file: String) throws(ConfigurationError) -> Configuration {
        let doc = try TOMLDocument(text: text, file: file)
        var root = TableReader(document: doc, path: "", table: doc.root)
        let baseDirectory = file.contains("/") ? String(file[..<file.lastIndex(of: "/")!]) : "."
        func resolve(_ p: String) -> String { p.hasPrefix("/") ? p : "\(baseDirectory)/\(p)" }

        var nodeT = try root.subtable("node")
        let node = Node(id: try nodeT.string("id", default: "node1"),
                        stateDirectory: resolve(try nodeT.string("state_directory", default: "/var/lib/pgchorus")))
        try validateIdentifier(node.id, key: "id", in: nodeT)
        try nodeT.rejectUnknownKeys()

        var proxyT = try root.subtable("proxy")
        var proxy = Proxy(
            listenAddress: try proxyT.string("listen_address", default: "0.0.0.0"),
            listenPort: try proxyT.int("listen_port", default: 5432, range: 0...65535),
            maxMessageSize: try proxyT.int("max_message_size", default: 256 << 20, range: 1024...(1 << 30)),
            messageMemory: try proxyT.int("message_memory", default: 1 << 30, range: (1 << 20)...(1 << 40)),
            maxClients: try proxyT.int("max_clients", default: 10_000, range: 1...1_000_000),
            backendConnectTimeout: try proxyT.duration("backend_connect_timeout", default: 10, range: 0.1...600),
            tls: nil)
        if IPAddressBytes(proxy.listenAddress) == nil {
            throw proxyT.error("listen_address", "\"\(proxy.listenAddress)\" is not an IPv4 or IPv6 address")
        }
        if proxy.messageMemory < proxy.maxMessageSize {
            throw proxyT.error("message_memory", "\(proxy.messageMemory) is less than max_message_size (\(proxy.maxMessageSize)): one message of the largest size allowed would not fit")
        }
        var tlsT = try proxyT.subtable("tls")
        let cert = try tlsT.string("certificate_file")
        let key = try tlsT.string("private_key_file")
        switch (cert, key) {
        case let (c?, k?): proxy.tls = TLS(certificateFile: resolve(c), privateKeyFile: resolve(k))
        case (nil, nil): break
        case (nil, _): throw tlsT.error("certificate_file", "private_key_file is set, so certificate_file is required")
        case (_, nil): throw tlsT.error("private_key_file", "certificate_file is set, so private_key_file is required")
        }
        try tlsT.rejectUnknownKeys()
        try proxyT.rejectUnknownKeys()

        var authT = try root.subtable("auth")
        var auth = Auth(usersFile: try authT.string("users_file").map(resolve), rules: [])
        for var r in try authT.tables("rules") {
            let cidrText = try r.string("address", default: "all")
            guard let cidr = CIDR(cidrText) else {
                throw r.error("address", "\"\(cidrText)\" is not \"all\" or an address with optional /prefix (e.g. 10.0.0.0/8)")
            }
            let method = try r.oneOf("method", Configuration.AuthRule.Method.allCases.map(\.rawValue), default: "scram-sha-256")
            auth.rules.append(AuthRule(
                database: try r.string("database", default: "all"), user: try r.string("user", default: "all"),
                address: cidr, method: AuthRule.Method(rawValue: method)!, line: doc.line(of: r.path)))
            try r.rejectUnknownKeys()
        }
        if auth.rules.isEmpty {
            // Same default as a fresh PostgreSQL: trust on loopback only; every other client is refused.
            auth.rules = [
                AuthRule(database: "all", user: "all", address: CIDR("127.0.0.0/8")!, method: .trust, line: nil),
                AuthRule(database: "all", user: "all", address: CIDR("::1/128")!, method: .trust, line: nil),
            ]
        }
        let needsUsers = auth.rules.contains { [.md5, .scramSHA256, .password].contains($0.method) }
        if needsUsers && auth.usersFile == nil {
            throw authT.error("users_file", "a rule uses password authentication, so users_file is required")
        }
        try authT.rejectUnknownKeys()

        var backendTLST = try root.subtable("backend_tls")
        let tlsDefaults = try readBackendTLS(&backendTLST, defaults: BackendTLS(), resolve: resolve)
        try backendTLST.rejectUnknownKeys()
        var backends: [Backend] = []
        var seen: Set<String> = []
        for var b in try root.tables("backends") {
            let backend = Backend(id: try b.requiredString("id"), host: try b.requiredString("host"),
                                  port: try b.int("port", default: 5432, range: 1...65535),
                                  tls: try readBackendTLS(&b, defaults: tlsDefaults, resolve: resolve))
            try validateIdentifier(backend.id, key: "id", in: b)
            guard seen.insert(backend.id).inserted else { throw b.error("id", "duplicate backend id \"\(backend.id)\"") }
            backends.append(backend)
            try b.rejectUnknownKeys()
        }
        if backends.isEmpty {
            throw ConfigurationError(file: file, line: nil, key: "backends", message: "at least one [[backends]] table is required")
        }

        var replicationT = try root.subtable("replication")
        let replication = Replication(
            volatileFunctions: try replicationT.oneOf("volatile_functions", ["refuse", "allow"], default: "refuse"),
            compareRows: try replicationT.bool("compare_rows", default: true),
            twoPhaseCommit: try replicationT.bool("two_phase_commit", default: true),
            readRouting: try replicationT.oneOf("read_routing", ["all", "lead", "balance"], default: "all"),
            resolverUser: try replicationT.string("resolver_user", default: "postgres"),
            resolverPassword: try replicationT.string("resolver_password"),
            resolveInterval: try replicationT.duration("resolve_interval", default: 60, range: 1...86400),
            inDoubtGrace: try replicationT.duration("in_doubt_grace", default: 60, range: 1...86400),
            followerTimeout: try replicationT.duration("follower_timeout", default: 3, range: 0.1...86400),
            commitEpochs: try replicationT.bool("commit_epochs", default: true),
            physicalOrderWrites: try replicationT.oneOf("physical_order_writes", ["refuse", "allow"], default: "refuse"),
            commitLogRetention: try replicationT.duration("commit_log_retention", default: 3600, range: 600...31_536_000),
            clusterOrder: try replicationT.bool("cluster_order", default: true))
        try replicationT.rejectUnknownKeys()

        var clusterT = try root.subtable("cluster")
        let defaultPeerPort = try clusterT.int("port", default: 7433, range: 1...65535)
        var cluster = Cluster(
            nodes: [], key: nil,
            heartbeatInterval: try clusterT.duration("heartbeat_interval", default: 0.1, range: 0.02...60),
            peerTimeout: try clusterT.duration("peer_timeout", default: 2, range: 0.1...600),
            maxClockSkew: try clusterT.duration("max_clock_skew", default: 30, range: 1...3600),
            witness: try clusterT.oneOf("witness", ["none", "backends"], default: "none"))
        cluster.readsWithoutQuorum = try clusterT.oneOf("reads_without_quorum", ["allow", "refuse"], default: "allow")
        var nodeIDs: Set<String> = []
        for var n in try clusterT.tables("nodes") {
            let member = ClusterNode(id: try n.requiredString("id"), address: try n.requiredString("address"),
                                     port: try n.int("port", default: defaultPeerPort, range: 1...65535),
                                     priority: try n.int("priority", default: 100, range: 0...1_000_000))
            try validateIdentifier(member.id, key: "id", in: n)
            if IPAddressBytes(member.address) == nil { throw n.error("address", "\"\(member.address)\" is not an IPv4 or IPv6 address") }
            guard nodeIDs.insert(member.id).inserted else { throw n.error("id", "duplicate node id \"\(member.id)\"") }
            cluster.nodes.append(member)
            try n.rejectUnknownKeys()
        }
        if cluster.nodes.isEmpty {
            cluster.nodes = [ClusterNode(id: node.id, address: proxy.listenAddress == "0.0.0.0" || proxy.listenAddress == "::" ? "127.0.0.1" : proxy.listenAddress,
                                         port: defaultPeerPort, priority: 100)]
        } else if cluster.node(node.id) == nil {
            throw clusterT.error("nodes", "this node (node.id = \"\(node.id)\") is not one of the [[cluster.nodes]]")
        }
        if let keyFile = try clusterT.string("key_file").map(resolve) {
            let key = try readSecretFile(keyFile, key: "key_file", in: clusterT)
            guard key.count >= 16 else { throw clusterT.error("key_file", "the key in \(keyFile) is shorter than 16 bytes; generate one with `head -c 32 /dev/urandom | base64`") }
            cluster.key = Array(key.utf8)
        } else if cluster.nodes.count > 1 {
            throw clusterT.error("key_file", "a cluster of \(cluster.nodes.count) nodes needs the shared key that authenticates peer messages")
        }
        if cluster.witness == "backends" && cluster.nodes.count != 2 {
            throw clusterT.error("witness", "the backends witness is for two-node clusters only (this one has \(cluster.nodes.count))")
        }
        try clusterT.rejectUnknownKeys()

        var healthT = try root.subtable("health_check")
        let health = HealthCheck(
            enabled: try healthT.bool("enabled", default: true),
            interval: try healthT.duration("interval", default: 1, range: 0.05...3600),
            // Not 2 s: a PostgreSQL server on a saturated machine can take that long to fork and
            // authenticate a connection, and a busy backend is not a failed one (bench/run showed
            // healthy backends failed by 2-s connect timeouts). A refused connection still fails at once.
            timeout: try healthT.duration("timeout", default: 10, range: 0.1...600),
            failures: try healthT.int("failures", default: 3, range: 1...100),
            user: try healthT.string("user", default: replication.resolverUser),
            password: try healthT.string("password") ?? replication.resolverPassword,
            database: try healthT.string("database", default: "postgres"))
        try healthT.rejectUnknownKeys()

        var adminT = try root.subtable("admin")
        var admin = Admin(
            socket: resolve(try adminT.string("socket", default: "/run/pgchorus/admin.sock")),
            tcpAddress: try adminT.string("tcp_address"), tcpPort: try adminT.int("tcp_port", default: 7434, range: 0...65535),
            token: nil,
            metricsAddress: try adminT.string("metrics_address"), metricsPort: try adminT.int("metrics_port", default: 9187, range: 0...65535))
        if let a = admin.tcpAddress, IPAddressBytes(a) == nil { throw adminT.error("tcp_address", "\"\(a)\" is not an IPv4 or IPv6 address") }
        if let a = admin.metricsAddress, IPAddressBytes(a) == nil { throw adminT.error("metrics_address", "\"\(a)\" is not an IPv4 or IPv6 address") }
        if let tokenFile = try adminT.string("token_file").map(resolve) {
            admin.token = try readSecretFile(tokenFile, key: "token_file", in: adminT)
        } else if admin.tcpAddress != nil {
            throw adminT.error("token_file", "tcp_address is set, so token_file is required (the TCP admin API always asks for a token)")
        }
        try adminT.rejectUnknownKeys()

        var vipT = try root.subtable("vip")
        var dnsT = try vipT.subtable("dns")
        var dns = DNS(format: try dnsT.oneOf("format", ["bind", "dnsmasq", "nsupdate"], default: "bind"),
                      file: try dnsT.string("file").map(resolve), name: try dnsT.string("name"),
                      ttl: try dnsT.int("ttl", default: 10, range: 1...86400),
                      zone: try dnsT.string("zone"), nameServer: try dnsT.string("name_server"), mailbox: try dnsT.string("mailbox"),
                      server: try dnsT.string("server"), reloadCommand: try dnsT.string("reload_command"), addresses: [:])
        var addressesT = try dnsT.subtable("addresses")
        for id in cluster.nodes.map(\.id) {
            if let a = try addressesT.string(id) {
                guard IPAddressBytes(a) != nil else { throw addressesT.error(id, "\"\(a)\" is not an IPv4 or IPv6 address") }
                dns.addresses[id] = a
            }
        }
        try addressesT.rejectUnknownKeys()
        try dnsT.rejectUnknownKeys()
        let vipMode = try vipT.oneOf("mode", ["none", "address", "dns"], default: "none")
        let vipLease = try vipT.duration("lease", default: 1.0, range: 0.1...60)
        let addressLifetime = try vipT.int("address_lifetime", default: max(1, Int(vipLease.rounded(.up))), range: 0...3600)
        // The old owner's address is gone by its last renewal (inside its lease) + the lifetime +
        // at most 0.25 s of the kernel's rounding to whole seconds (+ timer slack): the takeover waits longer.
        let kernelLease = vipMode == "address" && addressLifetime > 0
        let minimumTakeover = kernelLease ? vipLease + Double(addressLifetime) + 0.3 : vipLease + 0.15
        let vip = VIP(mode: vipMode,
                      interface: try vipT.string("interface"), address: try vipT.string("address"),
                      nopreempt: try vipT.bool("nopreempt", default: true),
                      lease: vipLease,
                      takeover: try vipT.duration("takeover", default: (minimumTakeover * 100).rounded(.up) / 100, range: 0.15...120),
                      addressLifetime: addressLifetime,
                      announceRefresh: try vipT.duration("announce_refresh", default: 60, range: 1...3600),
                      dns: dns)
        if vip.mode == "address" {
            guard let i = vip.interface, !i.isEmpty else { throw vipT.error("interface", "mode = \"address\" needs the network interface to hold the VIP on") }
            guard let a = vip.address else { throw vipT.error("address", "mode = \"address\" needs the virtual IP with its prefix, e.g. \"10.0.0.100/24\"") }
            let parts = a.split(separator: "/")
            guard parts.count == 2, IPAddressBytes(String(parts[0])) != nil, let p = Int(parts[1]), p >= 1, p <= (String(parts[0]).contains(":") ? 128 : 32) else {
                throw vipT.error("address", "\"\(a)\" is not an address with a prefix length, e.g. \"10.0.0.100/24\" or \"2001:db8::100/64\"")
            }
        }
        if vip.mode == "dns" {
            guard vip.dns.file != nil else { throw dnsT.error("file", "mode = \"dns\" needs the file to write") }
            guard let n = vip.dns.name, !n.isEmpty else { throw dnsT.error("name", "mode = \"dns\" needs the name clients resolve") }
            if vip.dns.format == "bind" && vip.dns.zone == nil { throw dnsT.error("zone", "format = \"bind\" needs the zone origin, e.g. \"example.com.\"") }
        }
        if vip.mode != "none" && cluster.nodes.count == 2 {
            // A lease needs a strict majority of voters: with two nodes, one dead node would leave the VIP unowned for ever.
            throw vipT.error("mode", "a virtual IP (or DNS writer) election needs at least three clustering nodes (this cluster has two); add a third node — it may be a small machine that serves no clients")
        }
        if vip.mode != "none" {
            guard vip.takeover > vip.lease else { throw vipT.error("takeover", "must be longer than lease (\(vip.lease) s), or two nodes could hold the VIP at once") }
            if kernelLease {
                guard Double(vip.addressLifetime) >= vip.lease else {
                    throw vipT.error("address_lifetime", "must be at least lease (\(vip.lease) s, rounded up to whole seconds), or the kernel removes the address while the lease still holds; 0 turns the lifetime off")
                }
                guard vip.takeover >= minimumTakeover - 1e-9 else {
                    throw vipT.error("takeover", "must be at least lease + address_lifetime + 0.3 s (\(minimumTakeover) s): a frozen or killed owner's address lasts until its lifetime runs out, and the successor must not claim it before")
                }
            }
            guard vip.lease >= 3 * cluster.heartbeatInterval else {
                throw vipT.error("lease", "must be at least three heartbeats (cluster.heartbeat_interval = \(cluster.heartbeatInterval) s)")
            }
        }
        try vipT.rejectUnknownKeys()

        var logT = try root.subtable("log")
        let log = Log(level: try logT.oneOf("level", ["trace", "debug", "info", "notice", "warning", "error", "critical"], default: "info"))
        try logT.rejectUnknownKeys()

        var recoveryT = try root.subtable("recovery")
        let recovery = Recovery(
            binDirectory: try recoveryT.string("bin_directory").map(resolve),
            workDirectory: resolve(try recoveryT.string("work_directory", default: node.stateDirectory + "/recovery")),
            jobs: try recoveryT.int("jobs", default: 2, range: 1...64),
            gateTimeout: try recoveryT.duration("gate_timeout", default: 5, range: 0.5...600),
            catchUpLag: try recoveryT.int("catch_up_lag", default: 1_048_576, range: 0...(1 << 40)),
            catchUpTimeout: try recoveryT.duration("catch_up_timeout", default: 3600, range: 10...604_800),
            auto: try recoveryT.bool("auto", default: false),
            autoAfter: try recoveryT.duration("auto_after", default: 60, range: 1...86400),
            slotTimeout: try recoveryT.duration("slot_timeout", default: 60, range: 1...86400))
        try recoveryT.rejectUnknownKeys()
        try root.rejectUnknownKeys()
        var configuration = Configuration(file: file, node: node, proxy: proxy, auth: auth, backends: backends, replication: replication,
                                          cluster: cluster, healthCheck: health, admin: admin, vip: vip, log: log)
        configuration.recovery = recovery
        return configuration
    }

    /// The first line of a secret file, without surrounding whitespace.
    private static func readSecretFile(_ path: String, key: String, in t: TableReader) throws(ConfigurationError) -> String {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw t.error(key, "cannot read \(path)")
        }
        let line = text.split(separator: "\n", omittingEmptySubsequences: true).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        guard !line.isEmpty else { throw t.error(key, "\(path) is empty") }
        return line
    }

    private static func validateIdentifier(_ id: String, key: String, in t: TableReader) throws(ConfigurationError) {
        let ok = !id.isEmpty && id.count <= 63 && id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
        if !ok { throw t.error(key, "\"\(id)\" must be 1 to 63 letters, digits, '-' or '_'") }
    }
}
