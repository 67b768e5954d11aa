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

    @Test func namedStatementsAreKeptUntilClosed() {
        var r = SessionReplay()
        r.note(parse("a", "select 1"))
        r.note(parse("", "select 2"))
        r.note(parse("b", "select 3"))
        r.note(parse("a", "select 4"))
        #expect(r.statements.map(\.name) == ["b", "a"])
        r.note(frame(.close(.statement, "b")))
        #expect(r.statements.map(\.name) == ["a"])
        r.note(frame(.query("DEALLOCATE ALL")))
        #expect(r.statements.isEmpty)
        #expect(r.unreplayable == nil)
    }

    @Test func sessionSettingsAreReplayedTransactionOnesAreNot() {
        var r = SessionReplay()
        for sql in ["SET search_path = app, public", "set local work_mem = '1MB'", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                    "RESET statement_timeout", "set datestyle = 'ISO'; select 1"] {
            r.note(frame(.query(sql)))
        }
        #expect(r.settings == ["SET search_path = app, public", "RESET statement_timeout"])
        #expect(r.unreplayable == nil)
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
        // A setting is carried each time it is made (the later one wins on replay).
        r.noteSQL("SET search_path = a")
        r.noteSQL("SET search_path = a")
        #expect(r.settings == ["SET search_path = a", "SET search_path = a"])
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
