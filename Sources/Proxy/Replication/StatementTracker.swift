import NIOCore
import Wire

/// Follows a session's prepared statements and portals so each group of client messages can be
/// understood (does it write? is it the COMMIT?) and made deterministic before it reaches the
/// backends: time functions become one value per transaction, volatile calls in definitions and
/// in an INSERT's rows become the `pgchorus` functions (`DeterministicValues`), other volatile calls in
/// writes are refused.
struct StatementTracker {
    struct Prepared {
        var analysis: StatementAnalysis
        /// Its text mentions `DEALLOCATE` or `DISCARD`: running it may drop prepared statements.
        var deallocates = false
        /// For a named statement whose time expressions became parameter `$n`: n.
        var timeParameter: Int?
    }

    /// What a group of client messages turned into.
    struct Result {
        var bytes = ByteBuffer()
        /// Some statement in the group may change data.
        var writes = false
        /// The group's only statement is COMMIT/END.
        var isCommit = false
        /// The group is a plain `BEGIN` alone (`BeginAnswer`): what PostgreSQL answers it with from idle.
        var beginAnswer: BeginAnswer?
        /// Named statements of a plain BEGIN the group parses, with the place of their Parse among the
        /// group's Parses: each becomes a `beginStatements` once the lead has answered that Parse.
        var beginParses: [(parse: Int, name: String, token: Int)] = []
        /// How many Parse and Close messages the group has (PostgreSQL answers them in order).
        var parses = 0
        var closes = 0
        /// The group's named Parses (the place of each among its Parses, and the message as it goes to
        /// the backends, rewritten or not) and Closes of statements, in order: what a backend taken into
        /// the session must be given (`SessionReplay`).
        var statementChanges: [StatementChange] = []
        /// The group has COMMIT/ROLLBACK next to other statements.
        var mixesTransactionControl = false
        /// Every statement is a plain read and the group creates nothing that must exist on every
        /// backend (no named statement or portal): it may run on one backend (`read_routing`).
        var isPlainRead = true
        /// The group is one statement that may run in a transaction block (see `StatementAnalysis.isWrappable`).
        var isWrappable = false
        /// The group creates a temporary table.
        var createsTemporaryObject = false
        /// …one that outlives its transaction (not `ON COMMIT DROP`).
        var createsSessionTemporaryObject = false
        /// The group has `DISCARD ALL` or `DISCARD TEMP`.
        var discardsTemporaryObjects = false
        /// The group calls nextval/setval explicitly.
        var callsNextval = false
        /// Relations the group inserts into.
        var insertTargets: [String] = []
        /// The group has DDL (which may add or drop SERIAL/IDENTITY columns).
        var hasDDL = false
        /// The group may change the catalog (`StatementAnalysis.changesCatalog`).
        var mayChangeCatalog = false
        /// One statement that reads no table but the one it writes or locks (`StatementAnalysis.readsOnlyItsTarget`).
        var readsOnlyItsTarget = false
        /// Some statement is a read of per-server state (`StatementAnalysis.readsServerState`).
        var readsServerState = false
        /// Some such statement is so for more than its rows' physical order (a per-backend value, the
        /// catalogs): it must run on the lead alone (`StatementAnalysis.perServerByOrderOnly`).
        var perServerNeedsLead = false
        /// The group is one statement whose only effect is on locks that live on the lead alone (a
        /// `SELECT … FOR UPDATE … SKIP LOCKED`, advisory lock calls: `StatementAnalysis.locksOnLeadAlone`),
        /// with no named statement or portal: it may run on the lead alone.
        var locksOnLeadAlone = false
        /// The group runs one such statement (with a named statement or portal, too): where it goes
        /// to every backend, its rows are per backend.
        var lockRowsPerBackend = false
        /// Some statement calls the `pgchorus` functions of `DeterministicValues` (rewritten here).
        var usesDeterministicValues = false
        /// Some statement makes PREPARE TRANSACTION impossible (`StatementAnalysis.preventsPrepare`).
        var preventsPrepare = false
        /// Some statement is COMMIT/END.
        var containsCommit = false
        /// The group's one statement declares, fetches from, moves or closes a cursor that lives on
        /// the lead alone (`StatementAnalysis.leadOnlyCursor`): it goes to the lead only.
        var usesLeadOnlyCursor = false
        /// Some statement uses a savepoint (`StatementAnalysis.usesSavepoint`).
        var usesSavepoint = false
        /// Some statement run takes a snapshot (`StatementAnalysis.takesSnapshot`).
        var takesSnapshot = false
        /// Some statement may change an isolation level (`StatementAnalysis.mentionsIsolation`).
        var mentionsIsolation = false
        /// Some statement takes a session-level advisory lock (`StatementAnalysis.takesSessionLock`).
        var takesSessionLock = false
        /// Some statement releases them all (`StatementAnalysis.releasesSessionLocks`).
        var releasesSessionLocks = false
        /// The group runs one statement, a bare try of a session-level advisory lock
        /// (`StatementAnalysis.barelyTriesSessionLock`): the lead's one value says whether it took it.
        var barelyTriesSessionLock = false
    }

