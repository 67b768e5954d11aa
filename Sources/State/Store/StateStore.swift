import Dispatch
import FoundationEssentials
import GRDB
import Logging

/// The node's state database: one SQLite file (`state.sqlite`) in the state directory.
///
/// Holds the backends' agreed status, the clustering nodes as last seen, and the append-only event
/// log; `commit_decisions` and `recovery_queue` are created now so later releases migrate nothing
/// under a running cluster. The running node writes through `later` (one writer thread of the
/// store's own, in submission order): a status change decided on a session's event loop or a
/// heartbeat never waits for a disk sync. Reads first wait for the writes submitted before them.
public final class StateStore: Sendable {
    /// Why the state database cannot be used.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    private let queue: DatabaseQueue
    /// Runs `later`'s writes one after the other, off every caller's thread.
    private let writer = DispatchQueue(label: "pgchorus.state-store")
    public let path: String

    /// Opens (creating and migrating) `<directory>/state.sqlite`.
    public init(directory: String) throws(Failure) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw Failure(description: "cannot create the state directory \(directory): \(error.localizedDescription)")
        }
        path = "\(directory)/state.sqlite"
        do {
            var config = GRDB.Configuration()
            config.busyMode = .timeout(5)
            config.prepareDatabase { db in
                // WAL: readers (the CLI's status through the daemon, tests) never block a status change.
                try db.execute(sql: "PRAGMA journal_mode = WAL")
                try db.execute(sql: "PRAGMA synchronous = FULL")
            }
            queue = try DatabaseQueue(path: path, configuration: config)
            try Self.migrator.migrate(queue)
        } catch {
            throw Failure(description: "cannot open the state database \(path): \(error)")
        }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.create(table: "nodes") { t in
                t.primaryKey("id", .text)
                t.column("address", .text).notNull()
                t.column("port", .integer).notNull()
                t.column("priority", .integer).notNull()
                t.column("status", .text).notNull()
                t.column("last_seen", .double)
            }
            try db.create(table: "backends") { t in
                t.primaryKey("id", .text)
                t.column("host", .text).notNull()
                t.column("port", .integer).notNull()
                t.column("status", .text).notNull()
                t.column("reason", .text).notNull()
                t.column("since", .double).notNull()
                t.column("generation", .integer).notNull()
                t.column("origin", .text).notNull()
            }
            try db.create(table: "events") { t in
                t.autoIncrementedPrimaryKey("sequence")
                t.column("time", .double).notNull().indexed()
                t.column("origin", .text).notNull()
                t.column("kind", .text).notNull()
                t.column("subject", .text).notNull()
                t.column("detail", .text).notNull()
            }
            try db.create(table: "commit_decisions") { t in
                t.primaryKey("gid", .text)
                t.column("decision", .text).notNull()
                t.column("time", .double).notNull()
            }
            try db.create(table: "recovery_queue") { t in
                t.autoIncrementedPrimaryKey("sequence")
                t.column("transaction_id", .text).notNull()
                t.column("statements", .blob).notNull()
                t.column("time", .double).notNull()
            }
        }
        return m
    }

    /// Runs `write` on the store's writer thread after every write submitted before it; a failure is
    /// logged with `what` (the change still holds in memory and goes to the peers).
    public func later(_ what: String, logger: Logger, _ write: @escaping @Sendable (StateStore) throws -> Void) {
        writer.async {
            do { try write(self) } catch { logger.error("cannot record \(what) in the state database: \(error)") }
        }
    }

    /// Returns once every write submitted through `later` before the call has finished.
    public func waitForWrites() {
        writer.sync {}
    }

    /// The persisted status of every backend that has one.
    public func backends() throws -> [BackendState] {
        waitForWrites()
        return try queue.read { db in
            try Row.fetchAll(db, sql: "SELECT id, status, reason, since, generation, origin FROM backends").compactMap { r in
                guard let status = BackendState.Status(rawValue: r["status"]) else { return nil }
                return BackendState(id: r["id"], status: status, reason: r["reason"], since: r["since"], generation: r["generation"], origin: r["origin"])
            }
        }
    }

    /// Records a backend's new status and the event that tells of it, in one transaction.
    public func record(_ state: BackendState, host: String, port: Int, event: ClusterEvent) throws {
        try queue.write { db in
            try db.execute(sql: """
                INSERT INTO backends (id, host, port, status, reason, since, generation, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET host = excluded.host, port = excluded.port, status = excluded.status,
                  reason = excluded.reason, since = excluded.since, generation = excluded.generation, origin = excluded.origin
                """, arguments: [state.id, host, port, state.status.rawValue, state.reason, state.since, state.generation, state.origin])
            try Self.insert(event, db)
        }
    }

    public func append(_ event: ClusterEvent) throws {
        try queue.write { db in try Self.insert(event, db) }
    }

    private static func insert(_ e: ClusterEvent, _ db: Database) throws {
        try db.execute(sql: "INSERT INTO events (time, origin, kind, subject, detail) VALUES (?, ?, ?, ?, ?)",
                       arguments: [e.time, e.origin, e.kind, e.subject, e.detail])
    }

    /// Events at or after `since` (all when nil), oldest first, at most `limit` (the newest ones).
    public func events(since: Double?, limit: Int) throws -> [ClusterEvent] {
        waitForWrites()
        return try queue.read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT sequence, time, origin, kind, subject, detail FROM events WHERE time >= ? ORDER BY sequence DESC LIMIT ?
                """, arguments: [since ?? 0, limit])
            return rows.reversed().map { r in
                ClusterEvent(sequence: r["sequence"], time: r["time"], origin: r["origin"], kind: r["kind"], subject: r["subject"], detail: r["detail"])
            }
        }
    }

    /// Records a clustering node as last seen.
    public func saveNode(_ node: Configuration.ClusterNode, alive: Bool, lastSeen: Double?) throws {
        try queue.write { db in
            try db.execute(sql: """
                INSERT INTO nodes (id, address, port, priority, status, last_seen) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET address = excluded.address, port = excluded.port, priority = excluded.priority,
                  status = excluded.status, last_seen = COALESCE(excluded.last_seen, nodes.last_seen)
                """, arguments: [node.id, node.address, node.port, node.priority, alive ? "alive" : "dead", lastSeen])
        }
    }
}
