import Foundation
import LocalCluster
import Testing
import TestSupport
import Wire

/// Volatile defaults and values made identical on every backend (`DeterministicValues`): an
/// application's schema with `DEFAULT gen_random_uuid()`, `DEFAULT now()`, triggers and views runs
/// through three real backends from psycopg2 and pgbench at once, and the backends stay identical.
/// (Heavy pgbench load: beside the fault tests, not beside each other.)
extension TimingSensitive {
@Suite(.serialized) struct VolatileDefaultsTests {
    /// Named cursors over per-backend reads (clock_timestamp(), random(), pg_backend_pid()) live on
    /// the lead alone and fail no backend; a named cursor over data runs everywhere as before.
    @Test func namedCursorsOverPerBackendReadsLiveOnTheLead() async throws {
        try await runClientCheck("orm_client.py", "cursors")
    }

    @Test func anOrmWorkloadWithVolatileDefaultsStaysIdentical() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                let dsn = proxy.connectionString()
                let schema = try await runBlocking { try Clients.pythonScript("orm_client.py", [dsn, "schema"]) }
                #expect(schema.exitCode == 0, "\(schema.report)")
                let custom = proxy.directory + "/orm.sql"
                try """
                \\set n random(1, 1000000000)
                insert into accounts (email) values ('pgbench-' || :client_id || '-' || :n) on conflict (email) do nothing;
                insert into posts (account_id, title) select id, 'pgbench' from accounts where email = 'pgbench-' || :client_id || '-' || :n order by id;
                update accounts set score = score + 1 where email = 'pgbench-' || :client_id || '-' || :n;
                insert into accounts (id, email, created_at) values (gen_random_uuid(), 'explicit-' || :client_id || '-' || :n, now()) on conflict do nothing;
                """.write(toFile: custom, atomically: true, encoding: .utf8)
                let port = proxy.port
                async let bench = runBlocking {
                    try Clients.pgbench(port: port, ["-n", "-M", "prepared", "-c", "4", "-j", "2", "-t", "50", "-f", custom])
                }
                let orm = try await runBlocking { try Clients.pythonScript("orm_client.py", [dsn, "orm"], timeout: .seconds(150)) }
                let pgbench = try await bench
                #expect(orm.exitCode == 0, "\(orm.report)")
                #expect(orm.stdoutLines.last == "PASSED orm", "\(orm.report)")
                #expect(pgbench.exitCode == 0, "\(pgbench.report)")
                #expect(pgbench.stdout.contains("number of failed transactions: 0"), "\(pgbench.report)")
                try expectBackendsInStep(proxy, servers)
                // The rows really got per-row values (not one constant), and pgbench's rows too.
                let pgbenchRows = try servers[0].psql("select count(*), count(distinct id) from accounts where email like 'pgbench-%'")
                #expect(pgbenchRows == "200|200", "pgbench's rows, each its own uuid: \(pgbenchRows)")
                // A direct connection (no pgchorus) gets PostgreSQL's own functions from the same defaults.
                let direct = try servers[2].psql("insert into accounts (email) values ('direct') returning id is not null and created_at > now() - interval '1 minute'")
                #expect(direct.hasPrefix("t"), "\(direct)")
            }
        }
    }

    /// Time literals in writes become the transaction's time; a per-row default that existing rows would
    /// get in each backend's physical order is refused with the way out; then that way works.
    @Test func timeLiteralsAndTheRefusalOfPerRowFillsOfExistingRows() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let script = """
                create table lits as select 'now'::timestamp as a, 'today'::date as b, timestamp 'tomorrow' as c, current_time(4) as d;
                create table stamped (id int, at timestamptz default 'now', day date default 'today', note text default 'now');
                alter table stamped add column local timestamp(3) default 'now';
                alter table stamped alter column at set default 'now';
                insert into stamped (id) values (1), (2);
                create table items (id int primary key);
                insert into items select generate_series(1, 50);
                alter table items add column ref uuid default gen_random_uuid();
                alter table items add column n serial;
                create sequence ids;
                create table numbered as select nextval('ids') as n, id from items;
                alter table items add column ref uuid;
                update items set ref = md5(id::text)::uuid;
                alter table items alter column ref set default gen_random_uuid();
                insert into items (id) values (51), (52);
                insert into items (id) select id + 100 from items;
                insert into items (id) select id + 100 from items order by id;
                insert into items (id, ref) select id + 1000, md5((id + 1000)::text)::uuid from items;
                select count(distinct ref) from items;
                """
                let out = try Clients.psql(proxy.connectionString(), ["-At"], input: script)
                #expect(out.exitCode == 0, "\(out.report)")
                #expect(out.stderr.contains("pgchorus refuses gen_random_uuid() in ALTER TABLE"), "\(out.report)")
                // A SERIAL added to existing rows numbers them in each backend's physical order: refused, with the way out.
                #expect(out.stderr.contains("pgchorus refuses SERIAL in ALTER TABLE … ADD"), "\(out.report)")
                #expect(out.stderr.contains("row_number() OVER (ORDER BY id)"), "\(out.report)")
                // So does a nextval() per row of a scan.
                #expect(out.stderr.contains("pgchorus refuses nextval() in CREATE TABLE … AS SELECT … FROM without ORDER BY"), "\(out.report)")
                // An untyped time default whose column type the statement does not say is refused, with the typed way.
                #expect(out.stderr.contains("in ALTER COLUMN … SET DEFAULT"), "\(out.report)")
                #expect(out.stderr.contains("SET DEFAULT 'now'::timestamptz"), "\(out.report)")
                #expect(out.stderr.contains("SET DEFAULT"), "the hint names the way: \(out.report)")
                #expect(out.stderr.contains("pgchorus refuses INSERT … SELECT … FROM without ORDER BY into items.ref"), "\(out.report)")
                #expect(out.stdoutLines.last == "208", "\(out.report)")
                #expect(Set(try Consistency.checksums(servers)).count == 1)
                #expect(proxy.server.context.registry.online().count == 2)
            }
        }
    }

    /// SERIAL ids given to the rows of an INSERT … SELECT in each backend's scan order: with the two
    /// backends' physical orders made to differ (an UPDATE that changes nothing, run on one of them
    /// alone), such an insert is refused — also right after the DDL that created its table, when the
    /// catalog is not loaded yet (a migration creating a table, then filling it) — while one row met by
    /// a unique key, one aggregate row and an ORDER BY pass; so is an UPDATE drawing nextval() for the
    /// rows a WHERE without a unique key meets, while one by its key passes; the backends stay identical.
    @Test func serialIdsOfAnUnorderedInsertSelectAreRefusedUnlessOneRowIsMet() async throws {
        try await withRowsInTwoOrders(table: "src") { servers, proxy in
                let out = try Clients.psql(proxy.connectionString(), ["-At"], input: """
                create table dst (id serial primary key, v text);
                insert into dst (v) select v from src;
                insert into dst (v) select v from src where v like 'v1%';
                insert into dst (v) select v from src where id = 3;
                insert into dst (v) select max(v) from src;
                insert into dst (v) select v from src order by id;
                create sequence inv;
                alter table src add column invoice bigint;
                update src set invoice = nextval('inv') where v like 'v1%';
                update src set invoice = nextval('inv') where id = 4;
                select count(*), count(distinct id) from dst;
                create table gone (id serial primary key, v text);
                with moved as (delete from src where id <= 3 or id > 17 returning *) insert into gone (v) select v from moved;
                with moved as (delete from src where id <= 3 or id > 17 returning *) insert into gone (v) select v from moved order by id;
                select string_agg(v, ',' order by id) from gone;
                """)
                #expect(out.exitCode == 0, "\(out.report)")
                // The archive pattern led by a WITH: the DELETE returns the rows in each backend's scan order.
                #expect(out.stderr.contains("pgchorus refuses INSERT … SELECT … FROM without ORDER BY into gone.id"), "\(out.report)")
                #expect(out.stdoutLines.last == "v1,v2,v3,v18,v19,v20", "\(out.report)")
                #expect(out.stderr.contains("pgchorus refuses nextval() in an UPDATE whose WHERE pins no unique key"), "\(out.report)")
                #expect(try servers[0].psql("select count(invoice) from src") == "1")
                let refusals = out.stderr.components(separatedBy: "pgchorus refuses INSERT … SELECT … FROM without ORDER BY into dst.id").count - 1
                #expect(refusals == 2, "\(out.report)")
                #expect(out.stderr.contains("WHERE id = $1"), "the hint names what passes: \(out.report)")
                #expect(out.stdoutLines.contains("22|22"), "\(out.report)")
                #expect(Set(try Consistency.checksums(servers)).count == 1)
                #expect(proxy.server.context.registry.online().count == 2)
        }
    }

    /// Reads that pick or aggregate rows in each backend's physical order (`LIMIT` without ORDER BY,
    /// `string_agg()` without one) are per-server answers: with the two backends' orders made to
    /// differ, they fail no backend — sent as a simple Query, and as a named prepared statement
    /// (pgbench `-M prepared`, whose first run goes to both backends). Such an aggregate in a write is
    /// refused; with its own ORDER BY it passes, and the backends stay identical.
    @Test func readsInPhysicalOrderFailNoBackendAndSuchAggregatesInWritesAreRefused() async throws {
        try await withRowsInTwoOrders(table: "q", and: "create table lists (id serial primary key, s text)") { servers, proxy in
                let out = try Clients.psql(proxy.connectionString(), ["-At"], input: """
                select id from q limit 1;
                select string_agg(v, ',') is not null from q;
                begin;
                select count(*) from q;
                select v from q offset 19;
                commit;
                insert into lists (s) select string_agg(v, ',') from q;
                update lists set s = (select array_agg(id)::text from q);
                insert into lists (s) select string_agg(v, ',' order by id) from q;
                insert into lists (s) select array_agg(distinct id)::text from q;
                select count(*) from lists;
                """)
                #expect(out.exitCode == 0, "\(out.report)")
                #expect(out.stderr.contains("pgchorus refuses string_agg() in a write without ORDER BY"), "\(out.report)")
                #expect(out.stderr.contains("pgchorus refuses array_agg() in a write without ORDER BY"), "\(out.report)")
                #expect(out.stdoutLines.last == "2", "\(out.report)")
                // A named statement parsed and run in one group (JDBC, asyncpg): its first run goes to both backends.
                let client = try RawPostgresClient(port: proxy.port)
                defer { client.disconnect() }
                _ = try client.startup()
                try client.send([.parse(.init(name: "first_q", query: "select id from q limit 1", parameterTypes: [])),
                                 .bind(.init(portal: "", statement: "first_q", parameterFormats: [], parameters: [], resultFormats: [0])),
                                 .execute(portal: "", maxRows: 0), .sync])
                let answer = try client.readUntilReady()
                #expect(answer.allSatisfy { $0.errorState == nil } && answer.contains { if case .dataRow = $0 { return true } else { return false } }, "\(answer)")
                #expect(proxy.server.context.registry.online().count == 2, "a backend was failed for a named statement's rows")
                let script = proxy.directory + "/limit.sql"
                try "select id from q limit 1;\nselect string_agg(v, ',') from q;\n".write(toFile: script, atomically: true, encoding: .utf8)
                let bench = try Clients.pgbench(port: proxy.port, ["-n", "-M", "prepared", "-c", "2", "-t", "5", "-f", script])
                #expect(bench.exitCode == 0, "\(bench.report)")
                #expect(proxy.server.context.registry.online().count == 2, "a backend was failed for its physical order")
                #expect(Set(try Consistency.checksums(servers)).count == 1)
        }
    }

    /// A REPEATABLE READ transaction whose first statement is a per-server answer: a read picked by
    /// physical order (`SELECT … LIMIT 1`, which goes to every backend inside a transaction, its rows
    /// uncompared), a per-backend value, a job queue's `SKIP LOCKED` take, an advisory lock, a cursor
    /// over a per-backend value (those four on the lead alone). Its snapshot starts there on every
    /// backend, so a commit of another session after it is unseen everywhere: where the statement goes
    /// to the lead alone, a read of the isolation level goes to every backend first in its turn of the
    /// order. (Without it the followers' snapshots started at the INSERT, after the other session's
    /// UPDATE: the follower copied 'changed', the lead 'v10', both online.) The session first runs a
    /// READ COMMITTED transaction the same way, from which it learns it need not do so while nothing
    /// changes the isolation level; then the level is set for the transaction, or as the session's
    /// default before a plain BEGIN.
    @Test(arguments: ["SELECT v FROM q LIMIT 1", "SELECT pg_backend_pid()",
                      "SELECT id FROM q WHERE id > 15 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                      "SELECT pg_try_advisory_xact_lock(7)", "DECLARE c CURSOR FOR SELECT random() FROM q"],
          [true, false])
    func aRepeatableReadSnapshotStartsAtItsFirstStatementOnEveryBackend(first: String, sessionDefault: Bool) async throws {
        try await withRowsInTwoOrders(table: "q", and: "create table copied (id int primary key, v text)") { servers, proxy in
            let a = try RawPostgresClient(port: proxy.port)
            defer { a.disconnect() }
            _ = try a.startup()
            let isolation = sessionDefault ? ["SET default_transaction_isolation = 'repeatable read'", "BEGIN"]
                : ["BEGIN", "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"]
            for sql in ["BEGIN", first, "COMMIT"] + isolation + [first] {
                #expect(try a.query(sql).allSatisfy { $0.errorState == nil }, "\(sql)")
            }
            let b = try Clients.psql(proxy.connectionString(), ["-At", "-v", "ON_ERROR_STOP=1", "-c", "update q set v = 'changed' where id = 10"])
            #expect(b.exitCode == 0, "\(b.report)")
            for sql in ["INSERT INTO copied SELECT id, v FROM q WHERE id = 10", "COMMIT"] {
                #expect(try a.query(sql).allSatisfy { $0.errorState == nil }, "\(sql)")
            }
            for server in servers { #expect(try server.psql("select v from copied") == "v10", "\(server.name)") }
            #expect(proxy.server.context.registry.online().count == 2)
            #expect(Set(try Consistency.checksums(servers)).count == 1)
        }
    }

    /// A job queue (psycopg2 workers taking jobs with `SELECT … FOR UPDATE SKIP LOCKED`, then marking
    /// them by key; pgbench doing the same in the extended and prepared protocols) through three
    /// backends: each backend would skip the locks held there and pick its own row, so the statement
    /// runs on the lead alone and its choice is every backend's. No backend is failed, every job is
    /// taken once, the backends stay identical; the one-statement form (`UPDATE … WHERE id = (SELECT
    /// … SKIP LOCKED)`), which wrote other rows on each backend with both online, is refused. Leader
    /// election by `pg_try_advisory_lock()` (which failed a follower that answered by its own
    /// sessions' locks) is answered by the lead alone; a try-lock inside a write is refused.
    @Test func aJobQueueTakingJobsWithSkipLockedStaysIdentical() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                let run = try Clients.pythonScript("job_queue.py", [proxy.connectionString(), "6", "40"], timeout: .seconds(150))
                #expect(run.exitCode == 0 && run.stdoutLines.last == "PASSED", "\(run.report)")
                let script = proxy.directory + "/take.sql"
                try """
                \\set w random(1, 1000000)
                begin;
                select id from jobs where not taken order by id limit 1 for update skip locked \\gset
                update jobs set taken = true, worker = :w where id = :id;
                end;
                """.write(toFile: script, atomically: true, encoding: .utf8)
                let more = try Clients.psql(proxy.connectionString(), ["-At", "-v", "ON_ERROR_STOP=1"],
                                            input: "insert into jobs (id) select g from generate_series(1001, 1400) g;")
                #expect(more.exitCode == 0, "\(more.report)")
                for mode in ["extended", "prepared"] {
                    let bench = try Clients.pgbench(port: proxy.port, ["-n", "-M", mode, "-c", "4", "-t", "40", "-f", script])
                    #expect(bench.exitCode == 0 && bench.stdout.contains("number of failed transactions: 0"), "\(mode): \(bench.report)")
                }
                #expect(try servers[0].psql("select count(*) from jobs where taken") == "560")
                #expect(proxy.server.context.registry.online().count == 3, "a backend was failed by the queue")
                #expect(Set(try Consistency.checksums(servers)).count == 1)
            }
        }
    }

    /// A job queue that takes its jobs inside a routine (`SELECT take_job()`, whose body takes a row
    /// `FOR UPDATE SKIP LOCKED` and marks it, or tries an advisory lock): each backend would answer by
    /// its own sessions' locks and mark another row — silently when the routine returns nothing the
    /// node compares. Such calls are refused with the way out, from the catalog, in the same session
    /// that created the routine, in the simple and the extended protocol; other routines run. A DO
    /// block doing the same is refused by its text.
    @Test func aRoutineThatTakesRowsBySkipLockedIsRefused() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let out = try Clients.psql(proxy.connectionString(), ["-At"], input: """
                create table jobs (id int primary key, taken boolean not null default false);
                insert into jobs (id) select generate_series(1, 5);
                create function take_job() returns void language plpgsql as $f$
                begin
                  update jobs set taken = true where id = (select id from jobs where not taken order by id limit 1 for update skip locked);
                end $f$;
                create function elect() returns boolean language sql as $f$ select pg_try_advisory_lock(7) $f$;
                create function count_jobs() returns bigint language sql as $f$ select count(*) from jobs $f$;
                select take_job();
                select 1 from elect();
                do $d$ begin update jobs set taken = true where id = (select id from jobs order by id limit 1 for update skip locked); end $d$;
                select count_jobs();
                """)
                #expect(out.stderr.contains("pgchorus refuses take_job(): its body takes rows FOR UPDATE SKIP LOCKED"), "\(out.report)")
                #expect(out.stderr.contains("pgchorus refuses elect()"), "\(out.report)")
                #expect(out.stderr.contains("pgchorus refuses a DO block that takes rows SKIP LOCKED"), "\(out.report)")
                #expect(out.stdoutLines.last == "5", "\(out.report)")
                let c = try RawPostgresClient(port: proxy.port, timeoutSeconds: 30)
                _ = try c.startup()
                try c.send([.parse(.init(name: "take", query: "SELECT public.take_job()", parameterTypes: [])),
                            .bind(.init(portal: "", statement: "take", parameterFormats: [], parameters: [], resultFormats: [])),
                            .execute(portal: "", maxRows: 0), .sync])
                let refused = try c.readUntilReady().firstError
                #expect(refused?.sqlState == "0A000" && refused?.message?.contains("take_job()") == true, "\(String(describing: refused))")
                for server in servers { #expect(try server.psql("select count(*) from jobs where taken") == "0") }
                #expect(proxy.server.context.registry.online().count == 2)
            }
        }
    }

    /// A trigger whose routine takes a job `SKIP LOCKED` would take another job on each backend while
    /// a session holds one on the lead alone (a worker's take runs there): the backends diverge, both
    /// online. Writes that fire it are refused, also the first one right after the trigger was created;
    /// writes that fire no such trigger go on.
    @Test func aWriteThatFiresATriggerTakingRowsBySkipLockedIsRefused() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let setup = try Clients.psql(proxy.connectionString(), ["-At", "-v", "ON_ERROR_STOP=1"], input: """
                create table jobs (id int primary key, taken_by int);
                insert into jobs (id) select generate_series(1, 5);
                create table results (id int primary key, job int);
                """)
                #expect(setup.exitCode == 0, "\(setup.report)")
                // A worker holds job 1 (its take runs on the lead alone) while the trigger is created and fired.
                let worker = try RawPostgresClient(port: proxy.port, timeoutSeconds: 30)
                _ = try worker.startup()
                _ = try worker.query("BEGIN")
                #expect(try worker.query("SELECT id FROM jobs WHERE taken_by IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED").firstValue == "1")
                // The trigger is created in a transaction; another session writes the moment it commits.
                #expect(try Clients.psql(proxy.connectionString(), ["-At", "-v", "ON_ERROR_STOP=1"], input: """
                create function take_for_result() returns trigger language plpgsql as $f$
                begin
                  new.job := (select id from jobs where taken_by is null order by id limit 1 for update skip locked);
                  update jobs set taken_by = new.id where id = new.job;
                  return new;
                end $f$;
                """).exitCode == 0)
                let a = try RawPostgresClient(port: proxy.port, timeoutSeconds: 30)
                _ = try a.startup()
                let b = try RawPostgresClient(port: proxy.port, timeoutSeconds: 30)
                _ = try b.startup()
                _ = try a.query("begin")
                #expect(try a.query("create trigger take before insert on results for each row execute function take_for_result()").firstError == nil)
                #expect(try a.query("commit").firstError == nil)
                let first = try b.query("insert into results (id) values (1)").firstError
                #expect(first?.sqlState == "0A000" && first?.message?.contains("pgchorus refuses INSERT of results (its trigger runs take_for_result())") == true,
                        "\(String(describing: first))")
                a.disconnect()
                b.disconnect()
                let out = try Clients.psql(proxy.connectionString(), ["-At"], input: """
                insert into results (id) values (2);
                update results set job = 7;
                insert into jobs (id) values (6);
                select count(*) from results;
                """)
                #expect(out.stderr.contains("pgchorus refuses INSERT of results (its trigger runs take_for_result())"), "\(out.report)")
                // The UPDATE fires no such trigger (it is for INSERT), nor does a write of another table.
                #expect(out.stdoutLines.contains("UPDATE 0") && out.stdoutLines.contains("INSERT 0 1"), "\(out.report)")
                #expect(out.stdoutLines.last == "0", "\(out.report)")
                _ = try worker.query("ROLLBACK")
                worker.disconnect()
                // (Without the refusal the lead's trigger skipped the worker's job 1 and took job 2, the follower's job 1.)
                let jobs = "select string_agg(id || ':' || coalesce(taken_by::text, '-'), ',' order by id) from jobs"
                #expect(try servers[0].psql(jobs) == servers[1].psql(jobs))
                for server in servers {
                    #expect(try server.psql("select count(*) from results") == "0")
                    #expect(try server.psql("select count(*) from jobs where taken_by is not null") == "0")
                    #expect(try server.psql("select count(*) from jobs") == "6")
                }
                #expect(proxy.server.context.registry.online().count == 2)
            }
        }
    }

    /// Two backends behind a proxy, `table` (id int primary key, v text; ids 1–20) created through it
    /// (with `more` SQL), then rows 1–5 moved to the end of the second backend's heap by an UPDATE that
    /// changes no value, run on it alone: a scan meets the rows in another order on each backend.
    func withRowsInTwoOrders(table: String, and more: String = "",
                             _ body: ([LocalPostgresServer], RunningProxy) async throws -> Void) async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let setup = try Clients.psql(proxy.connectionString(), ["-At", "-v", "ON_ERROR_STOP=1"], input: """
                create table \(table) (id int primary key, v text);
                insert into \(table) select g, 'v' || g from generate_series(1, 20) g;
                \(more);
                """)
                #expect(setup.exitCode == 0, "\(setup.report)")
                _ = try servers[1].psql("update \(table) set v = v where id <= 5")
                #expect(try servers[0].psql("select string_agg(id::text, ',') from (select id from \(table) limit 3) s") == "1,2,3")
                #expect(try servers[1].psql("select string_agg(id::text, ',') from (select id from \(table) limit 3) s") == "6,7,8")
                try await body(servers, proxy)
            }
        }
    }
}
}