    var statements: [String: Prepared] = [:]
    /// Named statements of a plain BEGIN the lead is known to hold (its ParseComplete came, no Close,
    /// `DEALLOCATE` or `DISCARD` since): a Bind of one alone is answered ahead (`BeginAnswer`).
    private(set) var beginStatements: Set<String> = []
    /// A statement text's analysis depends on the text alone: kept for texts sent again.
    struct Analysed {
        var analysis: StatementAnalysis
        /// The highest `$n` in the text (worked out for Parse only).
        var highestParameter: Int?
        /// The text mentions `DEALLOCATE` or `DISCARD` (`StatementTracker.deallocating`; worked out
        /// for Parse only, with `highestParameter`: a Query's text is looked at only when it matters).
        var deallocates = false
        init(_ analysis: StatementAnalysis) { self.analysis = analysis }
    }
    var analyses = TextMemo<Analysed>()
    /// Analyses of Query texts by their shape (`StatementAnalysis.numbersMasked`): a text that differs
    /// from one analysed before only in its numbers is not analysed again (`analysedQuery`).
    var shapes = TextMemo<StatementAnalysis>()
    /// The last Query the session decoded as it arrived (`QueryText`): `process` takes its text and
    /// shape from it instead of decoding the message again, when the message is that one, and lets it
    /// go (a text of many megabytes is not kept past its statement).
    var query: QueryText?
    var portals: [String: String] = [:]
    var refuseVolatile: Bool
    /// Refuse writes that pick rows by physical order (`replication.physical_order_writes`).
    var refusePhysicalOrder = true
    /// With one backend nothing can diverge: statements pass unchanged.
    var rewrite = true
    /// Columns with per-row defaults and sequence columns, and unique keys, per table
    /// (`SequenceOrdering.rowOrderCatalog`), when known.
    var rowOrder = RowOrderCatalog()
    /// `rowOrder` was loaded (not a stand-in while the catalog is unknown).
    var rowOrderKnown = false
    /// Function names whose every definition in the database is STABLE or IMMUTABLE
    /// (`SequenceOrdering.routines`), when known: calls of them read (`StatementAnalysis.resolved`).
    var readers: Set<String>?
    /// User functions of the database whose body takes rows `SKIP LOCKED` or tries an advisory lock
    /// (`SequenceOrdering.routines`): a call of one is refused (`lockStateRoutineRefusal`).
    var lockStateRoutines: Set<String> = []
    /// Tables with a trigger whose routine takes rows `SKIP LOCKED` or tries an advisory lock: those
    /// routines per table and event (`SequenceOrdering.routines`); a write that fires one is refused
    /// (`lockStateTriggerRefusal`).
    var lockStateTriggers: [StatementAnalysis.WriteTarget: Set<String>] = [:]
    /// The cluster has several backends: definitions use the `pgchorus` functions (`DeterministicValues`),
    /// even while only one is online, so a backend that rejoins has the same definitions.
    var deterministic = false
    /// Cursors declared on the lead alone (`StatementAnalysis.leadOnlyCursor`), and whether WITH HOLD.
    var leadOnlyCursors: [String: Bool] = [:]
    /// Statements the client made with SQL `PREPARE name AS <a plain read of per-server state>`
    /// (pg_dump's `dumpFunc`, `dumpTableAttach` …: catalog reads by OID): their `EXECUTE name(…)` is
    /// that read, the lead's alone — not a statement of unknown effect sent everywhere and compared,
    /// where each backend's own OIDs made the followers answer otherwise and outvote the lead.
    var sqlPreparedReads: [String: StatementAnalysis] = [:]

    init(refuseVolatile: Bool) {
        self.refuseVolatile = refuseVolatile
    }

    static let timestamptzOID: Int32 = 1184
    static let textOID: Int32 = 25
    /// Parameter counts are 16-bit on the wire: a Parse may not declare more.
    static let maximumParameters = Int(UInt16.max)

    /// `text` as it goes inside a quoted SQL literal of a refusal (its quotes doubled).
    static func inLiteral(_ text: String) -> String {
        text.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''")
    }

    /// A statement that fails on every backend alike, in place of one that would diverge.
    static func refusal(_ calls: [String]) -> String {
        let list = Self.inLiteral(calls.joined(separator: ", "))
        let hint = refusalHint(calls)
        return "DO $pgchorus$ BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', "
            + "MESSAGE = 'pgchorus refuses \(list): the value would differ on each backend', "
            + "HINT = '\(hint)'; END $pgchorus$"
    }

