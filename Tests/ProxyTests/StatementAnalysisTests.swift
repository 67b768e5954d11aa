@testable import Proxy
import Testing

@Suite struct StatementAnalysisTests {
    static let t = "2026-11-27 02:53:26.123456+00"

    // MARK: COMMIT

    @Test(arguments: [
        "COMMIT", "commit", "commit;", "  Commit ;  ", "END", "end;", "END WORK", "COMMIT WORK", "COMMIT TRANSACTION",
        "END TRANSACTION", "COMMIT AND NO CHAIN", "commit work and no chain", "COMMIT TRANSACTION AND NO CHAIN",
        "/* c */ COMMIT -- done", "commit;;",
    ])
    func isCommit(sql: String) {
        let a = StatementAnalysis(sql)
        #expect(a.isCommit)
        #expect(!a.mixesTransactionControl)
        #expect(a.isReadOnly)
        #expect(!a.isDDL)
    }

    @Test(arguments: [
        "COMMIT PREPARED 'x'", "commit prepared 'pgchorus:1:2'", "COMMIT AND CHAIN", "END AND CHAIN", "select 1; commit",
        "commit; select 1", "ROLLBACK", "BEGIN", "COMMIT WORK WORK", "select 'commit'", "-- commit", "endx",
    ])
    func isNotCommit(sql: String) {
        #expect(!StatementAnalysis(sql).isCommit)
    }

    // MARK: snapshots

