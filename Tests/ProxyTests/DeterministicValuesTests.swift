@testable import Proxy
import Testing
import Wire

/// Volatile values in definitions and in an INSERT's rows become the `pgchorus` functions; time
/// literals become the transaction's time; per-row values over rows in physical order stay refused.
@Suite struct DeterministicValuesTests {
    static let t = "2026-11-27 02:53:26.123456+00"

    func rewritten(_ sql: String) -> String {
        StatementAnalysis(sql).rewriting(in: sql, time: "'\(Self.t)'", deterministic: true)
    }

    @Test func columnDefaultsOfAnOrmTableBecomeThePgchorusFunctions() {
        let sql = "CREATE TABLE t (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), created_at timestamptz NOT NULL DEFAULT now(), "
            + "u timestamptz DEFAULT CURRENT_TIMESTAMP, d date DEFAULT current_date, l timestamp(3) DEFAULT LOCALTIMESTAMP(3), "
            + "v uuid DEFAULT uuid_generate_v4(), r float8 DEFAULT random(), c timestamptz DEFAULT pg_catalog.clock_timestamp(), "
            + "s timestamptz DEFAULT statement_timestamp(), tt timetz DEFAULT current_time)"
        let a = StatementAnalysis(sql)
        #expect(a.isDDL)
        #expect(a.volatileCalls.isEmpty, "accepted, not refused: \(a.volatileCalls)")
        #expect(rewritten(sql) == "CREATE TABLE t (id uuid PRIMARY KEY DEFAULT pgchorus.gen_random_uuid(), created_at timestamptz NOT NULL DEFAULT pgchorus.now(), "
            + "u timestamptz DEFAULT pgchorus.now(), d date DEFAULT (pgchorus.now())::date, l timestamp(3) DEFAULT (pgchorus.now())::timestamp(3), "
            + "v uuid DEFAULT pgchorus.gen_random_uuid(), r float8 DEFAULT pgchorus.random(), c timestamptz DEFAULT pgchorus.clock_timestamp(), "
            + "s timestamptz DEFAULT pgchorus.now(), tt timetz DEFAULT (pgchorus.now())::timetz)")
        // Without several backends nothing is rewritten.
        #expect(a.rewriting(in: sql, time: nil, deterministic: false) == sql)
    }

    @Test func alterColumnSetDefaultAndViewsAreRewritten() {
        #expect(rewritten("alter table t alter column d set default now()") == "alter table t alter column d set default pgchorus.now()")
        #expect(rewritten("create view v as select * from t where at > now() - interval '1 day'")
            == "create view v as select * from t where at > pgchorus.now() - interval '1 day'")
    }

    @Test func perRowValuesOverRowsInPhysicalOrderAreRefused() {
        let add = StatementAnalysis("alter table t add column u uuid default gen_random_uuid()")
        #expect(add.volatileCalls.count == 1)
        #expect(add.volatileCalls.first?.hasPrefix("gen_random_uuid() in ALTER TABLE") == true)
        let ctas = StatementAnalysis("create table c as select gen_random_uuid() as id, x from t")
        #expect(ctas.volatileCalls.first?.hasPrefix("gen_random_uuid() in CREATE") == true)
        // A time function there is one value per transaction: accepted.
        #expect(StatementAnalysis("alter table t add column at timestamptz default now()").volatileCalls.isEmpty)
        #expect(StatementAnalysis("update t set u = gen_random_uuid()").volatileCalls == ["gen_random_uuid()"])
        #expect(StatementAnalysis("insert into t select gen_random_uuid(), x from s").volatileCalls == ["gen_random_uuid()"])
        // Other per-backend values in a definition stay refused.
        #expect(StatementAnalysis("create table t (x bigint default txid_current())").volatileCalls == ["txid_current()"])
    }

    @Test func rowsOfAnInsertGetThePgchorusFunctions() {
        let sql = "insert into t (id, at, r) values (gen_random_uuid(), now(), random()), (uuid_generate_v4(), now(), 1) on conflict do nothing returning id"
        let a = StatementAnalysis(sql)
        #expect(a.volatileCalls.isEmpty)
        #expect(rewritten(sql) == "insert into t (id, at, r) values (pgchorus.gen_random_uuid(), '\(Self.t)'::timestamptz, pgchorus.random()), "
            + "(pgchorus.gen_random_uuid(), '\(Self.t)'::timestamptz, 1) on conflict do nothing returning id")
    }

    @Test func namesOfRoutinesAndQualifiedCallsAreLeftAlone() {
        for sql in ["create function random() returns int language sql as 'select 4'", "drop function now()",
                    "create table t (x float default myschema.random())", "comment on function random() is 'x'",
                    "create table t (now timestamptz, random int)"] {
            #expect(StatementAnalysis(sql).deterministicRewrites.isEmpty, "\(sql)")
            #expect(rewritten(sql) == sql, "\(sql)")
        }
    }

    @Test func functionAndDoBodiesAreRewritten() {
        let trigger = "CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); NEW.k := gen_random_uuid(); RETURN NEW; END $$"
        #expect(rewritten(trigger) == "CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := pgchorus.now(); NEW.k := pgchorus.gen_random_uuid(); RETURN NEW; END $$")
        let tagged = "create function f() returns date language sql as $body$ select current_date + 1 $body$"
        #expect(rewritten(tagged) == "create function f() returns date language sql as $body$ select (pgchorus.now())::date + 1 $body$")
        let block = "do $$ begin insert into t values (now(), 'now'::timestamptz, 'é'); end $$"
        #expect(rewritten(block) == "do $$ begin insert into t values (pgchorus.now(), (pgchorus.now())::timestamptz, 'é'); end $$")
        // Bodies in other languages are left alone (Python's own now() is not SQL's).
        let python = "create function p() returns text language plpython3u as $$ return now() $$"
        #expect(rewritten(python) == python)
        #expect(rewritten("do language plpgsql $$ begin perform now(); end $$") == "do language plpgsql $$ begin perform pgchorus.now(); end $$")
        // A string inside the body is text, not a call.
        let quoted = "create function g() returns text language sql as $$ select 'now()' $$"
        #expect(rewritten(quoted) == quoted)
    }

    @Test func notificationsInBodiesGoThroughThePgchorusFunction() {
        let trigger = "create function n() returns trigger language plpgsql as $$ begin perform pg_notify('jobs', new.id::text); "
            + "perform pg_catalog.pg_notify('q' || tg_table_name, ''); return new; end $$"
        #expect(rewritten(trigger) == "create function n() returns trigger language plpgsql as $$ begin perform pgchorus.pg_notify('jobs', new.id::text); "
            + "perform pgchorus.pg_notify('q' || tg_table_name, ''); return new; end $$")
        #expect(rewritten("do $$ begin perform pg_notify('c', 'p'); end $$") == "do $$ begin perform pgchorus.pg_notify('c', 'p'); end $$")
        // Another schema's function, a name without a call, dynamic SQL and a NOTIFY statement stay.
        for sql in ["create function m() returns void language sql as $$ select other.pg_notify('c', 'p') $$",
                    "create function m() returns text language sql as $$ select 'pg_notify' $$",
                    "create function m() returns void language plpgsql as $$ begin execute 'select pg_notify(''c'', '''')'; end $$",
                    "create function m() returns void language plpgsql as $$ begin notify jobs; end $$",
                    "create function m() returns void language plpython3u as $$ plpy.execute(\"select pg_notify('c', '')\") $$",
                    "select pg_notify('c', 'p')"] {
            #expect(rewritten(sql) == sql, "\(sql)")
        }
    }

    @Test func typedTimeLiteralsBecomeTheTransactionsTime() {
        let t = Self.t
        #expect(rewritten("create table c as select 'now'::timestamp as a") == "create table c as select ('\(t)'::timestamptz)::timestamp as a")
        #expect(rewritten("insert into t values ('today'::date, ' Tomorrow '::timestamptz, cast('yesterday' as date))")
            == "insert into t values ((('\(t)'::timestamptz)::date + 0)::date, (('\(t)'::timestamptz)::date + 1)::timestamptz, cast((('\(t)'::timestamptz)::date - 1) as date))")
        #expect(rewritten("select timestamp 'now', date 'today', timestamp with time zone 'now'")
            == "select (('\(t)'::timestamptz)::timestamp), ((('\(t)'::timestamptz)::date + 0)::date), (('\(t)'::timestamptz)::timestamptz)")
        // With a precision (left alone until 2026-12-05: each backend its own time).
        #expect(rewritten("insert into t values (timestamp(3) 'now', TIME(2) WITH TIME ZONE 'now', timestamp (0) without time zone 'tomorrow')")
            == "insert into t values ((('\(t)'::timestamptz)::timestamp(3)), (('\(t)'::timestamptz)::timetz(2)), ((('\(t)'::timestamptz)::date + 1)::timestamp(0)))")
        // A bare 'now' may be text: left alone, as are other strings.
        for sql in ["insert into notes values ('now')", "select 'epoch'::timestamptz", "select 'nowhere'::text", "select f(3) 'now'", "select date(3) 'now'"] {
            #expect(rewritten(sql) == sql, "\(sql)")
        }
    }

    /// `DEFAULT 'now'` of a time column is read when the DDL runs and kept for every later row: each
    /// backend kept its own time (the rows inserted afterwards all differed). Now the transaction's time.
    @Test func untypedTimeDefaultsOfTimeColumnsBecomeTheTransactionsTime() {
        let t = Self.t
        #expect(rewritten("create table a (id int, b timestamptz default 'now', c date DEFAULT ' Today ', d text default 'now', e timestamp(3) with time zone not null default 'NOW')")
            == "create table a (id int, b timestamptz default (('\(t)'::timestamptz)::timestamptz), c date DEFAULT ((('\(t)'::timestamptz)::date + 0)::date), d text default 'now', e timestamp(3) with time zone not null default (('\(t)'::timestamptz)::timestamptz))")
        #expect(rewritten("alter table a add column h timestamp default 'now', add if not exists i time without time zone default 'yesterday'")
            == "alter table a add column h timestamp default (('\(t)'::timestamptz)::timestamp), add if not exists i time without time zone default ((('\(t)'::timestamptz)::date - 1)::time)")
        // A domain's default is every such column's: the same (until 2026-12-05 left alone, each backend kept its own time).
        #expect(rewritten("create domain app.created_at as timestamp with time zone not null default 'now'")
            == "create domain app.created_at as timestamp with time zone not null default (('\(t)'::timestamptz)::timestamptz)")
        #expect(rewritten("CREATE DOMAIN born date DEFAULT 'today' CHECK (VALUE > '2000-01-01')")
            == "CREATE DOMAIN born date DEFAULT ((('\(t)'::timestamptz)::date + 0)::date) CHECK (VALUE > '2000-01-01')")
        #expect(StatementAnalysis("alter domain born set default 'now'").volatileCalls == [StatementAnalysis.untypedTimeDefault])
        // Other types, arrays and typed literals are left to what they are.
        for sql in ["create table a (s text default 'today', n numeric(3, 1) default '1')", "create table a (ts timestamptz[] default '{}')",
                    "alter table a add column s varchar(10) default 'now'", "create domain label as text default 'now'"] {
            #expect(rewritten(sql) == sql, "\(sql)")
            #expect(StatementAnalysis(sql).volatileCalls.isEmpty, "\(sql)")
        }
        // SET DEFAULT does not say the column's type: an untyped one is refused, a typed one is not.
        #expect(StatementAnalysis("alter table a alter column b set default 'now'").volatileCalls == [StatementAnalysis.untypedTimeDefault])
        #expect(StatementAnalysis("alter table a alter column b set default 'now'::timestamptz").volatileCalls.isEmpty)
        #expect(StatementTracker.refusal([StatementAnalysis.untypedTimeDefault]).contains("SET DEFAULT ''now''::timestamptz"))
    }

    /// A SERIAL, IDENTITY or nextval() column added to a table numbers its existing rows in each
    /// backend's physical order: refused, with the way out. Adding an identity to an existing column,
    /// a constraint, or such a column in CREATE TABLE is not.
    @Test func sequenceColumnsAddedToExistingRowsAreRefused() {
        #expect(StatementAnalysis("alter table pk add column n serial").volatileCalls == ["SERIAL" + StatementAnalysis.sequenceFill])
        #expect(StatementAnalysis("ALTER TABLE pk ADD m int GENERATED ALWAYS AS IDENTITY, ADD COLUMN q bigint DEFAULT nextval('s')").volatileCalls
            == ["GENERATED … AS IDENTITY" + StatementAnalysis.sequenceFill, "nextval()" + StatementAnalysis.sequenceFill])
        #expect(StatementAnalysis("alter table if exists only pk add column if not exists b bigserial primary key").volatileCalls == ["BIGSERIAL" + StatementAnalysis.sequenceFill])
        for sql in ["alter table pk alter column m add generated always as identity", "alter table pk alter m add generated by default as identity",
                    "alter table pk add constraint u unique (k)", "alter table pk add primary key (k)", "alter table pk add column c int default 0",
                    "create table s (id serial primary key, m int generated always as identity)", "alter table pk alter column n set default nextval('s')",
                    "alter sequence s owned by pk.n", "alter table pk add column serial_no int"] {
            #expect(StatementAnalysis(sql).volatileCalls.isEmpty, "\(sql)")
        }
        #expect(StatementTracker.refusal(["SERIAL" + StatementAnalysis.sequenceFill]).contains("row_number() OVER (ORDER BY id)"))
    }

    /// nextval() drawing one value per row in a scan's order (each backend's physical order): refused;
    /// in rows given in the statement's order, or over an ORDER BY, accepted (and takes the sequence turn).
    @Test func nextvalPerRowInPhysicalOrderIsRefused() {
        let note = StatementAnalysis.physicalOrderNote
        #expect(StatementAnalysis("update src set k = k + nextval('s9')").volatileCalls == ["nextval() in UPDATE of every row" + note])
        // One row by its key (an invoice numbered): the statement cannot tell how many rows, and such an UPDATE usually meets one.
        #expect(StatementAnalysis("update orders set invoice = nextval('inv') where id = $1").volatileCalls.isEmpty)
        // INSERT … SELECT nextval(…): judged with the catalog's unique keys (`UnorderedInsert`).
        let insert = StatementAnalysis("insert into dst (id, k) select nextval('s9'), k from src")
        #expect(insert.volatileCalls.isEmpty && insert.unorderedInsertSelects.first?.drawsNextval == true)
        var tracker = StatementTracker(refuseVolatile: true)
        #expect(tracker.refusal(for: insert)?.contains("nextval() in INSERT … SELECT … FROM without ORDER BY (one value per row") == true)
        tracker.rowOrder.uniqueKeys = ["src": [["id"]]]
        #expect(tracker.refusal(for: StatementAnalysis("insert into dst (id, k) select nextval('s9'), k from src where id = $1")) == nil)
        #expect(tracker.refusal(for: StatementAnalysis("insert into dst (id, k) select nextval('s9'), k from src where k = $1")) != nil)
        // UPDATE … WHERE drawing nextval(): one row by a unique key passes, anything else is refused —
        // once the catalog is known (without it, nothing to tell one row from many by).
        let invoice = StatementAnalysis("update orders o set invoice = nextval('inv') where o.id = $1::bigint returning invoice")
        #expect(invoice.nextvalUpdates == [UnorderedInsert.Keyed(relation: "orders", columns: ["id"])] && invoice.volatileCalls.isEmpty)
        let batch = StatementAnalysis("update orders set invoice = nextval('inv') where status = 'ready' or id = 1")
        #expect(batch.nextvalUpdates == [UnorderedInsert.Keyed(relation: "orders", columns: [])])
        tracker.rowOrder.uniqueKeys["orders"] = [["id"]]
        #expect(tracker.refusal(for: invoice) == nil && tracker.refusal(for: batch) == nil)
        tracker.rowOrderKnown = true
        #expect(tracker.refusal(for: invoice) == nil)
        #expect(tracker.refusal(for: batch)?.contains("nextval() in an UPDATE whose WHERE pins no unique key") == true)
        #expect(tracker.refusal(for: StatementAnalysis("update orders set n = n + 1 where status = 'ready'")) == nil)
        #expect(StatementAnalysis("update orders set invoice = nextval('inv') from batch b where orders.id = b.order_id").nextvalUpdates.first?.columns == [])
        #expect(StatementAnalysis("create table d2 as select nextval('s9') n, k from src").volatileCalls == ["nextval() in CREATE TABLE … AS SELECT … FROM without ORDER BY" + note])
        for sql in ["insert into dst (id, k) values (nextval('s9'), 1), (nextval('s9'), 2)", "select nextval('s9')",
                    "insert into dst (id, k) select nextval('s9'), k from src order by k", "insert into dst (id) select nextval('s9') from generate_series(1, 3)",
                    "create table t (id bigint default nextval('s9'))", "select setval('s9', 10)"] {
            let a = StatementAnalysis(sql)
            #expect(a.volatileCalls.isEmpty, "\(sql)")
            #expect(a.callsNextval, "\(sql)")
        }
        #expect(StatementTracker.refusal(["nextval() in UPDATE of every row" + note]).contains("row_number() OVER (ORDER BY id)"))
    }

    @Test func insertSelectsWhoseRowsComeInPhysicalOrder() {
        let a = StatementAnalysis("insert into items (id) select id + 100 from items")
        #expect(a.unorderedInsertSelects.map(\.relation) == ["items"])
        #expect(a.unorderedInsertSelects.first?.columns == ["id"])
        #expect(StatementAnalysis("INSERT INTO public.Items SELECT a, b * 2 FROM other").unorderedInsertSelects.first?.columns == nil)
        #expect(StatementAnalysis("INSERT INTO public.Items SELECT o.* FROM other o").unorderedInsertSelects.isEmpty)
        #expect(StatementAnalysis("insert into items (\"Id\", ref) select 1, 2 from t").unorderedInsertSelects.first?.columns == ["Id", "ref"])
        for ordered in ["insert into items (id) select id from t order by id", "insert into items (id) select g from generate_series(1, 5) g",
                        "insert into items (id) values (1)", "insert into items (id) select 1"] {
            #expect(StatementAnalysis(ordered).unorderedInsertSelects.isEmpty, "\(ordered)")
        }
        #expect(!StatementAnalysis("insert into items (id) select g from generate_series(1, 5) g, t").unorderedInsertSelects.isEmpty)

        var tracker = StatementTracker(refuseVolatile: true)
        tracker.rowOrder.perRowDefaults = ["items": ["ref", "score"]]
        #expect(tracker.refusal(for: a)?.contains("into items.ref, items.score") == true)
        #expect(tracker.refusal(for: StatementAnalysis("insert into items (id, ref, score) select 1, 2, 3 from t")) == nil)
        #expect(tracker.refusal(for: StatementAnalysis("insert into other (id) select id from items")) == nil)
    }

    /// Rows picked or aggregated in physical order: a read's answer is per server (the lead's alone,
    /// not compared); in a write (or a locking read) the clause is refused.
    @Test func rowsPickedOrAggregatedInPhysicalOrder() {
        for sql in ["select id from q limit 1", "select string_agg(v, ',') from q", "select json_agg(q) from q where id < 3",
                    "select v from q offset 3", "select distinct on (v) v, id from q", "select array_agg(id) filter (where id > 1) from q"] {
            let a = StatementAnalysis(sql)
            #expect(a.readsServerState && a.perServerByOrderOnly && a.isPlainRead && a.physicalOrderClauses.isEmpty, "\(sql)")
        }
        for sql in ["select id from q order by id limit 1", "select string_agg(v, ',' order by id) from q", "select array_agg(distinct id) from q",
                    "select string_agg(v, ',') over (order by id) from q", "select count(*) from q", "select percentile_cont(0.5) within group (order by id) from q",
                    "select my.string_agg(v) from q"] {
            #expect(!StatementAnalysis(sql).readsServerState, "\(sql)")
        }
        #expect(!StatementAnalysis("select random() from q limit 1").perServerByOrderOnly)
        #expect(!StatementAnalysis("select relname from pg_class limit 1").perServerByOrderOnly)
        #expect(StatementAnalysis("insert into lists (s) select string_agg(v, ',') from q").physicalOrderClauses == ["string_agg()"])
        #expect(StatementAnalysis("update lists set s = (select array_agg(id)::text from q)").physicalOrderClauses == ["array_agg()"])
        #expect(StatementAnalysis("insert into lists (s) select string_agg(v, ',' order by id) from q").physicalOrderClauses.isEmpty)
        #expect(StatementAnalysis("select id from q limit 1 for share").physicalOrderClauses == ["LIMIT"])
        #expect(StatementAnalysis("select id from q limit 1 for update skip locked").physicalOrderClauses == ["LIMIT"])
        #expect(StatementTracker.physicalOrderRefusal(["string_agg()"]).contains("ORDER BY id)), or set"))
    }

    /// `SELECT … FOR UPDATE SKIP LOCKED` alone is a take the lead answers; a write that skips locked
    /// rows is refused.
    @Test func skipLockedTakesAndWrites() {
        for sql in ["select id from jobs where not taken order by id limit 1 for update skip locked",
                    "SELECT * FROM jobs WHERE queue = $1 ORDER BY id LIMIT 10 FOR NO KEY UPDATE SKIP LOCKED",
                    "with q as (select id from jobs order by id limit 5) select id from jobs where id in (select id from q) for share skip locked"] {
            let a = StatementAnalysis(sql)
            #expect(a.locksOnLeadAlone && a.writesByLockState.isEmpty && !a.isReadOnly, "\(sql)")
        }
        for sql in ["update jobs set taken = true where id = (select id from jobs order by id limit 1 for update skip locked) returning id",
                    "with next as (select id from jobs order by id limit 1 for update skip locked) update jobs set taken = true from next where jobs.id = next.id",
                    "delete from queue where id in (select id from queue order by id limit 10 for update skip locked) returning *",
                    "select id into taken_ids from jobs order by id limit 1 for update skip locked"] {
            let a = StatementAnalysis(sql)
            #expect(!a.locksOnLeadAlone && a.writesByLockState == ["SKIP LOCKED"], "\(sql)")
            #expect(StatementTracker(refuseVolatile: true).refusal(for: a) == StatementTracker.lockStateRefusal(["SKIP LOCKED"]), "\(sql)")
        }
        // Advisory locks: taken and released on the lead alone; a try-lock in a write refused.
        for sql in ["select pg_try_advisory_lock(7)", "SELECT pg_advisory_unlock(7), pg_advisory_unlock_all()",
                    "select pg_catalog.pg_try_advisory_xact_lock(hashtext($1))", "select id from jobs where pg_try_advisory_lock(id) order by id limit 1"] {
            // (hashtext() is known to read once the catalog says it is IMMUTABLE.)
            let a = StatementAnalysis(sql).resolved(readers: ["hashtext"])
            #expect(a.locksOnLeadAlone && a.writesByLockState.isEmpty && !a.isReadOnly, "\(sql)")
        }
        let claim = StatementAnalysis("update jobs set worker = 1 where id = 3 and pg_try_advisory_lock(id)")
        #expect(!claim.locksOnLeadAlone && claim.writesByLockState == ["pg_try_advisory_lock()"])
        #expect(StatementTracker(refuseVolatile: true).refusal(for: claim)?.contains("refuses pg_try_advisory_lock() in a statement that writes") == true)
        #expect(!StatementAnalysis("select pg_try_advisory_lock(7), my_func()").locksOnLeadAlone)
        #expect(!StatementAnalysis("insert into t select pg_advisory_xact_lock(1)").locksOnLeadAlone)
        #expect(!StatementAnalysis("select id from jobs order by id limit 1 for update").locksOnLeadAlone)
        #expect(!StatementAnalysis("select id, my_claim(id) from jobs order by id limit 1 for update skip locked").locksOnLeadAlone)
        var tracker = StatementTracker(refuseVolatile: true)
        let take = tracker.process([FrontendMessage.query("select id from jobs order by id limit 1 for update skip locked").frame]) { "" }
        let named = tracker.process([FrontendMessage.parse(.init(name: "take", query: "select id from jobs limit 1 for update skip locked", parameterTypes: [])).frame, FrontendMessage.sync.frame]) { "" }
        #expect(!named.locksOnLeadAlone && named.lockRowsPerBackend == false, "a named Parse goes everywhere (and runs nothing)")
        let parsedAndRun = tracker.process([FrontendMessage.parse(.init(name: "take2", query: "select id from jobs limit 1 for update skip locked", parameterTypes: [])).frame,
                                            FrontendMessage.bind(.init(portal: "", statement: "take2", parameterFormats: [], parameters: [], resultFormats: [])).frame,
                                            FrontendMessage.execute(portal: "", maxRows: 0).frame, FrontendMessage.sync.frame]) { "" }
        #expect(!parsedAndRun.locksOnLeadAlone && parsedAndRun.lockRowsPerBackend, "parsed and run at once (JDBC): everywhere, its rows uncompared")
        #expect(take.locksOnLeadAlone && take.writes)
    }

    /// SERIAL/IDENTITY ids (and per-row defaults) given to the rows of an INSERT … SELECT in each
    /// backend's scan order: refused unless the SELECT is ordered or meets one row at most.
    /// The session ends when the lead holding a session-level advisory lock stops leading it: such a
    /// lock is told from a transaction's (which ends with the transaction), and so is releasing them all.
    @Test func sessionLevelAdvisoryLocksAreToldFromTransactionOnes() {
        for sql in ["select pg_try_advisory_lock(7)", "SELECT pg_catalog.pg_advisory_lock(1, 2)", "select pg_advisory_lock_shared(3)",
                    "select PG_TRY_ADVISORY_LOCK_SHARED(hashtext('x'))", "select id from jobs where pg_try_advisory_lock(id) order by id limit 1"] {
            let a = StatementAnalysis(sql)
            #expect(a.takesSessionLock && !a.releasesSessionLocks, "\(sql)")
        }
        for sql in ["select pg_try_advisory_xact_lock(7)", "select pg_advisory_xact_lock_shared(1)", "select pg_advisory_unlock(7)",
                    "select 'pg_advisory_lock(1)'", "select 1 -- pg_try_advisory_lock(1)", "select id from jobs limit 1 for update skip locked"] {
            #expect(!StatementAnalysis(sql).takesSessionLock, "\(sql)")
        }
        for sql in ["select pg_advisory_unlock_all()", "DISCARD ALL", "discard all;"] {
            #expect(StatementAnalysis(sql).releasesSessionLocks, "\(sql)")
        }
        #expect(!StatementAnalysis("discard plans").releasesSessionLocks)
        // A bare try: its one value says whether it took the lock.
        for sql in ["select pg_try_advisory_lock(7)", "SELECT pg_catalog.pg_try_advisory_lock_shared(1, 2) AS won", "select pg_try_advisory_lock(hashtext('x'))"] {
            #expect(StatementAnalysis(sql).barelyTriesSessionLock, "\(sql)")
        }
        for sql in ["select pg_advisory_lock(7)", "select pg_try_advisory_lock(1), pg_try_advisory_lock(2)",
                    "select pg_try_advisory_lock(1) and pg_try_advisory_lock(2)", "select id from jobs where pg_try_advisory_lock(id) limit 1",
                    "select pg_try_advisory_lock(7); select 1", "select pg_try_advisory_xact_lock(7)"] {
            #expect(!StatementAnalysis(sql).barelyTriesSessionLock, "\(sql)")
        }
        // With a call that may write (a user function the catalog does not show to read), the try goes
        // to every backend: its answer is not the session's alone.
        var tracker = StatementTracker(refuseVolatile: true)
        tracker.readers = ["hashtext"]
        let known = tracker.process([FrontendMessage.query("select pg_try_advisory_lock(hashtext('x'))").frame]) { "" }
        #expect(known.barelyTriesSessionLock && known.locksOnLeadAlone)
        let unknown = tracker.process([FrontendMessage.query("select pg_try_advisory_lock(my_key())").frame]) { "" }
        #expect(!unknown.barelyTriesSessionLock && unknown.takesSessionLock)
    }

    /// A call of a routine whose body takes rows SKIP LOCKED (the catalog names them) is refused, in
    /// any statement; other calls are not.
    @Test func callsOfRoutinesThatTakeRowsBySkipLockedAreRefused() {
        var tracker = StatementTracker(refuseVolatile: true)
        tracker.lockStateRoutines = ["take_job"]
        for sql in ["select take_job()", "SELECT * FROM public.take_job(5)", "insert into log select take_job()"] {
            #expect(tracker.refusal(for: StatementAnalysis(sql))?.contains("pgchorus refuses take_job(): its body takes rows FOR UPDATE SKIP LOCKED") == true, "\(sql)")
        }
        for sql in ["select other_job()", "select 'take_job()'", "select 1"] {
            #expect(tracker.refusal(for: StatementAnalysis(sql)) == nil, "\(sql)")
        }
        // A DO block doing the same is refused by its text.
        let block = StatementAnalysis("DO $$ BEGIN UPDATE jobs SET taken = true WHERE id = (SELECT id FROM jobs ORDER BY id LIMIT 1 FOR UPDATE\n SKIP LOCKED); END $$")
        #expect(block.writesByLockState == ["a DO block that takes rows SKIP LOCKED or tries an advisory lock"])
        #expect(tracker.refusal(for: block)?.contains("pgchorus refuses a DO block that takes rows SKIP LOCKED") == true)
        #expect(!StatementAnalysis("DO $x$ BEGIN PERFORM pg_try_advisory_xact_lock(1); END $x$").writesByLockState.isEmpty)
        #expect(StatementAnalysis("DO $$ BEGIN UPDATE jobs SET note = 'skip locked' WHERE id = 1; END $$").writesByLockState.isEmpty)
        #expect(SequenceOrdering.catalogSQL.contains("'k'"))
        var catalog = SequenceOrdering.Catalog()
        catalog.add(kind: "k", relation: "take_job", column: nil)
        #expect(catalog.lockStateRoutines == ["take_job"])
    }

    /// `maskedShape` scans with a table of byte classes and copies a name as one run (2026-12-07):
    /// it gives what the rules byte by byte give (`maskedShapeByTheRules`, the scan it replaced), on
    /// 20 000 random texts of the bytes those rules look at (seeded: the same texts every run).
    @Test func theTableDrivenScanGivesWhatTheRulesByteByByteGive() {
        let pieces = ["a", "Z", "_", "1", "23", "0", "$", "$1", "-", "--", "/", "/*", "*", "'", "''", "\"", " ", ".", "e", "é", "ß", ",", "(", ")", "=", "+", "\\", ";", "x9"]
        var state: UInt64 = 20261207
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }  // (an LCG's high bits)
        var differing: [String] = []
        for _ in 0..<20_000 {
            let count = Int(next() % 24)
            let text = (0..<count).map { _ in pieces[Int(next() % UInt64(pieces.count))] }.joined()
            let table = StatementAnalysis.maskedShape(text)
            let rules = maskedShapeByTheRules(text)
            if table?.shape != rules?.shape || table?.numbers != rules?.numbers { differing.append(text) }
        }
        #expect(differing.isEmpty, "\(differing.prefix(5))")
    }

    /// The rules of `maskedShape`, byte by byte, as it was written until 2026-12-07 (the reference of
    /// the test above).
    func maskedShapeByTheRules(_ sql: String) -> (shape: String, numbers: [StatementAnalysis.MaskedNumber])? {
        let b = Array(sql.utf8)
        guard !b.contains(UInt8(ascii: "\\")) else { return nil }
        func isDigit(_ c: UInt8) -> Bool { c >= 48 && c <= 57 }
        var out: [UInt8] = []
        var numbers: [StatementAnalysis.MaskedNumber] = []
        var i = 0
        while i < b.count {
            let c = b[i]
            switch c {
            case UInt8(ascii: "'"), UInt8(ascii: "\""):
                var close = i + 1
                while close < b.count, b[close] != c { close += 1 }
                guard close < b.count else { return nil }
                out += b[i...close]
                i = close + 1
            case UInt8(ascii: "$") where i + 1 < b.count && !isDigit(b[i + 1]),
                 UInt8(ascii: "-") where i + 1 < b.count && b[i + 1] == UInt8(ascii: "-"),
                 UInt8(ascii: "/") where i + 1 < b.count && b[i + 1] == UInt8(ascii: "*"):
                return nil
            case _ where isDigit(c) && !(i > 0 && SQLLexer.isIdentChar(b[i - 1])):
                let start = i
                i += 1
                while i < b.count, isDigit(b[i]) { i += 1 }
                numbers.append(.init(shapeAt: out.count, textAt: start, length: i - start))
                out.append(UInt8(ascii: "0"))
            default:
                out.append(c)
                i += 1
                while i < b.count, isDigit(b[i]), SQLLexer.isIdentChar(c) { out.append(b[i]); i += 1 }
            }
        }
        return numbers.isEmpty ? nil : (String(decoding: out, as: UTF8.self), numbers)
    }

    @Test func textsDifferingOnlyInTheirNumbersShareOneAnalysis() {
        #expect(StatementAnalysis.numbersMasked("UPDATE pgbench_accounts SET abalance = abalance + -4977 WHERE aid = 52311;")
            == "UPDATE pgbench_accounts SET abalance = abalance + -0 WHERE aid = 0;")
        #expect(StatementAnalysis.numbersMasked("select t1.c2 from t1 where x = $1 and y = 1.5e3") == "select t1.c2 from t1 where x = $1 and y = 0.0e3")
        #expect(StatementAnalysis.numbersMasked("select 'a1 2', \"7x\", 'it''s 3' from t where id = 3") == "select 'a1 2', \"7x\", 'it''s 3' from t where id = 0")
        #expect(StatementAnalysis.numbersMasked("create table t1 (id int)") == nil)
        // Where each number stood in the text and stands in the shape; other bytes (UTF-8 too) as they were.
        let masked = StatementAnalysis.maskedShape("select 'é', ß1 from t where a = 123 and b = 4")
        #expect(masked?.shape == "select 'é', ß1 from t where a = 0 and b = 0")
        #expect(masked?.numbers == [.init(shapeAt: 34, textAt: 34, length: 3), .init(shapeAt: 44, textAt: 46, length: 1)])
        #expect(StatementAnalysis.numbersMasked("") == nil && StatementAnalysis.numbersMasked("7") == "0")
        for unfollowed in ["select 1 -- one", "/* 1 */ select 1", "select $$1$$, 2", "select $f$ 1 $f$", "select E'\\'' , 1", "select 'unclosed 1", "select \"unclosed 1"] {
            #expect(StatementAnalysis.numbersMasked(unfollowed) == nil, "\(unfollowed)")
        }
        // No rule looks at a number's value: every statement below analyses alike with other numbers.
        let templates = [
            "UPDATE pgbench_accounts SET abalance = abalance + # WHERE aid = #;", "SELECT abalance FROM pgbench_accounts WHERE aid = #;",
            "UPDATE pgbench_tellers SET tbalance = tbalance + # WHERE tid = #;",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (#, #, #, #, CURRENT_TIMESTAMP);",
            "select id from jobs where not taken order by id limit # for update skip locked", "select pg_try_advisory_lock(#)",
            "select pg_advisory_unlock(#), pg_advisory_xact_lock(#)", "select * from jobs where pg_try_advisory_lock(id) limit #",
            "update jobs set taken = true where id = (select id from jobs where not taken limit # for update skip locked)",
            "insert into orders (customer, total) select id, # from users", "insert into t select g from generate_series(#, #) g",
            "update t set n = nextval('s') where id = #", "delete from t where id in (select id from t limit #)", "select * from t limit # offset #",
            "select string_agg(v, ',') from t where id < #", "insert into results (id) values (#) on conflict (id) do update set job = #",
            "select #, random()", "set statement_timeout = #", "fetch # from c", "declare c cursor for select * from t where id > #",
            "begin; update t set v = # where id = #; commit", "with x as (update t set v = v + # where id = # returning *) select * from x",
            "select * from t1 join t2 on t1.id = t2.id where t2.v = #", "select pg_sleep(#)", "insert into t (id, at) values (#, now())",
            "select count(*) from t where created > now() - interval '1 day' and id > #", "insert into u (id) values (#), (#) returning id",
            "select setval('s', #)", "select lo_create(#)", "copy t from stdin with (format csv, header #)", "select x::numeric(#, #) from t",
            // Byte ranges to rewrite, before, between and after numbers.
            "insert into t (id, at, n) values (#, now(), #)", "insert into t values (#, gen_random_uuid(), #, CURRENT_DATE, #), (#, random(), #, LOCALTIMESTAMP)",
            "select #, 'now'::timestamp, #, timestamp 'today', # from t where at < current_timestamp - interval '1 day'",
            "update t set at = CURRENT_TIMESTAMP, n = # where id = #",
        ]
        for template in templates {
            let a = template.replacingOccurrences(of: "#", with: "1")
            let b = template.split(separator: "#", omittingEmptySubsequences: false).enumerated()
                .map { $0.offset == 0 ? String($0.element) : "\(52311 + $0.offset * 7)" + $0.element }.joined()
            let shape = StatementAnalysis.numbersMasked(a)
            #expect(shape != nil && shape == StatementAnalysis.numbersMasked(b), "\(a) / \(b)")
            let analysis = StatementAnalysis(a)
            if analysis.fitsEveryTextOfItsShape { #expect(analysis == StatementAnalysis(b), "\(a) / \(b)") }
            // One kept in the shape's terms is, moved into another text's, that text's own analysis.
            guard let na = StatementAnalysis.maskedShape(a)?.numbers, let nb = StatementAnalysis.maskedShape(b)?.numbers,
                  let shaped = analysis.intoShape(na) else {
                Issue.record("\(a): not kept by shape")
                continue
            }
            #expect(shaped.fromShape(nb) == StatementAnalysis(b), "\(a) / \(b)")
            #expect(shaped.fromShape(na) == analysis, "\(a)")
        }
        #expect(StatementAnalysis("insert into t values (1, 'now'::date)").intoShape(StatementAnalysis.maskedShape("insert into t values (1, 'now'::date)")!.numbers) != nil)
        // A number inside a range to rewrite: its rewrite carries it, so the analysis is not shared.
        let precise = "insert into t values (1, CURRENT_TIMESTAMP(3))"
        #expect(StatementAnalysis(precise).intoShape(StatementAnalysis.maskedShape(precise)!.numbers) == nil)
        // The time keywords with a precision become the transaction's time at that precision.
        let v = "'2026-12-05 12:00:00.123456+00'"
        #expect(StatementAnalysis(precise).rewriting(in: precise, time: v, deterministic: true) == "insert into t values (1, (\(v)::timestamptz)::timestamptz(3))")
        let local = "update t set a = localtimestamp(0), b = current_time(2), c = LOCALTIME (4) where id = 1"
        #expect(StatementAnalysis(local).rewriting(in: local, time: v, deterministic: true)
            == "update t set a = (\(v)::timestamptz)::timestamp(0), b = (\(v)::timestamptz)::timetz(2), c = (\(v)::timestamptz)::time(4) where id = 1")
        // The tracker: a text of a known shape is not analysed again; one that points into its text is.
        var tracker = StatementTracker(refuseVolatile: true)
        _ = tracker.analysedQuery(QueryText(FrontendMessage.query("UPDATE pgbench_accounts SET abalance = abalance + -5 WHERE aid = 7;").frame)!)
        #expect(tracker.shapes.count == 1 && tracker.analyses.count == 0)
        _ = tracker.analysedQuery(QueryText(FrontendMessage.query("UPDATE pgbench_accounts SET abalance = abalance + -4977 WHERE aid = 52311;").frame)!)
        #expect(tracker.shapes.count == 1 && tracker.analyses.count == 0)
        // One with a range to rewrite is kept by shape too, its range moved into each text.
        let timed = tracker.analysedQuery(QueryText(FrontendMessage.query("INSERT INTO h (aid, mtime) VALUES (3, CURRENT_TIMESTAMP)").frame)!)
        #expect(!timed.timeExpressions.isEmpty && tracker.shapes.count == 2 && tracker.analyses.count == 0)
        let other = "INSERT INTO h (aid, mtime) VALUES (41977, CURRENT_TIMESTAMP)"
        let reused = tracker.analysedQuery(QueryText(FrontendMessage.query(other).frame)!)
        #expect(reused == StatementAnalysis(other) && tracker.shapes.count == 2)
        #expect(reused.rewriting(in: other, time: "'2026-12-05 12:00:00+00'", deterministic: true) == "INSERT INTO h (aid, mtime) VALUES (41977, '2026-12-05 12:00:00+00'::timestamptz)")
        // A number inside the range (a precision) keeps the analysis by text.
        _ = tracker.analysedQuery(QueryText(FrontendMessage.query("select localtime(3), 1").frame)!)
        #expect(tracker.shapes.count == 2 && tracker.analyses.count == 1)
    }

    @Test func writesThatFireATriggerTakingRowsBySkipLockedAreRefused() {
        typealias W = StatementAnalysis.WriteTarget
        let cases: [(String, [W])] = [
            ("insert into results (id) values (1)", [W(table: "results", event: "insert")]),
            ("INSERT INTO public.results VALUES (1) ON CONFLICT (id) DO UPDATE SET job = 2",
             [W(table: "results", event: "insert"), W(table: "results", event: "update")]),
            ("UPDATE ONLY public.\"Results\" SET job = 1 WHERE id = 1", [W(table: "results", event: "update")]),
            ("delete from results where id = 1", [W(table: "results", event: "delete")]),
            ("with d as (delete from only results returning *) insert into log select id from d order by id",
             [W(table: "log", event: "insert"), W(table: "results", event: "delete")]),
            ("with x as (select 1) update results set job = 1", [W(table: "results", event: "update")]),
            ("truncate table results, s.other *, third", [W(table: "results", event: "truncate"), W(table: "other", event: "truncate"), W(table: "third", event: "truncate")]),
            ("merge into results r using src s on r.id = s.id when matched then update set job = s.job",
             [W(table: "results", event: "insert"), W(table: "results", event: "update"), W(table: "results", event: "delete")]),
            ("copy results (id) from stdin", [W(table: "results", event: "insert")]),
            ("select * from results for update", []),
            ("select * from results for no key update skip locked", []),
            ("copy results to stdout", []),
            ("create rule r as on insert to a do instead update results set job = 1", []),
        ]
        for (sql, targets) in cases {
            #expect(Set(StatementAnalysis(sql).writeTargets) == Set(targets), "\(sql)")
        }
        // MERGE INTO ONLY names its table after ONLY (its SERIAL columns draw in the sequence turn too).
        #expect(StatementAnalysis("merge into only results r using src s on r.id = s.id when not matched then insert (id) values (s.id)").insertTargets == ["results"])
        var tracker = StatementTracker(refuseVolatile: true)
        tracker.lockStateTriggers = [W(table: "results", event: "insert"): ["take_for_result"], W(table: "results", event: "update"): ["take_for_result"]]
        for sql in ["insert into results (id) values (1)", "update results set job = 3 where id = 1",
                    "with n as (insert into results (id) values (2) returning id) select id from n",
                    "merge into results r using src s on r.id = s.id when not matched then insert (id) values (s.id)"] {
            let refusal = tracker.refusal(for: StatementAnalysis(sql))
            #expect(refusal?.contains("pgchorus refuses") == true && refusal?.contains("of results (its trigger runs take_for_result())") == true, "\(sql): \(refusal ?? "nil")")
            #expect(refusal?.contains("ERRCODE = '0A000'") == true)
        }
        // Creating the trigger calls nothing.
        tracker.lockStateRoutines = ["take_for_result"]
        #expect(StatementAnalysis("CREATE TRIGGER take BEFORE INSERT ON results FOR EACH ROW EXECUTE FUNCTION public.take_for_result()").triggerRoutines == ["take_for_result"])
        #expect(tracker.refusal(for: StatementAnalysis("create trigger take before insert on results for each row execute procedure take_for_result()")) == nil)
        #expect(tracker.refusal(for: StatementAnalysis("select take_for_result()"))?.contains("pgchorus refuses take_for_result()") == true)
        // Statements that fire no such trigger run: a DELETE (the trigger is for INSERT and UPDATE), a
        // read, a write of another table, a row lock.
        for sql in ["delete from results where id = 1", "select * from results", "insert into jobs (id) values (9)",
                    "select id from results where id = 1 for update", "truncate results"] {
            #expect(tracker.refusal(for: StatementAnalysis(sql)) == nil, "\(sql)")
        }
        // The catalog's rows: one per event the trigger fires on.
        #expect(SequenceOrdering.catalogSQL.contains("'t', lower(c.relname)"))
        var catalog = SequenceOrdering.Catalog()
        catalog.add(kind: "t", relation: "results", column: "insert:take_for_result")
        catalog.add(kind: "t", relation: "results", column: "update:take_for_result")
        #expect(catalog.lockStateTriggers == tracker.lockStateTriggers)
    }

    @Test func sequenceColumnsFilledInScanOrderAreRefusedUnlessOneRowIsMet() {
        var tracker = StatementTracker(refuseVolatile: true)
        tracker.rewrite = true
        tracker.rowOrder = RowOrderCatalog(perRowDefaults: ["audit": ["ref"]], sequenceColumns: ["orders": ["id"], "audit": ["id"]],
                                           uniqueKeys: ["users": [["id"], ["tenant", "email"]], "orders": [["id"]]])
        let refused = [
            "insert into orders (customer, total) select id, 0 from users",
            "INSERT INTO public.orders (customer) SELECT u.id FROM users u WHERE u.tenant = $1",
            "insert into orders (customer) select id from users where email = $1 or id = $2",
            "insert into orders (customer) select u.id from users u join t on t.id = u.id where u.id = 5",
            "insert into orders (customer) select id from users, t where users.id = 5",
            "insert into orders (customer) select customer from orders group by customer having count(*) > 1",
            "insert into orders (customer) select count(*) over () from users",
            "insert into orders (customer) select id from users where id = 5 union select 7",
            "insert into orders (customer) select id from (select id from users order by id) s",
            "insert into orders (customer) select string_agg(id::text, ',' order by id) from users group by tenant",
            "insert into orders (customer) select id from users where id = id",
            "insert into orders (customer) select id from users where id = $1 + 1",
            "insert into audit (note) select 'x' from users where email = $1",
            "insert into orders (customer) select id from users where id = 5 and email is distinct from $1 or true",
            // Led by a WITH: the archive pattern, a recursive CTE, a CTE that shadows a keyed table.
            "with moved as (delete from orders_old returning *) insert into orders (customer) select customer from moved",
            "WITH RECURSIVE r(n) AS (select 1 union all select n + 1 from r where n < 3) insert into orders (customer) select n from r",
            "with users as not materialized (select * from users_old) insert into orders (customer) select id from users where id = 5",
            "insert into orders (customer) with \"Users\" as (select id from users_old) select id from \"Users\" where id = 5",
            "with a as (select 1), b as (select 2) insert into public.orders (customer) select id from users",
        ]
        for sql in refused {
            #expect(tracker.refusal(for: StatementAnalysis(sql))?.contains("pgchorus refuses INSERT … SELECT … FROM without ORDER BY into") == true, "\(sql)")
        }
        let accepted = [
            "insert into orders (customer, total) select id, 0 from users order by id",
            "insert into orders (customer) select id from users where id = $1",
            "insert into orders (customer) select u.id from only public.users as u where u.id = $1::bigint and u.active",
            "insert into orders (customer) select id from users where tenant = 'a' and \"email\" = cast($2 as text)",
            "insert into orders (customer) select id from users x where -7 = x.id for update",
            "insert into orders (customer) select coalesce(max(customer), 0) + 1 from orders where total > 0",
            "insert into orders (customer) select count(*) from users",
            "insert into orders (customer) select $1 where not exists (select 1 from orders where customer = $1)",
            "insert into orders (id, customer) select id, customer from orders_old",
            "insert into orders (customer) select id from users where id = 3 on conflict (customer) do update set total = 1 where orders.id > 0",
            "insert into orders select * from orders_old",
            "insert into other (a) select id from users",
            "insert into orders (customer) select g from generate_series(1, 3) g",
            "insert into orders (customer) select generate_series(1, count(*)) from users",
            "insert into audit (id, ref) select id, id from users",
            "with moved as (delete from orders_old returning *) insert into orders (customer) select customer from moved order by id",
            "with c as (select 1) insert into orders (customer) select count(*) from users",
            "with x (a) as (select 1) insert into orders (customer) select id from users where id = $1",
            "with moved as (delete from orders_old returning *) insert into orders select * from moved",
        ]
        for sql in accepted {
            #expect(tracker.refusal(for: StatementAnalysis(sql)) == nil, "\(sql)")
        }
        #expect(tracker.refusal(for: StatementAnalysis("insert into orders (customer) select unnest(array_agg(id)) from users"))?.contains("refuses array_agg()") == true)
        // `replication.physical_order_writes = "allow"` lets sequence columns be numbered so; per-row defaults stay refused.
        tracker.refusePhysicalOrder = false
        #expect(tracker.refusal(for: StatementAnalysis(refused[0])) == nil)
        #expect(tracker.refusal(for: StatementAnalysis(refused.first { $0.hasPrefix("insert into audit") }!)) != nil)
        // Without the catalog, nothing to judge by.
        tracker.rowOrder = RowOrderCatalog()
        tracker.refusePhysicalOrder = true
        #expect(tracker.refusal(for: StatementAnalysis(refused[0])) == nil)
    }

    @Test func catalogRowsByKind() {
        var c = SequenceOrdering.Catalog()
        c.add(kind: "s", relation: "orders", column: nil)
        c.add(kind: "s", relation: "lines", column: "n")
        c.add(kind: "u", relation: "lines", column: "order_id\u{1F}n")
        c.add(kind: "u", relation: "lines", column: "id")
        #expect(c.sequenceColumns == ["lines": ["n"]] && c.uniqueKeys == ["lines": [["order_id", "n"], ["id"]]])
        c.sequenceColumns = [:]
        c.uniqueKeys = [:]
        c.sequenceTables.remove("lines")
        c.add(kind: "v", relation: "accounts", column: "id")
        c.add(kind: "v", relation: "accounts", column: "score")
        #expect(!c.deterministic)
        c.add(kind: "f", relation: "", column: nil)
        #expect(c == SequenceOrdering.Catalog(sequenceTables: ["orders"], perRowDefaults: ["accounts": ["id", "score"]], deterministic: true))
        let ordering = SequenceOrdering()
        #expect(ordering.view(in: "app").view?.rowOrder.perRowDefaults == nil)
        #expect(ordering.view(in: "app").view?.deterministic == nil)
        ordering.store(c, database: "app", generation: ordering.tables(in: "app").generation)
        #expect(ordering.view(in: "app").view?.rowOrder.perRowDefaults == ["accounts": ["id", "score"]])
        #expect(ordering.view(in: "app").view?.deterministic == true)
        ordering.invalidate("app")
        #expect(ordering.view(in: "app").view?.rowOrder.perRowDefaults == nil)
    }

    @Test func theStampAndTheSeed() {
        #expect(DeterministicValues.stampSQL(transaction: 7, timestamp: Self.t)
            == "SELECT pg_catalog.set_config('pgchorus.tx', '7;\(Self.t)', false), pg_catalog.set_config('pgchorus.n', '0', false)")
        let seeds = Set((0..<100).map { _ in DeterministicValues.newSeed() })
        #expect(seeds.count == 100)
        #expect(seeds.allSatisfy { $0.count == 32 && $0.allSatisfy(\.isHexDigit) })
    }

    @Test func malformedInputNeverTraps() {
        for sql in ["now(", "(now", "current_timestamp(", "current_time(3", "'now'::", "::'now'", "date", "timestamp 'now",
                    "do $$", "create function f() as $$ now( $$", "create function f() as $a$ $$ $a", "insert into t values (random(",
                    "with time zone 'now'", "zone 'now'", "cast('now' as", "gen_random_uuid()", ")"] {
            _ = rewritten(sql)
            _ = StatementAnalysis(sql).volatileCalls
        }
    }
}

