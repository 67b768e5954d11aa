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
    /// refused (a syntax error, a name in use) never is; a Close drops it once the lead answered it.
    @Test func namedStatementsAreKeptOnceTheLeadHasThemUntilClosed() {
        var r = SessionReplay()
        let sent = r.apply([parsed(0, "a", "select 1"), parsed(2, "b", "selec 3")])
        #expect(sent.parses.map(\.parse) == [0, 2])
        #expect(sent.parses.map(\.name) == ["a", "b"])
        #expect(texts(r).isEmpty)
        r.parseAnswered(sent.parses[0].token)
        r.parseUnanswered(sent.parses[1].token)
        r.parseAnswered(sent.parses[1].token)
        #expect(texts(r) == ["a=select 1"])
        // The name in use: PostgreSQL refuses it (42P05) and keeps the first.
        let again = r.apply([parsed(0, "a", "select 4")])
        r.parseUnanswered(again.parses[0].token)
        #expect(texts(r) == ["a=select 1"])
        // Closed and parsed again in one group: the Close's answer comes first, then the Parse's.
        let closed = r.apply([.closed(close: 1, name: "a"), parsed(0, "a", "select 5")])
        #expect(closed.closes.map(\.close) == [1])
        #expect(texts(r) == ["a=select 1"])
        r.closeAnswered("a")
        r.parseAnswered(closed.parses[0].token)
        #expect(texts(r) == ["a=select 5"])
        // A Close PostgreSQL skipped (an error before it) is never answered: nothing is dropped.
        _ = r.apply([.closed(close: 0, name: "a")])
        #expect(texts(r) == ["a=select 5"])
        #expect(r.pendingParses.isEmpty)
        #expect(r.unreplayable == nil)
    }

    /// SQL `DEALLOCATE` drops nothing when it arrives (PostgreSQL may refuse it or never run it): the
    /// lead names what it holds at the take-in (`keepOnly`). `DISCARD ALL` resets the recorded
    /// settings, not the custom names asked of the lead.
    @Test func statementsDroppedBySQLAreFoundByTheLeadsList() {
        var r = SessionReplay()
        let sent = r.apply([parsed(0, "a", "select 1"), parsed(1, "b", "select 2"), parsed(2, "d", "select 4")])
        for p in sent.parses { r.parseAnswered(p.token) }
        r.note(frame(.query("SET search_path = app")))
        r.note(frame(.query("SET app.tenant = 't'")))
        r.note(frame(.query("select 'deallocate a'; DeAllocate b")))
        #expect(texts(r) == ["a=select 1", "b=select 2", "d=select 4"])
        #expect(r.keepOnly(["a", "d", "x"]) == ["b"])
        #expect(texts(r) == ["a=select 1", "d=select 4"])
        r.note(frame(.query("DISCARD ALL")))
        #expect(r.settings.isEmpty)
        #expect(r.customNames == ["app.tenant"])
    }

    /// Custom settings given to set_config() with a literal name are asked of the lead too.
    @Test func setConfigNamesAreNoted() {
        var r = SessionReplay()
        r.note(frame(.query("SELECT pg_catalog.set_config('MyApp.Other', 'B', false), set_config(name, 'x', false) FROM t")))
        r.note(frame(.query("select set_config('work_mem', '1MB', false), set_config('it''s.x', 'y', true)")))
        #expect(r.customNames == ["myapp.other", "it's.x"])
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
        #expect(q.contains("(VALUES ('app.tenant'), ('my.o''k'))"), "\(q)")
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
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "a cursor WITH HOLD"),
        ("select * into temp t2 from t", "a temporary table"),
        ("DECLARE c CURSOR\n  WITH\tHOLD FOR SELECT 1", "a cursor WITH HOLD"),
        ("select *\nINTO /* x */ TEMPORARY t3 from t", "a temporary table"),
    ])
    func stateThatCannotBeCarriedIsNamed(sql: String, what: String) {
        var r = SessionReplay()
        r.note(frame(.query(sql)))
        #expect(r.unreplayable == what)
    }

    /// A temporary table dropped at its transaction's commit is gone by the boundary where a backend is taken in.
    @Test func aTemporaryTableDroppedAtCommitIsNoSessionState() {
        var r = SessionReplay()
        r.note(frame(.query("create temp table stage (a int) on commit drop")))
        r.note(frame(.query("CREATE TEMPORARY TABLE s2 ON COMMIT DROP AS SELECT 1")))
        #expect(r.unreplayable == nil)
        r.note(frame(.query("create temp table keep (a int) on commit delete rows")))
        #expect(r.unreplayable == "a temporary table")
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

    /// The words `noteSQL` looks for are found in one scan, each by its bit, wherever they are.
    @Test func oneScanFindsEachWordItIsAskedFor() {
        let words = SessionReplay.noteWords
        #expect(SessionReplay.mentioned("x TEMP y; DISCARD ALL", needles: words) == SessionReplay.discardFound | 16)
        #expect(SessionReplay.mentioned("select set_config('statement_timeout', '1', false) with hold", needles: words)
            == SessionReplay.setConfigFound | SessionReplay.statementTimeoutFound | 8)
        #expect(SessionReplay.mentioned("select 1", needles: words) == 0)
        #expect(SessionReplay.mentioned("", needles: words) == 0)
        // Asked to stop at the first, it finds one of them.
        #expect(SessionReplay.mentioned("temp discard", needles: words, stopAtFirst: true) == 16)
    }

    /// pgbench's TPC-B sends a new text for every statement, its keys written in: the texts of one
    /// shape (`QueryText`) are kept as ordinary once, and one that differs in anything but its numbers
    /// is looked at afresh.
    @Test func textsThatDifferOnlyInTheirNumbersAreOrdinaryOnce() {
        var r = SessionReplay()
        for (aid, delta) in [(52311, 4977), (7, 12), (99999, 0)] {
            r.note(frame(.query("UPDATE pgbench_accounts SET abalance = abalance + \(delta) WHERE aid = \(aid);")))
        }
        #expect(r.ordinary.count == 1 && r.unreplayable == nil)
        // Each run of a text that names statement_timeout is looked at again, whatever its numbers.
        for n in [10, 20] {
            r.timeoutMayHaveChanged = false
            r.note(frame(.query("select \(n); set statement_timeout = \(n)")))
            #expect(r.timeoutMayHaveChanged)
        }
        // A custom setting's name is in quotes, which a shape keeps: a new name is a new shape.
        r.note(frame(.query("select set_config('app.a', '1', false) where 1 = 1")))
        r.note(frame(.query("select set_config('app.b', '1', false) where 2 = 2")))
        #expect(r.customNames == ["app.a", "app.b"])
        // A text of a kept shape but another word is not passed over.
        r.note(frame(.query("SELECT * INTO TEMP t FROM pgbench_accounts WHERE aid = 5")))
        #expect(r.unreplayable == "a temporary table")
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
        // (A session-level advisory lock lives on the lead alone: a backend taken in needs none of it,
        // unless it takes the lead, which the session sees by `leadLocks`.)
        for sql in ["PREPARE TRANSACTION 'x'", "select 1", "insert into t values (1)", "BEGIN", "COMMIT", "select pg_advisory_xact_lock(1)",
                    "select pg_advisory_lock(42)", "SELECT pg_try_advisory_lock_shared(7)"] {
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

    /// The memos' keys (`MemoKey`): a text's digest is worked out once; texts differing anywhere —
    /// in their last bytes, past a multiple of 8, in length alone — get different digests, and two
    /// texts whose digests collide are still two keys.
    @Test func keysTellTextsApartByDigestAndText() {
        var seen: [UInt64: String] = [:]
        var collisions: [(String, String)] = []
        var texts = ["", "\0", "\0\0", "BEGIN", "BEGIN;", "select 0", "select 00", "12345678", "123456789", "1234567\0"]
        var rng = LexerTestRandom(seed: 20_261_207)
        let alphabet = Array("ab0 ;'\u{0}é".unicodeScalars)
        for _ in 0..<5000 {
            let length = Int.random(in: 0...40, using: &rng)
            texts.append(String(String.UnicodeScalarView((0..<length).map { _ in alphabet.randomElement(using: &rng)! })))
        }
        for text in Set(texts) {
            let key = MemoKey(text)
            #expect(key == MemoKey(text) && key.hashValue == MemoKey(text).hashValue)
            if let other = seen[key.digest], other != text { collisions.append((other, text)) }
            seen[key.digest] = text
        }
        #expect(collisions.isEmpty, "\(collisions.map { (Array($0.0.utf8), Array($0.1.utf8)) })")
        // A forced collision: equal digests, different texts — two entries, each its own value.
        var memo = TextMemo<Int>()
        memo.keep(1, for: MemoKey(text: "select 1", digest: 42))
        memo.keep(2, for: MemoKey(text: "select 2", digest: 42))
        #expect(memo.count == 2 && memo[MemoKey(text: "select 1", digest: 42)] == 1 && memo[MemoKey(text: "select 2", digest: 42)] == 2)
        #expect(memo["select 1"] == nil, "a key is its text's own digest, not one given")
    }
}
