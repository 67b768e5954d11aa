import NIOCore
@testable import Proxy
import Testing
import Wire

/// What a session carries to a backend taken in at a transaction boundary, and what it cannot.
@Suite struct SessionReplayTests {
    func frame(_ m: FrontendMessage) -> PostgresFrame {
        var b = ByteBuffer()
        m.encode(into: &b)
        var decoder = PostgresFrameDecoder(maximumMessageSize: 1 << 20)
        return try! decoder.decode(buffer: &b)!
    }

    func parse(_ name: String, _ sql: String) -> PostgresFrame { frame(.parse(.init(name: name, query: sql, parameterTypes: []))) }

    func parsed(_ parse: Int, _ name: String, _ sql: String) -> StatementChange {
        .parsed(parse: parse, name: name, bytes: self.parse(name, sql).bytes)
    }

    func texts(_ r: SessionReplay) -> [String] {
        r.statements.map { s in
            guard case let .parse(p)? = try? FrontendMessage(frame: PostgresFrame(bytes: s.bytes)) else { return "?" }
            return "\(s.name)=\(p.query)"
        }
    }

    /// A named statement is kept once the lead answered its Parse, as it was sent; one PostgreSQL
    /// refused (a syntax error, a name in use) never is; a Close or DEALLOCATE drops it, also while its
    /// Parse is still unanswered.
    @Test func namedStatementsAreKeptOnceTheLeadHasThemUntilDropped() {
        var r = SessionReplay()
        let sent = r.apply([parsed(0, "a", "select 1"), parsed(2, "b", "selec 3")])
        #expect(sent.map(\.parse) == [0, 2])
        #expect(sent.map(\.name) == ["a", "b"])
        #expect(texts(r).isEmpty)
        r.parseAnswered(sent[0].token)
        r.parseUnanswered(sent[1].token)
        r.parseAnswered(sent[1].token)
        #expect(texts(r) == ["a=select 1"])
        // The name in use: PostgreSQL refuses it (42P05) and keeps the first.
        let again = r.apply([parsed(0, "a", "select 4")])
        r.parseUnanswered(again[0].token)
        #expect(texts(r) == ["a=select 1"])
        // Closed and parsed again in one group: the new text.
        let closed = r.apply([.closed("a"), parsed(0, "a", "select 5")])
        #expect(texts(r).isEmpty)
        r.parseAnswered(closed[0].token)
        #expect(texts(r) == ["a=select 5"])
        // Dropped while its Parse is unanswered: its answer keeps nothing.
        let pending = r.apply([parsed(0, "c", "select 6"), .closed("c")])
        r.parseAnswered(pending[0].token)
        #expect(texts(r) == ["a=select 5"])
        #expect(r.pendingParses.isEmpty)
        #expect(r.unreplayable == nil)
    }

    /// `DEALLOCATE [PREPARE] name | ALL` and `DISCARD ALL` in a client's text, a statement among others
    /// or in another case; `DISCARD ALL` resets the settings too, `DEALLOCATE ALL` does not.
    @Test func sqlDeallocateDropsNamedStatements() {
        var r = SessionReplay()
        let sent = r.apply([parsed(0, "a", "select 1"), parsed(1, "b", "select 2"), parsed(2, "Q\"x", "select 3"), parsed(3, "d", "select 4")])
        for s in sent { r.parseAnswered(s.token) }
        r.note(frame(.query("SET search_path = app")))
        r.note(frame(.query("select 'deallocate a'; DeAllocate b")))
        #expect(texts(r) == ["a=select 1", "Q\"x=select 3", "d=select 4"])
        r.note(frame(.query("deallocate prepare \"Q\"\"x\"")))
        #expect(texts(r) == ["a=select 1", "d=select 4"])
        let pending = r.apply([parsed(0, "e", "select 5")])
        r.note(frame(.query("DEALLOCATE ALL")))
        r.parseAnswered(pending[0].token)
        #expect(texts(r).isEmpty)
        #expect(r.settings == ["SET search_path = app"])
        let more = r.apply([parsed(0, "f", "select 6")])
        r.parseAnswered(more[0].token)
        r.note(frame(.query("DISCARD ALL")))
        #expect(texts(r).isEmpty)
        #expect(r.settings.isEmpty)
    }

