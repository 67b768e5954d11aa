import State

/// Compares the data of two backends: the databases, every user table's row count and content
/// hash, and every sequence's position. Used before an admin attaches a backend: only a backend
/// identical to an online one may join the fan-out; any other must be recovered.
///
/// Blocking (libpq): run it on a thread pool. The `pgchorus` schema (the commit log, pgchorus'
/// own bookkeeping) is not compared.
public struct BackendComparison: Sendable {
    /// A difference, as an operator reads it.
    public struct Difference: Sendable, Equatable, CustomStringConvertible {
        public var database: String
        public var object: String
        public var detail: String
        public var description: String { "\(database): \(object): \(detail)" }
    }

    /// Everything compared on one backend, by database.
    struct Fingerprint: Equatable {
        var databases: [String: [String: String]]
    }

    let conninfo: @Sendable (Configuration.Backend, String) -> String

    /// `conninfo(backend, database)` builds the libpq connection string (a superuser's, to read every table).
    public init(conninfo: @escaping @Sendable (Configuration.Backend, String) -> String) {
        self.conninfo = conninfo
    }

    /// The differences between `target` and `reference` (empty: identical), or an error when either
    /// cannot be read.
    public func differences(target: Configuration.Backend, reference: Configuration.Backend) throws -> [Difference] {
        let a = try fingerprint(reference)
        let b = try fingerprint(target)
        var out: [Difference] = []
        for db in Set(a.databases.keys).union(b.databases.keys).sorted() {
            guard let x = a.databases[db] else { out.append(Difference(database: db, object: "database", detail: "exists only on \(target.id)")); continue }
            guard let y = b.databases[db] else { out.append(Difference(database: db, object: "database", detail: "missing on \(target.id)")); continue }
            for object in Set(x.keys).union(y.keys).sorted() where x[object] != y[object] {
                let detail: String
                switch (x[object], y[object]) {
                case (nil, _): detail = "exists only on \(target.id)"
                case (_, nil): detail = "missing on \(target.id)"
                case let (r?, t?): detail = "\(reference.id) has \(r), \(target.id) has \(t)"
                }
                out.append(Difference(database: db, object: object, detail: detail))
            }
        }
        return out
    }

    func fingerprint(_ backend: Configuration.Backend) throws -> Fingerprint {
        let main = try LibPQConnection(conninfo(backend, "postgres"), target: backend.description)
        let names = try main.query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1").compactMap { $0[0] }
        var databases: [String: [String: String]] = [:]
        for name in names {
            let c = try LibPQConnection(conninfo(backend, name), target: "\(backend.description) database \(name)")
            var objects: [String: String] = [:]
            let prepared = try c.query("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()").first?.first ?? "0"
            objects["prepared transactions"] = prepared ?? "0"
            let tables = try c.query("""
                SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgchorus')
                  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' ORDER BY 1
                """).compactMap { $0[0] }
            for t in tables {
                let row = try c.query("SELECT count(*), coalesce(md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))), '-') FROM \(t) x").first
                objects["table \(t)"] = "\(row?[0] ?? "?") rows, hash \(row?[1] ?? "?")"
            }
            for s in try c.query("SELECT format('%I.%I', schemaname, sequencename), coalesce(last_value::text, 'unused') FROM pg_sequences WHERE schemaname <> 'pgchorus'") {
                objects["sequence \(s[0] ?? "?")"] = "last value \(s[1] ?? "?")"
            }
            databases[name] = objects
        }
        return Fingerprint(databases: databases)
    }
}
