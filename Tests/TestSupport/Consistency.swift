import LocalCluster

/// Compares backends directly (not through the proxy): one checksum per user table.
public enum Consistency {
    /// `table:md5` of every ordinary table in schema public, ordered, as one string.
    public static let checksumSQL = """
    select coalesce(string_agg(tbl || ':' || h, ' ' order by tbl), 'no tables') from (
      select c.relname as tbl,
             (xpath('/row/h/text()', query_to_xml(format('select md5(coalesce(string_agg(t::text, %L order by t::text), %L)) as h from %I.%I t', ',', '', n.nspname, c.relname), false, true, '')))[1]::text as h
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind = 'r' and n.nspname = 'public') x
    """

    public static func checksums(_ servers: [LocalPostgresServer], database: String = "postgres", password: String? = nil) throws -> [String] {
        try servers.map { try $0.psql(checksumSQL, database: database, password: password) }
    }

    /// What each server's client sessions are doing now (state, wait, the statement's start) and the
    /// pgchorus prepared transactions it holds: what a test prints when its clients hang.
    public static func activity(_ servers: [LocalPostgresServer]) -> String {
        servers.map { s in
            let sessions = (try? s.psql("""
                select pid, state, coalesce(wait_event_type || ':' || wait_event, '-'), application_name,
                       left(regexp_replace(query, '\\s+', ' ', 'g'), 70)
                from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid() order by pid
                """)) ?? "(could not ask)"
            let prepared = (try? s.psql("select string_agg(gid, ' ') from pg_prepared_xacts")) ?? "?"
            return "\(s.name) sessions:\n\(sessions)\n\(s.name) prepared: \(prepared)"
        }.joined(separator: "\n")
    }

    /// The number of pgchorus prepared transactions left on a server.
    public static func preparedCount(_ server: LocalPostgresServer) throws -> Int {
        Int(try server.psql("select count(*) from pg_prepared_xacts where gid like 'pgchorus:%'")) ?? -1
    }
}