    /// The way out a refusal names: the first kind of call in `calls` that has its own (SQL-quoted).
    static func refusalHint(_ calls: [String]) -> String {
        if calls.contains(where: { $0.hasSuffix(StatementAnalysis.physicalOrderNote) }) {
            return "Give the rows a complete order: ORDER BY a unique key in the SELECT; for an UPDATE, number the rows with row_number() OVER (ORDER BY id) in a FROM subquery and add one value drawn once (SELECT nextval(…)) or setval() the sequence after."
        }
        if calls.contains(where: { $0.hasSuffix(StatementAnalysis.sequenceFill) }) {
            return "Add the column without it, number the existing rows in a complete order (UPDATE t SET n = r.n FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM t) r WHERE t.id = r.id), then give the column its default or identity (ALTER COLUMN … SET DEFAULT nextval(…), or SET NOT NULL and ADD GENERATED … AS IDENTITY) and setval() its sequence past the highest value."
        }
        if calls.contains(StatementAnalysis.untypedTimeDefault) {
            return "Give the default its type (SET DEFAULT ''now''::timestamptz, ''today''::date): pgchorus gives it the same time on every backend; or SET DEFAULT now() for the time of each row."
        }
        // A per-row value over rows each backend takes in its own order (see `DeterministicValues`).
        if calls.contains(where: { $0.contains(" in ") }) {
            return "Give existing rows values computed from their key (e.g. md5(id::text)::uuid), then set the default with ALTER TABLE … ALTER COLUMN … SET DEFAULT: pgchorus makes the values of new rows identical on every backend."
        }
        return "Compute the value in the application and send it as a literal or parameter, or use it in a column default or in INSERT … VALUES (pgchorus makes those identical), or set replication.volatile_functions = \"allow\" in pgchorus.toml (backends may then diverge)."
    }

    /// In place of a client's COMMIT PREPARED, ROLLBACK PREPARED or PREPARE TRANSACTION of a gid in
    /// pgchorus' namespace: only the vote (or the in-doubt resolver) finishes those; a client ending
    /// another session's prepared transaction between two backends would split it.
    static let ownTransactionRefusal = "DO $pgchorus$ BEGIN RAISE EXCEPTION USING ERRCODE = '42501', "
        + "MESSAGE = 'pgchorus refuses to let a client prepare, commit or roll back a transaction named pgchorus:…', "
        + "HINT = 'Those are pgchorus'' own two-phase commits: its commit vote and in-doubt resolver finish them. Name your own prepared transactions otherwise.'; END $pgchorus$"

    /// A statement that fails on every backend alike, in place of a write that depends on other
    /// sessions' locks on each backend (`StatementAnalysis.writesByLockState`).
    static func lockStateRefusal(_ what: [String]) -> String {
        "DO $pgchorus$ BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', "
            + "MESSAGE = 'pgchorus refuses \(what.joined(separator: ", ")) in a statement that writes: whether a lock is free depends on the other sessions of each backend at that moment, so each would write other rows', "
            + "HINT = 'Take the locks in a SELECT of their own (SELECT id FROM jobs … FOR UPDATE SKIP LOCKED, SELECT pg_try_advisory_lock(k): pgchorus runs it on the lead alone and returns its choice), then write by key in the same transaction (UPDATE jobs SET … WHERE id = ANY($1)).'; END $pgchorus$"
    }

    /// A statement that fails on every backend alike, in place of a call of a routine whose body takes
    /// rows `SKIP LOCKED` or tries an advisory lock (a job queue's `take_job()`): each backend would
    /// answer by the locks of its own sessions and take, mark or return other rows, and a routine may
    /// write, so it cannot run on the lead alone either.
    static func lockStateRoutineRefusal(_ names: [String]) -> String {
        "DO $pgchorus$ BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', "
            + "MESSAGE = 'pgchorus refuses \(names.map { "\($0)()" }.joined(separator: ", ")): its body takes rows FOR UPDATE SKIP LOCKED or tries an advisory lock, which each backend would answer by the locks of its own sessions, taking other rows', "
            + "HINT = 'Take the rows or locks in a SELECT of their own (SELECT id FROM jobs … FOR UPDATE SKIP LOCKED, SELECT pg_try_advisory_lock(k): pgchorus runs it on the lead alone and returns its choice), then pass the keys to the routine or write by key in the same transaction.'; END $pgchorus$"
    }

    /// A statement that fails on every backend alike, in place of a write that fires a trigger running
    /// such a routine (`lockStateRoutineRefusal`): every backend fires it, each by its own sessions' locks.
    static func lockStateTriggerRefusal(_ fired: [(target: StatementAnalysis.WriteTarget, routines: [String])]) -> String {
        let list = inLiteral(fired.map { "\($0.target.event.uppercased()) of \($0.target.table) (its trigger runs \($0.routines.map { "\($0)()" }.joined(separator: ", ")))" }
            .joined(separator: ", "))
        return "DO $pgchorus$ BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', "
            + "MESSAGE = 'pgchorus refuses \(list): that routine takes rows FOR UPDATE SKIP LOCKED or tries an advisory lock, which each backend would answer by the locks of its own sessions, taking other rows', "
            + "HINT = 'Take the rows or locks in a SELECT of their own (SELECT id FROM jobs … FOR UPDATE SKIP LOCKED: pgchorus runs it on the lead alone and returns its choice) and write by key in the same transaction, instead of in the trigger.'; END $pgchorus$"
    }