    /// What fixes a REPEATABLE READ transaction's snapshot, as PostgreSQL takes one
    /// (`PlannedStmtRequiresSnapshot`); where unsure, none (the session then takes one everywhere itself).
    @Test func temporaryTablesAndWhatDropsThemAreKnown() {
        let session = StatementAnalysis("create temp table keep (id int)")
        #expect(session.createsTemporaryObject && !session.temporaryObjectDroppedAtCommit)
        let staging = StatementAnalysis("CREATE TEMPORARY TABLE stage ON COMMIT DROP AS SELECT * FROM t")
        #expect(staging.createsTemporaryObject && staging.temporaryObjectDroppedAtCommit)
        #expect(StatementAnalysis("create temp table s (id int) on commit delete rows").temporaryObjectDroppedAtCommit == false)
        for sql in ["discard all", "DISCARD TEMP", "discard temporary"] { #expect(StatementAnalysis(sql).discardsTemporaryObjects, "\(sql)") }
        for sql in ["discard plans", "discard sequences", "select 'discard all'", "discard all; select 1", "discard temp; select 1/0"] {
            #expect(!StatementAnalysis(sql).discardsTemporaryObjects, "\(sql)")
        }
    }

    @Test func theStatementsThatTakeASnapshotAreKnown() {
        for sql in ["select 1", "SELECT pg_backend_pid()", "with x as (select 1) select * from x", "insert into t values (1)",
                    "update t set v = 1", "declare c cursor for select random()", "table t", "values (1)", "set local x = 1; select 1",
                    "explain select 1", "create table t (id int)", "do $$ begin end $$", "copy t to stdout", "truncate t"] {
            #expect(StatementAnalysis(sql).takesSnapshot, "\(sql)")
        }
        for sql in ["begin", "BEGIN ISOLATION LEVEL REPEATABLE READ", "start transaction", "set transaction isolation level serializable",
                    "SET search_path = a", "reset all", "show work_mem", "lock table t in exclusive mode", "savepoint s", "release s",
                    "rollback to s", "fetch 1 from c", "move c", "close c", "listen c", "notify c", "commit", "checkpoint",
                    "discard all", "deallocate all", "prepare transaction 'x'", "(select 1)", ""] {
            #expect(!StatementAnalysis(sql).takesSnapshot, "\(sql)")
        }
    }

    @Test func theStatementsThatMayChangeAnIsolationLevelAreKnown() {
        for sql in ["BEGIN ISOLATION LEVEL REPEATABLE READ", "start transaction isolation level serializable", "set transaction isolation level serializable",
                    "SET default_transaction_isolation = 'repeatable read'", "set session characteristics as transaction isolation level serializable",
                    "select set_config('default_transaction_isolation', 'serializable', false)", "reset all", "discard all", "RESET default_transaction_isolation"] {
            #expect(StatementAnalysis(sql).mentionsIsolation, "\(sql)")
        }
        for sql in ["begin", "set search_path = a", "select 1", "commit", "set transaction read only"] {
            #expect(!StatementAnalysis(sql).mentionsIsolation, "\(sql)")
        }
    }

    // MARK: BEGIN (answered ahead)

    @Test func aPlainBeginHasTheCommandTagPostgreSQLAnswersWith() {
        for sql in ["BEGIN", "begin;", "  Begin ; ", "BEGIN WORK", "begin transaction", "/* b */ BEGIN -- go"] {
            #expect(StatementAnalysis(sql).beginTag == "BEGIN", "\(sql)")
        }
        for sql in ["START TRANSACTION", "start transaction;"] {
            #expect(StatementAnalysis(sql).beginTag == "START TRANSACTION", "\(sql)")
        }
        // Options may fail or change the transaction, several statements are answered together, and
        // BEGIN ATOMIC is a routine body: PostgreSQL answers those.
        for sql in ["BEGIN ISOLATION LEVEL SERIALIZABLE", "BEGIN READ ONLY", "START TRANSACTION READ WRITE", "START",
                    "BEGIN; SELECT 1", "BEGIN; COMMIT", "begin atomic", "BEGIN WORK WORK", "select 'begin'", "-- begin", "beginx",
                    "COMMIT", "ROLLBACK"] {
            #expect(StatementAnalysis(sql).beginTag == nil, "\(sql)")
        }
    }

    @Test func pgchorusOwnPreparedTransactionsAreNotTheClients() {
        for sql in ["COMMIT PREPARED 'pgchorus:node1:17-00ff'", "rollback prepared E'pgchorus:n:1'", "ROLLBACK PREPARED $$pgchorus:n:1$$",
                    "prepare transaction 'pgchorus:mine'", "select 1; commit prepared 'pgchorus:n:2'"] {
            #expect(StatementAnalysis(sql).namesPgchorusTransaction, "\(sql)")
            #expect(StatementTracker(refuseVolatile: true).refusal(for: StatementAnalysis(sql)) == StatementTracker.ownTransactionRefusal)
        }
        for sql in ["COMMIT PREPARED 'app:1'", "prepare transaction 'x pgchorus:'", "select 'pgchorus:n:1'", "commit", "rollback"] {
            #expect(!StatementAnalysis(sql).namesPgchorusTransaction, "\(sql)")
        }
    }

    @Test func aTrailingCommitIsSplitOffForTheVote() throws {
        let a = try #require(StatementAnalysis.trailingCommit(of: "BEGIN; INSERT INTO t VALUES (1); UPDATE t SET x = ';'; COMMIT;"))
        #expect(a.body == "BEGIN; INSERT INTO t VALUES (1); UPDATE t SET x = ';'")
        #expect(a.opensTransaction)
        let b = try #require(StatementAnalysis.trailingCommit(of: "insert into t values (1);\n-- done\nend work"))
        #expect(b.body == "insert into t values (1)")
        #expect(!b.opensTransaction)
        let c = try #require(StatementAnalysis.trailingCommit(of: "START TRANSACTION ISOLATION LEVEL SERIALIZABLE;; DO $$BEGIN COMMIT; END$$; COMMIT"))
        #expect(c.body == "START TRANSACTION ISOLATION LEVEL SERIALIZABLE;; DO $$BEGIN COMMIT; END$$")
        #expect(c.opensTransaction)
        for sql in ["COMMIT", "BEGIN; COMMIT; INSERT INTO t VALUES (1)", "BEGIN; INSERT INTO t VALUES (1); COMMIT AND CHAIN",
                    "BEGIN; SAVEPOINT a; INSERT INTO t VALUES (1); COMMIT", "INSERT INTO t VALUES (1); ROLLBACK; COMMIT",
                    "BEGIN; INSERT INTO t VALUES (1); COMMIT PREPARED 'x'", "BEGIN; BEGIN; COMMIT", "START; COMMIT", "INSERT INTO t VALUES (1)"] {
            #expect(StatementAnalysis.trailingCommit(of: sql) == nil, "\(sql)")
        }
    }

    @Test func aQueryIsCutAfterEachCommitInItsMiddle() {
        #expect(StatementAnalysis.transactionSegments(of: "BEGIN; INSERT INTO t VALUES (';'); COMMIT; BEGIN; DELETE FROM t; COMMIT;")
            == ["BEGIN; INSERT INTO t VALUES (';'); COMMIT;", " BEGIN; DELETE FROM t; COMMIT;"])
        #expect(StatementAnalysis.transactionSegments(of: "begin; insert into t values (1); end work;\n-- then\nselect 1")
            == ["begin; insert into t values (1); end work;", "\n-- then\nselect 1"])
        #expect(StatementAnalysis.transactionSegments(of: "BEGIN; INSERT INTO t VALUES (1); ROLLBACK; BEGIN; INSERT INTO t VALUES (2); COMMIT")
            == ["BEGIN; INSERT INTO t VALUES (1); ROLLBACK;", " BEGIN; INSERT INTO t VALUES (2); COMMIT"])
        #expect(StatementAnalysis.transactionSegments(of: "COMMIT; SELECT 1") == ["COMMIT;", " SELECT 1"])
        // ROLLBACK TO SAVEPOINT and a COMMIT inside a DO body are no cuts; a COMMIT AND NO CHAIN is one.
        #expect(StatementAnalysis.transactionSegments(of: "BEGIN; SAVEPOINT a; ROLLBACK TO a; DO $$BEGIN COMMIT; END$$; COMMIT AND NO CHAIN; SELECT 2")
            == ["BEGIN; SAVEPOINT a; ROLLBACK TO a; DO $$BEGIN COMMIT; END$$; COMMIT AND NO CHAIN;", " SELECT 2"])
        for sql in ["BEGIN; INSERT INTO t VALUES (1); COMMIT", "INSERT INTO t VALUES (1); SELECT 2", "COMMIT",
                    "BEGIN; COMMIT AND CHAIN; INSERT INTO t VALUES (1); COMMIT", "BEGIN; PREPARE TRANSACTION 'x'; COMMIT PREPARED 'x'",
                    "COMMIT; VACUUM t", "COMMIT; CREATE DATABASE d", "commit; create index concurrently i on t (x)", "COMMIT; ALTER SYSTEM SET work_mem = '8MB'",
                    "COMMIT; CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 1",
                    "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO u VALUES (1); NOTIFY u)"] {
            #expect(StatementAnalysis.transactionSegments(of: sql) == nil, "\(sql)")
        }
    }

    @Test func cursorsOverPerBackendReadsAreTheLeads() {
        let a = StatementAnalysis(#"DECLARE "Tick s" CURSOR WITHOUT HOLD FOR select clock_timestamp() from generate_series(1, 3)"#)
        #expect(a.leadOnlyCursor == "Tick s" && !a.cursorHeld && a.readsServerState)
        let b = StatementAnalysis("declare c scroll cursor with hold for select pg_backend_pid()")
        #expect(b.leadOnlyCursor == "c" && b.cursorHeld)
        #expect(StatementAnalysis("declare c cursor for select * from t").leadOnlyCursor == nil)
        #expect(StatementAnalysis("declare c cursor for select random() from t for update").leadOnlyCursor == nil)
        #expect(StatementAnalysis(#"FETCH FORWARD 3 FROM "Tick s""#).cursorUsed == "Tick s")
        #expect(StatementAnalysis("move absolute 0 in C").cursorUsed == "c")
        #expect(StatementAnalysis("close all").cursorUsed == "*")
        #expect(StatementAnalysis("close c").cursorUsed == "c")
    }

    /// `mentionsNotify` over the text's bytes gives what the walk through its UTF-8 view gave (kept
    /// here as the reference), over seeded texts of the letters of "notify" in both cases, the bytes a
    /// `| 0x20` could confuse with them ('N' - 0x20 …), and multi-byte characters.
    @Test func theByteScanForNotifyGivesWhatTheWalkGave() {
        func reference(_ sql: String) -> Bool {
            let word = Array("notify".utf8)
            var matched = 0
            for b in sql.utf8 {
                let lower = b >= 65 && b <= 90 ? b + 32 : b
                matched = lower == word[matched] ? matched + 1 : (lower == word[0] ? 1 : 0)
                if matched == word.count { return true }
            }
            return false
        }
        var rng = LexerTestRandom(seed: 1_207)
        let pieces = ["n", "o", "t", "i", "f", "y", "N", "O", "T", "I", "F", "Y", "notif", "NOTIFY", "nOtIfY", "\u{0E}", "\u{0F}", "\u{14}",
                      "\u{09}", "\u{06}", "\u{19}", "é", "ñ", " ", ";", "'", "x"]
        var found = 0
        for _ in 0..<20_000 {
            let sql = (0..<Int.random(in: 0...12, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined()
            let expected = reference(sql)
            if expected { found += 1 }
            #expect(StatementAnalysis.mentionsNotify(sql) == expected, "\(Array(sql.utf8))")
        }
        #expect(found > 100, "the texts hold the word often enough to tell")
    }

    @Test func notificationsThatCanBeHeldUntilCommit() throws {
        #expect(StatementAnalysis.heldNotification(of: "NOTIFY jobs")?.isSelect == false)
        #expect(StatementAnalysis.heldNotification(of: #"notify "Jobs", 'it''s done';"#)?.sql == #"notify "Jobs", 'it''s done';"#)
        #expect(StatementAnalysis.heldNotification(of: "SELECT pg_notify('jobs', 'x')")?.isSelect == true)
        #expect(StatementAnalysis.heldNotification(of: "select pg_catalog.pg_notify('jobs', '')")?.isSelect == true)
        #expect(StatementAnalysis.heldNotification(of: "NoTiFy jobs")?.isSelect == false)
        #expect(StatementAnalysis.mentionsNotify("select nnotify") && !StatementAnalysis.mentionsNotify("select notif y"))
        for sql in ["NOTIFY jobs, 'a'; NOTIFY jobs, 'b'", "SELECT pg_notify($1, 'x')", "SELECT pg_notify('jobs', 'x'), 1",
                    "SELECT pg_notify('', 'x')", "NOTIFY jobs, E'x'", "NOTIFY jobs 'x'", "SELECT pg_notify('jobs', '\(String(repeating: "x", count: 8000))')",
                    "LISTEN jobs", "SELECT 1"] {
            #expect(StatementAnalysis.heldNotification(of: sql) == nil, "\(sql.prefix(60))")
        }
    }

    @Test func mixesTransactionControl() {
        let a = StatementAnalysis("update t set a=1; commit")
        #expect(a.mixesTransactionControl)
        #expect(!a.isCommit)
        #expect(!a.isReadOnly)
        #expect(StatementAnalysis("begin; insert into t values (1); commit;").mixesTransactionControl)
        #expect(StatementAnalysis("select 1; commit").mixesTransactionControl)
        #expect(!StatementAnalysis("update t set a=1").mixesTransactionControl)
        #expect(!StatementAnalysis("select 1; select 2").mixesTransactionControl)
        #expect(!StatementAnalysis("select 'x; commit'").mixesTransactionControl)
    }

    // MARK: Read-only

    @Test(arguments: [
        "SELECT 1", "select * from t where a = 1", "SHOW search_path", "VALUES (1), (2)", "EXPLAIN SELECT * FROM t",
        "select count(*) from t", "select coalesce(max(a), 0) from t", "TABLE t", "select now()",
        "select 'insert into t values (1)'", "select a from t -- for update", "select lo_get(16385)",
    ])
    func isReadOnly(sql: String) {
        #expect(StatementAnalysis(sql).isReadOnly)
    }

    @Test(arguments: [
        "INSERT INTO t VALUES (1)", "update t set a = 2", "DELETE FROM t", "CREATE TABLE t (a int)",
        "select * from t for update", "select * from t where a = 1 FOR SHARE", "select * from t for no key update",
        "select nextval('s')", "select setval('s', 5)", "select myfunc()", "select s.myfunc()",
        "explain analyze select * from t", "EXPLAIN ANALYZE delete from t",
        "with x as (insert into t values (1) returning *) select * from x",
        "with x as (delete from t returning *) select count(*) from x", "select 1; delete from t",
        "truncate t", "copy t from stdin",
        // Large-object descriptors are the session's on every backend (a plain dump's restore).
        "SELECT pg_catalog.lo_open('16385', 131072)", "select lo_close(0)", "select loread(0, 100)", "select lo_lseek(0, 5, 0)",
    ])
    func isNotReadOnly(sql: String) {
        #expect(!StatementAnalysis(sql).isReadOnly)
    }

    // MARK: DDL

    @Test(arguments: ["CREATE TABLE t (a int)", "alter table t add column b int", "DROP TABLE t", "drop index i; select 1", "create index on t (a)"])
    func isDDL(sql: String) {
        let a = StatementAnalysis(sql)
        #expect(a.isDDL)
        #expect(!a.isReadOnly)
    }

    @Test(arguments: ["select 1", "insert into t values (1)", "select 'create table x'", "-- drop table t\nselect 1"])
    func isNotDDL(sql: String) {
        #expect(!StatementAnalysis(sql).isDDL)
    }

    // MARK: Volatile calls

    @Test func volatileCallsAreFound() {
        #expect(StatementAnalysis("select random()").volatileCalls == ["random()"])
        #expect(StatementAnalysis("select clock_timestamp()").volatileCalls == ["clock_timestamp()"])
        #expect(StatementAnalysis("update t set u = gen_random_uuid() where k = 1").volatileCalls == ["gen_random_uuid()"])
        #expect(StatementAnalysis("select txid_current()").volatileCalls == ["txid_current()"])
        #expect(StatementAnalysis("SELECT RANDOM ( ), Clock_Timestamp()").volatileCalls == ["random()", "clock_timestamp()"])
        #expect(StatementAnalysis("update t set a = 1; select random()").volatileCalls == ["random()"])
    }

    /// `pg_catalog.f()` is the built-in `f()`: the schema must not hide it.
    @Test func catalogQualifiedCallsAreTheBuiltins() {
        #expect(StatementAnalysis("select pg_catalog.random()").volatileCalls == ["random()"])
        #expect(StatementAnalysis("update t set u = PG_CATALOG . gen_random_uuid()").volatileCalls == ["gen_random_uuid()"])
        #expect(StatementAnalysis("insert into t values (PG_CATALOG . gen_random_uuid())").deterministicRewrites.map(\.text) == ["pgchorus.gen_random_uuid()"])
        let t = Self.t
        let sql = "insert into t values (pg_catalog.now(), pg_catalog.transaction_timestamp())"
        #expect(StatementAnalysis(sql).rewritingTime(in: sql, timestamp: t) == "insert into t values ('\(t)'::timestamptz, '\(t)'::timestamptz)")
        #expect(StatementAnalysis("select pg_catalog.count(*) from t").isReadOnly)
        // Another schema's function of the same name is the user's own: not the built-in, and it may write.
        let other = StatementAnalysis("select app.random(), app.now()")
        #expect(other.volatileCalls.isEmpty)
        #expect(other.timeExpressions.isEmpty)
        #expect(!other.isReadOnly)
    }

    @Test(arguments: [
        "select 'random()'", "select E'\\'random()'", "select 'it''s clock_timestamp()'", "select \"random\" from t",
        "select \"gen_random_uuid()\" from t", "select 1 -- random()", "select /* txid_current() /* nested */ random() */ 1",
        "select $$ random() $$", "select $f$ gen_random_uuid() $$ clock_timestamp() $f$", "select random from t",
        "select t.random from t",
    ])
    func volatileCallsAreNotFoundInLiteralsCommentsOrQuotes(sql: String) {
        #expect(StatementAnalysis(sql).volatileCalls.isEmpty)
    }

    // MARK: Time rewriting

    @Test func timeFunctionsBecomeLiterals() {
        let sql = "select now(), current_timestamp, current_date, localtimestamp, transaction_timestamp()"
        let a = StatementAnalysis(sql)
        #expect(a.volatileCalls.isEmpty)
        #expect(a.timeExpressions.map(\.type) == ["timestamptz", "timestamptz", "date", "timestamp", "timestamptz"])
        let t = Self.t
        #expect(a.rewritingTime(in: sql, timestamp: t)
            == "select '\(t)'::timestamptz, '\(t)'::timestamptz, ('\(t)'::timestamptz)::date, ('\(t)'::timestamptz)::timestamp, '\(t)'::timestamptz")
    }

    @Test func moreTimeForms() {
        let t = Self.t
        let sql = "SELECT NOW ( ), CURRENT_TIME, LOCALTIME, statement_timestamp()"
        #expect(StatementAnalysis(sql).rewritingTime(in: sql, timestamp: t)
            == "SELECT '\(t)'::timestamptz, ('\(t)'::timestamptz)::timetz, ('\(t)'::timestamptz)::time, '\(t)'::timestamptz")
        let insert = "insert into t (a, b) values (1, now())"
        #expect(StatementAnalysis(insert).rewritingTime(in: insert, timestamp: t) == "insert into t (a, b) values (1, '\(t)'::timestamptz)")
    }

    @Test func timeInLiteralsIdentifiersAndCommentsIsLeftAlone() {
        for sql in ["select 'now()'", "select \"now\" from t", "select 1 -- now()", "select $$now()$$", "select \"now()\"", "select /* current_date */ 1", "select now from t"] {
            let a = StatementAnalysis(sql)
            #expect(a.timeExpressions.isEmpty, "\(sql)")
            #expect(a.rewritingTime(in: sql, timestamp: Self.t) == sql)
        }
        let t = Self.t
        let mixed = "select 'now()', \"now\", now() -- now()"
        #expect(StatementAnalysis(mixed).rewritingTime(in: mixed, timestamp: t) == "select 'now()', \"now\", '\(t)'::timestamptz -- now()")
    }

    @Test func nonAsciiBeforeATimeExpressionKeepsByteOffsetsRight() {
        let t = Self.t
        let sql = "select 'héllo 😀', now()"
        #expect(StatementAnalysis(sql).rewritingTime(in: sql, timestamp: t) == "select 'héllo 😀', '\(t)'::timestamptz")
    }

    @Test func ddlTimeIsNotALiteral() {
        let sql = "create table t (c timestamptz default now())"
        let a = StatementAnalysis(sql)
        #expect(a.isDDL)
        #expect(a.timeExpressions.isEmpty)
        #expect(a.rewritingTime(in: sql, timestamp: Self.t) == sql)
        #expect(a.rewritingTime(in: sql, parameter: 1) == sql)
        // The default becomes pgchorus.now() instead (`DeterministicValuesTests`), not refused.
        #expect(a.volatileCalls.isEmpty)
        #expect(a.deterministicRewrites.map(\.text) == ["pgchorus.now()"])
    }

    @Test func timeBecomesAParameter() {
        let sql = "insert into t values ($1, now(), current_date, localtimestamp)"
        #expect(StatementAnalysis(sql).rewritingTime(in: sql, parameter: 2)
            == "insert into t values ($1, $2::timestamptz, ($2::timestamptz)::date, ($2::timestamptz)::timestamp)")
        let none = "select $1"
        #expect(StatementAnalysis(none).rewritingTime(in: none, parameter: 2) == none)
    }

    @Test func highestParameter() {
        #expect(StatementAnalysis.highestParameter(in: "select $1, $12") == 12)
        #expect(StatementAnalysis.highestParameter(in: "select $3, $1") == 3)
        #expect(StatementAnalysis.highestParameter(in: "select 1") == 0)
        #expect(StatementAnalysis.highestParameter(in: "select '$5', $$ $7 $$, \"$9\" -- $8\n, $2") == 2)
    }
}

