import Foundation
import LocalCluster
import Logging
import Proxy
import Testing
import TestSupport

/// Transactions PostgreSQL cannot PREPARE (NOTIFY, LISTEN, a WITH HOLD cursor) commit through
/// pgchorus; the in-band commit log stays small.
@Suite struct CommitKindsTests {
    @Test func notifyListenAndHeldCursorsCommitAndNotifyOnce() async throws {
        try await runClientCheck("commit_client.py", "commits")
    }

    /// NOTIFY / pg_notify() in a transaction: held until the vote has committed, delivered once
    /// and in order after it, never on rollback; savepoints behave as in PostgreSQL.
    @Test func notificationsAreHeldUntilTheVoteCommits() async throws {
        try await runClientCheck("commit_client.py", "notify-vote")
    }

    /// A trigger that notifies (PostgreSQL refuses to PREPARE what it ran): the writes of that
    /// database commit without the vote, and work — before, every such COMMIT failed.
    @Test func aNotifyingTriggerDoesNotMakeCommitsFail() async throws {
        try await runClientCheck("commit_client.py", "trigger-notify")
    }

    /// `BEGIN; …; COMMIT` (or `…; COMMIT` in a transaction) in one Query: the COMMIT goes through the
    /// vote, not around it; a failure before it aborts as on one server.
    @Test func aCommitSentWithItsStatementsInOneMessageGoesThroughTheVote() async throws {
        try await runClientCheck("commit_client.py", "trailing")
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
