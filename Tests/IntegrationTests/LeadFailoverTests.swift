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

    /// Locks that live on the lead alone — a session-level advisory lock (leader election by
    /// `pg_try_advisory_lock`), rows a transaction took `FOR UPDATE SKIP LOCKED` (a job queue) — go with
    /// a lead that fails. A session holding them cannot go on as if it held them (another session takes
    /// them on the next lead: two leaders, one job run twice): it ends, as on a crashed server, and its
    /// open transaction rolls back. Sessions holding none go on, as before.
    @Test func aSessionHoldingLocksThatLiveOnTheLeadAloneEndsWhenTheLeadFails() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                let setup = try Clients.psql(proxy.connectionString(), ["-v", "ON_ERROR_STOP=1", "-c",
                    "create table jobs (id int primary key, done boolean not null default false, note text); insert into jobs (id) select generate_series(1, 5)"])
                #expect(setup.exitCode == 0, "\(setup.report)")
                func session() throws -> RawPostgresClient {
                    let c = try RawPostgresClient(port: proxy.port, timeoutSeconds: 30)
                    _ = try c.startup()
                    return c
                }
                let leader = try session()
                #expect(try leader.query("select pg_try_advisory_lock(42)").firstValue == "t")
                // An elector that tried and lost holds nothing (asked in the text and the binary format).
                let loser = try session()
                #expect(try loser.query("select pg_try_advisory_lock(42)").firstValue == "f")
                try loser.send([.parse(.init(name: "", query: "SELECT pg_catalog.pg_try_advisory_lock(42) AS won", parameterTypes: [])),
                                .bind(.init(portal: "", statement: "", parameterFormats: [], parameters: [], resultFormats: [1])),
                                .execute(portal: "", maxRows: 0), .sync])
                let binary = try loser.readUntilReady()
                #expect(binary.contains { if case let .dataRow(columns) = $0 { columns.first??.readableBytesView.first == 0 } else { false } }, "\(binary)")
                let worker = try session()
                #expect(completed(try worker.query("begin")) == ["BEGIN"])
                #expect(completed(try worker.query("update jobs set note = 'worker' where id = 5")) == ["UPDATE 1"])
                #expect(try worker.query("select id from jobs order by id limit 1 for update skip locked").firstValue == "1")
                // A driver's named statement (asyncpg, JDBC's after a few runs): the take goes to every
                // backend, each locking the rows it chose, the lead's answered.
                let named = try session()
                #expect(completed(try named.query("begin")) == ["BEGIN"])
                try named.send([.parse(.init(name: "take", query: "select id from jobs where id between 2 and 3 order by id limit 1 for update skip locked", parameterTypes: [])),
                                .bind(.init(portal: "", statement: "take", parameterFormats: [], parameters: [], resultFormats: [])),
                                .execute(portal: "", maxRows: 0), .sync])
                #expect(try named.readUntilReady().firstValue == "2")
                // A lock taken and let go, and a transaction-level lock of a transaction that ended: nothing held.
                let former = try session()
                #expect(try former.query("select pg_try_advisory_lock(43)").firstValue == "t")
                #expect(try former.query("select pg_advisory_unlock_all()").firstValue != nil)
                #expect(completed(try former.query("begin; select pg_advisory_xact_lock(44); commit")) == ["BEGIN", "SELECT 1", "COMMIT"])
                let plain = try session()
                #expect(completed(try plain.query("begin")) == ["BEGIN"])
                #expect(completed(try plain.query("update jobs set note = 'plain' where id = 4")) == ["UPDATE 1"])

                let registry = proxy.server.context.registry
                let failed = try await runBlocking { () throws -> Bool in
                    try servers[0].stop(mode: .immediate)
                    return eventuallyBlocking(30) { registry.status(of: "db1") == .failed }
                }
                #expect(failed, "db1 was not failed within 30 s of its stop")

                func ended(_ c: RawPostgresClient, _ sql: String) throws -> ErrorFields? {
                    try? c.send(.query(sql))
                    return try c.readUntilReady().firstError
                }
                let leaderEnd = try ended(leader, "select 1")
                #expect(leaderEnd?.sqlState == "08006" && leaderEnd?.severity == "FATAL"
                        && leaderEnd?.message?.contains("session-level advisory lock") == true, "\(String(describing: leaderEnd))")
                let workerEnd = try ended(worker, "update jobs set done = true where id = 1")
                #expect(workerEnd?.sqlState == "08006" && workerEnd?.message?.contains("FOR UPDATE SKIP LOCKED") == true, "\(String(describing: workerEnd))")
                let namedEnd = try ended(named, "update jobs set done = true where id = 2")
                #expect(namedEnd?.sqlState == "08006" && namedEnd?.message?.contains("FOR UPDATE SKIP LOCKED") == true, "\(String(describing: namedEnd))")
                // The others go on; the lock and the job are free for whoever takes them now.
                #expect(completed(try former.query("select 1")) == ["SELECT 1"])
                #expect(completed(try loser.query("select 1")) == ["SELECT 1"])
                #expect(completed(try plain.query("update jobs set note = 'plain again' where id = 4")) == ["UPDATE 1"])
                #expect(completed(try plain.query("commit")) == ["COMMIT"])
                let next = try session()
                #expect(try next.query("select pg_try_advisory_lock(42)").firstValue == "t")
                #expect(completed(try next.query("begin")) == ["BEGIN"])
                #expect(try next.query("select id from jobs order by id limit 1 for update skip locked").firstValue == "1")
                #expect(try next.query("select id from jobs where id between 2 and 3 order by id limit 1 for update skip locked").firstValue == "2")
                #expect(completed(try next.query("rollback")) == ["ROLLBACK"])
                // The worker's transaction rolled back on every backend left.
                let rows = "select string_agg(id || ':' || done || ':' || coalesce(note, ''), ',' order by id) from jobs"
                for s in servers.dropFirst() {
                    let rolledBack = try await eventually(10) { try s.psql(rows) == "1:false:,2:false:,3:false:,4:false:plain again,5:false:" }
                    let now = try s.psql(rows)
                    #expect(rolledBack, "\(s.name): \(now)")
                }
                #expect(registry.online().map(\.id) == ["db2", "db3"])
            }
        }
    }

    /// The same under load, as applications run it: 6 workers taking jobs with `SKIP LOCKED` and 3
    /// electors taking turns with `pg_try_advisory_lock()` through three backends, a backend stopped
    /// (immediate shutdown) or frozen (SIGSTOP) once a tenth of the jobs are done; sessions that
    /// lose their connection reconnect (`Scripts/job_queue_faults.py`). No worker finds its job taken
    /// by another while it held it, no elector finds the lock it led with gone, every job is done once,
    /// and the two backends left stay online and identical. A follower's loss costs no session its
    /// connection; the lead's ends those holding its locks (before, the lead's loss had two workers
    /// mark one job each and an elector find its lock gone).
    @Test(arguments: [("stop", 0), ("stop", 2), ("freeze", 2)])
    func aJobQueueAndLeaderElectionGoThroughABackendFailing(fault: String, victim: Int) async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers, config: "[replication]\nfollower_timeout = 2\n") { proxy in
                let jobs = 400
                let dsn = proxy.connectionString()
                let name = servers[victim].name
                let watched = servers[victim == 1 ? 2 : 1]
                async let run = runBlocking {
                    try Clients.pythonScript("job_queue_faults.py", [dsn, "6", "\(jobs)", "3", victim == 0 ? "lead" : "follower"], timeout: .seconds(200))
                }
                let registry = proxy.server.context.registry
                defer { if fault == "freeze" { TimingSensitive.BackendFaultTests.signalTree(servers[victim], SIGCONT) } }
                let (failed, doneAtFault) = try await runBlocking { () throws -> (Bool, Int) in
                    // Up to 60 s for a tenth of the jobs (the table appears once the script has made it).
                    func done() -> Int { Int((try? watched.psql("select count(*) from jobs where taken")) ?? "") ?? 0 }
                    guard eventuallyBlocking(60, { done() >= jobs / 10 }) else { return (false, done()) }
                    if fault == "freeze" { TimingSensitive.BackendFaultTests.signalTree(servers[victim], SIGSTOP) } else { try servers[victim].stop(mode: .immediate) }
                    let atFault = done()
                    return (eventuallyBlocking(30) { registry.status(of: name) == .failed }, atFault)
                }
                let out = try await run
                if fault == "freeze" { TimingSensitive.BackendFaultTests.signalTree(servers[victim], SIGCONT) }
                #expect(failed && doneAtFault < jobs, "\(name) was not hit and failed in the middle of the run (\(doneAtFault) jobs done at the fault): \(out.report)")
                #expect(out.exitCode == 0 && out.stdoutLines.last == "PASSED", "\(out.report)")
                let left = servers.indices.filter { $0 != victim }
                #expect(registry.online().map(\.id) == left.map { servers[$0].name }, "\(registry.online().map(\.id))")
                #expect(Set(try Consistency.checksums(left.map { servers[$0] })).count == 1)
            }
        }
    }
}
