import Foundation
import State

/// The I/O of an online recovery, step by step, with PostgreSQL's own machinery: a logical
/// replication slot with an exported snapshot on the donor is the queue, `pg_dump --snapshot` of that
/// snapshot the copy, a subscription on that slot (`copy_data = false`) the replay in commit order.
///
/// Blocking (libpq and child processes): run it on a thread pool. Every object it creates carries the
/// `pgchorus_rec` prefix, so `cleanUp` finds leftovers of a crashed coordinator too.
public final class RecoveryRunner: @unchecked Sendable {
    public static let publication = "pgchorus_recovery"
    public static let subscription = "pgchorus_recovery"
    public static let slotPrefix = "pgchorus_rec_"
    public static let ddlTrigger = "pgchorus_recovery_ddl"

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ d: String) { description = d }
    }

    let configuration: Configuration
    public let target: Configuration.Backend
    public let donor: Configuration.Backend
    /// Progress for status and the CLI: set by the steps, read by the coordinator.
    public var onProgress: @Sendable (_ detail: String, _ bytes: Int64?) -> Void = { _, _ in }
    /// Checked between the steps' waits: set to stop a running dump or restore.
    public var cancelled: @Sendable () -> Bool = { false }

    public init(configuration: Configuration, target: Configuration.Backend, donor: Configuration.Backend) {
        self.configuration = configuration
        self.target = target
        self.donor = donor
    }

    var user: String { configuration.replication.resolverUser }
    var password: String? { configuration.replication.resolverPassword }

    /// How a recovery connects: as `replication.resolver_user` (a superuser), named `pgchorus-recovery`.
    static func conninfo(_ configuration: Configuration, _ backend: Configuration.Backend, _ database: String, replication: Bool = false,
                         connectTimeout: Int = 10) -> String {
        LibPQConnection.conninfo(backend, database: database, user: configuration.replication.resolverUser,
                                 password: configuration.replication.resolverPassword, connectTimeout: connectTimeout,
                                 application: "pgchorus-recovery", extra: replication ? "replication=database" : "")
    }

    static func connect(_ configuration: Configuration, _ backend: Configuration.Backend, _ database: String,
                        connectTimeout: Int = 10) throws -> LibPQConnection {
        try LibPQConnection(conninfo(configuration, backend, database, connectTimeout: connectTimeout),
                            target: "\(backend.id) (\(backend.host):\(backend.port)) database \(database)")
    }

    func conninfo(_ backend: Configuration.Backend, _ database: String, replication: Bool = false) -> String {
        Self.conninfo(configuration, backend, database, replication: replication)
    }

    func connect(_ backend: Configuration.Backend, _ database: String) throws -> LibPQConnection {
        try Self.connect(configuration, backend, database)
    }

    static func ident(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }

    // MARK: checks

    /// Everything that must hold before the target is touched; returns the donor's databases.
    public func check() throws -> [String] {
        let d = try connect(donor, "postgres")
        guard let row = try d.query("""
            SELECT current_setting('wal_level'),
                   current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots),
                   current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication),
                   current_setting('server_version_num')::int / 10000,
                   (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
            """).first else { throw Failure("donor \(donor.id) answered nothing") }
        let databases = try d.query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname = 'postgres' DESC, datname")
            .compactMap { $0[0] }
        guard row[0] == "logical" else {
            throw Failure("donor \(donor.id) runs with wal_level = \(row[0] ?? "?"); online recovery needs wal_level = logical (set it in its postgresql.conf and restart it)")
        }
        guard row[4] == "t" else { throw Failure("\(user) is not a superuser on donor \(donor.id) (replication.resolver_user must be one)") }
        let slots = Int(row[1] ?? "0") ?? 0, senders = Int(row[2] ?? "0") ?? 0
        guard slots >= databases.count else {
            throw Failure("donor \(donor.id) has \(slots) free replication slot(s), \(databases.count) needed (one per database): raise max_replication_slots")
        }
        guard senders >= databases.count else {
            throw Failure("donor \(donor.id) has \(senders) free WAL sender(s), \(databases.count) needed (one per database): raise max_wal_senders")
        }
        let t: LibPQConnection
        do { t = try connect(target, "template1") } catch { throw Failure("the target \(target.id) is not reachable: \(error)") }
        guard let trow = try t.query("""
            SELECT current_setting('server_version_num')::int / 10000, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                   current_setting('max_logical_replication_workers')::int
            """).first else { throw Failure("target \(target.id) answered nothing") }
        guard trow[0] == row[3] else {
            throw Failure("the target \(target.id) runs PostgreSQL \(trow[0] ?? "?"), the donor \(donor.id) \(row[3] ?? "?"): the same major version is needed")
        }
        guard trow[1] == "t" else { throw Failure("\(user) is not a superuser on the target \(target.id)") }
        guard (Int(trow[2] ?? "0") ?? 0) >= databases.count else {
            throw Failure("the target \(target.id) allows \(trow[2] ?? "0") logical replication workers, \(databases.count) needed: raise max_logical_replication_workers")
        }
        var offenders: [String] = []
        for db in databases {
            let c = try connect(donor, db)
            let rows = try c.query("""
                SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
                  AND NOT c.relispartition
                  AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))
                ORDER BY 1
                """)
            offenders += rows.compactMap { $0[0].map { "\(db): \($0)" } }
        }
        guard offenders.isEmpty else {
            throw Failure("""
                \(offenders.count) table(s) have no replica identity, so their updates and deletes could not be replayed: \
                \(offenders.prefix(20).joined(separator: ", "))\(offenders.count > 20 ? " …" : ""). \
                Give each a primary key, or run ALTER TABLE … REPLICA IDENTITY FULL through pgchorus, then recover again
                """)
        }
        // Prepared transactions left on the target would block dropping its databases.
        for row in try t.query("SELECT gid, database FROM pg_prepared_xacts") {
            guard let gid = row[0], let db = row[1] else { continue }
            let c = try connect(target, db)
            try c.simpleQuery("ROLLBACK PREPARED \(LibPQConnection.literal(gid))")
        }
        return databases
    }

    // MARK: copy

    /// Roles and tablespaces (`pg_dumpall --globals-only`), applied so that what exists already is kept.
    public func copyGlobals() throws {
        onProgress("roles and tablespaces", nil)
        let sql = try run("pg_dumpall", ["--globals-only", "-h", donor.host, "-p", String(donor.port), "-U", user, "-l", "postgres"], backend: donor)
        let t = try connect(target, "postgres")
        var statement = ""
        for line in sql.split(separator: "\n", omittingEmptySubsequences: false) {
            if statement.isEmpty && (line.hasPrefix("--") || line.hasPrefix("\\") || line.trimmingCharacters(in: .whitespaces).isEmpty) { continue }
            statement += line + "\n"
            guard line.hasSuffix(";") else { continue }
            defer { statement = "" }
            do {
                try t.simpleQuery(statement)
            } catch let f as LibPQConnection.Failure where f.sqlState == "42710" {
                // Already there (CREATE ROLE of an existing role): its ALTER ROLE follows.
            }
        }
    }

    /// One database: the replication slot (with its snapshot) and publication on the donor, the dump
    /// of exactly that snapshot, the target's database recreated from it, the subscription started.
    public func copyDatabase(_ db: String) throws {
        let d = try connect(donor, db)
        let oid = try d.query("SELECT oid FROM pg_database WHERE datname = current_database()").first?.first.flatMap { $0 } ?? "0"
        let slot = Self.slotPrefix + oid
        // DDL during the recovery is not replayed: it is noted, and the copy starts over (`SchemaChanged`).
        try d.simpleQuery("""
            DROP EVENT TRIGGER IF EXISTS \(Self.ddlTrigger);
            CREATE SCHEMA IF NOT EXISTS pgchorus;
            CREATE TABLE IF NOT EXISTS pgchorus.recovery_ddl (at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(), tag text);
            ALTER TABLE pgchorus.recovery_ddl REPLICA IDENTITY FULL;
            CREATE OR REPLACE FUNCTION pgchorus.recovery_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO pgchorus.recovery_ddl (tag) VALUES (tg_tag); END $$;
            DROP PUBLICATION IF EXISTS \(Self.publication);
            CREATE PUBLICATION \(Self.publication) FOR ALL TABLES;
            CREATE EVENT TRIGGER \(Self.ddlTrigger) ON ddl_command_end EXECUTE FUNCTION pgchorus.recovery_ddl();
            TRUNCATE pgchorus.recovery_ddl;
            """)
        _ = try? d.query("SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active", [slot])
        onProgress("\(db): replication slot", nil)
        let r = try LibPQConnection(conninfo(donor, db, replication: true), target: "\(donor.id) database \(db) (replication)")
        // PostgreSQL creates the slot once every transaction that had written when it began has ended.
        let created: [String?]
        do {
            guard let row = try r.simpleQuery("CREATE_REPLICATION_SLOT \(slot) LOGICAL pgoutput (SNAPSHOT 'export')",
                                              timeout: configuration.recovery.slotTimeout).first else {
                throw Failure("donor \(donor.id) returned no replication slot for \(db)")
            }
            created = row
        } catch let f as LibPQConnection.Failure where f.description.contains("no answer within") {
            let oldest = try? d.query("""
                SELECT pid || ' (' || coalesce(nullif(application_name, ''), 'no application name') || ', user ' || usename || ', open since ' || xact_start || ')'
                FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() ORDER BY xact_start LIMIT 1
                """).first?.first.flatMap { $0 }
            throw Failure("the replication slot of database \(db) was not ready within recovery.slot_timeout (\(configuration.recovery.slotTimeout) s): it waits for the transactions open on the donor \(donor.id) to end\(oldest.map { ", the oldest being backend pid \($0)" } ?? "")")
        }
        guard let snapshot = created[2] else { throw Failure("donor \(donor.id) returned no snapshot for the replication slot of \(db)") }
        let directory = configuration.recovery.workDirectory + "/\(target.id)-\(oid)"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: configuration.recovery.workDirectory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        onProgress("\(db): dump", 0)
        // The snapshot lives as long as the replication connection: until the dump is done.
        _ = try withExtendedLifetime(r) { try run("pg_dump", ["-h", donor.host, "-p", String(donor.port), "-U", user, "-d", db, "--snapshot=\(snapshot)", "-Fd",
                                "-j", String(configuration.recovery.jobs), "--no-publications", "--no-subscriptions", "--enable-row-security", "-f", directory],
                    backend: donor, progress: { Self.size(of: directory).map { ("\(db): dump", $0) } }) }
        let size = Self.size(of: directory) ?? 0
        onProgress("\(db): restore", size)
        let t = try connect(target, "template1")
        try t.simpleQuery("DROP DATABASE IF EXISTS \(Self.ident(db)) WITH (FORCE)")
        _ = try run("pg_restore", ["-h", target.host, "-p", String(target.port), "-U", user, "-d", "template1", "-C", "--exit-on-error",
                                   "-j", String(configuration.recovery.jobs), directory], backend: target)
        onProgress("\(db): subscription", size)
        // Test hook: wait this many seconds between the restore and the subscription (DDL in that window).
        if let hold = Double(WallClock.environment("PGCHORUS_TEST_RECOVERY_HOLD_BEFORE_SUBSCRIPTION") ?? ""), hold > 0 {
            usleep(UInt32(min(hold, 60) * 1_000_000))
        }
        let c = try connect(target, db)
        do {
            try c.simpleQuery("""
                CREATE SUBSCRIPTION \(Self.subscription) CONNECTION \(LibPQConnection.literal(conninfo(donor, db)))
                PUBLICATION \(Self.publication)
                WITH (create_slot = false, slot_name = \(LibPQConnection.literal(slot)), copy_data = false, disable_on_error = true, synchronous_commit = 'on', enabled = true)
                """)
        } catch {
            // A table created on the donor after the dump's snapshot is in the publication but not on
            // the target: the subscription refuses it ("relation … does not exist"). Say why.
            if let ddl = try? ddlDuringRecovery(in: db) { throw SchemaChanged(description: ddl) }
            throw error
        }
    }

    /// DDL ran on the donor since its database's copy began: the copy must start over.
    public struct SchemaChanged: Error, CustomStringConvertible {
        public var description: String
    }

    /// The first DDL the donor's event trigger noted in database `db` since its copy began, as the
    /// reason the copy starts over; nil when there was none.
    func ddlDuringRecovery(in db: String) throws -> String? {
        let d = try connect(donor, db)
        guard let tag = try d.query("SELECT tag FROM pgchorus.recovery_ddl ORDER BY at LIMIT 1").first?.first.flatMap({ $0 }) else { return nil }
        return "DDL ran in database \(db) during the recovery (\(tag)); logical replication does not carry it"
    }

    /// Databases on the target that the donor does not have (dropped: they are not the cluster's).
    public func dropExtraDatabases(keeping databases: [String]) throws {
        let t = try connect(target, "template1")
        let extra = try t.query("SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> ALL($1::text[])",
                                ["{" + databases.map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }.joined(separator: ",") + "}"])
        for row in extra { if let db = row[0] { try t.simpleQuery("DROP DATABASE IF EXISTS \(Self.ident(db)) WITH (FORCE)") } }
    }

    // MARK: catch-up and cut-over

    /// The queue's lag: bytes of the donor's WAL not yet confirmed applied on the target (largest over the databases).
    public func lag() throws -> Int64 {
        let d = try connect(donor, "postgres")
        let rows = try d.query("""
            SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)), 0)::int8, count(*)
            FROM pg_replication_slots WHERE slot_name LIKE 'pgchorus\\_rec\\_%'
            """)
        return Int64(rows.first?[0] ?? "0") ?? 0
    }

    /// Why the replay cannot go on (a subscription disabled by an apply error, large objects written
    /// on the donor), or nil; DDL on the donor throws `SchemaChanged`.
    public func problems(databases: [String]) throws -> String? {
        // DDL first: a replay that stopped after it (an insert into a table the target lacks) stopped because of it.
        for db in databases {
            if let ddl = try ddlDuringRecovery(in: db) { throw SchemaChanged(description: ddl) }
        }
        let t = try connect(target, "postgres")
        let subs = try t.query("""
            SELECT d.datname, s.subenabled FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE s.subname = $1
            """, [Self.subscription])
        for row in subs where row[1] != "t" {
            return "the replay into database \(row[0] ?? "?") on \(target.id) stopped at an error (its subscription was disabled; the target's server log has the error)"
        }
        if subs.count < databases.count {
            return "a subscription of the recovery is missing on \(target.id) (dropped by someone?)"
        }
        return nil
    }

    /// Prepared transactions of pgchorus' votes open on the donor: a vote not yet finished.
    public func openVotes() throws -> Int {
        let d = try connect(donor, "postgres")
        return Int(try d.query("SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'pgchorus:%'").first?[0] ?? "0") ?? 0
    }

    /// Inside the closed gate: waits until the target has applied everything the donor committed,
    /// checks what replication does not carry, sets the sequences and stops the replay. Gives up
    /// (throws `GateTimeout`) before `deadline` (monotonic seconds) while nothing is changed yet.
    public func cutOver(databases: [String], deadline: Double) throws {
        let d = try connect(donor, "postgres")
        guard let position = try d.query("SELECT pg_current_wal_lsn()::text").first?.first.flatMap({ $0 }) else { throw Failure("no WAL position from the donor") }
        var caughtUp = false
        for _ in 0..<100_000 where WallClock.monotonic() < deadline {
            let behind = try d.query("""
                SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgchorus\\_rec\\_%' AND (confirmed_flush_lsn IS NULL OR confirmed_flush_lsn < $1::pg_lsn)
                """, [position])
            if behind.first?[0] == "0" { caughtUp = true; break }
            usleep(5_000)
        }
        guard caughtUp else { throw GateTimeout(description: "the target did not confirm the donor's WAL position \(position) in time") }
        if let problem = try problems(databases: databases) { throw Failure(problem) }
        for db in databases {
            let dc = try connect(donor, db)
            let tc = try connect(target, db)
            let lo = "SELECT count(*), coalesce(max(oid::int8), 0) FROM pg_largeobject_metadata"
            if try dc.query(lo) != tc.query(lo) {
                throw Failure("large objects were created or removed in database \(db) during the recovery; logical replication does not carry them — recover again")
            }
            var setvals: [String] = []
            for row in try dc.query("SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences WHERE schemaname <> 'pgchorus'") {
                guard let name = row[0], let v = try dc.query("SELECT last_value, is_called FROM \(name)").first, let last = v[0] else { continue }
                setvals.append("SELECT pg_catalog.setval(\(LibPQConnection.literal(name)), \(last), \(v[1] == "t"))")
            }
            if !setvals.isEmpty { try tc.simpleQuery(setvals.joined(separator: ";")) }
            guard WallClock.monotonic() < deadline else { throw GateTimeout(description: "setting the sequences took longer than recovery.gate_timeout") }
        }
        // From here on the target is no longer fed by the replay: it must be taken into every session.
        for db in databases {
            let tc = try connect(target, db)
            try tc.simpleQuery("ALTER SUBSCRIPTION \(Self.subscription) DISABLE")
            try tc.simpleQuery("ALTER SUBSCRIPTION \(Self.subscription) SET (slot_name = NONE)")
            try tc.simpleQuery("DROP SUBSCRIPTION \(Self.subscription)")
        }
    }

    public struct GateTimeout: Error, CustomStringConvertible { public var description: String }

    /// Drops every object a recovery makes, on the target and on every backend in `backends`
    /// (subscriptions first, so the slots are free). Errors are collected, not thrown: it runs after failures.
    public static func cleanUp(configuration: Configuration, target: Configuration.Backend, backends: [Configuration.Backend]) -> [String] {
        var problems: [String] = []
        func conn(_ b: Configuration.Backend, _ db: String) -> LibPQConnection? {
            do {
                return try connect(configuration, b, db, connectTimeout: 5)
            } catch {
                problems.append("\(error)")
                return nil
            }
        }
        func databases(_ b: Configuration.Backend) -> [String] {
            (try? conn(b, "postgres")?.query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate").compactMap { $0[0] }) ?? []
        }
        for db in databases(target) {
            guard let c = conn(target, db) else { continue }
            if (try? c.query("SELECT 1 FROM pg_subscription WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())", [subscription]).isEmpty) == false {
                for sql in ["ALTER SUBSCRIPTION \(subscription) DISABLE", "ALTER SUBSCRIPTION \(subscription) SET (slot_name = NONE)", "DROP SUBSCRIPTION IF EXISTS \(subscription)"] {
                    do { try c.simpleQuery(sql) } catch { problems.append("\(error)") }
                }
            }
        }
        for b in backends + [target] {
            for db in databases(b) {
                guard let c = conn(b, db) else { continue }
                do {
                    try c.simpleQuery("""
                        DROP EVENT TRIGGER IF EXISTS \(ddlTrigger); DROP PUBLICATION IF EXISTS \(publication);
                        DROP FUNCTION IF EXISTS pgchorus.recovery_ddl(); DROP TABLE IF EXISTS pgchorus.recovery_ddl
                        """)
                } catch { problems.append("\(error)") }
            }
            guard let c = conn(b, "postgres") else { continue }
            // A walsender leaves a moment after its subscriber disconnected.
            for attempt in 0..<50 {
                do {
                    let left = try c.query("""
                        SELECT slot_name, active FROM pg_replication_slots WHERE slot_name LIKE 'pgchorus\\_rec\\_%'
                        """)
                    if left.isEmpty { break }
                    for row in left where row[1] == "f" { _ = try? c.query("SELECT pg_drop_replication_slot($1)", [row[0] ?? ""]) }
                    if attempt == 49 { problems.append("\(b.id): replication slot(s) \(left.compactMap { $0[0] }) still in use; drop them with pg_drop_replication_slot()") }
                } catch { problems.append("\(error)"); break }
                usleep(100_000)
            }
        }
        return problems
    }

    // MARK: tools

    /// The directory of pg_dump, pg_dumpall and pg_restore: `recovery.bin_directory`, else the newest
    /// /usr/lib/postgresql/N/bin, else the PATH.
    func tool(_ name: String) -> String {
        if let dir = configuration.recovery.binDirectory { return dir + "/" + name }
        let base = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).compactMap(Int.init).sorted()
        if let v = versions.last, FileManager.default.isExecutableFile(atPath: "\(base)/\(v)/bin/\(name)") { return "\(base)/\(v)/bin/\(name)" }
        return name
    }

    /// Runs a PostgreSQL client tool; returns its standard output, or throws with its standard error.
    /// Runs a PostgreSQL client tool against `backend` (its TLS settings as libpq environment variables).
    func run(_ name: String, _ arguments: [String], backend: Configuration.Backend, progress: (() -> (String, Int64)?)? = nil) throws -> String {
        let p = Process()
        let path = tool(name)
        if path.hasPrefix("/") {
            p.executableURL = URL(fileURLWithPath: path)
            p.arguments = arguments
        } else {
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = [name] + arguments
        }
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }
        if let password { environment["PGPASSWORD"] = password }
        environment["PGCONNECT_TIMEOUT"] = "10"
        environment["PGAPPNAME"] = "pgchorus-recovery"
        let tlsVariables = ["sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY"]
        for (keyword, value) in backend.tls.libpqKeywords { if let name = tlsVariables[keyword] { environment[name] = value } }
        p.environment = environment
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { throw Failure("cannot run \(path): \(error) (install postgresql-client, or set recovery.bin_directory)") }
        // Read both pipes on their own threads: a full pipe would stall the tool.
        let outData = Mutexed<Data>(Data()), errData = Mutexed<Data>(Data())
        let group = DispatchGroup()
        for (pipe, box) in [(out, outData), (err, errData)] {
            group.enter()
            DispatchQueue.global().async {
                box.set(pipe.fileHandleForReading.readDataToEndOfFile())
                group.leave()
            }
        }
        while p.isRunning {
            if cancelled() { p.terminate() }
            if let (detail, bytes) = progress?() { onProgress(detail, bytes) }
            usleep(200_000)
        }
        p.waitUntilExit()
        group.wait()
        guard p.terminationStatus == 0 else {
            if cancelled() { throw Failure("cancelled by an administrator") }
            let message = String(decoding: errData.get(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw Failure("\(name) failed (exit \(p.terminationStatus)): \(message.split(separator: "\n").suffix(5).joined(separator: " | "))")
        }
        return String(decoding: outData.get(), as: UTF8.self)
    }

    /// Bytes of the files in a directory (the dump so far).
    static func size(of directory: String) -> Int64? {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return nil }
        return names.reduce(Int64(0)) { total, name in
            let attributes = try? FileManager.default.attributesOfItem(atPath: directory + "/" + name)
            return total + ((attributes?[.size] as? NSNumber)?.int64Value ?? 0)
        }
    }
}

/// A value behind a lock, for the pipe readers.
final class Mutexed<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ v: T) { value = v }
    func set(_ v: T) { lock.lock(); value = v; lock.unlock() }
    func get() -> T { lock.lock(); defer { lock.unlock() }; return value }
}