    @Test func sessionSettingsAreReplayedTransactionOnesAreNot() {
        var r = SessionReplay()
        for sql in ["SET search_path = app, public", "set local work_mem = '1MB'", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                    "RESET statement_timeout", "set datestyle = 'ISO'; select 1"] {
            r.note(frame(.query(sql)))
        }
        #expect(r.settings == ["SET search_path = app, public"])
        #expect(r.unreplayable == nil)
    }

    /// The question a take-in asks the lead names the custom settings the client SET (they do not show
    /// in pg_settings), not pgchorus' own, and quotes the login user.
    @Test func theSettingsQuestionNamesCustomSettingsAndQuotesTheUser() {
        var r = SessionReplay()
        for sql in ["SET app.tenant = 't1'", "SET work_mem = '4MB'", "SET pgchorus.seed = 'x'", "SET \"my.o'k\" = 1"] { r.note(frame(.query(sql))) }
        let q = r.settingsQuery(loginUser: "o'neil")
        #expect(q.contains("(VALUES ('app.tenant'), ('my.o''k'))"))
        #expect(!q.contains("'work_mem'") && !q.contains("'pgchorus.seed'"))
        #expect(q.contains("session_user <> 'o''neil'"))
        #expect(q.contains("SELECT \(SessionReplay.preparedRow), name FROM pg_catalog.pg_prepared_statements WHERE NOT from_sql"))
        #expect(q.hasSuffix(" ORDER BY 1"))
        #expect(!SessionReplay().settingsQuery(loginUser: "u").contains("VALUES"))
    }

