import Foundation
import LocalCluster
import Logging
import Proxy
import Testing
import TestSupport
import Wire

/// Transactions PostgreSQL cannot PREPARE (NOTIFY, LISTEN, a WITH HOLD cursor) commit through
/// pgchorus; the in-band commit log stays small.
@Suite struct CommitKindsTests {
    @Test func notifyListenAndHeldCursorsCommitAndNotifyOnce() async throws {
        try await runClientCheck("commit_client.py", "commits")
    }

    /// A temporary table: the transaction that creates it commits without the vote (PostgreSQL cannot
    /// PREPARE it); one dropped at its commit (`ON COMMIT DROP`, an ETL's staging table) costs the
    /// session nothing more, and one that outlives it costs the vote until `DISCARD ALL` (what a
    /// pooler sends before it hands the connection on) or `DISCARD TEMP`. Until 2026-12-06 a session
    /// that had ever created one committed without the vote for good.
    @Test func temporaryTablesCostTheVoteOnlyWhileTheyLive() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                _ = try client.startup()
                func run(_ sql: String) throws {
                    let answer = try client.query(sql)
                    #expect(answer.compactMap(\.errorState) == [], "\(sql): \(answer)")
                }
                func votes() throws -> Int { Int(try servers[0].psql("select count(*) from pgchorus.commit_log")) ?? -1 }
                try run("create table target (id int primary key)")
                var before = try votes()
                try run("begin; create temp table stage (id int) on commit drop; insert into stage values (1), (2); insert into target select id from stage; commit")
                #expect(try votes() == before, "the transaction with the temporary table commits without the vote")
                try run("begin; insert into target values (3); commit")
                try run("insert into target values (4)")
                #expect(try votes() == before + 2, "after ON COMMIT DROP the session's writes are voted")
                try run("create temp table keep (id int)")
                try run("insert into keep values (1)")
                before = try votes()
                try run("begin; insert into target values (5); commit")
                #expect(try votes() == before, "while a temporary table lives its session's commits go without the vote")
                try run("discard all")
                before = try votes()
                try run("begin; insert into target values (6); commit")
                try run("insert into target values (7)")
                #expect(try votes() == before + 2, "after DISCARD ALL the session's writes are voted again")
                #expect(try client.query("select * from keep").compactMap(\.errorState) == ["42P01"])
                try run("create temp table again (id int)")
                try run("discard temp")
                before = try votes()
                try run("insert into target values (8)")
                #expect(try votes() == before + 1, "after DISCARD TEMP too")
                for s in servers { #expect(try s.psql("select string_agg(id::text, ',' order by id) from target") == "1,2,3,4,5,6,7,8") }
                try expectBackendsInStep(proxy, servers)
            }
        }
    }

    /// NOTIFY / pg_notify() in a transaction: held until the vote has committed, delivered once
    /// and in order after it, never on rollback; savepoints behave as in PostgreSQL.
    @Test func notificationsAreHeldUntilTheVoteCommits() async throws {
        try await runClientCheck("commit_client.py", "notify-vote")
    }

    /// A trigger that notifies (a job queue's): its notifications are held in the transaction until
    /// the vote commits, so its writes are voted; once, in order, never on rollback.
    @Test func aNotifyingTriggersNotificationsWaitForTheVote() async throws {
        try await runClientCheck("commit_client.py", "trigger-notify")
    }

    /// `BEGIN; …; COMMIT` (or `…; COMMIT` in a transaction) in one Query: the COMMIT goes through the
    /// vote, not around it; a failure before it aborts as on one server.
    @Test func aCommitSentWithItsStatementsInOneMessageGoesThroughTheVote() async throws {
        try await runClientCheck("commit_client.py", "trailing")
    }

    /// A COMMIT (or ROLLBACK) in the middle of one Query: the message runs as its parts, each COMMIT
    /// through the vote, one answer for the client; an error skips the rest, as on one server.
    @Test func aCommitInTheMiddleOfAMessageGoesThroughTheVote() async throws {
        try await runClientCheck("commit_client.py", "middle")
    }

    /// The answers to a cut Query and to the Queries pipelined behind it are PostgreSQL's own, message
    /// for message (the parts' ReadyForQuery messages kept back, an error ending the message), and
    /// the messages sent after it wait for its parts, in order.
    @Test func aCutQueryAnswersAsPostgreSQLAndPipelinedQueriesWaitForIt() async throws {
        try await withPostgresServers(count: 4) { servers in
            try await withProxy(backends: Array(servers[0..<3])) { proxy in
                let queries = [
                    "BEGIN; INSERT INTO t VALUES (1); COMMIT; SELECT count(*) FROM t",
                    "BEGIN; INSERT INTO t VALUES (2); COMMIT; BEGIN; INSERT INTO t VALUES (1); COMMIT; INSERT INTO t VALUES (9)",
                    "ROLLBACK",
                    "BEGIN; UPDATE t SET id = id + 10; COMMIT; BEGIN; UPDATE t SET id = id + 100; COMMIT; SELECT array_agg(id ORDER BY id) FROM t",
                ]
                func exchange(port: Int) throws -> [BackendMessage] {
                    let c = try RawPostgresClient(port: port, timeoutSeconds: 60)
                    defer { c.disconnect() }
                    _ = try c.startup()
                    _ = try c.query("create table t (id int primary key)")
                    try c.send(queries.map { FrontendMessage.query($0) })
                    return try queries.flatMap { _ in try c.readUntilReady() }
                }
                let direct = try exchange(port: servers[3].port)
                let through = try exchange(port: proxy.port)
                #expect(direct.count(where: { if case .readyForQuery = $0 { true } else { false } }) == 4)
                #expect(direct.contains { $0.errorState == "23505" })
                #expect(through == direct, "through pgchorus:\n\(through)\ndirectly:\n\(direct)")
                for s in servers[0..<3] {
                    let votes = try s.psql("select count(*) from pgchorus.commit_log")
                    #expect(votes == "4", "each COMMIT of a part was voted: \(votes) rows in the commit log")
                    #expect(try s.psql("select array_agg(id order by id) from t") == "{111,112}")
                }
                try expectBackendsInStep(proxy, Array(servers[0..<3]))
            }
        }
    }

    /// A large object created without an OID gets the lead's OID on every backend, although each
    /// server's OID counter stands elsewhere (temporary tables moved them here, as TOAST does).
    @Test func largeObjectsGetTheSameOIDOnEveryBackend() async throws {
        try await withPostgresServers(count: 3) { servers in
            for (i, s) in servers.enumerated() where i > 0 {
                _ = try s.psql((0..<(i * 3)).map { "create temp table drift\($0) (x int);" }.joined(separator: " "))
            }
            try await withProxy(backends: servers) { proxy in
                let out = try await runBlocking { try Clients.pythonScript("commit_client.py", [proxy.connectionString(), "largeobjects"], timeout: .seconds(120)) }
                #expect(out.exitCode == 0 && out.stdoutLines.last == "PASSED largeobjects", "\(out.report)")
                let lists = try servers.map { try $0.psql("select string_agg(oid::text, ',' order by oid) from pg_largeobject_metadata") }
                #expect(Set(lists).count == 1 && lists[0].split(separator: ",").count == 3, "large object OIDs per backend: \(lists)")
                try expectBackendsInStep(proxy, servers)
            }
        }
    }

    /// The client's pid is its lead backend's: pg_terminate_backend() by it — from another session or
    /// of the session itself — ends that session as on one server, and fails no backend.
    @Test func terminatingASessionByItsPidEndsItAndFailsNoBackend() async throws {
        try await runClientCheck("commit_client.py", "terminate")
    }

    /// A vote one of the node's sessions is still carrying out (waiting for its commit turn, a slow
    /// backend) is never in doubt to the node's own resolver, however old its PREPARE: resolving it
    /// would roll back what the session is about to commit.
    @Test func theResolverLeavesVotesInFlightAlone() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let context = proxy.server.context
                let gid = "pgchorus:\(context.configuration.node.id):4242"
                for s in servers {
                    _ = try s.psql("create table waiting (x int)")
                    _ = try s.psql("begin; insert into waiting values (1); prepare transaction '\(gid)'")
                }
                let resolver = InDoubtResolver(configuration: context.configuration, registry: context.registry, logger: Logger(label: "test"),
                                               inFlight: context.votesInFlight)
                context.votesInFlight.started(gid)
                let spared = await resolver.resolve(minimumAge: 0)
                #expect(spared.committed.isEmpty && spared.rolledBack.isEmpty, "\(spared)")
                for s in servers { #expect(try s.psql("select count(*) from pg_prepared_xacts where gid = '\(gid)'") == "1") }
                context.votesInFlight.ended(gid)
                let resolved = await resolver.resolve(minimumAge: 0)
                #expect(resolved.rolledBack.contains(gid), "\(resolved)")
                for s in servers { #expect(try s.psql("select count(*) from pg_prepared_xacts") == "0") }
            }
        }
    }

    /// A client cannot finish (or squat) pgchorus' own prepared transactions: ending another session's
    /// vote between two backends would split it. Its gids cannot be guessed ahead either.
    @Test func aClientCannotTouchPgchorusPreparedTransactions() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let script = """
                create table gid_t (id int primary key);
                insert into gid_t values (1);
                insert into gid_t values (2);
                """
                let out = try Clients.psql(proxy.connectionString(), ["-v", "ON_ERROR_STOP=1"], input: script)
                #expect(out.exitCode == 0, "\(out.report)")
                let client = try RawPostgresClient(port: proxy.port)
                _ = try client.startup()
                for sql in ["ROLLBACK PREPARED 'pgchorus:test:1-0'", "COMMIT PREPARED 'pgchorus:test:2-0'", "BEGIN; PREPARE TRANSACTION 'pgchorus:test:3-0'"] {
                    #expect(try client.query(sql).compactMap(\.errorState) == ["42501"], "\(sql)")
                    _ = try client.query("ROLLBACK")
                }
                #expect(try client.query("select count(*) from gid_t").contains(.commandComplete("SELECT 1")))
                // The two commits' gids in the commit log: node, serial, then 16 random hex digits.
                for s in servers {
                    let gids = try s.psql("select gid from pgchorus.commit_log order by gid").split(separator: "\n")
                    #expect(gids.count == 2)
                    for gid in gids { #expect(gid.wholeMatch(of: /pgchorus:test:[0-9]+-[0-9a-f]{16}/) != nil, "\(gid)") }
                }
                #expect(proxy.server.context.registry.online().count == 2)
            }
        }
    }

    /// A listener busy with statements gets every notification: PostgreSQL sends one to an idle or
    /// finishing session at any moment, also just before the ReadyForQuery of one of pgchorus' own
    /// cycles (the transaction stamp before each statement), which used to swallow it.
    @Test func aBusyListenerGetsEveryNotification() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                // A definition with now(): every transaction in this database is stamped first (an own cycle).
                let setup = try Clients.psql(proxy.connectionString(), ["-c", "create table stamped (id int, at timestamptz default now())"])
                #expect(setup.exitCode == 0, "\(setup.report)")
                let listener = try RawPostgresClient(port: proxy.port)
                _ = try listener.startup()
                _ = try listener.query("listen jobs")
                let count = 100
                let connection = proxy.connectionString()
                let notifier = Task.detached {
                    try Clients.psql(connection, ["-q", "-v", "ON_ERROR_STOP=1"], input: (1...count).map { "notify jobs, '\($0)';" }.joined(separator: "\n"))
                }
                // The listener stays busy (a statement after another) while the notifier runs.
                var heard: [String] = []
                for _ in 0..<3000 where heard.count < count {
                    heard += try listener.query("select 1").compactMap { if case let .notificationResponse(_, _, payload) = $0 { payload } else { nil } }
                }
                let out = try await notifier.value
                #expect(out.exitCode == 0, "\(out.report)")
                for _ in 0..<300 where heard.count < count {
                    heard += try listener.query("select 1").compactMap { if case let .notificationResponse(_, _, payload) = $0 { payload } else { nil } }
                    try await Task.sleep(for: .milliseconds(50))
                }
                #expect(heard == (1...count).map(String.init), "heard \(heard.count) of \(count)")
            }
        }
    }

    /// Held notifications are row-level secured: a role sees and deletes only its own session's (no
    /// reading another session's pending payloads, no dropping its notifications), and holding still
    /// works for a role that is not a superuser.
    @Test func aSessionSeesOnlyItsOwnHeldNotifications() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let admin = try RawPostgresClient(port: proxy.port)
                _ = try admin.startup()
                #expect(try admin.query("create role app login; grant create on schema public to app").compactMap(\.errorState).isEmpty)
                for s in servers {
                    _ = try s.psql("insert into pgchorus.held_notifications values ('someone-else', 1, now(), 'secret', 'payload')")
                }
                let setup = try RawPostgresClient(port: proxy.port)
                _ = try setup.startup(user: "app")
                let ddl = try setup.query("""
                    create table tasks (id int primary key, note text);
                    create function tasks_notify() returns trigger language plpgsql as $$ begin perform pg_notify('jobs', new.note); return new; end $$;
                    create trigger tasks_notify after insert on tasks for each row execute function tasks_notify()
                    """)
                #expect(ddl.compactMap(\.errorState).isEmpty, "\(ddl)")
                let listener = try RawPostgresClient(port: proxy.port)
                _ = try listener.startup(user: "app")
                _ = try listener.query("listen jobs")
                let app = try RawPostgresClient(port: proxy.port)
                _ = try app.startup(user: "app")
                _ = try app.query("begin")
                #expect(try app.query("insert into tasks values (1, 't1')").compactMap(\.errorState).isEmpty)
                let seen = try app.query("select count(*) from pgchorus.held_notifications")
                #expect(seen.contains { if case let .dataRow(cols) = $0 { cols.first??.getString(at: 0, length: 1) == "1" } else { false } },
                        "only its own held row: \(seen)")
                #expect(try app.query("delete from pgchorus.held_notifications where session = 'someone-else'").contains(.commandComplete("DELETE 0")))
                #expect(try app.query("commit").contains(.commandComplete("COMMIT")))
                var heard: [String] = []
                for _ in 0..<150 where heard.isEmpty {
                    heard = try listener.query("select 1").compactMap { if case let .notificationResponse(_, _, payload) = $0 { payload } else { nil } }
                    if heard.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
                }
                #expect(heard == ["t1"])
                for s in servers {
                    #expect(try s.psql("select count(*) from pgchorus.held_notifications where session = 'someone-else'") == "1")
                    #expect(try s.psql("select count(*) from pgchorus.held_notifications where session <> 'someone-else'") == "0")
                }
            }
        }
    }

    /// Rows older than `replication.commit_log_retention` go; younger ones, still evidence, stay.
    @Test func theCommitLogIsPrunedPastItsRetention() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let script = """
                create table t (id int primary key);
                insert into t values (1);
                insert into t values (2);
                begin; insert into t values (3); commit;
                """
                let out = try Clients.psql(proxy.connectionString(), ["-v", "ON_ERROR_STOP=1"], input: script)
                #expect(out.exitCode == 0, "\(out.report)")
                for s in servers {
                    #expect(try s.psql("select count(*) from pgchorus.commit_log") == "3")
                    _ = try s.psql("""
                    insert into pgchorus.commit_log (gid, committed_at) select 'pgchorus:old:' || g, now() - interval '2 hours' from generate_series(1, 12) g;
                    insert into pgchorus.commit_log (gid, committed_at) values ('pgchorus:recent:1', now() - interval '30 minutes');
                    """)
                }
                let resolver = InDoubtResolver(configuration: proxy.server.context.configuration, registry: proxy.server.context.registry,
                                               logger: Logger(label: "test"))
                let deleted = await resolver.pruneCommitLog(batch: 5)
                #expect(deleted == ["db1": 12, "db2": 12], "in batches of 5: \(deleted)")
                for s in servers {
                    #expect(try s.psql("select count(*) from pgchorus.commit_log") == "4")
                    #expect(try s.psql("select count(*) from pgchorus.commit_log where gid like 'pgchorus:old:%'") == "0")
                }
                // Nothing is left to prune.
                #expect(await resolver.pruneCommitLog().values.reduce(0, +) == 0)
            }
        }
    }
}
