/// What a reload changes (**pure**): the configuration to run with after it, the keys that changed
/// and apply now, the keys that changed but need a restart (they keep their running value until
/// then), and the backends added and removed. docs/configuration.md marks every key live or restart.
public struct ConfigurationReload: Sendable, Equatable {
    /// The new file's values, except the restart-only keys, which keep the running ones.
    public var effective: Configuration
    public var applied: [String] = []
    public var needsRestart: [String] = []
    public var backendsAdded: [Configuration.Backend] = []
    public var backendsRemoved: [Configuration.Backend] = []

    public var changesNothing: Bool { applied.isEmpty && needsRestart.isEmpty && backendsAdded.isEmpty && backendsRemoved.isEmpty }

    public init(running old: Configuration, file new: Configuration) {
        effective = new
        func restartOnly<T: Equatable>(_ key: String, _ path: WritableKeyPath<Configuration, T>) {
            guard old[keyPath: path] != new[keyPath: path] else { return }
            needsRestart.append(key)
            effective[keyPath: path] = old[keyPath: path]
        }
        func live<T: Equatable>(_ key: String, _ path: KeyPath<Configuration, T>) {
            if old[keyPath: path] != new[keyPath: path] { applied.append(key) }
        }
        restartOnly("node.id", \.node.id)
        restartOnly("node.state_directory", \.node.stateDirectory)
        restartOnly("proxy.listen_address", \.proxy.listenAddress)
        restartOnly("proxy.listen_port", \.proxy.listenPort)
        restartOnly("proxy.max_message_size", \.proxy.maxMessageSize)
        restartOnly("proxy.message_memory", \.proxy.messageMemory)
        live("proxy.max_clients", \.proxy.maxClients)
        live("proxy.backend_connect_timeout", \.proxy.backendConnectTimeout)
        live("proxy.tls", \.proxy.tls)
        live("auth.users_file", \.auth.usersFile)
        live("auth.rules", \.auth.rules)
        live("replication.volatile_functions", \.replication.volatileFunctions)
        live("replication.compare_rows", \.replication.compareRows)
        live("replication.two_phase_commit", \.replication.twoPhaseCommit)
        live("replication.read_routing", \.replication.readRouting)
        live("replication.follower_timeout", \.replication.followerTimeout)
        live("replication.physical_order_writes", \.replication.physicalOrderWrites)
        restartOnly("replication.commit_epochs", \.replication.commitEpochs)
        restartOnly("replication.cluster_order", \.replication.clusterOrder)
        restartOnly("replication.resolver_user", \.replication.resolverUser)
        restartOnly("replication.resolver_password", \.replication.resolverPassword)
        restartOnly("replication.resolve_interval", \.replication.resolveInterval)
        restartOnly("replication.in_doubt_grace", \.replication.inDoubtGrace)
        restartOnly("replication.commit_log_retention", \.replication.commitLogRetention)
        restartOnly("cluster.nodes", \.cluster.nodes)
        restartOnly("cluster.key_file", \.cluster.key)
        restartOnly("cluster.heartbeat_interval", \.cluster.heartbeatInterval)
        restartOnly("cluster.peer_timeout", \.cluster.peerTimeout)
        restartOnly("cluster.max_clock_skew", \.cluster.maxClockSkew)
        restartOnly("cluster.witness", \.cluster.witness)
        live("cluster.reads_without_quorum", \.cluster.readsWithoutQuorum)
        live("health_check", \.healthCheck)
        restartOnly("admin", \.admin)
        restartOnly("vip", \.vip)
        live("log.level", \.log.level)
        live("recovery", \.recovery)

        // Backends: new ids join (down until recovered), missing ids leave; an id whose address
        // changed keeps the running address until a restart.
        var backends: [Configuration.Backend] = []
        for b in new.backends {
            if let running = old.backends.first(where: { $0.id == b.id }) {
                if running != b { needsRestart.append("backends.\(b.id) (\(running.tls != b.tls ? "TLS settings" : "address"))") }
                backends.append(running)
            } else {
                backends.append(b)
                backendsAdded.append(b)
            }
        }
        backendsRemoved = old.backends.filter { b in !new.backends.contains { $0.id == b.id } }
        effective.backends = backends
    }
}