    /// A statement that fails on every backend alike, in place of a write that would choose other rows
    /// on each backend.
    static func physicalOrderRefusal(_ clauses: [String]) -> String {
        let list = clauses.joined(separator: ", ")
        return "DO $pgchorus$ BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', "
            + "MESSAGE = 'pgchorus refuses \(list) in a write without ORDER BY: each backend would choose other rows, or aggregate them in another order (their physical order differs)', "
            + "HINT = 'Add an ORDER BY that orders the rows completely (e.g. by the primary key; in an aggregate, string_agg(name, '','' ORDER BY id)), or set replication.physical_order_writes = \"allow\" in pgchorus.toml (backends may then diverge).'; END $pgchorus$"
    }

    /// A statement that fails on every backend alike, in place of an INSERT … SELECT whose rows would
    /// get per-row default values (or sequence values) in each backend's own order.
    static func unorderedDefaultsRefusal(_ columns: [String]) -> String {
        let list = Self.inLiteral(columns.joined(separator: ", "))
        return "DO $pgchorus$ BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', "
            + "MESSAGE = 'pgchorus refuses INSERT … SELECT … FROM without ORDER BY into \(list): that default gives each row its own value, and each backend would take the rows in its own physical order', "
            + "HINT = 'Add an ORDER BY that orders the rows completely (e.g. by the primary key), or give that column its values in the statement. "
            + "A SELECT that meets one row by a unique key (WHERE id = $1) or aggregates without GROUP BY needs none.'; END $pgchorus$"
    }

    /// What `unorderedDefaultsRefusal` names for `insert` — its omitted columns whose default gives
    /// each row its own value (SERIAL/IDENTITY ones only when `sequences`) — unless the SELECT meets
    /// one row at most.
    func unorderedDefaults(_ insert: UnorderedInsert, sequences: Bool) -> [String] {
        var drawing = rowOrder.perRowDefaults[insert.relation] ?? []
        if sequences { drawing.formUnion(rowOrder.sequenceColumns[insert.relation] ?? []) }
        drawing.subtract(insert.columns ?? [])
        guard !drawing.isEmpty, !insert.meetsOneRow(uniqueKeys: rowOrder.uniqueKeys) else { return [] }
        return drawing.sorted().map { "\(insert.relation).\($0)" }
    }

    /// The refusal's entry for `nextval()` in an UPDATE whose WHERE may meet several rows.
    static let updateNextval = "nextval() in an UPDATE whose WHERE pins no unique key" + StatementAnalysis.physicalOrderNote

    /// The refusal's entry for `nextval()` drawn in the select list of an INSERT … SELECT without ORDER BY.
    static let insertSelectNextval = "nextval() in INSERT … SELECT … FROM without ORDER BY" + StatementAnalysis.physicalOrderNote

    /// The refusal for `analysis` when it is to be refused, nil when it may run. `named`: a named
    /// prepared statement, which every backend must have, so its reads cannot go to the lead alone.
    func refusal(for analysis: StatementAnalysis, named: Bool = false) -> String? {
        if analysis.namesPgchorusTransaction { return Self.ownTransactionRefusal }
        guard rewrite else { return nil }
        if !analysis.writesByLockState.isEmpty { return Self.lockStateRefusal(analysis.writesByLockState) }
        if !lockStateRoutines.isEmpty, case let calls = analysis.unknownCalls.subtracting(analysis.triggerRoutines),
           !calls.isDisjoint(with: lockStateRoutines) {
            return Self.lockStateRoutineRefusal(calls.intersection(lockStateRoutines).sorted())
        }
        if !lockStateTriggers.isEmpty,
           case let fired = Set(analysis.writeTargets).compactMap({ t in lockStateTriggers[t].map { (target: t, routines: $0.sorted()) } }), !fired.isEmpty {
            return Self.lockStateTriggerRefusal(fired.sorted { ($0.target.table, $0.target.event) < ($1.target.table, $1.target.event) })
        }
        if refusePhysicalOrder && !analysis.physicalOrderClauses.isEmpty { return Self.physicalOrderRefusal(analysis.physicalOrderClauses) }
        // (Sequence columns numbered in scan order are what `replication.physical_order_writes` allows.)
        let unordered = analysis.unorderedInsertSelects.flatMap { unorderedDefaults($0, sequences: refusePhysicalOrder) }
        if !unordered.isEmpty { return Self.unorderedDefaultsRefusal(unordered) }
        var volatile = analysis.volatileCalls
        if analysis.unorderedInsertSelects.contains(where: { $0.drawsNextval && !$0.meetsOneRow(uniqueKeys: rowOrder.uniqueKeys) }) {
            volatile.append(Self.insertSelectNextval)
        }
        // (Without the catalog, an UPDATE … WHERE id = $1 cannot be told from one meeting many rows: it runs.)
        if rowOrderKnown, analysis.nextvalUpdates.contains(where: { !$0.meetsOneRow(uniqueKeys: rowOrder.uniqueKeys) }) {
            volatile.append(Self.updateNextval)
        }
        // A read with such a call is answered by the lead alone (`readsServerState`): nothing to refuse.
        if refuseVolatile && !volatile.isEmpty && (named || !analysis.readsServerState) { return Self.refusal(volatile) }
        return nil
    }

