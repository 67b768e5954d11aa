import State
import Synchronization

/// Sequences set equal after a statement that drew sequence values ended differently on the backends:
/// the lead ended it with a timing outcome (a deadlock, a serialization failure, a cancel, a lock
/// timeout) after drawing some values, and the followers got that outcome instead of running it; or
/// its transaction was doomed and the followers ran it with another snapshot. Sequences are not
/// transactional: the values the lead drew stay drawn, and the next insert would get another id on
/// the lead than on the followers (a false failure when the ids are compared, silent divergence when
/// they are not). Run while the statement's sequence turn is still held — no other sequence-drawing
/// statement runs on any node — through connections of the node's own (the session's may be in an
/// aborted transaction block): every follower's sequences are set to the lead's (`setval`).
enum SequenceResync {
    /// Every sequence of the database: its name (quoted), its last value (nil when never drawn), its start.
    static let readSQL = "SELECT pg_catalog.format('%I.%I', schemaname, sequencename), last_value, start_value FROM pg_catalog.pg_sequences WHERE schemaname <> 'pgchorus'"

    struct Value: Equatable {
        var last: String?
        var start: String
    }

    /// What one run did: the names set, per follower id; and what failed (the lead's read, or a follower's).
    struct Outcome: Sendable {
        var set: [String: [String]] = [:]
        var failures: [String] = []
    }

    /// Sets each follower's sequences to the lead's (a follower that fails does not stop the others).
    static func run(lead: Configuration.Backend, followers: [Configuration.Backend], database: String,
                    configuration: Configuration) -> Outcome {
        func connect(_ b: Configuration.Backend) throws -> LibPQConnection {
            try Self.connect(b, database: database, configuration: configuration)
        }
        var outcome = Outcome()
        let wanted: [String: Value]
        do {
            wanted = try values(connect(lead))
        } catch {
            outcome.failures.append("\(lead.id) (the lead): \(error)")
            return outcome
        }
        for f in followers {
            do {
                let c = try connect(f)
                let statements = setvals(wanted: wanted, have: try values(c))
                guard !statements.isEmpty else { continue }
                _ = try c.simpleQuery(statements.map(\.sql).joined(separator: "; "), timeout: 10)
                outcome.set[f.id] = statements.map(\.name)
            } catch {
                outcome.failures.append("\(f.id): \(error)")
            }
        }
        return outcome
    }

    /// A connection of the node's own (`replication.resolver_user`) to `database` on `b`.
    static func connect(_ b: Configuration.Backend, database: String, configuration: Configuration,
                        timeout: Int = 5) throws -> LibPQConnection {
        try LibPQConnection(LibPQConnection.conninfo(b, database: database, user: configuration.replication.resolverUser,
                                                     password: configuration.replication.resolverPassword, connectTimeout: timeout,
                                                     application: "pgchorus-sequences"),
                            target: "\(b.description) database \(database)")
    }

    /// Whether server process `holder` on the lead waits for `waiter`, directly or through others (the
    /// closure of `pg_blocking_pids`; finite: each process is taken once), or why the lead could not
    /// say. Asked on a connection of the node's own: a query on the waiter's session would take its
    /// transaction's snapshot on the lead alone under REPEATABLE READ.
    /// The connection comes from `connections` (kept between looks: a waiter looks every second, and
    /// a fresh connection each time cost the lead a fork and an authentication — seconds on a
    /// saturated machine, where until 2026-12-07 the looks could go unanswered for the whole 10 s a
    /// waiter waits, once in a CI run); a connection that fails is dropped, the next look opens another.
    static func holderWaits(for waiter: Int32, holder: Int32, lead: Configuration.Backend, database: String,
                            configuration: Configuration, connections: LookConnections) -> Result<Bool, LibPQConnection.Failure> {
        do {
            let rows = try connections.run(key: lookKey(lead: lead, database: database),
                                           connect: { try connect(lead, database: database, configuration: configuration,
                                                                  timeout: lookConnectTimeout) }) {
                try $0.simpleQuery(cycleSQL(holder: holder, waiter: waiter), timeout: 5)
            }
            guard let answer = rows.first?.first ?? nil else {
                return .failure(LibPQConnection.Failure(description: "\(lead.description): no answer row"))
            }
            return .success(answer == "t")
        } catch let failure as LibPQConnection.Failure {
            return .failure(failure)
        } catch {
            return .failure(LibPQConnection.Failure(description: "\(lead.description): \(error)"))
        }
    }

