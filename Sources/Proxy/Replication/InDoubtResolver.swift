import Logging
import NIOPosix
import ServiceLifecycle
import State

/// Resolves this node's prepared transactions that no session is finishing (the node crashed
/// between PREPARE TRANSACTION and COMMIT PREPARED): presumed abort with in-band evidence.
/// A gid whose `pgchorus.commit_log` row is committed on some backend was decided commit (a
/// COMMIT PREPARED ran there), so it is committed everywhere; otherwise no commit was ever sent
/// and the client never got an acknowledgement, so it is rolled back.
public struct InDoubtResolver: Service, Sendable {
    /// What one run did.
    public struct Report: Sendable, Equatable {
        public var committed: [String] = []
        public var rolledBack: [String] = []
        public var errors: [String] = []
    }

    let configuration: Configuration
    let registry: BackendRegistry
    let logger: Logger
    /// Peer nodes the state service has declared dead while this node holds quorum: their
    /// prepared transactions older than the grace period are resolved here too.
    let deadNodes: @Sendable () -> [String]

    public init(configuration: Configuration, registry: BackendRegistry, logger: Logger, deadNodes: @escaping @Sendable () -> [String] = { [] }) {
        self.configuration = configuration
        self.registry = registry
        self.logger = logger
        self.deadNodes = deadNodes
    }

    /// One run on a dedicated thread (libpq blocks). `minimumAge` spares transactions a live
    /// session may still be finishing.
    /// `only`: just these gids (a session that ended in the middle of its vote).
    public func resolve(minimumAge: Double, only: Set<String>? = nil) async -> Report {
        let me = self
        return (try? await NIOThreadPool.singleton.runIfActive { me.resolveBlocking(minimumAge: minimumAge, only: only) }) ?? Report(errors: ["thread pool inactive"])
    }

    public func run() async throws {
        let interval = configuration.replication.resolveInterval
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(Int(interval * 1000))) }
            } catch {
                return
            }
            _ = await resolve(minimumAge: configuration.replication.inDoubtGrace)
        }
    }

    func conninfo(_ backend: Configuration.Backend, database: String) -> String {
        LibPQConnection.conninfo(backend, database: database, user: configuration.replication.resolverUser,
                                 password: configuration.replication.resolverPassword, connectTimeout: 5, application: "pgchorus-resolver")
    }

    /// Backends that cannot take part in the commit vote (`max_prepared_transactions = 0`), with why.
    public func backendsWithoutPreparedTransactions() async -> [(backend: Configuration.Backend, reason: String)] {
        let me = self
        return (try? await NIOThreadPool.singleton.runIfActive { me.checkPreparedTransactionsBlocking() }) ?? []
    }

    func checkPreparedTransactionsBlocking() -> [(backend: Configuration.Backend, reason: String)] {
        var out: [(Configuration.Backend, String)] = []
        for b in registry.online() {
            guard let c = try? LibPQConnection(conninfo(b, database: "postgres"), target: b.description),
                  let value = try? c.query("SELECT current_setting('max_prepared_transactions')::int").first?.first ?? nil,
                  let n = Int(value) else { continue }
            if n == 0 {
                out.append((b, "max_prepared_transactions is 0 on \(b.description): pgchorus ends every writing transaction with PREPARE TRANSACTION; set it above 0 (e.g. to max_connections) and restart that server"))
            }
        }
        return out
    }

    func resolveBlocking(minimumAge: Double, only: Set<String>? = nil) -> Report {
        var report = Report()
        let backends = registry.online()
        // Own gids after `minimumAge`; a dead peer's only after the grace period (never a live node's in flight).
        var owners: [String: Double] = ["pgchorus:\(configuration.node.id):": minimumAge]
        for dead in deadNodes() where dead != configuration.node.id {
            owners["pgchorus:\(dead):"] = max(minimumAge, configuration.replication.inDoubtGrace)
        }
        // database → gid → backends holding it prepared
        var inDoubt: [String: [String: [Configuration.Backend]]] = [:]
        for b in backends {
            do {
                let c = try LibPQConnection(conninfo(b, database: "postgres"), target: b.description)
                let rows = try c.query("SELECT gid, database, extract(epoch FROM now() - prepared)::float8 FROM pg_prepared_xacts WHERE gid LIKE 'pgchorus:%'")
                for r in rows {
                    guard let gid = r[0], only?.contains(gid) ?? true, let db = r[1], let age = r[2].flatMap(Double.init),
                          let owner = owners.first(where: { gid.hasPrefix($0.key) }), age >= owner.value else { continue }
                    inDoubt[db, default: [:]][gid, default: []].append(b)
                }
            } catch {
                report.errors.append("\(error)")
            }
        }
        for (database, gids) in inDoubt {
            var connections: [String: LibPQConnection] = [:]
            for b in backends {
                do { connections[b.id] = try LibPQConnection(conninfo(b, database: database), target: "\(b.description) database \(database)") } catch {
                    report.errors.append("\(error)")
                }
            }
            for (gid, holders) in gids.sorted(by: { $0.key < $1.key }) {
                guard gid.allSatisfy({ $0.isLetter || $0.isNumber || $0 == ":" || $0 == "-" || $0 == "_" }) else { continue }
                var committed = false
                for (_, c) in connections {
                    if let rows = try? c.query("SELECT 1 FROM pgchorus.commit_log WHERE gid = $1", [gid]), !rows.isEmpty {
                        committed = true
                    }
                }
                let command = committed ? "COMMIT PREPARED '\(gid)'" : "ROLLBACK PREPARED '\(gid)'"
                for b in holders {
                    do {
                        guard let c = connections[b.id] else { continue }
                        try c.query(command)
                        logger.notice("resolved in-doubt transaction", metadata: ["gid": "\(gid)", "backend": "\(b.id)", "decision": "\(committed ? "commit" : "rollback")"])
                    } catch {
                        report.errors.append("\(error)")
                    }
                }
                if committed { report.committed.append(gid) } else { report.rolledBack.append(gid) }
            }
        }
        for e in report.errors { logger.warning("in-doubt resolver: \(e)") }
        return report
    }
}