    /// The analysis of a Query's text: kept by text (`BEGIN`, a statement sent again), and by shape
    /// (`StatementAnalysis.maskedShape`) — pgbench's `UPDATE pgbench_accounts SET abalance = abalance +
    /// -4977 WHERE aid = 52311` is analysed once, not once per key (the analysis was a quarter of
    /// pgchorusd's user time in TPC-B `-M simple`). The byte ranges of what the statement has rewritten
    /// (its `CURRENT_TIMESTAMP`, as in pgbench's `INSERT INTO pgbench_history`) are kept in the shape's
    /// terms and moved into each text's (`intoShape`, `fromShape`); an analysis with a number inside
    /// such a range is kept by text.
    /// The text's shape comes with it (`QueryText.masked`); a text is kept by one key or the other.
    mutating func analysedQuery(_ query: QueryText) -> StatementAnalysis {
        let sql = query.sql
        if let masked = query.masked, let key = query.shapeKey, let kept = shapes[key] { return kept.fromShape(masked.numbers) }
        if let kept = analyses[sql] { return kept.analysis }
        let analysis = StatementAnalysis(sql)
        if let masked = query.masked, let key = query.shapeKey, let shaped = analysis.intoShape(masked.numbers) {
            shapes.keep(shaped, for: key)
        } else {
            analyses.keep(Analysed(analysis), for: sql)
        }
        return analysis
    }

    /// Keeps `leadOnlyCursors` and marks a group that uses one of them (simple Query, one statement).
    mutating func noteCursor(_ analysis: StatementAnalysis, in result: inout Result) {
        if let name = analysis.leadOnlyCursor {
            leadOnlyCursors[name] = analysis.cursorHeld
            result.usesLeadOnlyCursor = true
        } else if let name = analysis.cursorUsed {
            if name == "*" {
                // CLOSE ALL: every backend closes its own cursors.
                leadOnlyCursors = [:]
            } else if leadOnlyCursors[name] != nil {
                result.usesLeadOnlyCursor = true
                if analysis.closesCursor { leadOnlyCursors[name] = nil }
            }
        }
    }

    /// The transaction ended: cursors without HOLD are gone.
    mutating func transactionEnded() {
        if !leadOnlyCursors.isEmpty { leadOnlyCursors = leadOnlyCursors.filter(\.value) }
    }

    /// A plain `BEGIN` sent alone, in the simple protocol (one Query) or the extended one: `Parse` of it
    /// as the unnamed statement with no parameter types, `Bind` of that to the unnamed portal with no
    /// parameters and at most one format code of each kind, `Describe` of the portal or not,
    /// `Execute`, `Sync` (pgbench `-M extended`, libpq's `PQexecParams`). From idle PostgreSQL answers
    /// it with nothing but acknowledgements — those below, the command tag, ReadyForQuery `T` — so
    /// the node can give that answer itself (`answerBeginAhead`).
    struct BeginAnswer: Equatable {
        var tag: String
        /// BindComplete and (for the Describe) NoData come before the tag, ParseComplete before them
        /// when the group parsed the statement.
        var extended = false
        var parse = true
        var noData = false
    }

    /// The extended protocol's plain BEGIN (`BeginAnswer`) among `frames`, already seen as three to
    /// five messages with one Execute: Parse of the unnamed statement then its Bind, or a Bind alone of
    /// a named statement the lead is known to hold (`beginStatements`; pgbench `-M prepared`); nil
    /// for anything else (which PostgreSQL may answer otherwise: a parameter makes Bind fail, a named
    /// statement may already exist or be gone, a named portal outlives the BEGIN).
    func extendedBegin(_ frames: [PostgresFrame]) -> BeginAnswer? {
        let parsed = frames[0].type == FrontendMessage.Kind.parse.rawValue
        // This runs for every extended-protocol statement: what costs no decoding is looked at first.
        if parsed ? statements[""]?.analysis.beginTag == nil : beginStatements.isEmpty { return nil }
        guard frames[frames.count - 1].type == FrontendMessage.Kind.sync.rawValue,
              case .execute(portal: "", maxRows: _)? = try? FrontendMessage(frame: frames[frames.count - 2]) else { return nil }
        if parsed {
            guard case let .parse(parse)? = try? FrontendMessage(frame: frames[0]), parse.name.isEmpty, parse.parameterTypes.isEmpty
            else { return nil }
        }
        let bindAt = parsed ? 1 : 0
        guard frames.count - bindAt == 3 || frames.count - bindAt == 4,
              case let .bind(bind)? = try? FrontendMessage(frame: frames[bindAt]), bind.portal.isEmpty,
              parsed ? bind.statement.isEmpty : beginStatements.contains(bind.statement),
              let tag = statements[bind.statement]?.analysis.beginTag,
              bind.parameters.isEmpty, bind.parameterFormats.count <= 1, bind.resultFormats.count <= 1 else { return nil }
        let described = frames.count - bindAt == 4
        if described {
            guard case .describe(.portal, "")? = try? FrontendMessage(frame: frames[bindAt + 1]) else { return nil }
        }
        return BeginAnswer(tag: tag, extended: true, parse: parsed, noData: described)
    }

