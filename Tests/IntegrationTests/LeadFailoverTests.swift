import Foundation
import LocalCluster
import NIOCore
import Testing
import TestSupport
import Wire

/// The lead dies while sessions wait on each other's row locks: the locks the dead lead had
/// granted must be taken in the same order on the backends that remain.
@Suite struct LeadFailoverTests {

    func completed(_ messages: [BackendMessage]) -> [String] {
        messages.compactMap { if case let .commandComplete(tag) = $0 { tag } else { nil } }
    }

    /// Session A holds row 1 on the lead, and its update of row 1 still waits in line on db2 (held
    /// up by a lock taken there directly); session B waits on the lead for row 1. When the lead
    /// dies, B's update must not overtake A's on db2: on db3 A's update already holds the row, so
    /// the other order is a deadlock across two servers that neither of them can see.
    /// A server's sessions, what they wait for and run, its locks not granted and its prepared transactions.
    static let whoWaitsSQL = """
        select concat_ws(' | ',
          (select string_agg(format('pid %s %s %s:%s %s', pid, state, wait_event_type, wait_event, left(query, 60)), '; ')
             from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()),
          (select string_agg(format('%s %s by %s', locktype, mode, pid), '; ') from pg_locks where not granted),
          (select string_agg(gid, ', ') from pg_prepared_xacts))
        """

    @Test func aStatementResentToTheNewLeadWaitsForTheLocksTheOldLeadGranted() async throws {
        try await withPostgresServers(count: 3) { servers in
            // db2 is held up on purpose (a lock taken there directly): it must not be failed for being slow.
            try await withProxy(backends: servers, config: "[replication]\nfollower_timeout = 120\n") { proxy in
                let setup = try Clients.psql(proxy.connectionString(), ["-v", "ON_ERROR_STOP=1", "-c",
                    "create table t (id int primary key, v int); insert into t values (1, 0), (2, 0)"])
                #expect(setup.exitCode == 0, "\(setup.report)")

                // Directly on db2, outside the proxy: row 2 is locked, so A's updates queue up there.
                let blocker = try RawPostgresClient(port: servers[1].port, timeoutSeconds: 30)
                _ = try blocker.startup()
                #expect(completed(try blocker.query("begin; select v from t where id = 2 for update")) == ["BEGIN", "SELECT 1"])

                let a = try RawPostgresClient(port: proxy.port, timeoutSeconds: 30)
                _ = try a.startup()
                #expect(completed(try a.query("begin")) == ["BEGIN"])
                #expect(completed(try a.query("update t set v = v + 1 where id = 2")) == ["UPDATE 1"])
                #expect(completed(try a.query("update t set v = v + 1 where id = 1")) == ["UPDATE 1"])
                #expect(try await eventually(30) {
                    try servers[2].psql("select count(*) from pg_stat_activity where state = 'idle in transaction' and backend_xid is not null") == "1"
                        && servers[1].psql("select count(*) from pg_stat_activity where wait_event_type = 'Lock'") == "1"
                }, "A's updates did not reach db3 or did not queue up on db2")

                let b = try RawPostgresClient(port: proxy.port, timeoutSeconds: 30)
                _ = try b.startup()
                #expect(completed(try b.query("begin")) == ["BEGIN"])
                try b.send(.query("update t set v = v + 10 where id = 1"))
                #expect(try await eventually(30) {
                    try servers[0].psql("select count(*) from pg_stat_activity where wait_event_type = 'Lock'") == "1"
                }, "B's update does not wait for A's lock on db1")

                // The lead's failure and the blocker's release run on a thread of their own, one second
                // apart: on a busy test run the cooperative pool (one thread per core, shared by every
                // test, some of them blocked in reads) can hold this test's next step back for many
                // seconds, and a handover that waits 30 s for the blocker gives up by design.
                let registry = proxy.server.context.registry
                let (failed, released) = try await runBlocking { () throws -> (Bool, [BackendMessage]) in
                    try servers[0].stop(mode: .immediate)
                    let failed = eventuallyBlocking(30) { registry.status(of: "db1") == .failed }
                    // Both sessions have seen the lead go (a re-sent statement reaches db2 in microseconds).
                    usleep(1_000_000)
                    // A's updates now run on db2 in the order the old lead granted them.
                    return (failed, try blocker.query("rollback"))
                }
                #expect(failed, "db1 was not failed within 30 s of its stop")
                #expect(completed(released) == ["ROLLBACK"])
                // With the blocker gone A's updates run on db2 (B's, once re-sent there, may wait for A's lock).
                let drained = try await eventually(20) {
                    try servers[1].psql("select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query not like '%v + 10%'") == "0"
                }
                let onDB2 = drained ? "" : try servers[1].psql(Self.whoWaitsSQL)
                #expect(drained, "db2: \(onDB2)")

                let aCommit = try a.query("commit")
                #expect(completed(aCommit) == ["COMMIT"], "\(aCommit)")
                let bUpdate = try b.readUntilReady()
                #expect(completed(bUpdate) == ["UPDATE 1"], "\(bUpdate)")
                #expect(completed(try b.query("commit")) == ["COMMIT"])

                for s in servers[1...] {
                    #expect(try s.psql("select string_agg(id || '=' || v, ',' order by id) from t") == "1=11,2=1")
                    #expect(try Consistency.preparedCount(s) == 0)
                }
                #expect(proxy.server.context.registry.online().map(\.id) == ["db2", "db3"])
            }
        }
    }
}
