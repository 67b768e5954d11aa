import NIOCore
@testable import Proxy
import Testing
import Wire

/// The statement tracker turns client message groups into what the backends receive.
@Suite struct StatementTrackerTests {
    static let t = "2026-11-27 02:53:26.123456+00"

    func frames(_ messages: [FrontendMessage]) -> [PostgresFrame] {
        messages.map(\.frame)
    }

    func bytes(_ messages: [FrontendMessage]) -> ByteBuffer {
        var b = ByteBuffer()
        for m in messages { m.encode(into: &b) }
        return b
    }

    /// Splits the tracker's output back into messages, as a backend would read it.
    func decode(_ buffer: ByteBuffer, sourceLocation: SourceLocation = #_sourceLocation) throws -> [FrontendMessage] {
        var b = buffer
        var decoder = PostgresFrameDecoder()
        var out: [FrontendMessage] = []
        for _ in 0..<10_000 {
            guard let frame = try decoder.decode(buffer: &b) else { break }
            out.append(try FrontendMessage(frame: frame))
        }
        #expect(b.readableBytes == 0, "trailing bytes", sourceLocation: sourceLocation)
        return out
    }

    func process(_ tracker: inout StatementTracker, _ messages: [FrontendMessage]) -> StatementTracker.Result {
        tracker.process(frames(messages), timestamp: { Self.t })
    }

    func text(_ s: String) -> ByteBuffer { ByteBuffer(string: s) }

    // MARK: SQL PREPARE / EXECUTE

    /// pg_dump's catalog reads by OID, made with SQL PREPARE: their EXECUTE is a read of per-server
    /// state (the lead's alone), not a statement of unknown effect; one of a write stays unknown.
    @Test func anExecuteOfACatalogReadMadeWithSQLPrepareIsThatRead() {
        var tracker = StatementTracker(refuseVolatile: true)
        _ = process(&tracker, [.query("PREPARE dumpFunc(pg_catalog.oid) AS\nSELECT proretset, prosrc FROM pg_catalog.pg_proc WHERE oid = $1")])
        _ = process(&tracker, [.query("prepare bump(int) as update t set n = n + $1")])
        let read = process(&tracker, [.query("EXECUTE dumpFunc('16423')")])
        #expect(read.isPlainRead && !read.writes && read.readsServerState)
        let write = process(&tracker, [.query("execute bump(1)")])
        #expect(write.writes && !write.isPlainRead)
        _ = process(&tracker, [.query("DEALLOCATE dumpFunc")])
        #expect(process(&tracker, [.query("EXECUTE dumpFunc('16423')")]).writes)
    }

    // MARK: A plain BEGIN alone (answered ahead)

    /// A BEGIN's Parse, Bind, optional Describe of the portal, Execute, Sync.
    func extendedBegin(_ sql: String = "BEGIN", name: String = "", types: [Int32] = [], portal: String = "",
                       parameters: [ByteBuffer?] = [], resultFormats: [Int16] = [], describe: FrontendMessage? = .describe(.portal, "")) -> [FrontendMessage] {
        [.parse(.init(name: name, query: sql, parameterTypes: types)),
         .bind(.init(portal: portal, statement: name, parameterFormats: [], parameters: parameters, resultFormats: resultFormats))]
            + (describe.map { [$0] } ?? []) + [.execute(portal: portal, maxRows: 0), .sync]
    }

