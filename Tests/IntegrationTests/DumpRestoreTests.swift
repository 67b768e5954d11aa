import LocalCluster
import Testing
import TestSupport

/// Bringing an existing database into the cluster: a dump of a server outside it restored through
/// pgchorusd — psql with a plain dump, pg_restore with a custom one — leaves every backend identical
/// to the source and to each other, every backend online; a dump taken through pgchorusd is each
/// backend's own.
@Suite struct DumpRestoreTests {
    /// A schema with what applications' databases hold: pgbench's tables, SERIAL and IDENTITY columns,
    /// volatile defaults, an enum, a view and a materialized view, a PL/pgSQL trigger, a partitioned
    /// table, foreign keys, a generated column, comments, a sequence moved on, a large object.
    static let sourceSchema = """
    create type mood as enum ('sad', 'ok', 'happy');
    create table people (id serial primary key, name text not null, mood mood default 'ok',
                         created timestamptz not null default now(), token uuid not null default gen_random_uuid());
    create table orders (id bigint generated always as identity primary key, person int not null references people (id),
                         amount numeric(10,2) not null check (amount > 0), taxed numeric generated always as (amount * 1.2) stored);
    create table audit (id serial primary key, note text, at timestamptz default clock_timestamp());
    create function note_order() returns trigger language plpgsql as $$
    begin insert into audit (note) values ('order ' || new.id); return new; end $$;
    create trigger orders_audit after insert on orders for each row execute function note_order();
    create view big_orders as select * from orders where amount > 50;
    create table events (id int, at date not null, payload jsonb) partition by range (at);
    create table events_2026 partition of events for values from ('2026-01-01') to ('2027-01-01');
    create table events_rest partition of events default;
    comment on table people is 'who ordered';
    create sequence invoice_numbers start 1000;
    insert into people (name, mood) select 'person ' || g, (array['sad','ok','happy'])[1 + g % 3]::mood from generate_series(1, 300) g;
    insert into orders (person, amount) select 1 + g % 300, 1 + (g % 97) from generate_series(1, 1000) g;
    insert into events select g, date '2026-01-01' + g % 500, jsonb_build_object('n', g) from generate_series(1, 400) g;
    select setval('invoice_numbers', 1234);
    create materialized view totals as select person, sum(amount) as total from orders group by person;
    select lo_from_bytea(0, 'a large object');
    """

    /// Every sequence's position and every large object's contents, as one string.
    static let extrasSQL = """
    select (select string_agg(sequencename || '=' || coalesce(last_value::text, '-'), ',' order by sequencename) from pg_sequences where schemaname <> 'pgchorus')
        || ' | ' || (select coalesce(string_agg(md5(lo_get(oid)), ',' order by md5(lo_get(oid))), 'none') from pg_largeobject_metadata)
        || ' | ' || (select count(*) from totals)
    """

    @Test(arguments: ["plain", "custom"])
    func aDumpRestoredThroughPgchorusIsIdenticalOnEveryBackendAndToItsSource(format: String) async throws {
        try await withPostgresServers(count: 4) { all in
            let servers = Array(all[..<3])
            let source = all[3]
            let setup = try Clients.psql(source.connectionString(), ["-q", "-v", "ON_ERROR_STOP=1"], input: Self.sourceSchema)
            #expect(setup.exitCode == 0, "\(setup.report)")
            let bench = try await runBlocking { try Clients.pgbench(port: source.port, ["-i", "-s", "1", "-q"]) }
            #expect(bench.exitCode == 0, "\(bench.report)")
            try await withProxy(backends: servers) { proxy in
                let dump = proxy.directory + "/source.dump"
                let dumped = try CommandRunner.run(try PostgresBinaries.path(of: "pg_dump"),
                                                   ["-d", source.connectionString(), "-F", format == "plain" ? "p" : "c", "-f", dump],
                                                   environment: ["PGPASSFILE": "/nonexistent"], timeout: .seconds(120))
                #expect(dumped.exitCode == 0, "\(dumped.report)")
                // Each backend hands out its own OIDs: burn some on the followers, a different number on
                // each, so the restored objects' OIDs differ as they do on a cluster with a history
                // (pg_dump reads catalogs by OID; a CI run once had them differ by chance).
                for (s, n) in [(servers[1], 2), (servers[2], 5)] {
                    for _ in 0..<n { _ = try s.psql("create table oid_burn (a int); drop table oid_burn") }
                }
                let created = try Clients.psql(proxy.connectionString(), ["-v", "ON_ERROR_STOP=1", "-c", "create database restored"])
                #expect(created.exitCode == 0, "\(created.report)")
                let target = proxy.connectionString(database: "restored")
                let restored = try await runBlocking { () throws -> CommandOutput in
                    if format == "plain" {
                        return try Clients.psql(target, ["-q", "-v", "ON_ERROR_STOP=1", "-f", dump], timeout: .seconds(300))
                    }
                    return try CommandRunner.run(try PostgresBinaries.path(of: "pg_restore"), ["--exit-on-error", "-d", target, dump],
                                                 environment: ["PGPASSFILE": "/nonexistent"], timeout: .seconds(300))
                }
                #expect(restored.exitCode == 0, "\(restored.report); \(backendReasons(proxy))")
                #expect(proxy.server.context.registry.online().map(\.id) == ["db1", "db2", "db3"], "\(backendReasons(proxy))")
                let sums = try Consistency.checksums(servers, database: "restored")
                let original = try source.psql(Consistency.checksumSQL)
                #expect(sums.allSatisfy { $0 == original }, "source \(original); backends \(sums)")
                let extras = try servers.map { try $0.psql(Self.extrasSQL, database: "restored") }
                let originalExtras = try source.psql(Self.extrasSQL)
                #expect(extras.allSatisfy { $0 == originalExtras }, "source \(originalExtras); backends \(extras)")
                // A dump taken through pgchorusd is the dump of each backend (comments and the random key
                // of pg_dump's `\restrict` line aside).
                func dumpText(_ connection: String) throws -> String {
                    let out = try CommandRunner.run(try PostgresBinaries.path(of: "pg_dump"), ["-d", connection],
                                                    environment: ["PGPASSFILE": "/nonexistent"], timeout: .seconds(120))
                    #expect(out.exitCode == 0, "\(out.report)")
                    return out.stdout.split(separator: "\n").filter { !$0.hasPrefix("--") && !$0.hasPrefix("\\restrict") && !$0.hasPrefix("\\unrestrict") }
                        .joined(separator: "\n")
                }
                let throughProxy = try dumpText(target)
                for s in servers {
                    #expect(try dumpText(s.connectionString(database: "restored")) == throughProxy, "\(s.name)")
                }
                #expect(throughProxy.contains("COPY public.pgbench_accounts"))
                // The restored database takes writes as any other.
                let write = try Clients.psql(target, ["-v", "ON_ERROR_STOP=1", "-c", "insert into people (name) values ('new')",
                                                      "-c", "insert into orders (person, amount) values (301, 60)"])
                #expect(write.exitCode == 0, "\(write.report)")
                let after = try Consistency.checksums(servers, database: "restored")
                #expect(Set(after).count == 1, "\(after)")
                for s in servers { #expect(try Consistency.preparedCount(s) == 0) }
            }
        }
    }
}