    /// The lead answered the Parse of named statement `name`, a plain BEGIN (`Result.beginParses`):
    /// it is held from now on unless something processed since that Parse may have dropped or
    /// replaced it (a Close, the name parsed again, a text that may deallocate), which forgot `token`.
    mutating func beginParsed(_ name: String, token: Int) {
        guard pendingBegins[name] == token else { return }
        pendingBegins[name] = nil
        if statements[name]?.analysis.beginTag != nil { beginStatements.insert(name) }
    }

    /// Statement texts that may drop protocol-level prepared statements behind the tracker's back.
    static let deallocating: [[UInt8]] = [Array("deallocate".utf8), Array("discard".utf8)]

    /// Whether `sql` mentions `DEALLOCATE` or `DISCARD`.
    /// For `EXECUTE name(…)` of a read made with SQL PREPARE (`sqlPreparedReads`): that read's analysis.
    /// Notes `PREPARE name AS …` (`noteDeallocation` forgets them). Nil otherwise; only texts beginning
    /// with one of those two words are lexed here.
    mutating func sqlPrepared(_ sql: String) -> StatementAnalysis? {
        let start = sql.utf8.drop { $0 == 0x20 || $0 == 0x0A || $0 == 0x09 || $0 == 0x0D }
        // (Asked of every Query: the first letter rules out nearly all of them without building anything.)
        guard let first = start.first.map({ $0 | 0x20 }), first == UInt8(ascii: "p") || first == UInt8(ascii: "e") else { return nil }
        let head = start.prefix(7).map { $0 | 0x20 }
        guard head.elementsEqual("prepare".utf8) || head.elementsEqual("execute".utf8) else { return nil }
        let t = SQLLexer.tokens(sql, trivia: false)
        guard t.count >= 2, t[0].kind == .word, t[1].kind == .word || t[1].kind == .quotedIdentifier else { return nil }
        switch t[0].text {
        case "execute":
            return sqlPreparedReads[t[1].text]
        case "prepare" where t[1].text != "transaction" || t[1].kind == .quotedIdentifier:
            var depth = 0
            var body: Int?
            for tok in t.dropFirst(2) {
                if tok.kind == .punctuation, tok.text == "(" { depth += 1 }
                if tok.kind == .punctuation, tok.text == ")" { depth -= 1 }
                if depth == 0, tok.kind == .word, tok.text == "as" { body = tok.range.upperBound; break }
            }
            sqlPreparedReads[t[1].text] = nil
            guard let body, let inner = String(sql.utf8.dropFirst(body)) else { return nil }
            let read = StatementAnalysis(inner).resolved(readers: readers)
            if read.isPlainRead, read.isReadOnly, read.readsServerState, read.timeExpressions.isEmpty, read.deterministicRewrites.isEmpty {
                sqlPreparedReads[t[1].text] = read
            }
        default:
            break
        }
        return nil
    }

    static func mayDeallocate(_ sql: String) -> Bool { SessionReplay.mentions(sql, needles: deallocating) }

    /// Named plain BEGINs parsed, their Parse not yet answered by the lead: name → the token the
    /// Parse was given (`Result.beginParses`). Anything that may drop the name forgets its entry.
    private var pendingBegins: [String: Int] = [:]
    private var beginTokens = 0

    /// Something may have dropped or replaced named statement `name` (nil: any of them).
    private mutating func forgetBegin(_ name: String?) {
        if let name {
            beginStatements.remove(name)
            pendingBegins[name] = nil
        } else {
            beginStatements = []
            pendingBegins = [:]
        }
    }

    /// A statement that may deallocate prepared statements (its text, or an Execute of a statement
    /// the tracker did not see parsed) was sent: none is known to be held any more.
    /// (`deallocates` is worked out only while some named BEGIN is known or pending.)
    private mutating func noteDeallocation(_ deallocates: @autoclosure () -> Bool) {
        guard !beginStatements.isEmpty || !pendingBegins.isEmpty || !sqlPreparedReads.isEmpty, deallocates() else { return }
        if !beginStatements.isEmpty || !pendingBegins.isEmpty { forgetBegin(nil) }
        sqlPreparedReads.removeAll()
    }

