import LocalCluster
import Testing
import TestSupport

/// `replication.read_routing`: reads outside transactions on one backend, writes on all.
@Suite struct ReadRoutingTests {
    func ports(_ proxy: RunningProxy, count: Int) throws -> [String] {
        let args = ["-At"] + Array(repeating: ["-c", "select current_setting('port')"], count: count).flatMap { $0 }
        let out = try Clients.psql(proxy.connectionString(), args)
        #expect(out.exitCode == 0, "\(out.report)")
        return out.stdoutLines
    }

    @Test func balanceSpreadsReadsAndKeepsWritesEverywhere() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers, config: "[replication]\nread_routing = \"balance\"") { proxy in
                let seen = Set(try ports(proxy, count: 12))
                #expect(seen == Set(servers.map { "\($0.port)" }), "reads went to \(seen)")
                let write = try Clients.psql(proxy.connectionString(), ["-c", "create table t (v int)", "-c", "insert into t values (1)"])
                #expect(write.exitCode == 0, "\(write.report)")
                for s in servers { #expect(try s.psql("select count(*) from t") == "1") }
                // Inside a transaction reads go to every backend, so they see the transaction's own writes.
                let tx = try Clients.psql(proxy.connectionString(), ["-At", "-c", "begin", "-c", "insert into t values (2)",
                                                                     "-c", "select count(*) from t", "-c", "commit"])
                #expect(tx.stdoutLines.contains("2"), "\(tx.report)")
                for s in servers { #expect(try s.psql("select count(*) from t") == "2") }

                let port = proxy.port
                #expect(try await runBlocking { try Clients.pgbench(port: port, ["-i", "-s", "1", "-q"]) }.exitCode == 0)
                async let bench = runBlocking { try Clients.pgbench(port: port, ["-S", "-M", "prepared", "-c", "4", "-j", "2", "-T", "6", "-n"]) }
                try await Task.sleep(for: .seconds(3))
                try servers[2].stop(mode: .immediate)
                let run = try await bench
                #expect(run.exitCode == 0, "\(run.report)")
                #expect(run.stdout.contains("number of failed transactions: 0 "), "\(run.report)")
            }
        }
    }

    @Test func leadRoutingSendsEveryReadToTheLead() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers, config: "[replication]\nread_routing = \"lead\"") { proxy in
                let seen = Set(try ports(proxy, count: 6))
                #expect(seen == ["\(servers[0].port)"])
            }
        }
    }

    @Test func allComparesEveryRead() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                // Each backend answers with its own port: the comparison sees two outcomes and keeps the lead's side.
                let answer = try ports(proxy, count: 1)
                #expect(answer == ["\(servers[0].port)"])
                // db2's answer is compared when it arrives, after the client may already have left.
                for _ in 0..<300 where proxy.server.context.registry.status(of: "db2") != .failed {
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(proxy.server.context.registry.status(of: "db2") == .failed)
            }
        }
    }

    /// Calls of functions the database marks STABLE or IMMUTABLE read: `to_regclass('t')::oid` (as admin
    /// tools read the catalog) is the lead's alone and fails no backend whose OIDs differ, and a user's
    /// STABLE function in a read is routed like any read (were it counted as a write, each backend's
    /// own `port` would be compared and db2 failed). A writing function called by its quoted name
    /// (`"Bump"()`) is a write: it runs on every backend (it ran on the lead alone); so is a user
    /// aggregate whose transition function writes, though PostgreSQL marks the aggregate IMMUTABLE.
    @Test func callsOfStableFunctionsReadAndQuotedCallsOfWritersWrite() async throws {
        try await withPostgresServers(count: 2) { servers in
            _ = try servers[1].psql("create table filler0 (); drop table filler0;")
            try await withProxy(backends: servers, config: "[replication]\nread_routing = \"lead\"") { proxy in
                let setup = """
                create table t (id int primary key, v int);
                create table hits (n int);
                create function "Bump"() returns int language sql as $$ insert into hits values (1) returning 1 $$;
                create function tenant() returns int stable language sql as $$ select 7 $$;
                create function logit(s int, x int) returns int language plpgsql as $x$ begin insert into hits values (x); return coalesce(s, 0) + x; end $x$;
                create aggregate logagg(int) (sfunc = logit, stype = int);
                select 1;
                """
                let made = try Clients.psql(proxy.connectionString(), ["-v", "ON_ERROR_STOP=1"], input: setup)
                #expect(made.exitCode == 0, "\(made.report)")
                let script = """
                select 1;
                select to_regclass('t')::oid::int;
                select tenant(), current_setting('port');
                select "Bump"();
                select n from hits;
                select logagg(g) from generate_series(2, 3) g;
                select count(*) from hits;
                """
                let out = try Clients.psql(proxy.connectionString(), ["-At", "-v", "ON_ERROR_STOP=1"], input: script)
                #expect(out.exitCode == 0, "\(out.report)")
                let oids = try servers.map { try $0.psql("select 't'::regclass::oid::int") }
                #expect(oids[0] != oids[1], "the test needs t to have another OID on db2")
                #expect(out.stdoutLines == ["1", oids[0], "7|\(servers[0].port)", "1", "1", "5", "3"], "\(out.report)")
                // (PostgreSQL marks every aggregate IMMUTABLE: logagg's transition function writes.)
                for s in servers { #expect(try s.psql("select count(*) from hits") == "3", "\(s.name)") }
                try expectBackendsInStep(proxy, servers)
            }
        }
    }

    /// Reads whose answers are per server (catalog OIDs, statistics, the backend's pid, random()) are the
    /// lead's alone, in and outside transactions: nobody is failed for being a different server, and a
    /// transaction in which such a read fails on the lead is aborted on every backend.
    @Test func readsOfPerServerStateAreTheLeadsAloneAndFailNobody() async throws {
        try await withPostgresServers(count: 3) { servers in
            // The followers' OIDs run ahead of the lead's: table t gets another OID on each (psql's \d t,
            // sent everywhere and compared, failed them).
            for (i, s) in servers.enumerated().dropFirst() {
                _ = try s.psql((0..<i).map { "create table filler\($0) (); drop table filler\($0);" }.joined(separator: " "))
            }
            try await withProxy(backends: servers) { proxy in
                let script = """
                create table t (id int primary key, v int);
                insert into t values (1, 1);
                select pg_backend_pid() > 0;
                select count(*) >= 0 from pg_stat_activity;
                select oid > 0 from pg_class where relname = 't';
                \\d t
                \\d+ t
                \\d
                \\dt+
                \\di
                \\df
                \\dn
                \\du
                \\l
                select random() < 1;
                select id from t order by random() limit 1;
                select txid_current() > 0;
                begin;
                update t set v = 2 where id = 1;
                select pg_backend_pid() > 0;
                select xmin::text::int > 0 from t;
                select 1 / (pg_backend_pid() - pg_backend_pid());
                update t set v = 3 where id = 1;
                rollback;
                select v from t;
                """
                let out = try Clients.psql(proxy.connectionString(), ["-At"], input: script)
                #expect(out.exitCode == 0, "\(out.report)")
                #expect(out.stderr.contains("division by zero"), "\(out.report)")
                #expect(out.stderr.contains("current transaction is aborted"), "\(out.report)")
                #expect(!out.stderr.contains("pgchorus refuses"), "\(out.report)")
                #expect(out.stdoutLines.last == "1", "\(out.report)")
                try expectBackendsInStep(proxy, servers)
            }
        }
    }
}
