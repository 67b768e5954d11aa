import Logging
import NIOPosix
import ServiceLifecycle
import State
import Synchronization

/// The gids of this node's commit votes that sessions are carrying out (from their PREPARE until
/// they are answered, or handed to the resolver when the session ends in the middle).
public final class VotesInFlight: Sendable {
    private let gids = Mutex<Set<String>>([])

    public init() {}

    public func started(_ gid: String) { _ = gids.withLock { $0.insert(gid) } }
    public func ended(_ gid: String) { _ = gids.withLock { $0.remove(gid) } }
    public func current() -> Set<String> { gids.withLock { $0 } }
}

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
    /// This node's votes that sessions are still carrying out (`VotesInFlight`): never in doubt,
    /// however long they wait (for their commit turn, a slow backend).
    let inFlight: VotesInFlight?
    /// Runs after a run committed something: an abandoned vote may have been DDL (`ProxyContext.catalogsMayBeStale`).
    let committed: (@Sendable () -> Void)?

    public init(configuration: Configuration, registry: BackendRegistry, logger: Logger, deadNodes: @escaping @Sendable () -> [String] = { [] },
                inFlight: VotesInFlight? = nil, committed: (@Sendable () -> Void)? = nil) {
        self.committed = committed
        self.configuration = configuration
        self.registry = registry
        self.logger = logger
        self.deadNodes = deadNodes
        self.inFlight = inFlight
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
        var runs = 0
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(Int(interval * 1000))) }
            } catch {
                return
            }
            _ = await resolve(minimumAge: configuration.replication.inDoubtGrace)
            // The commit log is pruned about every ten minutes (and at the first run).
            if runs % max(1, Int(600 / interval)) == 0 { _ = await pruneCommitLog() }
            runs += 1
        }
    }

    /// Deletes `pgchorus.commit_log` rows no in-doubt resolution can need any more, on every online
    /// backend and in every database that has the table: rows committed more than
    /// `replication.commit_log_retention` ago, and earlier than that before the oldest pgchorus
    /// transaction still prepared on any backend (its evidence must stay readable). In batches of
    /// `batch` rows, at most `maxBatches` per database and run. Returns the rows deleted per backend id.
    public func pruneCommitLog(batch: Int = 5000, maxBatches: Int = 20) async -> [String: Int] {
        let me = self
        return (try? await NIOThreadPool.singleton.runIfActive { me.pruneBlocking(batch: batch, maxBatches: maxBatches) }) ?? [:]
    }

    func pruneBlocking(batch: Int, maxBatches: Int) -> [String: Int] {
        let backends = registry.online()
        var deleted: [String: Int] = [:]
        var databases: [String: [String]] = [:]
        // The oldest prepared pgchorus transaction anywhere (seconds ago) moves the horizon back.
        var oldestPrepared = 0.0
        for b in backends {
            do {
                let c = try LibPQConnection(conninfo(b, database: "postgres"), target: b.description)
                let rows = try c.query("SELECT coalesce(extract(epoch FROM now() - min(prepared)), 0)::float8 FROM pg_prepared_xacts WHERE gid LIKE 'pgchorus:%'")
                if let value = rows.first?.first ?? nil, let age = Double(value) { oldestPrepared = max(oldestPrepared, age) }
                databases[b.id] = try c.query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname").compactMap { $0.first ?? nil }
            } catch {
                logger.warning("commit log pruning: \(error)")
            }
        }
        let horizon = configuration.replication.commitLogRetention + oldestPrepared
        for b in backends {
            for database in databases[b.id] ?? [] {
                do {
                    let c = try LibPQConnection(conninfo(b, database: database), target: "\(b.description) database \(database)")
                    guard try c.query("SELECT to_regclass('pgchorus.commit_log') IS NOT NULL").first?.first == "t" else { continue }
                    for _ in 0..<maxBatches {
                        let rows = try c.query("""
                        WITH old AS (SELECT gid FROM pgchorus.commit_log WHERE committed_at < now() - make_interval(secs => $1::float8) LIMIT \(batch))
                        DELETE FROM pgchorus.commit_log l USING old WHERE l.gid = old.gid RETURNING 1
                        """, [String(horizon)])
                        deleted[b.id, default: 0] += rows.count
                        if rows.count < batch { break }
                    }
                    // Notifications held by routines are sent within moments of their commit; rows this
                    // old were left by a node that died in between (their transaction's client had no answer).
                    if try c.query("SELECT to_regclass('pgchorus.held_notifications') IS NOT NULL").first?.first == "t" {
                        _ = try c.query("DELETE FROM pgchorus.held_notifications WHERE held_at < now() - make_interval(secs => $1::float8)",
                                        [String(horizon)])
                    }
                } catch {
                    logger.warning("commit log pruning: \(error)")
                }
            }
        }
        if deleted.values.contains(where: { $0 > 0 }) {
            logger.info("pruned the commit log", metadata: ["deleted": "\(deleted.sorted { $0.key < $1.key })"])
        }
        return deleted
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
        let carried = inFlight?.current() ?? []
        for b in backends {
            do {
                let c = try LibPQConnection(conninfo(b, database: "postgres"), target: b.description)
                let rows = try c.query("SELECT gid, database, extract(epoch FROM now() - prepared)::float8 FROM pg_prepared_xacts WHERE gid LIKE 'pgchorus:%'")
                for r in rows {
                    guard let gid = r[0], only?.contains(gid) ?? true, !carried.contains(gid), let db = r[1], let age = r[2].flatMap(Double.init),
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
        if !report.committed.isEmpty { committed?() }
        return report
    }
}