    mutating func process(_ frames: [PostgresFrame], timestamp: () -> String) -> Result {
        let arrived = query
        query = nil
        var result = Result()
        // One message passed on unchanged (the usual Query) is not copied: its bytes go as they came.
        let single = frames.count == 1
        if !single { result.bytes.reserveCapacity(frames.reduce(0) { $0 + $1.bytes.readableBytes }) }
        func passUnchanged(_ frame: PostgresFrame) {
            if !single { result.bytes.appendReadableBytes(of: frame.bytes) }
        }
        var executes = 0
        var parses = 0
        var closes = 0
        var commitExecutes = 0
        var wrappableExecutes = 0
        var targetOnlyExecutes = 0
        var leadLockExecutes = 0
        // No named statement or portal made or dropped, no unknown Execute (see `Result.locksOnLeadAlone`).
        var plainShape = true
        for frame in frames {
            switch frame.type {
            case FrontendMessage.Kind.query.rawValue:
                guard let query = arrived.flatMap({ $0.describes(frame) ? $0 : nil }) ?? QueryText(frame) else {
                    passUnchanged(frame)
                    continue
                }
                let sql = query.sql
                let analysis = sqlPrepared(sql) ?? analysedQuery(query).resolved(readers: readers)
                noteDeallocation(Self.mayDeallocate(sql))
                result.note(analysis)
                if single, rewrite { noteCursor(analysis, in: &result) }
                if single { result.beginAnswer = analysis.beginTag.map { BeginAnswer(tag: $0) } }
                executes += 1
                if analysis.isWrappable { wrappableExecutes += 1 }
                if analysis.readsOnlyItsTarget { targetOnlyExecutes += 1 }
                if analysis.locksOnLeadAlone { leadLockExecutes += 1 }
                if analysis.isCommit { commitExecutes += 1 }
                result.mixesTransactionControl = result.mixesTransactionControl || analysis.mixesTransactionControl
                if !analysis.isReadOnly { result.writes = true }
                let time = rewrite && !analysis.timeExpressions.isEmpty
                if let refusal = refusal(for: analysis) {
                    FrontendMessage.query(refusal).encode(into: &result.bytes)
                } else if time || (deterministic && !analysis.deterministicRewrites.isEmpty) {
                    let sql = analysis.rewriting(in: sql, time: time ? "'\(timestamp())'" : nil, deterministic: deterministic)
                    FrontendMessage.query(sql).encode(into: &result.bytes)
                } else {
                    passUnchanged(frame)
                }
            case FrontendMessage.Kind.parse.rawValue:
                guard case var .parse(parse)? = try? FrontendMessage(frame: frame) else {
                    passUnchanged(frame)
                    continue
                }
                var analysed = analyses.value(for: parse.query) { Analysed(StatementAnalysis(parse.query)) }
                if analysed.highestParameter == nil {
                    analysed.highestParameter = StatementAnalysis.highestParameter(in: parse.query)
                    analysed.deallocates = Self.mayDeallocate(parse.query)
                    analyses.keep(analysed, for: parse.query)
                }
                let analysis = analysed.analysis
                noteDeallocation(analysed.deallocates)
                if !parse.name.isEmpty {
                    // Parsed again: until the lead answers, it may have failed (the name was in use).
                    forgetBegin(parse.name)
                    if analysis.beginTag != nil, parse.parameterTypes.isEmpty {
                        beginTokens += 1
                        pendingBegins[parse.name] = beginTokens
                        result.beginParses.append((parses, parse.name, beginTokens))
                    }
                }
                parses += 1
                let start = result.bytes.writerIndex
                var prepared = Prepared(analysis: analysis, deallocates: analysed.deallocates, timeParameter: nil)
                // A client may write `$70000` (or a number beyond Int): bounded, so the counts below stay encodable.
                let parameters = max(parse.parameterTypes.count,
                                     min(analysed.highestParameter ?? 0, Self.maximumParameters + 1))
                let time = rewrite && !analysis.timeExpressions.isEmpty
                if let refusal = refusal(for: analysis, named: !parse.name.isEmpty) {
                    let count = min(parameters, Self.maximumParameters)
                    parse.parameterTypes += Array(repeating: Self.textOID, count: count - parse.parameterTypes.count)
                    parse.query = refusal
                    FrontendMessage.parse(parse).encode(into: &result.bytes)
                } else if time && (parse.name.isEmpty || parameters >= Self.maximumParameters) {
                    // (A named statement with no room for one more parameter gets a literal too: frozen, but alike everywhere.)
                    parse.query = analysis.rewriting(in: parse.query, time: "'\(timestamp())'", deterministic: deterministic)
                    FrontendMessage.parse(parse).encode(into: &result.bytes)
                } else if time {
                    // A named statement runs many times: its time becomes a parameter filled in at each Bind.
                    let n = parameters + 1
                    parse.parameterTypes += Array(repeating: 0, count: n - 1 - parse.parameterTypes.count) + [Self.timestamptzOID]
                    parse.query = analysis.rewriting(in: parse.query, time: "$\(n)", deterministic: deterministic)
                    prepared.timeParameter = n
                    FrontendMessage.parse(parse).encode(into: &result.bytes)
                } else if deterministic && !analysis.deterministicRewrites.isEmpty {
                    parse.query = analysis.rewriting(in: parse.query, time: nil, deterministic: true)
                    FrontendMessage.parse(parse).encode(into: &result.bytes)
                } else {
                    passUnchanged(frame)
                }
                statements[parse.name] = prepared
                if !parse.name.isEmpty {
                    result.isPlainRead = false
                    plainShape = false
                    let sent = result.bytes.writerIndex > start ? result.bytes.getSlice(at: start, length: result.bytes.writerIndex - start)! : frame.bytes
                    result.statementChanges.append(.parsed(parse: parses - 1, name: parse.name, bytes: sent))
                }
            case FrontendMessage.Kind.bind.rawValue:
                // Only the names are needed unless a time parameter is added: the whole Bind
                // (parameter arrays) is decoded just for that.
                guard let names = FrontendMessage.bindNames(frame) else {
                    passUnchanged(frame)
                    continue
                }
                portals[names.portal] = names.statement
                if !names.portal.isEmpty {
                    result.isPlainRead = false
                    plainShape = false
                }
                if let n = statements[names.statement]?.timeParameter, case var .bind(bind)? = try? FrontendMessage(frame: frame),
                   bind.parameters.count == n - 1 {
                    switch bind.parameterFormats.count {
                    case 0: break
                    case 1 where bind.parameterFormats[0] == 0: break
                    case 1: bind.parameterFormats = Array(repeating: bind.parameterFormats[0], count: n - 1) + [0]
                    default: bind.parameterFormats.append(0)
                    }
                    bind.parameters.append(ByteBuffer(string: timestamp()))
                    FrontendMessage.bind(bind).encode(into: &result.bytes)
                } else {
                    passUnchanged(frame)
                }
            case FrontendMessage.Kind.execute.rawValue:
                executes += 1
                if case let .execute(portal, _)? = try? FrontendMessage(frame: frame),
                   let name = portals[portal], let prepared = statements[name] {
                    noteDeallocation(prepared.deallocates)
                    let analysis = prepared.analysis.resolved(readers: readers)
                    result.note(analysis)
                    if analysis.isCommit { commitExecutes += 1 }
                    if analysis.isWrappable { wrappableExecutes += 1 }
                    if analysis.readsOnlyItsTarget { targetOnlyExecutes += 1 }
                    if analysis.locksOnLeadAlone { leadLockExecutes += 1 }
                    if !analysis.isReadOnly { result.writes = true }
                    result.mixesTransactionControl = result.mixesTransactionControl || analysis.mixesTransactionControl
                } else {
                    result.writes = true // a statement we did not see prepared (e.g. SQL PREPARE): assume it writes
                    result.isPlainRead = false
                    plainShape = false
                    noteDeallocation(true) // and that it may deallocate
                }
                passUnchanged(frame)
            case FrontendMessage.Kind.close.rawValue:
                result.isPlainRead = false
                plainShape = false
                if case let .close(target, name)? = try? FrontendMessage(frame: frame) {
                    closes += 1
                    if target == .statement {
                        statements[name] = nil
                        forgetBegin(name)
                        result.statementChanges.append(.closed(close: closes - 1, name: name))
                    } else {
                        portals[name] = nil
                    }
                }
                passUnchanged(frame)
            case FrontendMessage.Kind.functionCall.rawValue:
                executes += 1
                result.writes = true
                result.isPlainRead = false
                plainShape = false
                passUnchanged(frame)
            default:
                passUnchanged(frame)
            }
        }
        result.parses = parses
        result.closes = closes
        result.isCommit = executes == 1 && commitExecutes == 1
        result.readsOnlyItsTarget = executes == 1 && targetOnlyExecutes == 1
        result.lockRowsPerBackend = executes == 1 && leadLockExecutes == 1
        result.locksOnLeadAlone = result.lockRowsPerBackend && plainShape
        result.barelyTriesSessionLock = result.barelyTriesSessionLock && result.locksOnLeadAlone
        result.isWrappable = executes == 1 && wrappableExecutes == 1
        if executes != 1 { result.discardsTemporaryObjects = false }
        if executes == 0 { result.isPlainRead = false }
        if commitExecutes > 0 && executes > 1 { result.mixesTransactionControl = true }
        if single && result.bytes.readableBytes == 0 { result.bytes = frames[0].bytes }
        if executes == 1, frames.count >= 3, frames.count <= 5 { result.beginAnswer = extendedBegin(frames) }
        return result
    }
}

