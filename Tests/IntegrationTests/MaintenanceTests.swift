import LocalCluster
import Testing
import TestSupport

/// What a DBA runs on a live database, through pgchorusd while pgbench writes: concurrent index
/// builds and drops, VACUUM, ANALYZE, a REINDEX CONCURRENTLY, a column added with a default. Every
/// command succeeds, pgbench loses nothing, every backend ends online and identical.
@Suite struct MaintenanceTests {
    @Test func maintenanceCommandsRunBesideWritesOnEveryBackend() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                let port = proxy.port
                let initialise = try await runBlocking { try Clients.pgbench(port: port, ["-i", "-s", "1", "-q"]) }
                #expect(initialise.exitCode == 0, "\(initialise.report)")
                // pgbench writes for 15 s (bounded by its own -T; 120 s for the process).
                async let load = runBlocking {
                    try Clients.pgbench(port: port, ["-n", "-M", "extended", "-c", "4", "-j", "2", "-T", "15", "--max-tries", "10"], timeout: .seconds(120))
                }
                let script = """
                select pg_sleep(1);
                create index concurrently accounts_by_balance on pgbench_accounts (abalance);
                vacuum pgbench_history;
                analyze pgbench_accounts;
                reindex index concurrently accounts_by_balance;
                vacuum (analyze) pgbench_tellers;
                alter table pgbench_history add column note text default 'kept';
                create index concurrently history_by_note on pgbench_history (note);
                drop index concurrently accounts_by_balance;
                """
                let dsn = proxy.connectionString()
                let maintenance = try await runBlocking { try Clients.psql(dsn, ["-v", "ON_ERROR_STOP=1", "-q"], input: script, timeout: .seconds(120)) }
                #expect(maintenance.exitCode == 0, "\(maintenance.report); \(backendReasons(proxy))")
                let run = try await load
                #expect(run.exitCode == 0 && run.stdout.contains("number of failed transactions: 0"), "\(run.report)")
                try expectBackendsInStep(proxy, servers)
                for s in servers {
                    #expect(try s.psql("select string_agg(indexname, ',' order by indexname) from pg_indexes where tablename in ('pgbench_accounts', 'pgbench_history')")
                            == "history_by_note,pgbench_accounts_pkey", "\(s.name)")
                    #expect(try s.psql("select count(*) from pg_index where not indisvalid") == "0", "\(s.name)")
                }
            }
        }
    }
}