    @Test func aPlainBeginAloneIsKnownInBothProtocols() {
        var tracker = StatementTracker(refuseVolatile: true)
        #expect(process(&tracker, [.query("begin")]).beginAnswer == .init(tag: "BEGIN"))
        #expect(process(&tracker, extendedBegin()).beginAnswer == .init(tag: "BEGIN", extended: true, noData: true))
        #expect(process(&tracker, extendedBegin("START TRANSACTION", describe: nil)).beginAnswer
                    == .init(tag: "START TRANSACTION", extended: true, noData: false))
        #expect(process(&tracker, extendedBegin(resultFormats: [1])).beginAnswer != nil)
        // What PostgreSQL may answer otherwise is not: a parameter (Bind fails), declared parameter types,
        // a named statement (it may exist already), a named portal, a Describe of the statement,
        // several result formats, another statement, something beside it, no Sync.
        let others: [[FrontendMessage]] = [
            extendedBegin(parameters: [text("1")]), extendedBegin(types: [23]), extendedBegin(name: "s1"),
            extendedBegin(portal: "p"), extendedBegin(describe: .describe(.statement, "")), extendedBegin(resultFormats: [0, 1]),
            extendedBegin("BEGIN ISOLATION LEVEL SERIALIZABLE"), extendedBegin("SELECT 1"),
            extendedBegin(describe: .flush), Array(extendedBegin().dropLast()) + [.flush],
            [.query("BEGIN; SELECT 1")],
        ]
        for messages in others {
            #expect(process(&tracker, messages).beginAnswer == nil, "\(messages)")
        }
    }

    /// A named BEGIN (pgbench `-M prepared`) is answered ahead only once the lead answered its Parse,
    /// and no longer after a Close, a Parse of the name again, or anything that may deallocate it.
    @Test func aNamedBeginIsAnsweredAheadOnlyWhileTheLeadIsKnownToHoldIt() {
        var tracker = StatementTracker(refuseVolatile: true)
        let bind: [FrontendMessage] = [.bind(.init(portal: "", statement: "b", parameterFormats: [], parameters: [], resultFormats: [0])),
                                       .describe(.portal, ""), .execute(portal: "", maxRows: 0), .sync]
        let parse: [FrontendMessage] = [.parse(.init(name: "u", query: "SELECT 1", parameterTypes: [])),
                                        .parse(.init(name: "b", query: "BEGIN", parameterTypes: [])), .sync]
        let parsed = process(&tracker, parse)
        #expect(parsed.beginParses.map(\.parse) == [1] && parsed.beginParses.map(\.name) == ["b"])
        #expect(process(&tracker, bind).beginAnswer == nil)
        tracker.beginParsed("b", token: parsed.beginParses[0].token)
        #expect(process(&tracker, bind).beginAnswer == .init(tag: "BEGIN", extended: true, parse: false, noData: true))
        #expect(process(&tracker, bind.filter { if case .describe = $0 { false } else { true } }).beginAnswer
                    == .init(tag: "BEGIN", extended: true, parse: false, noData: false))
        /// Parses "b" again (after a Close) and returns the token of that Parse.
        func reparse() -> Int {
            process(&tracker, [.close(.statement, "b"), .parse(.init(name: "b", query: "BEGIN", parameterTypes: [])), .sync]).beginParses[0].token
        }
        // A text that deallocates, run as a Query, parsed, or executed again from an earlier Parse.
        _ = process(&tracker, [.parse(.init(name: "d", query: "DEALLOCATE ALL", parameterTypes: [])), .sync])
        let executeD: [FrontendMessage] = [.bind(.init(portal: "", statement: "d", parameterFormats: [], parameters: [], resultFormats: [])),
                                           .execute(portal: "", maxRows: 0), .sync]
        let drops: [[FrontendMessage]] = [[.query("DEALLOCATE b")], [.query("discard all")], [.close(.statement, "b"), .sync],
                                          [.parse(.init(name: "b", query: "BEGIN", parameterTypes: [])), .sync],
                                          [.parse(.init(name: "b", query: "BEGIN", parameterTypes: [23])), .sync],
                                          [.parse(.init(name: "", query: "deallocate all", parameterTypes: [])), .sync],
                                          executeD,
                                          // An Execute of a portal of a statement not seen parsed (SQL PREPARE): it may deallocate.
                                          [.bind(.init(portal: "", statement: "sqlprepared", parameterFormats: [], parameters: [], resultFormats: [])),
                                           .execute(portal: "", maxRows: 0), .sync]]
        for gone in drops {
            tracker.beginParsed("b", token: reparse())
            #expect(process(&tracker, bind).beginAnswer != nil)
            _ = process(&tracker, gone)
            #expect(process(&tracker, bind).beginAnswer == nil, "\(gone)")
        }
        // Dropped after the Parse was sent but before the lead answered it (all pipelined): the answer
        // to that Parse no longer says the statement is held.
        for gone in drops {
            let token = reparse()
            _ = process(&tracker, gone)
            tracker.beginParsed("b", token: token)
            #expect(process(&tracker, bind).beginAnswer == nil, "before the answer: \(gone)")
        }
        // Parsed twice before the lead answered either: only the answer to the latest Parse counts.
        let first = reparse(), second = reparse()
        tracker.beginParsed("b", token: first)
        #expect(process(&tracker, bind).beginAnswer == nil)
        tracker.beginParsed("b", token: second)
        #expect(process(&tracker, bind).beginAnswer != nil)
        // Not a plain BEGIN, or parameters declared: never one.
        let readOnly = process(&tracker, [.parse(.init(name: "b", query: "BEGIN READ ONLY", parameterTypes: [])), .sync])
        #expect(readOnly.beginParses.isEmpty)
        tracker.beginParsed("b", token: second)
        #expect(process(&tracker, bind).beginAnswer == nil)
        #expect(process(&tracker, [.parse(.init(name: "c", query: "BEGIN", parameterTypes: [23])), .sync]).beginParses.isEmpty)
    }

    // MARK: Simple query

    @Test func simpleQueryTimeBecomesALiteral() throws {
        var tracker = StatementTracker(refuseVolatile: true)
        let r = process(&tracker, [.query("select now()")])
        #expect(try decode(r.bytes) == [.query("select '\(Self.t)'::timestamptz")])
        #expect(!r.writes)
        #expect(!r.isCommit)
    }

    @Test func simpleQueryWithoutTimeIsForwardedByteExact() {
        var tracker = StatementTracker(refuseVolatile: true)
        let r = process(&tracker, [.query("select 'now()' -- now()")])
        #expect(r.bytes == bytes([.query("select 'now()' -- now()")]))
    }

    /// A read of a per-backend value goes to the lead alone (`readsServerState`): it runs unchanged.
    @Test func aVolatileReadRunsUnchanged() {
        var tracker = StatementTracker(refuseVolatile: true)
        for sql in ["select random()", "select pg_backend_pid()", "select txid_current()", "select * from t order by random() limit 1",
                    "explain select * from t", "show port", "select relname from pg_class where oid = 't'::regclass",
                    "select count(*) from pg_stat_activity", "select xmin, * from t",
                    // psql 15's \d t: OPERATOR(…) is no call, the catalog accessors only read.
                    """
                    SELECT c.oid,
                      n.nspname,
                      c.relname
                    FROM pg_catalog.pg_class c
                         LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default
                      AND pg_catalog.pg_table_is_visible(c.oid)
                    ORDER BY 2, 3;
                    """,
                    "select pg_catalog.pg_get_statisticsobjdef_columns(oid) from pg_catalog.pg_statistic_ext",
                    "select has_schema_privilege('public', 'usage'), pg_catalog.pg_opclass_is_visible(1)",
                    """
                    SELECT c.relchecks, c.relkind, am.amname FROM pg_catalog.pg_class c
                     LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)
                    LEFT JOIN pg_catalog.pg_am am ON (c.relam = am.oid) WHERE c.oid = '16384';
                    """,
                    "SELECT pubname FROM pg_catalog.pg_publication p WHERE p.puballtables AND pg_catalog.pg_relation_is_publishable('16384')",
                    "select pg_catalog.array_upper(prattrs::pg_catalog.int2[], 1) from pg_catalog.pg_publication_rel",
                    // PostgreSQL's pg_… functions that only read, information_schema's (JDBC's getPrimaryKeys).
                    "select pg_blocking_pids(1), pg_stat_get_db_blk_write_time(1), pg_size_pretty(pg_database_size('x'))",
                    "select (information_schema._pg_expandarray(i.indkey)).n from pg_catalog.pg_index i"] {
            let r = process(&tracker, [.query(sql)])
            #expect(r.bytes == bytes([.query(sql)]), "\(sql)")
            #expect(r.readsServerState, "\(sql)")
            #expect(r.isPlainRead, "\(sql)")
        }
        // Reads of data are compared as before; EXPLAIN ANALYZE runs the statement.
        // Reads calling PostgreSQL's pure functions are plain reads, not writes (a read of data: compared).
        for sql in ["select lpad(name, 10), to_jsonb(t), generate_subscripts(a, 1) from t where (id > 1)",
                    "select percentile_cont(0.5) within group (order by v) from t"] {
            let r = process(&tracker, [.query(sql)])
            #expect(!r.writes && r.isPlainRead && !r.readsServerState, "\(sql)")
        }
        for sql in ["select * from t", "select count(*) from orders where note = 'pg_dump'", "explain analyze select 1",
                    "select * from t where (id > 1) and (v < 2)",
                    // PostgreSQL's functions that act run on every backend as before; other schemas' are user code.
                    "select pg_advisory_lock(1)", "select pg_try_advisory_xact_lock(1)", "select pg_notify('c', 'x')",
                    "select pg_stat_reset()", "select pg_catalog.set_config('a.b', '1', false)",
                    "select pg_catalog.lo_unlink(1)", "select app.pg_get_x() from pg_class", "select my_fn() from pg_class"] {
            #expect(!process(&tracker, [.query(sql)]).readsServerState, "\(sql)")
        }
        // A named prepared statement must exist on every backend: its volatile read is still refused.
        let named = process(&tracker, [.parse(.init(name: "n", query: "select random()", parameterTypes: []))])
        guard case let .parse(p)? = try? decode(named.bytes).first else { Issue.record("not a parse"); return }
        #expect(p.query.hasPrefix("DO $pgchorus$"))
    }

    /// Calls the lists do not know are writes until the database's catalog shows every function of the
    /// name to be STABLE or IMMUTABLE (`readers`), in the simple and the extended protocol; a name with
    /// any VOLATILE definition stays a write, as does a statement that writes otherwise; a call by a
    /// quoted name is a call.
    @Test func theCatalogsStableFunctionsRead() {
        var tracker = StatementTracker(refuseVolatile: true)
        let reads = ["select to_regclass('t')::oid", "select tenant(), jsonb_set(doc, '{a}', '1') from t",
                     "select st_distance(a, b) from app.places", "select public.tenant()"]
        for sql in reads {
            #expect(process(&tracker, [.query(sql)]).writes, "unknown while the catalog is: \(sql)")
        }
        tracker.readers = ["to_regclass", "tenant", "jsonb_set", "st_distance", "Bump"]
        for sql in reads {
            let r = process(&tracker, [.query(sql)])
            #expect(!r.writes && r.isPlainRead, "\(sql)")
        }
        // Catalog reads stay the lead's alone; reads of data are compared.
        #expect(process(&tracker, [.query("select to_regclass('t')::oid")]).readsServerState)
        #expect(!process(&tracker, [.query("select tenant() from t")]).readsServerState)
        let extended = process(&tracker, extendedBegin("select tenant() from t where id = $1", parameters: [ByteBuffer(string: "1")]))
        #expect(!extended.writes && extended.isPlainRead)
        for sql in ["select bump_counter()", "select tenant(), bump_counter()", "update t set v = tenant()",
                    "select tenant() from t for update", "insert into t select tenant()", "select \"bump\"()"] {
            #expect(process(&tracker, [.query(sql)]).writes, "\(sql)")
        }
        tracker.readers = nil
        // A quoted call was not seen at all: a writing function called so made a read.
        #expect(process(&tracker, [.query("select \"Bump\"()")]).writes)
        #expect(process(&tracker, [.query("select x.\"Bump\"() from t x")]).writes)
        #expect(!process(&tracker, [.query("select \"id\", \"v\" from \"t\"")]).writes)
        #expect(StatementAnalysis("select \"Bump\"()").unknownCalls == ["Bump"])
        // A quoted nextval() draws a sequence value: the turn.
        #expect(StatementAnalysis("select \"nextval\"('s')").callsNextval)
        // Column lists of aliases and common table expressions are no calls; a call with a column
        // definition list is a call.
        for sql in ["with \"c\"(a) as (select 1) select * from \"c\"", "with c(a) as (select 1), \"d\"(b) as materialized (select 2) select * from c, d",
                    "select relname from pg_class as \"x\"(a)", "select * from generate_series(1, 2) as g(n)"] {
            #expect(!process(&tracker, [.query(sql)]).writes, "\(sql)")
        }
        #expect(process(&tracker, [.query("select * from f(1) as (a int, b text)")]).writes)
        #expect(process(&tracker, [.query("with c as (select 1) select * from \"f\"(1) as (a int)")]).writes)
    }

    @Test func volatileCallIsRefusedWhenConfigured() throws {
        var tracker = StatementTracker(refuseVolatile: true)
        let r = process(&tracker, [.query("update t set a = random()")])
        let out = try decode(r.bytes)
        #expect(out.count == 1)
        guard case let .query(sql)? = out.first else { Issue.record("not a query: \(out)"); return }
        #expect(sql.hasPrefix("DO $pgchorus$"))
        #expect(sql.hasSuffix("$pgchorus$"))
        #expect(sql.contains("RAISE EXCEPTION"))
        #expect(sql.contains("'0A000'"))
        #expect(sql.contains("random()"))
        // The refusal itself is one plain DO statement, with nothing volatile left in it.
        let analysis = StatementAnalysis(sql)
        #expect(analysis.volatileCalls.isEmpty)
        #expect(analysis.timeExpressions.isEmpty)
    }

    @Test func volatileCallPassesWhenAllowed() {
        var tracker = StatementTracker(refuseVolatile: false)
        let r = process(&tracker, [.query("select random()")])
        #expect(r.bytes == bytes([.query("select random()")]))
    }

    @Test func withoutRewriteEverythingPassesUnchanged() {
        var tracker = StatementTracker(refuseVolatile: true)
        tracker.rewrite = false
        let messages: [FrontendMessage] = [
            .query("select now(), random()"),
            .parse(.init(name: "s", query: "insert into t values (current_timestamp)", parameterTypes: [])),
            .parse(.init(name: "", query: "select clock_timestamp()", parameterTypes: [])),
            .bind(.init(portal: "", statement: "s", parameterFormats: [], parameters: [], resultFormats: [])),
            .execute(portal: "", maxRows: 0),
            .sync,
        ]
        let r = process(&tracker, messages)
        #expect(r.bytes == bytes(messages))
        #expect(r.writes)
    }

    // MARK: Extended protocol: time as a parameter of named statements

    @Test func namedParseGetsATimeParameter() throws {
        var tracker = StatementTracker(refuseVolatile: true)
        let r = process(&tracker, [
            .parse(.init(name: "ins", query: "insert into t values ($1, CURRENT_TIMESTAMP)", parameterTypes: [23])),
            .sync,
        ])
        #expect(try decode(r.bytes) == [
            .parse(.init(name: "ins", query: "insert into t values ($1, $2::timestamptz)", parameterTypes: [23, 1184])),
            .sync,
        ])
        #expect(tracker.statements["ins"]?.timeParameter == 2)
    }

    @Test func namedParseWithFewerDeclaredTypesThanParameters() throws {
        var tracker = StatementTracker(refuseVolatile: true)
        let r = process(&tracker, [.parse(.init(name: "s", query: "select $2, now()", parameterTypes: []))])
        #expect(try decode(r.bytes) == [.parse(.init(name: "s", query: "select $2, $3::timestamptz", parameterTypes: [0, 0, 1184]))])
    }

    /// A text sent again (a driver parses its statement for every execution) is analysed once; the
    /// kept analysis gives the same output, its highest parameter included, and a Query of that text too.
    @Test func aTextSentAgainGetsTheSameOutputFromTheKeptAnalysis() throws {
        var tracker = StatementTracker(refuseVolatile: true)
        for name in ["s", "s", "t"] {
            let r = process(&tracker, [.parse(.init(name: name, query: "select $2, now()", parameterTypes: []))])
            #expect(try decode(r.bytes) == [.parse(.init(name: name, query: "select $2, $3::timestamptz", parameterTypes: [0, 0, 1184]))])
            #expect(tracker.statements[name]?.timeParameter == 3)
        }
        #expect(tracker.analyses.count == 1)
        for _ in 0..<2 {
            let q = process(&tracker, [.query("insert into t values (1)")])
            #expect(q.writes && !q.isCommit)
        }
        // (A text with a number is kept by its shape, `StatementTracker.analysedQuery`.)
        #expect(tracker.analyses.count == 1 && tracker.shapes.count == 1)
    }

    /// The session hands the tracker the Query it decoded as it arrived (`QueryText`): the tracker
    /// takes the text and shape from it for that message, and decodes any other message itself.
    @Test func aQueryDecodedOnArrivalIsTakenForThatMessageOnly() throws {
        var tracker = StatementTracker(refuseVolatile: true)
        let now = FrontendMessage.query("insert into t values (1, now())")
        tracker.query = QueryText(now.frame)
        let given = process(&tracker, [now])
        #expect(try decode(given.bytes) == [.query("insert into t values (1, '\(Self.t)'::timestamptz)")] && given.writes)
        #expect(tracker.query == nil, "let go once processed")
        // A text of the same shape, with the hint still that of the first: its own numbers go out.
        let other = process(&tracker, [.query("insert into t values (2, now())")])
        #expect(try decode(other.bytes) == [.query("insert into t values (2, '\(Self.t)'::timestamptz)")])
        #expect(tracker.shapes.count == 1 && tracker.analyses.count == 0)
        // A hint of another message is not taken for this one.
        tracker.query = QueryText(FrontendMessage.query("select 1").frame)
        let read = process(&tracker, [.query("delete from t where a = 3")])
        #expect(try decode(read.bytes) == [.query("delete from t where a = 3")] && read.writes)
        #expect(QueryText(FrontendMessage.sync.frame) == nil)
    }

    /// Parses `statement` (one client parameter plus the time) in one group, then binds it in the next.
    func bindAfterParse(parameterFormats: [Int16], parameters: [ByteBuffer?], query: String, types: [Int32]) throws -> FrontendMessage.Bind? {
        var tracker = StatementTracker(refuseVolatile: true)
        _ = process(&tracker, [.parse(.init(name: "s", query: query, parameterTypes: types)), .sync])
        let r = process(&tracker, [
            .bind(.init(portal: "p", statement: "s", parameterFormats: parameterFormats, parameters: parameters, resultFormats: [1])),
            .execute(portal: "p", maxRows: 0),
            .sync,
        ])
        let out = try decode(r.bytes)
        #expect(out.count == 3)
        #expect(out.dropFirst().elementsEqual([.execute(portal: "p", maxRows: 0), .sync]))
        #expect(r.writes)
        guard case let .bind(bind)? = out.first else { Issue.record("not a bind: \(out)"); return nil }
        #expect(bind.portal == "p")
        #expect(bind.statement == "s")
        #expect(bind.resultFormats == [1])
        return bind
    }

    @Test func bindWithNoFormats() throws {
        let bind = try bindAfterParse(parameterFormats: [], parameters: [text("5")], query: "insert into t values ($1, now())", types: [])
        #expect(bind?.parameterFormats == [])
        #expect(bind?.parameters == [text("5"), text(Self.t)])
    }

    @Test func bindWithOneTextFormat() throws {
        let bind = try bindAfterParse(parameterFormats: [0], parameters: [text("5")], query: "insert into t values ($1, now())", types: [])
        #expect(bind?.parameterFormats == [0])
        #expect(bind?.parameters == [text("5"), text(Self.t)])
    }

    @Test func bindWithOneBinaryFormatForAll() throws {
        var five = ByteBuffer()
        five.writeInteger(Int32(5))
        var six = ByteBuffer()
        six.writeInteger(Int32(6))
        let bind = try bindAfterParse(parameterFormats: [1], parameters: [five, six], query: "insert into t values ($1, $2, now())", types: [23, 23])
        // The client's single code applied to all its parameters; the timestamp is text.
        #expect(bind?.parameterFormats == [1, 1, 0])
        #expect(bind?.parameters == [five, six, text(Self.t)])
    }

    @Test func bindWithOneFormatPerParameter() throws {
        var five = ByteBuffer()
        five.writeInteger(Int32(5))
        let bind = try bindAfterParse(parameterFormats: [1, 0, 0], parameters: [five, text("x"), nil], query: "insert into t values ($1, $2, $3, localtimestamp)", types: [23, 25, 25])
        #expect(bind?.parameterFormats == [1, 0, 0, 0])
        #expect(bind?.parameters == [five, text("x"), nil, text(Self.t)])
    }

    @Test func bindWithNoClientParameters() throws {
        let bind = try bindAfterParse(parameterFormats: [], parameters: [], query: "insert into t values (now())", types: [])
        #expect(bind?.parameters == [text(Self.t)])
    }

    @Test func bindToAStatementWithoutTimeIsUnchanged() {
        var tracker = StatementTracker(refuseVolatile: true)
        _ = process(&tracker, [.parse(.init(name: "s", query: "insert into t values ($1)", parameterTypes: [])), .sync])
        let bind: [FrontendMessage] = [.bind(.init(portal: "", statement: "s", parameterFormats: [1], parameters: [text("x")], resultFormats: []))]
        #expect(process(&tracker, bind).bytes == bytes(bind))
    }

    @Test func unnamedParseGetsALiteral() throws {
        var tracker = StatementTracker(refuseVolatile: true)
        let r = process(&tracker, [
            .parse(.init(name: "", query: "insert into t values ($1, CURRENT_TIMESTAMP)", parameterTypes: [23])),
            .bind(.init(portal: "", statement: "", parameterFormats: [], parameters: [text("1")], resultFormats: [])),
            .execute(portal: "", maxRows: 0),
            .sync,
        ])
        #expect(try decode(r.bytes) == [
            .parse(.init(name: "", query: "insert into t values ($1, '\(Self.t)'::timestamptz)", parameterTypes: [23])),
            .bind(.init(portal: "", statement: "", parameterFormats: [], parameters: [text("1")], resultFormats: [])),
            .execute(portal: "", maxRows: 0),
            .sync,
        ])
        #expect(tracker.statements[""]?.timeParameter == nil)
        #expect(r.writes)
    }

    @Test func namedParseWithVolatileCallIsRefused() throws {
        var tracker = StatementTracker(refuseVolatile: true)
        let r = process(&tracker, [.parse(.init(name: "s", query: "update t set a = $1, b = $2, u = gen_random_uuid()", parameterTypes: [23]))])
        let out = try decode(r.bytes)
        guard case let .parse(parse)? = out.first, out.count == 1 else { Issue.record("not one parse: \(out)"); return }
        #expect(parse.name == "s")
        #expect(parse.query.hasPrefix("DO $pgchorus$"))
        #expect(parse.query.contains("gen_random_uuid()"))
        // The client's Binds still carry two parameters: the refusal declares as many.
        #expect(parse.parameterTypes == [23, 25])
    }

    /// The rows of an INSERT get pgchorus' functions, in a named statement too; its time stays a parameter.
    @Test func namedParseOfAnInsertGetsThePgchorusFunctions() throws {
        var tracker = StatementTracker(refuseVolatile: true)
        tracker.deterministic = true
        let r = process(&tracker, [.parse(.init(name: "s", query: "insert into t values ($1, gen_random_uuid(), now())", parameterTypes: [23]))])
        guard case let .parse(parse)? = try decode(r.bytes).first else { Issue.record("not a parse"); return }
        #expect(parse.query == "insert into t values ($1, pgchorus.gen_random_uuid(), $2::timestamptz)")
        #expect(!r.usesDeterministicValues, "known when it runs, not when it is prepared")
        #expect(process(&tracker, [.bind(.init(portal: "", statement: "s", parameterFormats: [], parameters: [text("1")], resultFormats: [])),
                                   .execute(portal: "", maxRows: 0), .sync]).usesDeterministicValues)
        // A definition is rewritten even while one backend is online (`rewrite` off), so a backend that rejoins gets it too.
        tracker.rewrite = false
        let ddl = process(&tracker, [.query("create table t (at timestamptz default now())")])
        #expect(try decode(ddl.bytes) == [.query("create table t (at timestamptz default pgchorus.now())")])
        // With one backend configured nothing changes.
        tracker.deterministic = false
        #expect(process(&tracker, [.query("create table t (at timestamptz default now())")]).bytes == bytes([.query("create table t (at timestamptz default now())")]))
    }

    /// A statement with an absurd parameter number cannot crash the proxy (counts are 16-bit on the wire).
    @Test func hugeParameterNumbersDoNotCrash() throws {
        var tracker = StatementTracker(refuseVolatile: true)
        // A number beyond Int is no parameter to the analysis (PostgreSQL rejects it on every backend alike).
        let overflow = process(&tracker, [.parse(.init(name: "s", query: "select $99999999999999999999, now()", parameterTypes: []))])
        #expect(try decode(overflow.bytes).count == 1)
        for query in ["select $70000, now()", "select $9223372036854775807, now()", "select $65535, now()"] {
            let r = process(&tracker, [.parse(.init(name: "s", query: query, parameterTypes: []))])
            let out = try decode(r.bytes)
            guard case let .parse(parse)? = out.first, out.count == 1 else { Issue.record("not one parse: \(out)"); continue }
            // No room for a time parameter: the time becomes a literal, alike on every backend.
            #expect(parse.parameterTypes == [])
            #expect(parse.query.contains("'\(Self.t)'::timestamptz"))
            #expect(tracker.statements["s"]?.timeParameter == nil)
        }
        let r = process(&tracker, [.parse(.init(name: "s", query: "select $70000, random()", parameterTypes: [23]))])
        let out = try decode(r.bytes)
        guard case let .parse(parse)? = out.first, out.count == 1 else { Issue.record("not one parse: \(out)"); return }
        #expect(parse.query.hasPrefix("DO $pgchorus$"))
        #expect(parse.parameterTypes.count == Int(UInt16.max))
        #expect(parse.parameterTypes.first == 23)
        // Just below the limit there is still room for the time parameter.
        let below = process(&tracker, [.parse(.init(name: "b", query: "select $65534, now()", parameterTypes: []))])
        guard case let .parse(b)? = try decode(below.bytes).first else { Issue.record("not a parse"); return }
        #expect(b.parameterTypes.count == 65535)
        #expect(b.parameterTypes.last == 1184)
        #expect(b.query == "select $65534, $65535::timestamptz")
    }

    // MARK: Writes

    @Test func simpleQueryWrites() {
        var tracker = StatementTracker(refuseVolatile: true)
        #expect(process(&tracker, [.query("INSERT INTO t VALUES (1)")]).writes)
        #expect(!process(&tracker, [.query("SELECT * FROM t")]).writes)
        #expect(process(&tracker, [.query("select 1; update t set a = 1")]).writes)
    }

    @Test func extendedWrites() {
        var tracker = StatementTracker(refuseVolatile: true)
        let insert = process(&tracker, [
            .parse(.init(name: "", query: "insert into t values ($1)", parameterTypes: [])),
            .bind(.init(portal: "", statement: "", parameterFormats: [], parameters: [text("1")], resultFormats: [])),
            .execute(portal: "", maxRows: 0),
            .sync,
        ])
        #expect(insert.writes)
        let select = process(&tracker, [
            .parse(.init(name: "", query: "select * from t where a = $1", parameterTypes: [])),
            .bind(.init(portal: "", statement: "", parameterFormats: [], parameters: [text("1")], resultFormats: [])),
            .describe(.portal, ""),
            .execute(portal: "", maxRows: 0),
            .sync,
        ])
        #expect(!select.writes)
    }

    @Test func executeOfAPortalBoundEarlierToAnInsert() {
        var tracker = StatementTracker(refuseVolatile: true)
        let prepare = process(&tracker, [
            .parse(.init(name: "ins", query: "INSERT INTO t VALUES ($1)", parameterTypes: [])),
            .parse(.init(name: "sel", query: "SELECT a FROM t", parameterTypes: [])),
            .bind(.init(portal: "pi", statement: "ins", parameterFormats: [], parameters: [text("1")], resultFormats: [])),
            .bind(.init(portal: "ps", statement: "sel", parameterFormats: [], parameters: [], resultFormats: [])),
            .flush,
        ])
        #expect(!prepare.writes) // nothing executed yet
        #expect(process(&tracker, [.execute(portal: "pi", maxRows: 0), .sync]).writes)
        #expect(!process(&tracker, [.execute(portal: "ps", maxRows: 0), .sync]).writes)
        // A portal closed (or never seen) is assumed to write.
        _ = process(&tracker, [.close(.portal, "ps"), .sync])
        #expect(process(&tracker, [.execute(portal: "ps", maxRows: 0), .sync]).writes)
        #expect(process(&tracker, [.execute(portal: "unknown", maxRows: 0), .sync]).writes)
    }

    // MARK: COMMIT

    @Test func extendedEndIsCommit() {
        var tracker = StatementTracker(refuseVolatile: true)
        let r = process(&tracker, [
            .parse(.init(name: "", query: "END", parameterTypes: [])),
            .bind(.init(portal: "", statement: "", parameterFormats: [], parameters: [], resultFormats: [])),
            .execute(portal: "", maxRows: 0),
            .sync,
        ])
        #expect(r.isCommit)
        #expect(!r.writes)
        #expect(!r.mixesTransactionControl)
    }

    @Test func preparedEndIsCommit() {
        var tracker = StatementTracker(refuseVolatile: true)
        let parse = process(&tracker, [.parse(.init(name: "P_6", query: "END;", parameterTypes: [])), .sync])
        #expect(!parse.isCommit)
        let r = process(&tracker, [
            .bind(.init(portal: "", statement: "P_6", parameterFormats: [], parameters: [], resultFormats: [])),
            .execute(portal: "", maxRows: 0),
            .sync,
        ])
        #expect(r.isCommit)
        #expect(!r.mixesTransactionControl)
    }

    @Test func simpleCommitIsCommit() {
        var tracker = StatementTracker(refuseVolatile: true)
        #expect(process(&tracker, [.query("commit")]).isCommit)
        #expect(!process(&tracker, [.query("commit prepared 'x'")]).isCommit)
        let mixed = process(&tracker, [.query("insert into t values (1); commit")])
        #expect(!mixed.isCommit)
        #expect(mixed.mixesTransactionControl)
    }

    @Test func twoExecutesAreNotACommit() {
        var tracker = StatementTracker(refuseVolatile: true)
        _ = process(&tracker, [
            .parse(.init(name: "P_6", query: "END;", parameterTypes: [])),
            .parse(.init(name: "ins", query: "insert into t values (1)", parameterTypes: [])),
            .sync,
        ])
        let r = process(&tracker, [
            .bind(.init(portal: "", statement: "ins", parameterFormats: [], parameters: [], resultFormats: [])),
            .execute(portal: "", maxRows: 0),
            .bind(.init(portal: "", statement: "P_6", parameterFormats: [], parameters: [], resultFormats: [])),
            .execute(portal: "", maxRows: 0),
            .sync,
        ])
        #expect(!r.isCommit)
        #expect(r.mixesTransactionControl)
        #expect(r.writes)

        let twice = process(&tracker, [
            .bind(.init(portal: "", statement: "P_6", parameterFormats: [], parameters: [], resultFormats: [])),
            .execute(portal: "", maxRows: 0),
            .execute(portal: "", maxRows: 0),
            .sync,
        ])
        #expect(!twice.isCommit)
    }
}
