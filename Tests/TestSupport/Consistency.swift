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

    public static func checksums(_ servers: [LocalPostgresServer], database: String = "postgres") throws -> [String] {
        try servers.map { try $0.psql(checksumSQL, database: database) }
    }

    /// The number of pgchorus prepared transactions left on a server.
    public static func preparedCount(_ server: LocalPostgresServer) throws -> Int {
        Int(try server.psql("select count(*) from pg_prepared_xacts where gid like 'pgchorus:%'")) ?? -1
    }
}
