import Foundation
import LocalCluster
import State
import Testing
import Wire
import TestSupport

/// Three real backends behind the proxy: every statement reaches all of them, commits are voted,
/// and a backend that disagrees or dies is taken out while clients carry on.
@Suite struct ReplicationTests {
    @Test func pgbenchWithEightClientsInEveryModeLeavesThreeIdenticalBackends() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                let port = proxy.port
                let initialise = try await runBlocking { try Clients.pgbench(port: port, ["-i", "-s", "1", "-q"]) }
                #expect(initialise.exitCode == 0, "\(initialise.report)")
                for mode in ["simple", "extended", "prepared"] {
                    let run = try await runBlocking { try Clients.pgbench(port: port, ["-M", mode, "-c", "8", "-j", "2", "-T", "20", "-n"]) }
                    #expect(run.exitCode == 0, "mode \(mode): \(run.report)")
                    #expect(run.stdout.contains("number of failed transactions: 0 "), "mode \(mode): \(run.report)")
                }
                let sums = try Consistency.checksums(servers)
                #expect(sums[0].contains("pgbench_history:"))
                #expect(Set(sums).count == 1, "backends differ: \(sums)")
                for s in servers { #expect(try Consistency.preparedCount(s) == 0) }
                #expect(proxy.server.context.registry.online().count == 3)
            }
        }
    }

    @Test func stoppingTheLeadDuringPgbenchFailsNoTransaction() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                let port = proxy.port
                #expect(try await runBlocking { try Clients.pgbench(port: port, ["-i", "-s", "1", "-q"]) }.exitCode == 0)
                // pgbench and the lead's stop 4 s into it both run off the cooperative pool, so the stop
                // comes while pgbench runs however late this test's steps resume on a busy run.
                let lead = servers[0]
                let stop = BackgroundRun {
                    usleep(4_000_000)
                    try lead.stop(mode: .immediate)
                }
                let run = try await runBlocking { try Clients.pgbench(port: port, ["-M", "extended", "-c", "8", "-j", "2", "-T", "10", "-n"]) }
                try await stop.value()
                #expect(run.exitCode == 0, "\(run.report)")
                #expect(run.stdout.contains("number of failed transactions: 0 "), "\(run.report)")
                #expect(proxy.server.context.registry.status(of: "db1") == .failed)
                let sums = try Consistency.checksums(Array(servers[1...]))
                #expect(sums[0] == sums[1], "surviving backends differ: \(sums)")
                for s in servers[1...] { #expect(try Consistency.preparedCount(s) == 0) }
            }
        }
    }

    @Test func aBackendThatRefusesWhatTheOthersAcceptIsFailedAndTheClientCommits() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                let conn = proxy.connectionString()
                #expect(try Clients.psql(conn, ["-c", "create table t (id int primary key, v int)"]).exitCode == 0)
                // Only db3 has this constraint: the statement fails there and nowhere else.
                try servers[2].psql("alter table t add constraint small check (v < 100)")
                let out = try Clients.psql(conn, ["-v", "ON_ERROR_STOP=1", "-c", "begin", "-c", "insert into t values (1, 500)", "-c", "commit"])
                #expect(out.exitCode == 0, "\(out.report)")
                #expect(out.stdout.contains("COMMIT"), "\(out.report)")
                #expect(proxy.server.context.registry.status(of: "db3") == .failed)
                #expect(try servers[0].psql("select v from t") == "500")
                #expect(try servers[1].psql("select v from t") == "500")
                #expect(try servers[2].psql("select count(*) from t") == "0")
                // The session goes on with the two that agree.
                let after = try Clients.psql(conn, ["-At", "-c", "insert into t values (2, 7)", "-c", "select count(*) from t"])
                #expect(after.stdoutLines.last == "2", "\(after.report)")
                #expect(try servers[2].psql("select count(*) from t") == "0")
            }
        }
    }

    @Test func theVoteRollsBackWhenMostBackendsCannotPrepare() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                let conn = proxy.connectionString()
                let setup = try Clients.psql(conn, ["-v", "ON_ERROR_STOP=1", "-c",
                    "create table p (id int primary key); create table c (pid int references p (id) deferrable initially deferred)"])
                #expect(setup.exitCode == 0, "\(setup.report)")
                // db1 lacks the deferred foreign key: PREPARE succeeds there and fails on db2 and db3.
                try servers[0].psql("alter table c drop constraint c_pid_fkey")
                // The same as an autocommit write: wrapped and voted like COMMIT.
                let single = try Clients.psql(conn, ["-c", "insert into c values (7)"])
                #expect(single.stderr.contains("violates foreign key constraint"), "\(single.report)")
                #expect(proxy.server.context.registry.status(of: "db1") == .failed)
                let out = try Clients.psql(conn, ["-c", "begin", "-c", "insert into c values (42)", "-c", "commit"])
                #expect(out.stderr.contains("violates foreign key constraint"), "\(out.report)")
                // More failures than successes: rolled back, and the one that prepared is taken out.
                #expect(proxy.server.context.registry.status(of: "db1") == .failed)
                for s in servers {
                    #expect(try s.psql("select count(*) from c") == "0")
                    #expect(try Consistency.preparedCount(s) == 0)
                }
            }
        }
    }

    @Test func nonDeterministicSQLIsMadeIdenticalOrRefusedByName() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                let script = """
                create table events (id serial primary key, n int generated always as identity, at timestamptz, d date, lt timestamp, note text);
                insert into events (at, d, lt, note) values (now(), current_date, localtimestamp, 'a'), (current_timestamp, current_date, localtimestamp, 'b');
                insert into events (at, lt, note) values (current_timestamp(6), localtimestamp(5), 'precise: ' || current_time(6) || ' ' || localtime(4));
                insert into events (at, lt, note) values (timestamp(6) with time zone 'now', timestamp(4) 'now', 'typed: ' || time(5) 'now');
                begin;
                insert into events (at, d, lt, note) select transaction_timestamp(), current_date, localtimestamp, 'c' || g from generate_series(1, 3) g;
                savepoint s1;
                insert into events (at, note) values (now(), 'rolled back to savepoint');
                rollback to savepoint s1;
                update events set note = note || '!' where id > 1 returning id, at;
                commit;
                create temp table scratch as select * from events;
                insert into events (at, note) select at, 'from temp' from scratch where id = 1 order by id;
                \\copy events (at, note) from stdin
                2020-01-01 00:00:00+00\tcopied
                \\.
                select random();
                update events set at = clock_timestamp();
                select gen_random_uuid();
                create table bad (t timestamptz default now());
                insert into bad default values;
                select count(*) from events;
                """
                let out = try Clients.psql(proxy.connectionString(), ["-At"], input: script)
                #expect(out.exitCode == 0, "\(out.report)")
                // Reads of per-backend values are the lead's alone; writes with them are refused.
                #expect(!out.stderr.contains("pgchorus refuses random()"), "\(out.report)")
                #expect(out.stderr.contains("pgchorus refuses clock_timestamp()"), "\(out.report)")
                // The refusal's DO block leaves no context line of its own.
                #expect(!out.stderr.contains("inline_code_block"), "\(out.report)")
                #expect(!out.stderr.contains("pgchorus refuses gen_random_uuid()"), "\(out.report)")
                #expect(out.stdoutLines.contains { $0.count == 36 && $0.filter { $0 == "-" }.count == 4 }, "a uuid: \(out.report)")
                // A volatile default is made identical, not refused (`DeterministicValues`).
                #expect(!out.stderr.contains("pgchorus refuses now()"), "\(out.report)")
                #expect(out.stdoutLines.last == "9", "\(out.report)")
                let sums = try Consistency.checksums(servers)
                #expect(Set(sums).count == 1, "backends differ: \(sums)")
                #expect(proxy.server.context.registry.online().count == 3)
                for server in servers {
                    #expect(try server.psql("select count(*) from pg_tables where tablename = 'bad'") == "1")
                }
            }
        }
    }

    /// Cancels `client`'s statement through the proxy until an answer waits (the first cancel may come
    /// before pgchorus holds the statement); whether one came within 10 s. Blocking: for a test's timed
    /// steps, run on a thread of their own (`runBlocking`) — Swift's cooperative pool, two threads on
    /// two cores, may be held for seconds by other tests' blocking calls, and a step meant 300 ms after
    /// another then comes past the 10 s after which pgchorus gives up on a wait for the turn.
    static func cancelUntilAnswered(_ client: RawPostgresClient, port: Int) throws -> Bool {
        for _ in 0..<50 {
            try client.cancel(port: port)
            Thread.sleep(forTimeInterval: 0.2)
            if client.bytesWaiting() > 0 { return true }
        }
        return false
    }

    /// Reads the answer of B, the turn's holder whose statement waited on the lead while another
    /// transaction committed there, and ends B's transaction: on a loaded host the order may cancel the
    /// statement or roll the transaction back at its vote (40001) rather than let that commit wait
    /// longer on a follower for it — never anything else, and never half of it. Whether B committed.
    static func holderCommitsOrGets40001(_ b: RawPostgresClient, sourceLocation: SourceLocation = #_sourceLocation) throws -> Bool {
        let bDone = try b.readUntilReady()
        let bState = bDone.compactMap(\.errorState).first
        #expect(bState == nil || bState == "40001", "\(bDone)", sourceLocation: sourceLocation)
        let bCommit = try b.query(bState == nil ? "COMMIT" : "ROLLBACK")
        let commitState = bCommit.compactMap(\.errorState).first
        #expect(commitState == nil || (bState == nil && commitState == "40001"), "\(bCommit)", sourceLocation: sourceLocation)
        return bState == nil && commitState == nil
    }

    /// The sequence turn's tests: a SERIAL table `s`, a table `r` with one row to lock, and `count`
    /// clients logged in through the proxy.
    func turnClients(_ proxy: RunningProxy, count: Int) throws -> [RawPostgresClient] {
        let setup = try Clients.psql(proxy.connectionString(), ["-v", "ON_ERROR_STOP=1", "-c",
            "create table s (id serial primary key, v int); create table r (id int primary key, v int); insert into r values (1, 0)"])
        #expect(setup.exitCode == 0, "\(setup.report)")
        return try (0..<count).map { _ in
            let client = try RawPostgresClient(port: proxy.port, timeoutSeconds: 90)
            _ = try client.startup()
            return client
        }
    }

    /// `count` clients (`turnClients`): client `rowHolder` holds row 1 of `r` in a transaction, and
    /// client 1 (B, in a transaction) holds the sequence turn while its `INSERT … SELECT … FOR UPDATE`
    /// waits for that row on the lead.
    func turnHeldBehindARow(_ proxy: RunningProxy, _ servers: [LocalPostgresServer], count: Int, rowHolder: Int) async throws -> [RawPostgresClient] {
        let clients = try turnClients(proxy, count: count)
        try await waitBehindHeldRow(holder: clients[rowHolder], waiter: clients[1], statement: "INSERT INTO s (v) SELECT v FROM r WHERE id = 1 ORDER BY id FOR UPDATE",
                                    seenAs: "INSERT INTO s", on: servers[0])
        return clients
    }

    /// A lock cycle through the sequence turn: B holds the turn while its INSERT … SELECT … FOR UPDATE
    /// waits on A's row lock, and A's next insert waits for the turn. A looks after 1 s whether the
    /// holder waits for it on the lead (`pg_blocking_pids`): it does, so A's insert fails with ERROR
    /// 40P01 "deadlock detected" (not run, its transaction aborted everywhere, the session kept), and B
    /// goes on. (Until 2026-12-06 only the 10 s with no turn ending ended it: "while no other turn
    /// ended"; later that day the whole session was ended with FATAL.)
    @Test func aLockCycleThroughTheSequenceTurnEndsTheWaiter() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                try await lockCycleThroughTheTurn(proxy, servers) { f in
                    // The cycle seen on the lead; or, when the lead could not be asked at all in 10 s (a
                    // connection refused or unanswered — once in a CI run on a loaded machine), the
                    // fallback's error, which then says so and why.
                    let seen = f.message?.hasPrefix("deadlock detected: the statement holding pgchorus' turn") == true
                    let unasked = f.message?.contains("while no other turn ended") == true
                        && f["D"]?.contains("The lead could not be asked whether the turn's holder waits for this session") == true
                    #expect(seen || unasked, "\(f)")
                }
            }
        }
    }

    /// The same cycle where the lead cannot be asked (the node's own user, `replication.resolver_user`,
    /// does not exist there): no look answers, so the 10 s with no turn ending end A's statement with
    /// 40P01, whose DETAIL says the lead could not be asked and why (in a CI run on a saturated machine
    /// the looks went unanswered once, and the error did not say so); B goes on, the backends alike.
    @Test func aLockCycleTheLeadCannotBeAskedAboutEndsTheWaiterAndSaysWhy() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers, config: Self.resolvingAs("pgchorus_no_such_role")) { proxy in
                try await lockCycleThroughTheTurn(proxy, servers) { f in
                    #expect(f.message?.contains("while no other turn ended") == true, "\(f)")
                    #expect(f["D"]?.contains("The lead could not be asked whether the turn's holder waits for this session") == true, "\(f)")
                    #expect(f["D"]?.contains("pgchorus_no_such_role") == true, "\(f)")
                }
            }
        }
    }

    /// No cycle the lead can see: B holds the turn while its insert waits on C's row lock, and A, in a
    /// transaction that holds nothing B waits for, waits for the turn. Every look answers "no"; after
    /// 10 s with no turn ending A's statement fails with 40P01 from the fallback, whose DETAIL says how
    /// many times the lead said the holder does not wait for A (so an operator can tell a lock cycle
    /// the lead could not see from one it was never asked about). C ends, B commits, the backends alike.
    @Test func aWaitTheLeadSaysIsNoLockCycleEndsAfterTenSecondsAndSaysSo() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let clients = try await turnHeldBehindARow(proxy, servers, count: 3, rowHolder: 2)
                let (a, b, c) = (clients[0], clients[1], clients[2])
                #expect(try a.query("BEGIN").allSatisfy { $0.errorState == nil })
                let aInsert = try await runBlocking { try a.query("INSERT INTO s (v) VALUES (2)") }
                let failure = aInsert.first { $0.errorState != nil }
                #expect(failure?.errorState == "40P01", "\(aInsert)")
                if case let .errorResponse(f)? = failure {
                    #expect(f.message?.contains("while no other turn ended") == true, "\(f)")
                    #expect(f["D"]?.contains("times that the turn's holder does not wait for this session's locks") == true, "\(f)")
                    #expect(f.severity == "ERROR", "\(f)")
                }
                #expect(try a.query("ROLLBACK").allSatisfy { $0.errorState == nil })
                #expect(try c.query("ROLLBACK").allSatisfy { $0.errorState == nil })
                try holderCommitsAlone(b, proxy, servers)
            }
        }
    }

    /// The same wait with no cycle, where the lead answers the first looks and then cannot be asked
    /// (the node's own user may no longer log in there, its kept connection terminated): A's statement
    /// fails after 10 s with 40P01, and the DETAIL says both — how many times the lead said the holder
    /// does not wait for A, and how many times and why it could not be asked (on a saturated machine a
    /// look may time out between answered ones; the DETAIL said only the latter). On a host loaded
    /// enough that no look is answered within 6 s of A's wait, the scene did not happen and is played
    /// once more on fresh servers.
    @Test func aWaitWhoseLooksStopBeingAnsweredSaysBoth() async throws {
        try await playedUntilItHappens(attempts: 2) { try await looksStopBeingAnswered(lastAttempt: $0) }
    }

    /// A node whose own connections (`replication.resolver_user`: the looks for a lock cycle, the
    /// resyncs) log in as `role`, its health checks as `postgres`.
    static func resolvingAs(_ role: String) -> String {
        """
        [replication]
        resolver_user = "\(role)"

        [health_check]
        user = "postgres"
        """
    }

    /// Plays `scene` on fresh servers until its scenario happens (it returns true), at most `attempts`
    /// times; the last attempt (`scene`'s argument true) checks everything whatever happened. For
    /// scenes a saturated host may not let happen (a cancel or a look landing seconds late).
    func playedUntilItHappens(attempts: Int, _ scene: (_ lastAttempt: Bool) async throws -> Bool) async throws {
        for attempt in 1...attempts {
            if try await scene(attempt == attempts) { return }
        }
    }

    /// False, and nothing checked, when no look was answered in time and `lastAttempt` is false.
    func looksStopBeingAnswered(lastAttempt: Bool) async throws -> Bool {
        let played = ManagedAtomicFlag()
        try await withPostgresServers(count: 2) { servers in
            for server in servers { _ = try server.psql("create role pgchorus_looker login superuser") }
            try await withProxy(backends: servers, config: Self.resolvingAs("pgchorus_looker")) { proxy in
                let clients = try await turnHeldBehindARow(proxy, servers, count: 3, rowHolder: 2)
                let (a, b, c) = (clients[0], clients[1], clients[2])
                #expect(try a.query("BEGIN").allSatisfy { $0.errorState == nil })
                let sent = Date()
                try a.send(.query("INSERT INTO s (v) VALUES (2)"))
                // Once a look has been answered on the lead (its kept connection idle after the look's
                // query), the lead stops letting the node's user in and ends that connection.
                let answered = try await runBlocking {
                    for _ in 0..<40 where Date().timeIntervalSince(sent) < 6 {
                        if try servers[0].psql("select count(*) from pg_stat_activity where application_name = 'pgchorus-sequences' and state = 'idle' and query like 'WITH RECURSIVE blockers%'") == "1" { return true }
                        Thread.sleep(forTimeInterval: 0.2)
                    }
                    return false
                }
                _ = try servers[0].psql("alter role pgchorus_looker nologin")
                _ = try servers[0].psql("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'pgchorus-sequences'")
                if !answered, !lastAttempt { return }
                played.set()
                #expect(answered, "a look was answered on the lead within 6 s")
                let aInsert = try a.readUntilReady()
                let failure = aInsert.first { $0.errorState != nil }
                #expect(failure?.errorState == "40P01", "\(aInsert)")
                if case let .errorResponse(f)? = failure {
                    #expect(f.message?.contains("while no other turn ended") == true, "\(f)")
                    #expect(f["D"]?.contains("times that the turn's holder does not wait for this session's locks") == true, "\(f)")
                    #expect(f["D"]?.contains("It could not be asked") == true && f["D"]?.contains("not permitted to log in") == true, "\(f)")
                }
                #expect(try a.query("ROLLBACK").allSatisfy { $0.errorState == nil })
                #expect(try c.query("ROLLBACK").allSatisfy { $0.errorState == nil })
                try holderCommitsAlone(b, proxy, servers)
            }
        }
        return played.isSet
    }

    /// B, the turn's holder behind the row, goes on once the row is let go and commits: the backends
    /// alike, and `s` holds B's one row (the value 0 it read), nothing of the waiter's.
    func holderCommitsAlone(_ b: RawPostgresClient, _ proxy: RunningProxy, _ servers: [LocalPostgresServer],
                            sourceLocation: SourceLocation = #_sourceLocation) throws {
        let bDone = try b.readUntilReady()
        #expect(bDone.allSatisfy { $0.errorState == nil }, "\(bDone)", sourceLocation: sourceLocation)
        #expect(try b.query("COMMIT").allSatisfy { $0.errorState == nil }, sourceLocation: sourceLocation)
        try expectBackendsInStep(proxy, servers)
        #expect(try servers[0].psql("select string_agg(v::text, ',') from s") == "0", sourceLocation: sourceLocation)
    }

    /// The scene of the two lock-cycle tests above: A holds a row, B (in a block) holds the turn while its insert
    /// waits for that row on the lead, A's insert waits for the turn. A's insert must fail with an
    /// ERROR 40P01 (`check` looks at it further), A's block aborted and rolled back; then B goes on and
    /// commits, the backends alike, and the looks' connection is gone.
    func lockCycleThroughTheTurn(_ proxy: RunningProxy, _ servers: [LocalPostgresServer],
                                 check: (ErrorFields) -> Void) async throws {
        let clients = try await turnHeldBehindARow(proxy, servers, count: 2, rowHolder: 0)
        let (a, b) = (clients[0], clients[1])
        let aSecond = try await runBlocking { try a.query("INSERT INTO s (v) VALUES (2)") }
        let failure = aSecond.first { $0.errorState != nil }
        #expect(failure?.errorState == "40P01", "\(aSecond)")
        if case let .errorResponse(f)? = failure {
            check(f)
            // As PostgreSQL's own deadlock victim: the statement fails, the session goes on.
            #expect(f.severity == "ERROR", "\(f)")
        }
        #expect(aSecond.last == .readyForQuery(.failed), "\(aSecond)")
        #expect(try a.query("ROLLBACK").allSatisfy { $0.errorState == nil })
        try holderCommitsAlone(b, proxy, servers)
        // The looks' connection went with the wait: nothing of the node's stays in the database (it
        // would stand in the way of a DROP DATABASE).
        #expect(try await eventually(10) {
            try servers[0].psql("select count(*) from pg_stat_activity where application_name = 'pgchorus-sequences'") == "0"
        })
    }

    /// The same cycle through a third session: B holds the turn while its insert waits on C's row lock,
    /// C's UPDATE waits on A's, and A's insert waits for the turn. The holder waits for A through C
    /// (the closure of `pg_blocking_pids`): A is ended with 40P01 "deadlock detected" (its transaction
    /// rolled back everywhere), and C and then B go on. (Seen first in an upsert workload: three
    /// sessions updating counters and upserting into a SERIAL table stalled 10 s at each such cycle.)
    @Test func aLockCycleThroughTheSequenceTurnAndAThirdSessionEndsTheWaiter() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let clients = try turnClients(proxy, count: 3)
                let (a, b, c) = (clients[0], clients[1], clients[2])
                #expect(try a.query("INSERT INTO r VALUES (2, 0)").allSatisfy { $0.errorState == nil })
                try await waitBehindHeldRow(holder: c, waiter: b, statement: "INSERT INTO s (v) SELECT v FROM r WHERE id = 1 ORDER BY id FOR UPDATE",
                                            seenAs: "INSERT INTO s", on: servers[0])
                #expect(try a.query("BEGIN; UPDATE r SET v = 2 WHERE id = 2").allSatisfy { $0.errorState == nil })
                try c.send(.query("UPDATE r SET v = 3 WHERE id = 2"))
                let lead = servers[0]
                let bothWait = try await runBlocking {
                    try eventuallyBlocking(30) {
                        try lead.psql("select count(*) from pg_stat_activity where wait_event_type = 'Lock'") == "2"
                    }
                }
                #expect(bothWait, "B and C wait on the lead")
                let aSecond = try await runBlocking { try a.query("INSERT INTO s (v) VALUES (2)") }
                let failure = aSecond.first { $0.errorState != nil }
                #expect(failure?.errorState == "40P01", "\(aSecond)")
                if case let .errorResponse(f)? = failure {
                    #expect(f.message?.hasPrefix("deadlock detected: the statement holding pgchorus' turn") == true, "\(f)")
                    // As PostgreSQL's own deadlock victim: the statement fails, the session goes on.
                    #expect(f.severity == "ERROR", "\(f)")
                }
                #expect(aSecond.last == .readyForQuery(.failed), "\(aSecond)")
                #expect(try a.query("ROLLBACK").allSatisfy { $0.errorState == nil })
                #expect(try c.readUntilReady().allSatisfy { $0.errorState == nil })
                #expect(try c.query("COMMIT").allSatisfy { $0.errorState == nil })
                let committed = try Self.holderCommitsOrGets40001(b)
                try expectBackendsInStep(proxy, servers)
                #expect(try servers[0].psql("select string_agg(v::text, ',') from s") == (committed ? "1" : ""))
                #expect(try servers[0].psql("select string_agg(id || '=' || v, ',' order by id) from r") == "1=1,2=3")
            }
        }
    }

    /// The same cycle through a session-level advisory lock: B holds the turn while its statement waits
    /// on the lead for A's session lock, and A's insert in a transaction waits for the turn. Aborting
    /// A's transaction would not let a session lock go, so A's session is ended (FATAL 40P01) — B then
    /// goes on. (Answering A with an ERROR, as a cycle through its transaction's locks is, left B
    /// waiting.)
    @Test func aLockCycleThroughASessionLockEndsTheWaitersSession() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let clients = try turnClients(proxy, count: 2)
                let (a, b) = (clients[0], clients[1])
                #expect(try a.query("SELECT pg_advisory_lock(99)").allSatisfy { $0.errorState == nil })
                #expect(try b.query("BEGIN").allSatisfy { $0.errorState == nil })
                try b.send(.query("SELECT nextval('s_id_seq'), pg_advisory_lock(99)"))
                let lead = servers[0]
                let waits = try await runBlocking {
                    try eventuallyBlocking(30) { try lead.psql("select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like 'SELECT nextval%'") == "1" }
                }
                #expect(waits, "B waits for A's session lock under the turn")
                #expect(try a.query("BEGIN").allSatisfy { $0.errorState == nil })
                let aSecond = try await runBlocking { try a.send(.query("INSERT INTO s (v) VALUES (2)")); return try a.readUntilClosed() }
                let failure = aSecond.first { $0.errorState != nil }
                #expect(failure?.errorState == "40P01", "\(aSecond)")
                if case let .errorResponse(f)? = failure { #expect(f.severity == "FATAL", "\(f)") }
                let bDone = try b.readUntilReady()
                #expect(bDone.allSatisfy { $0.errorState == nil }, "\(bDone)")
                #expect(try b.query("COMMIT").allSatisfy { $0.errorState == nil })
                #expect(try b.query("SELECT pg_advisory_unlock(99)").allSatisfy { $0.errorState == nil })
                try expectBackendsInStep(proxy, servers)
            }
        }
    }

    /// A client cancels its statement while it waits inside pgchorus for the sequence turn (held by
    /// another session's insert waiting on a row lock): the statement is answered with 57014 and never
    /// runs, as PostgreSQL ends a statement waiting for a lock, and the session goes on. (Until
    /// 2026-12-06 the cancel reached only the idle backends and was lost: the insert ran once the turn came.)
    @Test func aCancelWhileWaitingForTheSequenceTurnEndsTheStatement() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let clients = try await turnHeldBehindARow(proxy, servers, count: 3, rowHolder: 0)
                let (a, b, c) = (clients[0], clients[1], clients[2])
                #expect(c.keyData != nil, "BackendKeyData at startup")
                try c.send(.query("INSERT INTO s (v) VALUES (7)"))
                // (Sent again until answered: the first may come before the session holds the insert.)
                let port = proxy.port
                let answered = try await runBlocking { try Self.cancelUntilAnswered(c, port: port) }
                #expect(answered, "the cancel ended the statement waiting for the turn")
                #expect(try a.query("COMMIT").allSatisfy { $0.errorState == nil })
                let reply = try c.readUntilReady()
                #expect(reply.compactMap(\.errorState) == ["57014"], "\(reply)")
                #expect(reply.last == .readyForQuery(.idle), "\(reply)")
                _ = try Self.holderCommitsOrGets40001(b)
                #expect(try c.query("SELECT count(*) FROM s WHERE v = 7").firstValue == "0")
                try expectBackendsInStep(proxy, servers)
            }
        }
    }

    /// A REPEATABLE READ transaction whose first statement waits for the turn more than a second:
    /// the look for a lock cycle must not take the transaction's snapshot on the lead alone (it is
    /// asked on a connection of the node's own). A row committed meanwhile is counted alike everywhere.
    ///
    /// On a host loaded enough that C's commit and B's statement take longer than A's 10 s, the node
    /// ends A's wait as a likely lock cycle ("while no other turn ended", 40P01) before the row
    /// commits: the scenario did not happen, and it is played once more on fresh servers (two clean-
    /// clone CI runs of 2026-12-07 took 132 and 215 s for this test's 6 s and ended so).
    @Test func aRepeatableReadWaiterForTheTurnTakesItsSnapshotEverywhereAlike() async throws {
        try await playedUntilItHappens(attempts: 2) { try await repeatableReadWaiterScenario(lastAttempt: $0) }
    }

    /// False when A's wait was ended by the 10 s rule and `lastAttempt` is false (nothing checked).
    func repeatableReadWaiterScenario(lastAttempt: Bool) async throws -> Bool {
        let played = ManagedAtomicFlag()
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let clients = try turnClients(proxy, count: 4)
                let (a, b, c, d) = (clients[0], clients[1], clients[2], clients[3])
                try await waitBehindHeldRow(holder: c, waiter: b, statement: "INSERT INTO s (v) SELECT v FROM r WHERE id = 1 ORDER BY id FOR UPDATE",
                                            seenAs: "INSERT INTO s", on: servers[0])
                #expect(try a.query("BEGIN ISOLATION LEVEL REPEATABLE READ").allSatisfy { $0.errorState == nil })
                // A waits for the turn through two looks for a lock cycle; then a row is committed (timed
                // on a thread of its own: C must commit well within A's 10 s, see `cancelUntilAnswered`).
                let (dDone, cDone) = try await runBlocking {
                    try a.send(.query("INSERT INTO s (v) SELECT count(*) FROM r"))
                    Thread.sleep(forTimeInterval: 2.5)
                    return (try d.query("INSERT INTO r VALUES (2, 0)"), try c.query("COMMIT"))
                }
                #expect(dDone.allSatisfy { $0.errorState == nil }, "\(dDone)")
                #expect(cDone.allSatisfy { $0.errorState == nil }, "\(cDone)")
                // B waited on the lead while D committed there: the order cancels its statement with
                // 40001 (the followers could not run it with the lead's snapshot), or — on a loaded host,
                // its write not on the follower within the order's 1 s — dooms its transaction (COMMIT
                // answered 40001), or it goes through. (Until 2026-12-07 the doom was not allowed for:
                // this test failed so inside full parallel runs, the backends identical.)
                let bCommitted = try Self.holderCommitsOrGets40001(b)
                let aDone = try a.readUntilReady()
                if !lastAttempt, aDone.firstError?.sqlState == "40P01", aDone.firstError?.message?.contains("while no other turn ended") == true {
                    return
                }
                played.set()
                #expect(aDone.allSatisfy { $0.errorState == nil }, "\(aDone)")
                #expect(try a.query("COMMIT").allSatisfy { $0.errorState == nil })
                try expectBackendsInStep(proxy, servers)
                #expect(try servers[0].psql("select string_agg(v::text, ',' order by id) from s") == (bCommitted ? "1,2" : "2"))
            }
        }
        return played.isSet
    }

    /// The client cancels the statement that holds the sequence turn while it waits on the lead for a
    /// row lock (psql's Ctrl-C on an insert into a SERIAL table): it gets 57014 as from PostgreSQL, and
    /// the turn goes at once to the insert waiting for it — the cancelled statement ran nowhere else.
    @Test func aClientCancelOfTheTurnHoldersStatementLetsTheTurnGo() async throws {
        _ = try await cancelTheTurnHolder(holdingFollowerSequence: false, lastAttempt: true)
    }

    /// The turn's holder ended on the lead with a timing outcome (a client's cancel), so it sets the
    /// followers' sequences to the lead's before it gives the turn back (`SequenceResync`), and that
    /// takes long (a session of the test's own holds the follower's sequence, as a loaded host would
    /// stall it). A transaction waiting for the turn meanwhile is not ended after 10 s as if in a lock
    /// cycle with the holder: the holder is on its way to giving the turn back, and the waiter goes
    /// through once it has. (A loaded CI host ended such a waiter with 40P01 "while no other turn
    /// ended": the resync queued behind the waiters' looks for a cycle, on one thread.)
    ///
    /// The scene needs B's cancel to end B's statement before A's 10 s have run out (the resync, which
    /// begins there, is what A must be seen to wait behind). On a host loaded enough that the cancel
    /// takes longer (a clean-clone CI run of 2026-12-07: A ended at its 10 s "while no other turn
    /// ended", B's statement still waiting on C's row), the scene did not happen and is played once
    /// more on fresh servers.
    @Test func aWaiterBehindALongSequenceResyncWaitsOn() async throws {
        try await playedUntilItHappens(attempts: 3) { try await cancelTheTurnHolder(holdingFollowerSequence: true, lastAttempt: $0) }
    }

    /// B holds the turn, its insert waiting on the lead for C's row lock; A's insert waits for the turn;
    /// B's client cancels its statement. With `holdingFollowerSequence` a session of the test's own holds
    /// the follower's sequence from the start past A's 10 s, and A is inside a transaction (where a wait
    /// for the turn may be ended after 10 s as a likely lock cycle); otherwise A's insert is autocommit.
    /// False, and nothing checked after the cancel, when the cancel ended B's statement only after 9 s
    /// of A's wait and `lastAttempt` is false (with `holdingFollowerSequence`: the scene did not happen).
    func cancelTheTurnHolder(holdingFollowerSequence holding: Bool, lastAttempt: Bool) async throws -> Bool {
        let played = ManagedAtomicFlag()
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let clients = try turnClients(proxy, count: 3)
                let (a, b, c) = (clients[0], clients[1], clients[2])
                let direct = holding ? try RawPostgresClient(port: servers[1].port, timeoutSeconds: 60) : nil
                if let direct {
                    _ = try direct.startup()
                    #expect(try direct.query("BEGIN; ALTER SEQUENCE s_id_seq CACHE 1").allSatisfy { $0.errorState == nil })
                }
                try await waitBehindHeldRow(holder: c, waiter: b, statement: "INSERT INTO s (v) SELECT v FROM r WHERE id = 1 ORDER BY id FOR UPDATE",
                                            seenAs: "INSERT INTO s", on: servers[0])
                if holding { #expect(try a.query("BEGIN").allSatisfy { $0.errorState == nil }) }
                // Timed on a thread of its own (see `cancelUntilAnswered`).
                let port = proxy.port
                let (aWaited, answered, answeredAfter, aWaitedOn, released) = try await runBlocking {
                    let aSent = Date()
                    try a.send(.query("INSERT INTO s (v) VALUES (2)"))
                    Thread.sleep(forTimeInterval: holding ? 4 : 0.3)
                    let aWaited = a.bytesWaiting() == 0
                    let answered = try Self.cancelUntilAnswered(b, port: port)
                    let answeredAfter = Date().timeIntervalSince(aSent)
                    // With the follower's sequence held: past A's 10 s, still waiting, not ended; then the
                    // sequence is let go (well within the resync's own 10 s, which began at the cancel).
                    var aWaitedOn = true
                    var released: [BackendMessage] = []
                    if let direct {
                        Thread.sleep(until: aSent.addingTimeInterval(11))
                        aWaitedOn = a.bytesWaiting() == 0
                        released = try direct.query("ROLLBACK")
                    }
                    return (aWaited, answered, answeredAfter, aWaitedOn, released)
                }
                if holding, !lastAttempt, answered, answeredAfter > 9 { return }
                played.set()
                #expect(aWaited, "A's insert waits for the turn B holds")
                #expect(answered, "the cancel ended B's statement")
                #expect(aWaitedOn, "A waits on while the holder sets the follower's sequences (B's statement ended \(answeredAfter) s into A's wait)")
                #expect(released.allSatisfy { $0.errorState == nil }, "\(released)")
                let bDone = try b.readUntilReady()
                #expect(bDone.compactMap(\.errorState) == ["57014"], "\(bDone)")
                #expect(bDone.last == .readyForQuery(.failed), "\(bDone)")
                if direct == nil {
                    // B's block is left open: A's insert goes through all the same, long before any fallback.
                    let aAnswered = try await runBlocking {
                        for _ in 0..<25 where a.bytesWaiting() == 0 { Thread.sleep(forTimeInterval: 0.2) }
                        return a.bytesWaiting() > 0
                    }
                    #expect(aAnswered, "A's insert got the turn once B's statement was cancelled")
                }
                let aDone = try a.readUntilReady()
                #expect(aDone.allSatisfy { $0.errorState == nil }, "\(aDone)")
                if holding { #expect(try a.query("COMMIT").allSatisfy { $0.errorState == nil }) }
                #expect(try b.query("ROLLBACK").allSatisfy { $0.errorState == nil })
                #expect(try c.query("COMMIT").allSatisfy { $0.errorState == nil })
                try expectBackendsInStep(proxy, servers)
                #expect(try servers[0].psql("select string_agg(v::text, ',') from s") == "2")
            }
        }
        return played.isSet
    }

    /// The same long wait for the turn, but the waiter is an autocommit INSERT: outside a transaction
    /// it holds no lock, so no cycle can pass through it. B holds the turn while its INSERT … SELECT …
    /// FOR UPDATE waits on C's row lock for longer than the 10 s; A waits on instead of being ended,
    /// and once C commits, B and then A go through.
    @Test func anAutocommitWaiterBehindALongTurnWaitsOnAndGoesThrough() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let clients = try turnClients(proxy, count: 3)
                let (a, b, c) = (clients[0], clients[1], clients[2])
                // A's insert is sent once B holds the turn (its INSERT waits on C's lock on the lead); C
                // commits 14 s later (off the pool, so never sooner: A's wait must outlast the 10 s after
                // which it used to be ended).
                try await waitBehindHeldRow(holder: c, waiter: b, statement: "INSERT INTO s (v) SELECT v FROM r WHERE id = 1 ORDER BY id FOR UPDATE",
                                            seenAs: "INSERT INTO s", on: servers[0])
                let aAnswer = try await runBlocking { () throws -> [BackendMessage] in
                    try a.send(.query("INSERT INTO s (v) VALUES (2)"))
                    usleep(14_000_000)
                    _ = try c.query("COMMIT")
                    return try a.readUntilReady()
                }
                #expect(aAnswer.allSatisfy { $0.errorState == nil } && aAnswer.contains(.commandComplete("INSERT 0 1")), "\(aAnswer)")
                let bDone = try b.readUntilReady()
                #expect(bDone.allSatisfy { $0.errorState == nil }, "\(bDone)")
                // B's statement waited on the lead while C committed there: on a loaded machine it may not
                // reach the follower before C's commit can wait no longer, and then its transaction rolls
                // back at its vote with 40001 (docs/replication.md), the one other answer that keeps the
                // backends identical. A's row is there either way.
                let bCommit = try b.query("COMMIT")
                let bState = bCommit.compactMap(\.errorState).first
                #expect(bState == nil || bState == "40001", "\(bCommit)")
                try expectBackendsInStep(proxy, servers)
                #expect(try servers[0].psql("select string_agg(v::text, ',' order by id) from s") == (bState == nil ? "1,2" : "2"), "B's COMMIT: \(bCommit)")
            }
        }
    }

    /// 8 pgbench clients insert 50 rows each into `table` (a SERIAL `id`, an int `k`): all 400 arrive
    /// and the backends end identical, every one online.
    static func insertsFromEightClientsStayIdentical(_ proxy: RunningProxy, _ servers: [LocalPostgresServer], into table: String,
                                                     sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let script = proxy.directory + "/\(table).sql"
        try "insert into \(table) (k) values (:client_id);\n".write(toFile: script, atomically: true, encoding: .utf8)
        let port = proxy.port
        let run = try await runBlocking { try Clients.pgbench(port: port, ["-c", "8", "-j", "2", "-t", "50", "-n", "-f", script]) }
        #expect(run.exitCode == 0, "\(run.report)", sourceLocation: sourceLocation)
        #expect(try servers[0].psql("select count(*) from \(table)") == "400", sourceLocation: sourceLocation)
        try expectBackendsInStep(proxy, servers, sourceLocation: sourceLocation)
    }

    /// Two backends behind one node whose catalog is loaded (a table `warm` created and written through it).
    static func withLoadedCatalog(_ body: (RunningProxy, [LocalPostgresServer]) async throws -> Void,
                                  sourceLocation: SourceLocation = #_sourceLocation) async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let warm = try Clients.psql(proxy.connectionString(), ["-v", "ON_ERROR_STOP=1", "-c", "create table warm (x int)",
                                                                       "-c", "insert into warm values (1)"])
                #expect(warm.exitCode == 0, "\(warm.report)", sourceLocation: sourceLocation)
                try await body(proxy, servers)
            }
        }
    }

    /// A session in a REPEATABLE READ transaction that began before another session's DDL loads the
    /// catalog (it is unknown once that DDL has ended): what it reads is its old snapshot, without the
    /// new SERIAL table, and is not kept for the node — inserts into the table take the turn and the
    /// ids are identical on every backend (they were not: the stale load was stored).
    @Test func aCatalogLoadInAnOldSnapshotIsNotKept() async throws {
        try await Self.withLoadedCatalog { proxy, servers in
            let old = try RawPostgresClient(port: proxy.port)
            defer { old.disconnect() }
            _ = try old.startup()
            #expect(try old.query("begin isolation level repeatable read").allSatisfy { $0.errorState == nil })
            #expect(try old.query("select count(*) from warm").allSatisfy { $0.errorState == nil })
            let ddl = try Clients.psql(proxy.connectionString(), ["-v", "ON_ERROR_STOP=1", "-c",
                "begin; create table s (id serial primary key, k int); commit;"])
            #expect(ddl.exitCode == 0, "\(ddl.report)")
            // The old snapshot's session makes the node load the catalog now.
            #expect(try old.query("select 1").allSatisfy { $0.errorState == nil })
            #expect(try old.query("select 2").allSatisfy { $0.errorState == nil })
            #expect(try old.query("commit").allSatisfy { $0.errorState == nil })
            try await Self.insertsFromEightClientsStayIdentical(proxy, servers, into: "s")
        }
    }

    /// A SERIAL table a migration creates in a DO block, after the node had loaded its catalog: the
    /// node loads it again (a DO block may change the catalog, as DDL does), so concurrent inserts
    /// take the turn and the ids are identical on every backend (they were not: the catalog said the
    /// table drew nothing).
    @Test func aSerialTableCreatedInADoBlockIsOrdered() async throws {
        try await Self.withLoadedCatalog { proxy, servers in
            let block = try Clients.psql(proxy.connectionString(), ["-v", "ON_ERROR_STOP=1", "-c",
                "do $$ begin if to_regclass('d') is null then create table d (id serial primary key, k int); end if; end $$"])
            #expect(block.exitCode == 0, "\(block.report)")
            try await Self.insertsFromEightClientsStayIdentical(proxy, servers, into: "d")
        }
    }

    @Test func serialAndIdentityInsertsFromManyClientsStayIdentical() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                let setup = try Clients.psql(proxy.connectionString(), ["-v", "ON_ERROR_STOP=1", "-c",
                    "create table items (id serial primary key, n bigint generated always as identity, client int, note text)"])
                #expect(setup.exitCode == 0, "\(setup.report)")
                let script = proxy.directory + "/insert.sql"
                try "insert into items (client, note) values (:client_id, 'x');\nselect nextval('items_id_seq');\n"
                    .write(toFile: script, atomically: true, encoding: .utf8)
                let port = proxy.port
                for mode in ["simple", "prepared"] {
                    let run = try await runBlocking { try Clients.pgbench(port: port, ["-M", mode, "-c", "8", "-j", "2", "-t", "100", "-n", "-f", script]) }
                    #expect(run.exitCode == 0, "\(run.report)")
                    #expect(run.stdout.contains("number of failed transactions: 0 "), "\(run.report)")
                }
                #expect(try servers[0].psql("select count(*) from items") == "1600")
                let sums = try Consistency.checksums(servers)
                #expect(Set(sums).count == 1, "backends differ: \(sums)")
                #expect(proxy.server.context.registry.online().count == 3)
                let seq = try servers.map { try $0.psql("select last_value from items_id_seq") }
                #expect(Set(seq).count == 1, "sequences differ: \(seq)")
            }
        }
    }
}