/// A named statement made or dropped by a client message (`StatementTracker.Result.statementChanges`).
enum StatementChange {
    case parsed(parse: Int, name: String, bytes: ByteBuffer)
    /// `close`: the place of the Close among the group's Closes (of statements and portals).
    case closed(close: Int, name: String)
}

extension StatementTracker.Result {
    mutating func note(_ analysis: StatementAnalysis) {
        if !analysis.isPlainRead { isPlainRead = false }
        if analysis.readsServerState {
            readsServerState = true
            if !analysis.perServerByOrderOnly { perServerNeedsLead = true }
        }
        if !analysis.deterministicRewrites.isEmpty { usesDeterministicValues = true }
        if analysis.preventsPrepare { preventsPrepare = true }
        if analysis.containsCommit { containsCommit = true }
        if analysis.usesSavepoint { usesSavepoint = true }
        if analysis.takesSnapshot { takesSnapshot = true }
        if analysis.mentionsIsolation { mentionsIsolation = true }
        if analysis.takesSessionLock { takesSessionLock = true }
        if analysis.releasesSessionLocks { releasesSessionLocks = true }
        if analysis.barelyTriesSessionLock { barelyTriesSessionLock = true }
        if analysis.createsTemporaryObject { createsTemporaryObject = true }
        if analysis.createsTemporaryObject && !analysis.temporaryObjectDroppedAtCommit { createsSessionTemporaryObject = true }
        if analysis.discardsTemporaryObjects { discardsTemporaryObjects = true }
        if analysis.callsNextval { callsNextval = true }
        insertTargets += analysis.insertTargets
        if analysis.isDDL { hasDDL = true }
        if analysis.changesCatalog { mayChangeCatalog = true }
    }
}