    /// The key of the looks' connection to `lead` in `database` (`LookConnections`).
    static func lookKey(lead: Configuration.Backend, database: String) -> String { "\(lead.id)\u{0}\(database)" }

    /// How long the first look in a database waits for its connection: most of the 10 s a waiter
    /// waits before the fallback (the first look comes after 1 s), as a saturated lead may take
    /// seconds to fork and authenticate it (the health check's 10 s timeout says the same).
    static let lookConnectTimeout = 8

    /// Connections of the node's own kept open for the looks for a lock cycle, one per lead backend
    /// and database: used on the looks' one thread, each checked before use
    /// (a lead that restarted closed it) and dropped when a statement on it fails (a timeout leaves it
    /// unusable). Kept only while a session waits: closed when a wait that looked ends (`close`), so
    /// an idle connection of the node's never stands in the way of a client's `DROP DATABASE`.
    final class LookConnections: Sendable {
        /// One kept connection (only ever used by the one thread that took it out of `open`).
        private final class Kept: @unchecked Sendable {
            let connection: LibPQConnection
            init(_ connection: LibPQConnection) { self.connection = connection }
        }
        /// Under a lock as well: at shutdown NIOThreadPool may run a queued close on another thread
        /// while a look is under way (a connection in use is out of the dictionary meanwhile).
        private let open = Mutex<[String: Kept]>([:])

        func run<T>(key: String, connect: () throws -> LibPQConnection, _ body: (LibPQConnection) throws -> T) throws -> T {
            var kept = open.withLock { $0.removeValue(forKey: key) }
            if let k = kept, k.connection.closedByServer() { kept = nil }
            let k = try kept ?? Kept(connect())
            let result = try body(k.connection)
            open.withLock { $0[key] = k }
            return result
        }

        func close(_ key: String) {
            let closed = open.withLock { $0.removeValue(forKey: key) }
            _ = closed  // (closed here, outside the lock)
        }

        func closeAll() {
            let closed = open.withLock { d -> [String: Kept] in
                defer { d = [:] }
                return d
            }
            _ = closed
        }

        /// How many are open (for tests).
        var count: Int { open.withLock { $0.count } }
    }

    static func cycleSQL(holder: Int32, waiter: Int32) -> String {
        "WITH RECURSIVE blockers(pid) AS (SELECT pg_catalog.unnest(pg_catalog.pg_blocking_pids(\(holder))) "
            + "UNION SELECT p FROM blockers, pg_catalog.unnest(pg_catalog.pg_blocking_pids(blockers.pid)) AS p) "
            + "SELECT EXISTS (SELECT 1 FROM blockers WHERE pid = \(waiter))"
    }

    static func values(_ c: LibPQConnection) throws -> [String: Value] {
        var out: [String: Value] = [:]
        for row in try c.simpleQuery(readSQL, timeout: 10) where row.count == 3 {
            guard let name = row[0], let start = row[2] else { continue }
            out[name] = Value(last: row[1], start: start)
        }
        return out
    }

    /// What makes `have` (a follower's) equal to `wanted` (the lead's), sequence by sequence (**pure**).
    static func setvals(wanted: [String: Value], have: [String: Value]) -> [(name: String, sql: String)] {
        wanted.keys.sorted().compactMap { name in
            guard let w = wanted[name], let h = have[name], h != w else { return nil }
            let target = "pg_catalog.setval(\(LibPQConnection.literal(name))::regclass, "
            return (name, "SELECT " + target + (w.last.map { "\($0), true)" } ?? "\(w.start), false)"))
        }
    }
}