/// Writes that would pick different rows on each backend (physical order), and those that would not.
@Suite struct PhysicalOrderTests {
    @Test(arguments: [
        ("insert into t select * from u limit 10", ["LIMIT"]),
        ("INSERT INTO t SELECT * FROM u OFFSET 5", ["OFFSET"]),
        ("delete from t where id in (select id from t limit 100)", ["LIMIT"]),
        ("update t set x = 1 where id in (select id from t fetch first 3 rows only)", ["FETCH FIRST"]),
        ("insert into t select distinct on (k) k, v from u", ["DISTINCT ON"]),
        ("delete from t where ctid in (select ctid from t limit 10)", ["LIMIT", "ctid"]),
        ("update t set x = 2 where ctid = '(0,1)'", ["ctid"]),
        ("create table c as select * from u limit 5", ["LIMIT"]),
        ("select * into c from u limit 5", ["LIMIT"]),
        ("with d as (delete from t where id in (select id from t limit 2) returning *) select * from d", ["LIMIT"]),
    ])
    func refused(sql: String, clauses: [String]) {
        #expect(StatementAnalysis(sql).physicalOrderClauses == clauses)
    }

    @Test(arguments: [
        "insert into t select * from u order by id limit 10",
        "delete from t where id in (select id from t order by id limit 100)",
        "insert into t select distinct on (k) k, v from u order by k, v",
        "select * from t limit 10",
        "select ctid, * from t",
        "insert into t values (1, 'limit')",
        "update t set note = 'offset' where id = 1",
        "create table t (id int, \"limit\" int)",
    ])
    func allowed(sql: String) {
        #expect(StatementAnalysis(sql).physicalOrderClauses.isEmpty)
    }
}