    /// The latest of each setting is kept, once: a session setting one again and again does not grow
    /// what a backend taken in is given; RESET drops it, RESET ALL all but the role.
    @Test func eachSettingIsReplayedOnceAsLastSet() {
        var r = SessionReplay()
        for i in 0..<1_000 { r.note(frame(.query("SET application_name = 'request \(i)'"))) }
        for sql in ["SET SESSION work_mem = '8MB'", "set  TIME ZONE 'UTC'", "SET ROLE app", "SET timezone = 'Europe/Paris'",
                    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", "set work_mem to '16MB';"] {
            r.note(frame(.query(sql)))
        }
        #expect(r.settings == ["SET application_name = 'request 999'", "SET ROLE app", "SET timezone = 'Europe/Paris'",
                               "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", "set work_mem to '16MB';"])
        r.note(frame(.query("RESET work_mem")))
        r.note(frame(.query("reset time zone")))
        #expect(r.settings == ["SET application_name = 'request 999'", "SET ROLE app",
                               "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE"])
        r.note(frame(.query("RESET ALL")))
        #expect(r.settings == ["SET ROLE app"])
        let long = "SET myapp." + String(repeating: "x", count: 80) + " = 1"
        r.note(frame(.query(long)))
        #expect(r.settings == ["SET ROLE app", long])
    }

    @Test(arguments: [
        ("CREATE TEMP TABLE x (a int)", "a temporary table"), ("create temporary table x as select 1", "a temporary table"),
        ("LISTEN jobs", "LISTEN"), ("PREPARE q AS SELECT 1", "a prepared statement made with SQL PREPARE"),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "a cursor WITH HOLD"), ("select pg_advisory_lock(42)", "a session-level advisory lock"),
        ("select * into temp t2 from t", "a temporary table"),
        ("DECLARE c CURSOR\n  WITH\tHOLD FOR SELECT 1", "a cursor WITH HOLD"), ("SELECT pg_advisory_lock_shared(7)", "a session-level advisory lock"),
        ("select *\nINTO /* x */ TEMPORARY t3 from t", "a temporary table"),
    ])
    func stateThatCannotBeCarriedIsNamed(sql: String, what: String) {
        var r = SessionReplay()
        r.note(frame(.query(sql)))
        #expect(r.unreplayable == what)
    }

    @Test func theHeadIsLowerCasedWithItsWhiteSpaceFolded() {
        #expect(String(decoding: SessionReplay.head(of: "  \n\tSET\t\tLOCAL  work_mem"), as: UTF8.self) == "set local work_mem")
        #expect(SessionReplay.head(of: String(repeating: "A", count: 200)).count == 64)
        #expect(SessionReplay.head(of: "").isEmpty)
        #expect(SessionReplay.mentions("SELECT PG_ADVISORY_LOCK(1)", ["pg_advisory_lock"]))
        #expect(SessionReplay.mentions("x TeMp", ["temp"]))
        #expect(!SessionReplay.mentions("select 1", ["hold", "temp"]))
        #expect(!SessionReplay.mentions("tem", ["temp"]))
    }

    /// The words count where they are SQL, not inside a literal or a comment.
    @Test func wordsInLiteralsAndCommentsAreNotSessionState() {
        var r = SessionReplay()
        r.note(frame(.query("select 'declare c cursor with hold', 'x into temp y' -- pg_advisory_lock(1)")))
        r.note(frame(.query("select $$into temp$$, " + String(repeating: "'hold' || ", count: 10_000) + "'temp'")))
        #expect(r.unreplayable == nil)
    }

    @Test func preparedTransactionsAndPlainStatementsAreNotSessionState() {
        var r = SessionReplay()
        for sql in ["PREPARE TRANSACTION 'x'", "select 1", "insert into t values (1)", "BEGIN", "COMMIT", "select pg_advisory_xact_lock(1)"] {
            r.note(frame(.query(sql)))
        }
        #expect(r.unreplayable == nil)
        #expect(r.settings.isEmpty)
    }

    @Test func aTextSeenToChangeNothingIsPassedOverButSettingsAndTemporaryTablesCountEveryTime() {
        var r = SessionReplay()
        r.noteSQL("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
        r.noteSQL("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
        #expect(r.ordinary.count == 1 && r.settings.isEmpty && r.unreplayable == nil)
        // A setting is looked at each time it is made (the later one is replayed).
        r.noteSQL("SET search_path = a")
        r.noteSQL("RESET search_path")
        #expect(r.settings.isEmpty)
        r.noteSQL("SET search_path = a")
        #expect(r.settings == ["SET search_path = a"])
        // A text that makes the session unreplayable is never taken for ordinary.
        r.noteSQL("SELECT * INTO TEMP t FROM x")
        #expect(r.unreplayable == "a temporary table" && r.ordinary.count == 1)
    }
}

/// The bounded memo of statement texts (`TextMemo`) behind the tracker's and the replay's shortcuts.
@Suite struct TextMemoTests {
    @Test func keepsAValuePerTextAndWorksItOutOnce() {
        var memo = TextMemo<Int>(capacity: 4, maximumTextBytes: 16)
        var made = 0
        let first = memo.value(for: "BEGIN") { made += 1; return 7 }
        let again = memo.value(for: "BEGIN") { made += 1; return 8 }
        #expect(first == 7 && again == 7 && made == 1)
    }

    @Test func staysWithinItsBounds() {
        var memo = TextMemo<Int>(capacity: 4, maximumTextBytes: 16)
        memo.keep(1, for: String(repeating: "x", count: 17))
        #expect(memo.count == 0)
        for n in 0..<4 { memo.keep(n, for: "select \(n)") }
        #expect(memo.count == 4)
        // Replacing a kept text does not empty it; a fifth text starts afresh.
        memo.keep(9, for: "select 0")
        #expect(memo.count == 4 && memo["select 0"] == 9)
        memo.keep(5, for: "select 5")
        #expect(memo.count == 1 && memo["select 5"] == 5 && memo["select 0"] == nil)
    }
}