/// Statements that read no table but the one they write or lock: a lock wait on the lead while its
/// holder commits cannot make them see other rows than the followers do.
@Suite struct ReadsOnlyItsTargetTests {
    @Test(arguments: [
        "UPDATE pgbench_branches SET bbalance = bbalance + 5 WHERE bid = 1",
        "update acct set bal = bal - 3 where id = 1",
        "delete from t where id = 7",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 5, CURRENT_TIMESTAMP)",
        "select v from t where id = 2 for update",
        "SELECT * FROM jobs WHERE id = $1 FOR NO KEY UPDATE",
        "COPY loaded (id, v) FROM STDIN",
        "copy public.loaded from stdin with (format csv, header true) where id > 5",
    ])
    func readsOnlyItsTarget(sql: String) {
        #expect(StatementAnalysis(sql).readsOnlyItsTarget)
    }

    @Test(arguments: [
        "update acct set bal = bal + 0 where id in (select acct from hist order by id desc limit 3)",
        "update t set x = (select sum(v) from u) where id = 1",
        "update t set x = u.v from u where u.id = t.id",
        "delete from t using u where u.id = t.id",
        "insert into summary select 1, count(*) from t",
        "select * from t, u where t.id = u.id for update",
        "select * from t join u on t.id = u.id for update",
        "select count(*) from t",
        "update t set x = 1 where exists (select 1 from u)",
        "with d as (delete from t returning *) insert into u select * from d",
        "update t set x = 1 where id = 1; update t set x = 2 where id = 2",
        "copy (select * from t) to stdout",
        "copy t to stdout",
    ])
    func readsOtherRows(sql: String) {
        #expect(!StatementAnalysis(sql).readsOnlyItsTarget)
    }
}
