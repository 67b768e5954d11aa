#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What the replication path needs to know about one SQL string (possibly several statements):
/// whether it ends a transaction, whether it may write, and which non-deterministic calls it makes.
public struct StatementAnalysis: Sendable, Equatable {
    /// What an analysis holds, kept behind one reference (`Storage`): an analysis is copied out of
    /// the memo for every statement and passed along (about one copy and one destruction of the whole
    /// of it a statement, each retaining or releasing every collection in it: 4 % of a TPC-B
    /// transaction's instructions, `bench/instructions.sh`); behind a reference a copy is one retain,
    /// and the first change of a shared one copies it (copy on write).
    struct Fields: Sendable {
        /// The string is exactly one `COMMIT` / `END` (with optional `WORK`/`TRANSACTION`), the one
        /// statement the commit vote replaces.
        var isCommit = false
        /// The string is exactly one `BEGIN` (with optional `WORK`/`TRANSACTION`) or `START TRANSACTION`,
        /// without options: from idle PostgreSQL answers it with this command tag and nothing else, always.
        var beginTag: String?
        /// The string has a transaction-control statement among others (e.g. `UPDATE …; COMMIT`).
        var mixesTransactionControl = false
        /// Nothing in it can change data: SELECT/SHOW/VALUES/TABLE/EXPLAIN (without ANALYZE)/FETCH,
        /// transaction control and session SET, with no row locks and only functions known not to write.
        var isReadOnly = true
        /// DDL (CREATE/ALTER/DROP …): a time function inside it (a column default, a view) cannot be
        /// made one value, so it counts as a volatile call.
        var isDDL = false
        /// Some statement may change what pgchorus loads of the catalog (`SequenceOrdering.catalogSQL`):
        /// CREATE, ALTER, DROP, or a `DO` block (migrations create tables and functions in blocks that
        /// check first; it is no DDL for the vote). Not TRUNCATE, VACUUM, GRANT, COMMENT …, which are DDL.
        var changesCatalog = false
        /// Calls whose value differs on every backend and that cannot be made identical by rewriting.
        var volatileCalls: [String] = []
        /// Every statement is a plain read (SELECT/SHOW/VALUES/TABLE/EXPLAIN/WITH, read-only) that changes
        /// no session state, so it may run on one backend only (`read_routing`).
        var isPlainRead = true
        /// Some statement takes a snapshot when it runs: the first such one in a REPEATABLE READ or
        /// SERIALIZABLE transaction fixes the transaction's (PostgreSQL's `PlannedStmtRequiresSnapshot`:
        /// all but transaction control, SET/RESET/SHOW, LOCK, LISTEN/NOTIFY, FETCH/MOVE, CHECKPOINT, and
        /// here also CLOSE, DISCARD, DEALLOCATE, PREPARE, LOAD: where unsure, none).
        var takesSnapshot = false
        /// Some statement may change a transaction's isolation level or the session's default for it
        /// (`BEGIN ISOLATION LEVEL …`, `SET TRANSACTION …`, `SET default_transaction_isolation`, `SET
        /// SESSION CHARACTERISTICS`, `set_config()`, `RESET`, `DISCARD`).
        var mentionsIsolation = false
        /// Some statement calls a function that takes a session-level advisory lock (`pg_advisory_lock`,
        /// `pg_try_advisory_lock` and their `_shared` forms): held on the lead alone (`locksOnLeadAlone`)
        /// until the session unlocks it or ends.
        var takesSessionLock = false
        /// Some statement releases every session-level advisory lock (`pg_advisory_unlock_all()`, `DISCARD ALL`).
        var releasesSessionLocks = false
        /// The string is one `SELECT pg_try_advisory_lock(…)` (or `_shared`) and nothing else — no FROM,
        /// no WHERE, no second try: its one value says whether it took the lock (a leader election's poll).
        /// (Other calls in it are judged by `locksOnLeadAlone`: only readers may be there.)
        var barelyTriesSessionLock = false
        /// A plain read whose answer is per server, not data: a call whose value differs per backend
        /// (`random()`, `pg_backend_pid()`, `txid_current()` …) or anything of the catalogs and statistics
        /// (`pg_*` relations and functions, `information_schema`, OIDs and `reg*` casts), or rows picked or
        /// aggregated in each backend's physical order (`readsPhysicalOrder`). The lead answers it alone
        /// and it is not compared.
        var readsServerState = false
        /// One statement that may run inside a transaction block (INSERT, UPDATE, DELETE, MERGE, SELECT,
        /// WITH, VALUES, COPY): an autocommit write of this kind is wrapped in BEGIN … PREPARE TRANSACTION.
        var isWrappable = false
        /// The statement creates a temporary table (PostgreSQL cannot PREPARE a transaction that used one).
        var createsTemporaryObject = false
        /// …one dropped when its transaction commits (`ON COMMIT DROP`): later transactions may PREPARE.
        var temporaryObjectDroppedAtCommit = false
        /// `DISCARD ALL` or `DISCARD TEMP`: the session's temporary tables are gone.
        var discardsTemporaryObjects = false
        /// Something PostgreSQL refuses to PREPARE TRANSACTION after: NOTIFY or pg_notify(), LISTEN,
        /// UNLISTEN, a cursor declared WITH HOLD. Its transaction commits without the vote.
        var preventsPrepare = false
        /// Some statement is COMMIT/END (alone or among others).
        var containsCommit = false
        /// `DECLARE name … CURSOR … FOR <read>` whose read has a per-backend value (a volatile call,
        /// per-server state) and locks no rows: the cursor lives on the lead alone, like such a read
        /// (`readsServerState`), and its FETCH, MOVE and CLOSE go there too. The name as PostgreSQL folds it.
        var leadOnlyCursor: String?
        /// The cursor is declared WITH HOLD (it outlives its transaction).
        var cursorHeld = false
        /// FETCH, MOVE or CLOSE: the cursor named, as PostgreSQL folds it (`*` for CLOSE ALL).
        var cursorUsed: String?
        /// The statement is CLOSE (of `cursorUsed`).
        var closesCursor = false
        /// SAVEPOINT, RELEASE [SAVEPOINT] or ROLLBACK TO [SAVEPOINT] among the statements.
        var usesSavepoint = false
        /// INSERTs whose rows come from a table scan without ORDER BY (`INSERT … SELECT … FROM t`): a
        /// per-row default of a column not named, or a nextval() of the select list, would give the rows
        /// their values in each backend's physical order — unless the SELECT meets one row at most.
        var unorderedInsertSelects: [UnorderedInsert] = []
        /// The statement draws sequence values explicitly (nextval/setval).
        var callsNextval = false
        /// One statement whose only effect is on locks that live on the lead alone: a `SELECT … FOR
        /// UPDATE/SHARE … SKIP LOCKED` (a job queue taking its next job), or a SELECT calling the
        /// advisory lock functions (`pg_try_advisory_lock(k)` electing a leader, `pg_advisory_unlock(k)`),
        /// writing nothing and calling no other function that might. Whether a lock is free depends on
        /// which other sessions hold it on each backend at that moment, so each backend would answer
        /// otherwise (a follower's other answer failed it). It runs on the lead alone (`GroupRoute`);
        /// the writes that follow, by the keys the lead returned, go everywhere.
        var locksOnLeadAlone = false
        /// What makes a writing statement depend on the locks of each backend's other sessions: `SKIP
        /// LOCKED` (`UPDATE jobs SET … WHERE id = (SELECT id … FOR UPDATE SKIP LOCKED)`, a CTE that does,
        /// DELETE … RETURNING of such rows) or a `pg_try_advisory_…()` call: each backend would write
        /// other rows, the lead's answer alike whatever the others did (it diverged silently). Refused
        /// (`StatementTracker.lockStateRefusal`).
        var writesByLockState: [String] = []
        /// UPDATEs with a WHERE that call nextval(): the table and the columns their WHERE pins to
        /// constants. Unless those hold a unique key, the rows met get their values in each backend's
        /// scan order (`StatementTracker.refusal(for:)` judges with the catalog).
        var nextvalUpdates: [UnorderedInsert.Keyed] = []
        /// Tables rows are inserted into (INSERT INTO, COPY … FROM, MERGE INTO), lower-cased relation names:
        /// their SERIAL/IDENTITY defaults draw sequence values.
        var insertTargets: [String] = []
        /// The tables a statement inserts into, updates, deletes from or truncates, with the event
        /// (`writeTargets`): their triggers for it fire on every backend.
        var writeTargets: [WriteTarget] = []
        /// The routine `CREATE TRIGGER … EXECUTE FUNCTION f()` names: not called by the statement (a call
        /// of a lock-state routine is refused, `StatementTracker.lockStateRoutines`; the trigger's writes are judged instead).
        var triggerRoutines: Set<String> = []
        /// Clauses of a write that pick rows by physical order (`LIMIT`, `OFFSET`, `FETCH FIRST`, `DISTINCT ON`
        /// in a statement without ORDER BY, `ctid`): each backend would pick its own rows.
        var physicalOrderClauses: [String] = []
        /// One statement that reads no table but the one it writes or locks (UPDATE/DELETE without FROM,
        /// USING, joins or subqueries; INSERT … VALUES; COPY … FROM; SELECT … FOR UPDATE of one table): waiting on a row
        /// lock, it sees the committed version of that row (PostgreSQL's re-check) on every backend alike.
        var readsOnlyItsTarget = false
        /// `COMMIT PREPARED`, `ROLLBACK PREPARED` or `PREPARE TRANSACTION` of a gid in pgchorus' own
        /// namespace (`pgchorus:…`): refused (`StatementTracker.ownTransactionRefusal`).
        var namesPgchorusTransaction = false
        /// Byte ranges of the time expressions to replace by one value per transaction, and their SQL type.
        var timeExpressions: [(range: Range<Int>, type: String)] = []
        /// Calls of functions neither known to read (`readOnlyFunctions`) nor taken in by the rules
        /// (`isSyntaxOrCatalogAccessor`), by name as PostgreSQL stores it (`pg_proc.proname`): a user's
        /// function may write, so each makes the statement count as a write — unless the database's catalog
        /// shows every function of that name to be STABLE or IMMUTABLE (`resolved(readers:)`).
        var unknownCalls: Set<String> = []
        /// `locksOnLeadAlone` as it would be, were the unknown calls (other than the advisory lock
        /// functions) readers.
        var locksOnLeadAloneButForUnknownCalls = false
        /// Nothing but `unknownCalls` makes the statement a write (it would be read-only without them).
        var readOnlyButForUnknownCalls = false
        /// `isPlainRead` as it would be, were the unknown calls readers.
        var plainButForUnknownCalls = false
        /// Some token reads per-server state (see `readsServerState`).
        var touchesServerState = false
        /// A read (no row written or locked) picks or aggregates rows by each backend's physical order
        /// (`physicalOrderPicks`: `SELECT … LIMIT 1` without ORDER BY, `string_agg(v, ',')`): its answer
        /// is per server, like a per-backend value's (`readsServerState`). (Compared, it failed a healthy
        /// follower whose rows lie in another order — every recovered backend's.)
        var readsPhysicalOrder = false
        /// `readsServerState` for no other reason than `readsPhysicalOrder`: its answer is per server,
        /// but it may run everywhere (its rows uncompared) — which a transaction needs, so that the
        /// followers take their snapshot at the same statement as the lead (REPEATABLE READ).
        var perServerByOrderOnly = false
        /// Volatile calls in definitions (column defaults, views, function and DO bodies) and per-row calls
        /// in an INSERT's VALUES, to be replaced by the `pgchorus` functions that give every backend the
        /// same value (see `DeterministicValues`).
        var deterministicRewrites: [DeterministicValues.Rewrite] = []
    }

    /// The reference that holds the fields; shared between copies until one of them changes.
    final class Storage: @unchecked Sendable {
        // (Sendable: never changed while shared — `fields` copies it first — so only read across threads.)
        var fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    private var storage = Storage(Fields())

    /// The fields, to change: copied first if another analysis shares them.
    private var fields: Fields {
        get { storage.fields }
        _modify {
            if !isKnownUniquelyReferenced(&storage) { storage = Storage(storage.fields) }
            yield &storage.fields
        }
    }

    // Each field as if it were a stored property (`Fields` says what each means).
    public var isCommit: Bool { get { storage.fields.isCommit } _modify { yield &fields.isCommit } }
    public var beginTag: String? { get { storage.fields.beginTag } _modify { yield &fields.beginTag } }
    public var mixesTransactionControl: Bool { get { storage.fields.mixesTransactionControl } _modify { yield &fields.mixesTransactionControl } }
    public var isReadOnly: Bool { get { storage.fields.isReadOnly } _modify { yield &fields.isReadOnly } }
    public var isDDL: Bool { get { storage.fields.isDDL } _modify { yield &fields.isDDL } }
    public var changesCatalog: Bool { get { storage.fields.changesCatalog } _modify { yield &fields.changesCatalog } }
    public var volatileCalls: [String] { get { storage.fields.volatileCalls } _modify { yield &fields.volatileCalls } }
    public var isPlainRead: Bool { get { storage.fields.isPlainRead } _modify { yield &fields.isPlainRead } }
    public var takesSnapshot: Bool { get { storage.fields.takesSnapshot } _modify { yield &fields.takesSnapshot } }
    public var mentionsIsolation: Bool { get { storage.fields.mentionsIsolation } _modify { yield &fields.mentionsIsolation } }
    public var takesSessionLock: Bool { get { storage.fields.takesSessionLock } _modify { yield &fields.takesSessionLock } }
    public var releasesSessionLocks: Bool { get { storage.fields.releasesSessionLocks } _modify { yield &fields.releasesSessionLocks } }
    public var barelyTriesSessionLock: Bool { get { storage.fields.barelyTriesSessionLock } _modify { yield &fields.barelyTriesSessionLock } }
    public var readsServerState: Bool { get { storage.fields.readsServerState } _modify { yield &fields.readsServerState } }
    public var isWrappable: Bool { get { storage.fields.isWrappable } _modify { yield &fields.isWrappable } }
    public var createsTemporaryObject: Bool { get { storage.fields.createsTemporaryObject } _modify { yield &fields.createsTemporaryObject } }
    public var temporaryObjectDroppedAtCommit: Bool { get { storage.fields.temporaryObjectDroppedAtCommit } _modify { yield &fields.temporaryObjectDroppedAtCommit } }
    public var discardsTemporaryObjects: Bool { get { storage.fields.discardsTemporaryObjects } _modify { yield &fields.discardsTemporaryObjects } }
    public var preventsPrepare: Bool { get { storage.fields.preventsPrepare } _modify { yield &fields.preventsPrepare } }
    public var containsCommit: Bool { get { storage.fields.containsCommit } _modify { yield &fields.containsCommit } }
    public var leadOnlyCursor: String? { get { storage.fields.leadOnlyCursor } _modify { yield &fields.leadOnlyCursor } }
    public var cursorHeld: Bool { get { storage.fields.cursorHeld } _modify { yield &fields.cursorHeld } }
    public var cursorUsed: String? { get { storage.fields.cursorUsed } _modify { yield &fields.cursorUsed } }
    public var closesCursor: Bool { get { storage.fields.closesCursor } _modify { yield &fields.closesCursor } }
    public var usesSavepoint: Bool { get { storage.fields.usesSavepoint } _modify { yield &fields.usesSavepoint } }
    public var unorderedInsertSelects: [UnorderedInsert] { get { storage.fields.unorderedInsertSelects } _modify { yield &fields.unorderedInsertSelects } }
    public var callsNextval: Bool { get { storage.fields.callsNextval } _modify { yield &fields.callsNextval } }
    public var locksOnLeadAlone: Bool { get { storage.fields.locksOnLeadAlone } _modify { yield &fields.locksOnLeadAlone } }
    public var writesByLockState: [String] { get { storage.fields.writesByLockState } _modify { yield &fields.writesByLockState } }
    public var nextvalUpdates: [UnorderedInsert.Keyed] { get { storage.fields.nextvalUpdates } _modify { yield &fields.nextvalUpdates } }
    public var insertTargets: [String] { get { storage.fields.insertTargets } _modify { yield &fields.insertTargets } }
    public var writeTargets: [WriteTarget] { get { storage.fields.writeTargets } _modify { yield &fields.writeTargets } }
    public var triggerRoutines: Set<String> { get { storage.fields.triggerRoutines } _modify { yield &fields.triggerRoutines } }
    public var physicalOrderClauses: [String] { get { storage.fields.physicalOrderClauses } _modify { yield &fields.physicalOrderClauses } }
    public var readsOnlyItsTarget: Bool { get { storage.fields.readsOnlyItsTarget } _modify { yield &fields.readsOnlyItsTarget } }
    public var namesPgchorusTransaction: Bool { get { storage.fields.namesPgchorusTransaction } _modify { yield &fields.namesPgchorusTransaction } }
    public var timeExpressions: [(range: Range<Int>, type: String)] { get { storage.fields.timeExpressions } _modify { yield &fields.timeExpressions } }
    public var unknownCalls: Set<String> { get { storage.fields.unknownCalls } _modify { yield &fields.unknownCalls } }
    var locksOnLeadAloneButForUnknownCalls: Bool { get { storage.fields.locksOnLeadAloneButForUnknownCalls } _modify { yield &fields.locksOnLeadAloneButForUnknownCalls } }
    var readOnlyButForUnknownCalls: Bool { get { storage.fields.readOnlyButForUnknownCalls } _modify { yield &fields.readOnlyButForUnknownCalls } }
    var plainButForUnknownCalls: Bool { get { storage.fields.plainButForUnknownCalls } _modify { yield &fields.plainButForUnknownCalls } }
    var touchesServerState: Bool { get { storage.fields.touchesServerState } _modify { yield &fields.touchesServerState } }
    var readsPhysicalOrder: Bool { get { storage.fields.readsPhysicalOrder } _modify { yield &fields.readsPhysicalOrder } }
    var perServerByOrderOnly: Bool { get { storage.fields.perServerByOrderOnly } _modify { yield &fields.perServerByOrderOnly } }
    public var deterministicRewrites: [DeterministicValues.Rewrite] { get { storage.fields.deterministicRewrites } _modify { yield &fields.deterministicRewrites } }

    public static func == (a: StatementAnalysis, b: StatementAnalysis) -> Bool {
        a.isCommit == b.isCommit && a.beginTag == b.beginTag && a.mixesTransactionControl == b.mixesTransactionControl && a.isReadOnly == b.isReadOnly
            && a.isDDL == b.isDDL && a.volatileCalls == b.volatileCalls
            && a.timeExpressions.map(\.range) == b.timeExpressions.map(\.range) && a.timeExpressions.map(\.type) == b.timeExpressions.map(\.type)
            && a.deterministicRewrites == b.deterministicRewrites
            && a.unorderedInsertSelects == b.unorderedInsertSelects
    }

    /// Words of statements that may change an isolation level (`mentionsIsolation`).
    static let isolationWords: Set<String> = ["isolation", "default_transaction_isolation", "characteristics", "set_config"]

    /// First words of statements that take no snapshot (`takesSnapshot`).
    static let snapshotless: Set<String> = [
        "begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release", "prepare", "set", "reset",
        "show", "lock", "listen", "unlisten", "notify", "fetch", "move", "close", "checkpoint", "discard", "deallocate", "load",
    ]

    /// Functions whose result differs per backend; refused (or allowed) by `replication.volatile_functions`.
    static let volatileFunctions: Set<String> = [
        "random", "clock_timestamp", "timeofday", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v4",
        "txid_current", "pg_current_xact_id", "random_normal", "setseed", "inet_server_port", "pg_backend_pid",
        // Each backend's own connection and transaction ids (STABLE in the catalog, but per server).
        "inet_client_port", "txid_current_snapshot", "pg_current_snapshot",
        "txid_current_if_assigned", "pg_current_xact_id_if_assigned",
    ]

    /// Calls that read only, commonly used in queries (a call neither listed nor taken in by
    /// `isSyntaxOrCatalogAccessor` makes a SELECT count as a write, since a user function may write).
    static let readOnlyFunctions: Set<String> = [
        "count", "sum", "avg", "min", "max", "coalesce", "nullif", "greatest", "least", "lower", "upper", "length",
        "substr", "substring", "trim", "btrim", "ltrim", "rtrim", "abs", "round", "floor", "ceil", "ceiling", "mod",
        "concat", "concat_ws", "format", "to_char", "to_date", "to_timestamp", "to_number", "date_trunc", "date_part",
        "extract", "age", "string_agg", "json_agg", "jsonb_agg", "json_build_object", "jsonb_build_object",
        "row_number", "rank", "dense_rank", "lag", "lead", "generate_series", "unnest", "cardinality",
        "exists", "any", "all", "in", "cast", "current_setting", "version", "md5", "sha256", "encode",
        "decode", "replace", "split_part", "position", "strpos", "left", "right", "repeat", "reverse", "now",
        "transaction_timestamp", "statement_timestamp", "quote_ident", "quote_literal", "regexp_replace",
        "regexp_matches", "octet_length", "char_length", "bool_and", "bool_or", "every", "stddev", "variance",
        "current_database", "current_schema", "obj_description", "col_description", "format_type", "string_to_array",
        "numeric", "int4", "int8", "text", "float8", "jsonb_array_elements", "json_array_elements", "jsonb_each", "json_each", "row", "values",
        // Not `lo_open`, `lo_close`, `loread`, `lo_lseek`: they open, close or move a large-object
        // descriptor of the session, which the statements after them use on every backend (a plain
        // dump's `SELECT pg_catalog.lo_open(…)` then `lowrite(0, …)`).
        "array", "lo_get", "lo_tell", "lo_tell64",
        // More of PostgreSQL's pure functions, as ORMs' and admin tools' catalog queries and reports call them.
        "generate_subscripts", "current_schemas", "shobj_description", "translate", "initcap", "lpad", "rpad", "chr",
        "ascii", "starts_with", "overlay", "bit_length", "regexp_match", "regexp_split_to_array",
        "regexp_split_to_table", "string_to_table", "sqrt", "cbrt", "power", "exp", "ln", "log10", "trunc",
        "width_bucket", "num_nulls", "num_nonnulls", "make_date", "make_time", "make_timestamp",
        "make_timestamptz", "make_interval", "justify_days", "justify_hours", "justify_interval", "isfinite", "date_bin",
        "to_json", "to_jsonb", "row_to_json", "json_build_array", "jsonb_build_array", "json_object_agg",
        "jsonb_object_agg", "jsonb_pretty", "jsonb_typeof", "json_typeof", "jsonb_array_length", "json_array_length",
        "jsonb_object_keys", "json_object_keys", "jsonb_extract_path", "jsonb_extract_path_text", "json_extract_path",
        "json_extract_path_text", "jsonb_path_query", "jsonb_path_exists", "percentile_cont", "percentile_disc",
        "first_value", "last_value", "nth_value", "ntile", "percent_rank", "cume_dist", "stddev_pop", "stddev_samp",
        "var_pop", "var_samp", "corr", "bit_and", "bit_or", "masklen", "lower_inc", "upper_inc", "isempty", "range_merge", "int2", "float4", "varchar", "bpchar",
    ]

    /// Words before a parenthesis that are SQL, not a call: `OPERATOR(pg_catalog.~)` (how psql's `\d`
    /// and other tools write an operator safe from the search_path), `JOIN … ON (…)`, `WHERE (…)` …;
    /// and PostgreSQL's own functions named `pg_…` that only read (catalog accessors such as
    /// `pg_get_expr()`, `pg_relation_is_publishable()`, sizes, statistics), and `has_…_privilege()`,
    /// `array_…()`: their statements stay reads. (psql's `\d t` was sent to every backend and compared,
    /// and a follower whose table has another OID, as every recovered backend's, was failed.) The `pg_…`
    /// functions that act (locks, notifications, resets, slots, backups) stay writes;
    /// `pg_terminate_backend()` and `pg_cancel_backend()` act on one server's processes, by the pids the
    /// lead gives: reads, the lead's alone (a per-server read).
    static func isSyntaxOrCatalogAccessor(_ name: String) -> Bool {
        if syntaxBeforeParenthesis.contains(name) { return true }
        if name.hasPrefix("pg_") { return !actingServerFunctionPrefixes.contains { name.hasPrefix($0) } }
        return (name.hasPrefix("has_") && name.hasSuffix("_privilege")) || name.hasPrefix("array_") || name == "_pg_expandarray"
    }

    static let syntaxBeforeParenthesis: Set<String> = [
        "operator", "on", "where", "and", "or", "not", "when", "then", "else", "from", "join", "select", "as", "over",
        "filter", "within", "group", "by", "case", "is", "distinct", "union", "intersect", "except", "having", "limit", "offset",
    ]

    /// How the names of PostgreSQL's `pg_…` functions that change or signal something begin.
    static let actingServerFunctionPrefixes: [String] = [
        "pg_advisory", "pg_try_advisory", "pg_notify", "pg_stat_reset", "pg_stat_statements_reset", "pg_reload_conf",
        "pg_rotate_logfile", "pg_create_", "pg_drop_", "pg_replication_", "pg_switch_wal", "pg_promote", "pg_backup_",
        "pg_start_backup", "pg_stop_backup", "pg_wal_replay_", "pg_log_", "pg_import_", "pg_logical_", "pg_copy_",
        "pg_file_", "pg_set_", "pg_clear_", "pg_restore_", "pg_truncate_",
    ]

    static let routineWords: Set<String> = ["function", "procedure", "routine", "aggregate"]
    static let readOnlyStarts: Set<String> = ["select", "show", "values", "table", "fetch", "move", "explain", "with"]
    static let transactionControl: Set<String> = ["begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release"]
    static let ddlStarts: Set<String> = ["create", "alter", "drop", "comment", "grant", "revoke", "security", "reindex", "cluster", "vacuum", "analyze", "truncate"]

    public init(_ sql: String) {
        var touches = false
        defer {
            readOnlyButForUnknownCalls = isReadOnly && !unknownCalls.isEmpty
            takesSessionLock = !unknownCalls.isDisjoint(with: Self.sessionLockFunctions)
            if unknownCalls.contains("pg_advisory_unlock_all") { releasesSessionLocks = true }
            plainButForUnknownCalls = isPlainRead
            touchesServerState = touches
            if !unknownCalls.isEmpty { isReadOnly = false }
            if !isReadOnly { isPlainRead = false }
            // A read of per-server state or of a per-backend value: answered by the lead alone, uncompared.
            if isReadOnly && isPlainRead && (!volatileCalls.isEmpty || touches || readsPhysicalOrder) { readsServerState = true }
            perServerByOrderOnly = readsServerState && volatileCalls.isEmpty && !touches
        }
        var tokens = SQLLexer.significant(sql)
        touches = Self.touchesServerState(tokens)
        func isSemicolon(_ t: SQLToken) -> Bool { t.kind == .punctuation && t.text == ";" }
        var statements: [[SQLToken]]
        if let last = tokens.last, isSemicolon(last) { tokens.removeLast() }
        if !tokens.contains(where: isSemicolon) {
            // One statement (the usual case): no copying into per-statement arrays.
            statements = tokens.isEmpty ? [] : [tokens]
        } else {
            statements = [[]]
            for t in tokens {
                if isSemicolon(t) { statements.append([]) } else { statements[statements.count - 1].append(t) }
            }
            statements.removeAll { $0.isEmpty }
        }
        let words = statements.map { $0.first?.kind == .word ? $0.first!.text : "" }
        if statements.count == 1, words[0] == "commit" || words[0] == "end" {
            let rest = statements[0].dropFirst().map(\.text)
            isCommit = rest.isEmpty || rest == ["work"] || rest == ["transaction"]
                || rest == ["and", "no", "chain"] || rest == ["work", "and", "no", "chain"] || rest == ["transaction", "and", "no", "chain"]
        }
        if statements.count == 1, words[0] == "begin" || words[0] == "start" {
            let rest = statements[0].dropFirst().map(\.text)
            if words[0] == "begin", rest.isEmpty || rest == ["work"] || rest == ["transaction"] { beginTag = "BEGIN" }
            if words[0] == "start", rest == ["transaction"] { beginTag = "START TRANSACTION" }
        }
        if statements.count > 1, words.contains(where: { Self.transactionControl.contains($0) }) {
            mixesTransactionControl = true
        }
        if statements.isEmpty { isPlainRead = false }
        if statements.count == 1 {
            switch words[0] {
            case "insert", "update", "delete", "merge", "select", "with", "values", "copy": isWrappable = true
            default: isWrappable = false
            }
        }
        for (s, first) in zip(statements, words) {
            switch first {
            case "select", "show", "values", "table", "explain", "with": break
            default: isPlainRead = false
            }
            if !first.isEmpty, !Self.snapshotless.contains(first) { takesSnapshot = true }
            if first == "reset" || first == "discard" || s.contains(where: { $0.kind == .word && Self.isolationWords.contains($0.text) }) {
                mentionsIsolation = true
            }
            if first == "discard", s.count >= 2, s[1].kind == .word, s[1].text == "all" { releasesSessionLocks = true }
            if statements.count == 1, first == "select",
               !s.contains(where: { $0.kind == .word && ($0.text == "from" || $0.text == "where") }),
               case let tries = s.filter({ $0.kind == .word && $0.text.hasPrefix("pg_try_advisory") }),
               tries.count == 1, tries[0].text.hasPrefix("pg_try_advisory_lock") {
                barelyTriesSessionLock = true
            }
            if first == "select" || first == "with", s.contains(where: { $0.kind == .word && $0.text == "into" }) {
                // SELECT … INTO creates a table.
                isReadOnly = false
            }
            if (first == "create" || first == "select" || first == "with"),
               s.contains(where: { $0.kind == .word && ($0.text == "temp" || $0.text == "temporary") }) {
                createsTemporaryObject = true
                let w = s.map { $0.kind == .word ? $0.text : "" }
                if zip(w, zip(w.dropFirst(), w.dropFirst(2))).contains(where: { $0 == "on" && $1.0 == "commit" && $1.1 == "drop" }) {
                    temporaryObjectDroppedAtCommit = true
                }
            }
            // (Alone in its Query: among others it runs in an implicit transaction block, which DISCARD
            // ALL refuses and whose rollback would bring DISCARD TEMP's tables back.)
            if statements.count == 1, first == "discard", s.count >= 2, s[1].kind == .word, ["all", "temp", "temporary"].contains(s[1].text) {
                discardsTemporaryObjects = true
            }
            if first == "savepoint" || first == "release" || (first == "rollback" && s.dropFirst().contains { $0.kind == .word && $0.text == "to" }) {
                usesSavepoint = true
            }
            switch first {
            case "notify", "listen", "unlisten": preventsPrepare = true
            case "commit", "end":
                if !(s.count > 1 && s[1].kind == .word && s[1].text == "prepared") { containsCommit = true }
            case "declare":
                if zip(s, s.dropFirst()).contains(where: { $0.kind == .word && $0.text == "with" && $1.kind == .word && $1.text == "hold" }) { preventsPrepare = true }
            default: break
            }
            if s.contains(where: { $0.kind == .word && $0.text == "pg_notify" }) { preventsPrepare = true }
            let ddl = Self.ddlStarts.contains(first)
            if ddl { isDDL = true }
            switch first {
            case "create", "alter", "drop", "do": changesCatalog = true
            default: break
            }
            analyse(s, first: first, ddl: ddl)
            timeExpressions += DeterministicValues.typedTimeLiterals(s)
            let defaults = DeterministicValues.timeDefaults(s, first: first)
            timeExpressions += defaults.typed
            if defaults.unknown { volatileCalls.append(Self.untypedTimeDefault) }
            if first == "do" || (first == "create" && s.contains { $0.kind == .word && ($0.text == "function" || $0.text == "procedure") }),
               Self.bodyIsSQL(s, first: first) {
                for t in s where t.kind == .string { deterministicRewrites += DeterministicValues.bodyRewrites(t) }
            }
            let lockShape = Self.locksOnLeadAlone(s, first: first)
            if !lockShape { writesByLockState += Self.lockStateClauses(s) }
            if first == "do", s.contains(where: Self.bodyTakesLocksByTheirState) { writesByLockState.append("a DO block that takes rows SKIP LOCKED or tries an advisory lock") }
            if first == "create", s.contains(where: { $0.kind == .word && $0.text == "trigger" }),
               let e = s.indices.first(where: { s.word(at: $0) == "execute" && (s.word(at: $0 + 1) == "function" || s.word(at: $0 + 1) == "procedure") }),
               let routine = Self.relationName(s, at: e + 2) {
                triggerRoutines.insert(routine.name)
            }
            if statements.count == 1, lockShape, volatileCalls.isEmpty {
                locksOnLeadAloneButForUnknownCalls = true
                locksOnLeadAlone = unknownCalls.allSatisfy(Self.advisoryLockFunctions.contains)
            }
            let picks = Self.physicalOrderPicks(s)
            if Self.writesRows(s, first: first) { physicalOrderClauses += picks } else if !picks.isEmpty { readsPhysicalOrder = true }
            if Self.namesPgchorusGid(s, first: first) { namesPgchorusTransaction = true }
        }
        if statements.count == 1 { readsOnlyItsTarget = Self.readsOnlyItsTarget(statements[0], first: words[0]) }
        if statements.count == 1 { noteCursor(statements[0], first: words[0], perBackend: !volatileCalls.isEmpty || touches || readsPhysicalOrder) }
    }

    /// The columns `ALTER TABLE … ADD [COLUMN]` adds that draw a sequence value for every existing row
    /// (SERIAL, GENERATED … AS IDENTITY, a nextval() default), as refusals: PostgreSQL fills existing
    /// rows in a scan of the table, in each backend's physical order (which updates and (auto)vacuum
    /// make differ), so row k got id n on one backend and another id elsewhere. `ALTER COLUMN … ADD
    /// GENERATED … AS IDENTITY` keeps the existing values and is not one of them.
    static func sequenceColumnsAdded(_ s: [SQLToken]) -> [String] {
        guard s.word(at: 1) == "table" else { return [] }
        let fill = Self.sequenceFill
        var out: [String] = []
        for (i, t) in s.enumerated() where t.kind == .word && t.text == "add" {
            // ALTER COLUMN c ADD GENERATED …, ADD CONSTRAINT …, ADD PRIMARY KEY …: no column is filled.
            var k = i + 1
            if s.word(at: k) == "column" { k += 1 }
            if let w = s.word(at: k), ["constraint", "primary", "unique", "check", "foreign", "exclude", "generated"].contains(w) { continue }
            // The column definition: to the next ',' at its own depth.
            var depth = 0, j = k
            var found: String?
            while j < s.count {
                let p = s[j]
                if p.kind == .punctuation {
                    if p.text == "(" { depth += 1 } else if p.text == ")" { depth -= 1 } else if p.text == ",", depth == 0 { break }
                } else if p.kind == .word, found == nil {
                    switch p.text {
                    case "serial", "bigserial", "smallserial", "serial2", "serial4", "serial8": found = p.text.uppercased()
                    case "identity" where s.word(at: j - 1) == "as": found = "GENERATED … AS IDENTITY"
                    case "nextval" where j + 1 < s.count && s[j + 1].text == "(": found = "nextval()"
                    default: break
                    }
                }
                j += 1
            }
            if let found { out.append(found + fill) }
        }
        return out
    }

    /// Where a nextval() call draws one value per row in the order a scan returns the rows — each
    /// backend's physical order, which updates and (auto)vacuum make differ — or nil: `UPDATE … SET n =
    /// nextval(…)` of every row (no WHERE: one with a WHERE, `… WHERE id = $1` numbering an invoice,
    /// usually meets one row, which the statement alone cannot tell), and `CREATE TABLE … AS SELECT
    /// nextval(…) … FROM` without an ORDER BY. (In `INSERT … VALUES` the rows come in the statement's
    /// order; `INSERT … SELECT nextval(…) … FROM` is judged with the catalog's unique keys,
    /// `UnorderedInsert`.)
    static func nextvalOverPhysicalOrder(_ s: [SQLToken], first: String, hasFrom: Bool) -> String? {
        switch first {
        case "update" where !s.contains(where: { $0.kind == .word && $0.text == "where" }): return "UPDATE of every row"
        case "create" where hasFrom && !rowsComeInOrder(s) && s.contains(where: { $0.kind == .word && $0.text == "as" }):
            return "CREATE TABLE … AS SELECT … FROM without ORDER BY"
        default: return nil
        }
    }

    /// The end of what the refusal names for `nextvalOverPhysicalOrder`.
    static let physicalOrderNote = " (one value per row, in each backend's physical order)"

    /// The end of what the refusal names for a sequence column added (see `sequenceColumnsAdded`).
    static let sequenceFill = " in ALTER TABLE … ADD (existing rows are numbered in each backend's physical order)"

    /// What the refusal names for `ALTER COLUMN … SET DEFAULT 'now'` (see `DeterministicValues.timeDefaults`).
    static let untypedTimeDefault = "an untyped 'now', 'today', 'tomorrow' or 'yesterday' in ALTER COLUMN … SET DEFAULT (PostgreSQL reads it now, with the column's type, and keeps that time for every later row)"

    /// Whether `s` prepares, commits or rolls back a transaction whose gid starts with `pgchorus:`.
    static func namesPgchorusGid(_ s: [SQLToken], first: String) -> Bool {
        guard s.count >= 3, s[1].kind == .word, s[2].kind == .string else { return false }
        switch (first, s[1].text) {
        case ("commit", "prepared"), ("rollback", "prepared"), ("prepare", "transaction"): break
        default: return false
        }
        return stringContent(s[2].text).hasPrefix("pgchorus:")
    }

    /// The characters of a string literal as written between its quotes ('…', E'…', $tag$…$tag$).
    static func stringContent(_ literal: String) -> Substring {
        var t = Substring(literal)
        if let first = t.first, first == "e" || first == "E" { t = t.dropFirst() }
        if t.first == "'" { return t.dropFirst() }
        if t.first == "$", let close = t.dropFirst().firstIndex(of: "$") { return t[t.index(after: close)...] }
        return t
    }

    /// Folds a name as PostgreSQL does: unquoted lower-cased, quoted as written ("" → ").
    static func folded(_ t: SQLToken) -> String? {
        switch t.kind {
        case .word: return t.text
        case .quotedIdentifier:
            guard t.text.count >= 2 else { return nil }
            return String(t.text.dropFirst().dropLast()).replacingOccurrences(of: "\"\"", with: "\"")
        default: return nil
        }
    }

    /// `leadOnlyCursor`, `cursorHeld`, `cursorUsed` for one statement.
    private mutating func noteCursor(_ s: [SQLToken], first: String, perBackend: Bool) {
        func word(_ i: Int) -> String? { i < s.count && s[i].kind == .word ? s[i].text : nil }
        switch first {
        case "declare":
            guard perBackend, isReadOnly, unknownCalls.isEmpty, s.count > 2, let name = Self.folded(s[1]),
                  let cursor = s.indices.first(where: { word($0) == "cursor" }),
                  let query = s.indices.first(where: { $0 > cursor && word($0) == "for" }) else { return }
            // FOR UPDATE/SHARE/NO KEY UPDATE/KEY SHARE in the query locks rows: every backend must run it.
            let locks = s.indices.contains { $0 > query && word($0) == "for" && ["update", "share", "no", "key"].contains(word($0 + 1) ?? "") }
            guard !locks else { return }
            leadOnlyCursor = name
            cursorHeld = s[cursor..<query].contains { $0.kind == .word && $0.text == "with" }
            isPlainRead = true
        case "fetch", "move":
            if let last = s.last, s.count > 1 { cursorUsed = Self.folded(last) }
        case "close":
            closesCursor = true
            if s.count == 2 { cursorUsed = word(1) == "all" ? "*" : Self.folded(s[1]) }
        default:
            break
        }
    }

    /// Whether tokens name per-server state: `pg_*` relations or functions, `information_schema`, OIDs,
    /// system columns, EXPLAIN (plans follow each server's statistics), SHOW.
    static func touchesServerState(_ tokens: [SQLToken]) -> Bool {
        tokens.contains { t in
            guard t.kind == .word else { return false }
            if t.text.hasPrefix("pg_") { return true }
            switch t.text {
            case "information_schema", "oid", "regclass", "regtype", "regproc", "regprocedure", "regnamespace", "regrole",
                 "xmin", "xmax", "cmin", "cmax", "ctid", "tableoid",
                 // A plan's costs come from each server's statistics; SHOW answers with each server's settings.
                 "explain", "show":
                return true
            default:
                return false
            }
        }
    }

    /// See `locksOnLeadAlone`: a SELECT that writes nothing (row locks aside) and skips locked rows
    /// or calls an advisory lock function.
    static func locksOnLeadAlone(_ s: [SQLToken], first: String) -> Bool {
        guard first == "select" || first == "with", takesRowLocksOnly(s) else { return false }
        return !lockStateClauses(s).isEmpty || s.indices.contains { j in
            s.word(at: j).map(advisoryLockFunctions.contains) == true && s.isPunctuation("(", at: j + 1)
        }
    }

    /// No word of `s` writes (INSERT, DELETE, MERGE, INTO, nextval/setval, UPDATE but in FOR [NO KEY] UPDATE).
    static func takesRowLocksOnly(_ s: [SQLToken]) -> Bool {
        for i in s.indices {
            switch s.word(at: i) {
            case "insert", "delete", "merge", "into", "nextval", "setval": return false
            case "update" where s.word(at: i - 1) != "for" && s.word(at: i - 1) != "key": return false
            default: break
            }
        }
        return true
    }

    /// `SKIP LOCKED` and `pg_try_advisory_…()` calls in `s` (see `writesByLockState`).
    static func lockStateClauses(_ s: [SQLToken]) -> [String] {
        var out: [String] = []
        for i in s.indices {
            if s.word(at: i) == "skip", s.word(at: i + 1) == "locked", !out.contains("SKIP LOCKED") { out.append("SKIP LOCKED") }
            if let name = s.word(at: i), name.hasPrefix("pg_try_advisory"), s.isPunctuation("(", at: i + 1), !out.contains(name + "()") {
                out.append(name + "()")
            }
        }
        return out
    }

    /// A dollar-quoted body (a DO block's) that takes rows `SKIP LOCKED` or calls `pg_try_advisory_…`:
    /// each backend would run it by the locks of its own sessions (as the catalog tells of routines,
    /// `StatementTracker.lockStateRoutines`).
    static func bodyTakesLocksByTheirState(_ token: SQLToken) -> Bool {
        guard let body = DeterministicValues.bodyContent(token) else { return false }
        let words = SQLLexer.significant(body.content).filter { $0.kind == .word }.map(\.text)
        return zip(words, words.dropFirst()).contains { $0 == "skip" && $1 == "locked" } || words.contains { $0.hasPrefix("pg_try_advisory") }
    }

    /// PostgreSQL's advisory lock functions (the locks live on the lead alone, see `locksOnLeadAlone`).
    static let advisoryLockFunctions: Set<String> = [
        "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
        "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared", "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared",
        "pg_advisory_unlock", "pg_advisory_unlock_shared", "pg_advisory_unlock_all",
    ]

    /// The advisory lock functions whose lock outlives the transaction (`takesSessionLock`).
    static let sessionLockFunctions: Set<String> = [
        "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
    ]

    /// See `readsOnlyItsTarget`.
    static func readsOnlyItsTarget(_ s: [SQLToken], first: String) -> Bool {
        if first == "copy" {
            // `COPY t [(columns)] FROM …`: rows from the client, a file or a program, into one table (a
            // COPY FROM's WHERE takes no subquery); not `COPY (query) TO …`.
            return s.count > 2 && !s.isPunctuation("(", at: 1)
                && s.contains { $0.kind == .word && $0.text == "from" } && !s.contains { $0.kind == .word && $0.text == "select" }
        }
        var selects = 0, froms = 0
        var fromIndex: Int?
        for (i, t) in s.enumerated() where t.kind == .word {
            switch t.text {
            case "select":
                selects += 1
            case "from":
                froms += 1
                if fromIndex == nil { fromIndex = i }
            case "join", "using", "with", "returning", "lateral", "exists", "in", "any", "some", "all", "values":
                if !(t.text == "values" && first == "insert") { return false }
            default:
                break
            }
        }
        switch first {
        case "update":
            return selects == 0 && froms == 0
        case "delete":
            return selects == 0 && froms == 1 && fromIndex == 1
        case "insert":
            return selects == 0 && froms == 0
        case "select":
            // One table, locked: SELECT … FROM t WHERE … FOR UPDATE/SHARE, no comma-joined tables.
            guard selects == 1, froms == 1, let f = fromIndex,
                  s.contains(where: { $0.kind == .word && $0.text == "for" }) else { return false }
            for t in s[(f + 1)...] {
                if t.kind == .word, ["where", "for", "order", "limit"].contains(t.text) { break }
                if t.kind == .punctuation, t.text == "," || t.text == "(" { return false }
            }
            return true
        default:
            return false
        }
    }

    /// Aggregates whose value follows the order their rows come in, called without an ORDER BY of
    /// their own (`string_agg(name, ',')`, `array_agg(id)`, `json_agg(t)` …): each backend aggregates
    /// its rows in its own physical order. Not with DISTINCT (PostgreSQL sorts the input for it), nor
    /// as window calls (`… OVER (…)`).
    static func unorderedAggregates(_ s: [SQLToken]) -> [String] {
        var out: [String] = []
        for i in s.indices {
            guard let name = s.word(at: i), orderSensitiveAggregates.contains(name), s.isPunctuation("(", at: i + 1),
                  !s.isPunctuation(".", at: i - 1) || s.word(at: i - 2) == "pg_catalog", s.word(at: i + 2) != "distinct" else { continue }
            let close = s.closingParenthesis(of: i + 1)
            // An ORDER BY of the call's own (not of a subquery in its arguments).
            var depth = 0
            var ordered = false
            for j in (i + 1)..<close {
                if s.isPunctuation("(", at: j) { depth += 1 }
                if s.isPunctuation(")", at: j) { depth -= 1 }
                if depth == 1, s.word(at: j) == "order", s.word(at: j + 1) == "by" { ordered = true }
            }
            var after = close + 1
            if s.word(at: after) == "filter", s.isPunctuation("(", at: after + 1) { after = s.closingParenthesis(of: after + 1) + 1 }
            if !ordered, s.word(at: after) != "over", s.word(at: after) != "within" { out.append("\(name)()") }
        }
        return out
    }

    /// Aggregates whose result depends on the order of their input rows.
    static let orderSensitiveAggregates: Set<String> = [
        "array_agg", "string_agg", "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "xmlagg",
        "json_agg_strict", "jsonb_agg_strict", "json_object_agg_strict", "jsonb_object_agg_strict", "json_arrayagg", "json_objectagg",
    ]

    /// The clauses of a writing statement that choose rows by their physical order (see `physicalOrderClauses`).
    static func physicalOrderClauses(_ s: [SQLToken], first: String) -> [String] {
        writesRows(s, first: first) ? physicalOrderPicks(s) : []
    }

    /// Whether the statement writes rows or locks them (`SELECT … FOR UPDATE/SHARE`, `SELECT … INTO`,
    /// a CTE that writes, CREATE TABLE … AS).
    static func writesRows(_ s: [SQLToken], first: String) -> Bool {
        switch first {
        case "insert", "update", "delete", "merge": return true
        case "create": return s.contains { $0.kind == .word && $0.text == "as" }
        case "select", "with":
            return s.contains { t in
                guard t.kind == .word else { return false }
                switch t.text {
                case "insert", "update", "delete", "merge", "into", "share": return true
                default: return false
                }
            }
        default: return false
        }
    }

    /// The clauses that pick or aggregate rows by their physical order: `LIMIT`, `OFFSET`, `FETCH
    /// FIRST`, `DISTINCT ON` in a statement without ORDER BY, an order-sensitive aggregate without
    /// its own ORDER BY (`unorderedAggregates`), `ctid`.
    static func physicalOrderPicks(_ s: [SQLToken]) -> [String] {
        var clauses: [String] = []
        var ordered = false
        for i in s.indices {
            switch s.word(at: i) {
            case "order" where s.word(at: i + 1) == "by": ordered = true
            case "limit": clauses.append("LIMIT")
            case "offset": clauses.append("OFFSET")
            case "fetch" where s.word(at: i + 1) == "first" || s.word(at: i + 1) == "next": clauses.append("FETCH FIRST")
            case "distinct" where s.word(at: i + 1) == "on": clauses.append("DISTINCT ON")
            default: break
            }
        }
        if ordered { clauses = [] }
        clauses += unorderedAggregates(s)
        if s.contains(where: { $0.kind == .word && $0.text == "ctid" }) { clauses.append("ctid") }
        var seen: Set<String> = []
        return clauses.filter { seen.insert($0).inserted }
    }

    private mutating func analyse(_ s: [SQLToken], first: String, ddl: Bool) {
        // PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED: a client's own two-phase commit
        // changes what every backend holds, so it is answered once every backend has done it.
        if s.count > 1, s[1].kind == .word,
           (first == "prepare" && s[1].text == "transaction") || ((first == "commit" || first == "rollback") && s[1].text == "prepared") {
            isReadOnly = false
            return
        }
        if Self.transactionControl.contains(first) || first == "set" || first == "reset" || first == "prepare" || first == "deallocate"
            || first == "discard" || first == "listen" || first == "unlisten" || first == "declare" || first == "close" {
            // DECLARE … CURSOR FOR SELECT … may call functions: look at the rest below.
            if first != "declare" { return }
        } else if !Self.readOnlyStarts.contains(first) {
            isReadOnly = false
        }
        if first == "explain", s.contains(where: { $0.kind == .word && $0.text == "analyze" }) { isReadOnly = false }
        insertTargets += Self.insertTargets(s)
        writeTargets += Self.writeTargets(s, first: first)
        let hasFrom = s.contains { $0.kind == .word && $0.text == "from" }
        // Rows in the order they are written (no FROM to scan): a per-row value per row, alike everywhere.
        let perRowValues = first == "insert" && !hasFrom
        if first == "insert" || first == "with", let insert = UnorderedInsert.of(s) { unorderedInsertSelects.append(insert) }
        // Column defaults, views, generated columns and routines: what CREATE and ALTER define.
        let definitions = ddl && (first == "create" || first == "alter")
        let perRowDefinitions = !hasFrom && !(first == "alter" && s.contains { $0.kind == .word && $0.text == "add" })
        if first == "alter" { volatileCalls += Self.sequenceColumnsAdded(s) }
        // A call by a quoted name (`"MyFunc"(…)`, `"public"."f"(…)`) is a call like any other (it was
        // not seen at all: a writing function called so made a read).
        for (i, t) in s.enumerated() where t.kind == .quotedIdentifier && i + 1 < s.count && s[i + 1].kind == .punctuation && s[i + 1].text == "("
            && !Self.namesColumnList(s, at: i) {
            guard let name = Self.folded(t) else { continue }
            if name == "nextval" || name == "setval" {
                isReadOnly = false
                callsNextval = true
            } else {
                unknownCalls.insert(name)
            }
        }
        var drawsInUpdate = false
        for (i, t) in s.enumerated() where t.kind == .word {
            let next = i + 1 < s.count ? s[i + 1] : nil
            let previous = i > 0 ? s[i - 1] : nil
            let isCall = next?.kind == .punctuation && next?.text == "("
            // A qualified name (schema.func) or a column named like a function is not a bare call.
            let qualified = previous?.kind == .punctuation && previous?.text == "."
            // pg_catalog.f() is the built-in f() itself: analysed as the bare call (its range takes the schema in).
            let builtin = qualified && i >= 2 && s[i - 2].kind == .word && s[i - 2].text == "pg_catalog"
            let start = builtin ? s[i - 2].range.lowerBound : t.range.lowerBound
            // (switches, not array literals: this runs for every word of every statement)
            if t.text == "for", let n = next, n.kind == .word {
                switch n.text {
                case "update", "share", "no", "key": isReadOnly = false
                default: break
                }
            }
            if first == "with" {
                switch t.text {
                case "insert", "update", "delete", "merge", "copy", "lock", "nextval", "setval", "into": isReadOnly = false
                default: break
                }
            }
            guard !qualified || builtin else {
                // information_schema's functions (`_pg_expandarray()`, as JDBC's metadata calls it) only read.
                let readingSchema = i >= 2 && s[i - 2].kind == .word && s[i - 2].text == "information_schema"
                if isCall && !(readingSchema && Self.isSyntaxOrCatalogAccessor(t.text)) { unknownCalls.insert(t.text) }
                continue
            }
            // Definitions, and the rows of an INSERT … VALUES: made identical by the pgchorus functions.
            // (Not the name in CREATE FUNCTION random(): a word right after FUNCTION/PROCEDURE is a name.)
            if (definitions || perRowValues), !(previous.map { $0.kind == .word && Self.routineWords.contains($0.text) } ?? false),
               let r = DeterministicValues.replacement(in: s, at: i) {
                let perRow = DeterministicValues.perRowCalls.contains(t.text)
                if definitions && (!perRow || perRowDefinitions) || (!ddl && perRow) {
                    deterministicRewrites.append(r)
                    continue
                }
                if definitions {
                    volatileCalls.append("\(t.text)() in \(first == "alter" ? "ALTER TABLE … ADD (existing rows are filled in each backend's physical order)" : "\(first.uppercased()) … FROM (rows come in each backend's physical order)")")
                    continue
                }
            }
            if isCall && Self.volatileFunctions.contains(t.text) {
                volatileCalls.append(t.text + "()")
                continue
            }
            if isCall && (t.text == "nextval" || t.text == "setval") {
                isReadOnly = false
                callsNextval = true
                if t.text == "nextval", let where_ = Self.nextvalOverPhysicalOrder(s, first: first, hasFrom: hasFrom) {
                    volatileCalls.append("nextval() in \(where_)" + Self.physicalOrderNote)
                } else if t.text == "nextval", first == "update", !drawsInUpdate, let keyed = UnorderedInsert.keyedUpdate(s) {
                    drawsInUpdate = true
                    nextvalUpdates.append(keyed)
                }
            }
            if isCall && t.text != "nextval" && t.text != "setval" && !Self.readOnlyFunctions.contains(t.text)
                && !Self.isSyntaxOrCatalogAccessor(t.text) && !Self.namesColumnList(s, at: i) {
                unknownCalls.insert(t.text)
            }
            if ddl { continue }
            // Time functions start with c, l, n, s or t: other words skip the comparisons below.
            switch t.text.utf8.first {
            case UInt8(ascii: "c"), UInt8(ascii: "l"), UInt8(ascii: "n"), UInt8(ascii: "s"), UInt8(ascii: "t"): break
            default: continue
            }
            switch t.text {
            case "now", "transaction_timestamp", "statement_timestamp":
                if isCall, i + 2 < s.count, s[i + 2].text == ")" {
                    timeExpressions.append((start..<s[i + 2].range.upperBound, "timestamptz"))
                }
            case "current_timestamp", "current_date", "current_time", "localtimestamp", "localtime":
                let type: String
                switch t.text {
                case "current_date": type = "date"
                case "current_time": type = "timetz"
                case "localtimestamp": type = "timestamp"
                case "localtime": type = "time"
                default: type = "timestamptz"
                }
                guard isCall else {
                    timeExpressions.append((t.range, type))
                    continue
                }
                // CURRENT_TIMESTAMP(3): the transaction's time at that precision, as the keyword rounds it.
                if type != "date", i + 3 < s.count, s[i + 2].kind == .number, s.isPunctuation(")", at: i + 3) {
                    timeExpressions.append((t.range.lowerBound..<s[i + 3].range.upperBound, "\(type)(\(s[i + 2].text))"))
                } else {
                    volatileCalls.append(t.text.uppercased() + "(…)")
                }
            default:
                break
            }
        }
    }

    /// Whether the name at `i`, followed by a parenthesis, names a column list rather than calling a
    /// function: an alias's (`FROM f() AS x(a, b)`, `AS "x"(a)`) or a common table expression's
    /// (`WITH c(a) AS (…)`, `, "d"(b) AS (…)`: the parenthesis closes before AS and a statement).
    static func namesColumnList(_ s: [SQLToken], at i: Int) -> Bool {
        if i > 0, s[i - 1].kind == .word, s[i - 1].text == "as" { return true }
        let j = s.closingParenthesis(of: i + 1)
        guard j + 1 < s.count, s[j + 1].kind == .word, s[j + 1].text == "as" else { return false }
        // A CTE's body is a statement; `FROM f(1) AS (a int, b text)` is a call with a column
        // definition list, and stays a call.
        var k = j + 2
        while k < s.count, s[k].kind == .word, s[k].text == "not" || s[k].text == "materialized" { k += 1 }
        guard k + 1 < s.count, s[k].kind == .punctuation, s[k].text == "(", s[k + 1].kind == .word else { return false }
        switch s[k + 1].text {
        case "select", "values", "insert", "update", "delete", "merge", "with", "table": return true
        default: return false
        }
    }

    /// The analysis as the catalog of the database it runs in shows it: when nothing but calls of
    /// unknown functions made it a write and every function of each such name is STABLE or IMMUTABLE
    /// there (`readers`: names whose every `pg_proc` row is), it is the read it looks like. PostgreSQL
    /// forbids data changes in such functions (in SQL and PL/pgSQL bodies; one that calls a volatile
    /// function that writes escapes the check, as PostgreSQL's documentation says), and pgpool-II judges
    /// functions by the same mark. (Consuming: on the path of every statement, the analysis given
    /// back as it is moves instead of being copied field by field.)
    public consuming func resolved(readers: Set<String>?) -> StatementAnalysis {
        if locksOnLeadAloneButForUnknownCalls, !locksOnLeadAlone, let readers,
           unknownCalls.allSatisfy({ readers.contains($0) || Self.advisoryLockFunctions.contains($0) }) {
            var a = self
            a.locksOnLeadAlone = true
            return a
        }
        guard readOnlyButForUnknownCalls, let readers, unknownCalls.isSubset(of: readers) else { return self }
        var a = self
        a.isReadOnly = true
        a.isPlainRead = a.plainButForUnknownCalls
        a.readsServerState = a.isPlainRead && (!a.volatileCalls.isEmpty || a.touchesServerState || a.readsPhysicalOrder)
        a.perServerByOrderOnly = a.readsServerState && a.volatileCalls.isEmpty && !a.touchesServerState
        return a
    }

    /// Whether a routine's or DO block's body is SQL or PL/pgSQL (the only bodies rewritten): its
    /// `LANGUAGE`, or plpgsql for a DO block without one.
    static func bodyIsSQL(_ s: [SQLToken], first: String) -> Bool {
        guard let i = s.firstIndex(where: { $0.kind == .word && $0.text == "language" }), i + 1 < s.count else { return first == "do" }
        let language = s[i + 1].kind == .string ? String(s[i + 1].text.dropFirst().dropLast()).lowercased() : s[i + 1].text
        return language == "plpgsql" || language == "sql"
    }

    /// The relation of `INSERT INTO r [(c1, c2 …)]` and the columns named (nil when none are).
    static func insertColumns(_ s: [SQLToken]) -> (relation: String, columns: [String]?)? {
        guard s.count > 2, s[0].kind == .word, s[0].text == "insert", s[1].kind == .word, s[1].text == "into",
              let relation = insertTargets(s).first else { return nil }
        var i = 2
        while i < s.count, s[i].kind == .word || s[i].kind == .quotedIdentifier || (s[i].kind == .punctuation && s[i].text == ".") { i += 1 }
        // An alias (INSERT INTO t AS x) is a word too; the column list is the parenthesis that follows.
        guard i < s.count, s[i].kind == .punctuation, s[i].text == "(" else { return (relation, nil) }
        var columns: [String] = []
        i += 1
        while i < s.count, !(s[i].kind == .punctuation && s[i].text == ")") {
            if s[i].kind == .word { columns.append(s[i].text) }
            if s[i].kind == .quotedIdentifier { columns.append(String(s[i].text.dropFirst().dropLast())) }
            i += 1
        }
        return (relation, columns)
    }

    /// Whether the rows of an INSERT … SELECT come in one order on every backend: an ORDER BY, or a
    /// FROM of a set-returning call only (`FROM generate_series(1, 10) g`).
    static func rowsComeInOrder(_ s: [SQLToken]) -> Bool {
        var froms: [Int] = []
        for (i, t) in s.enumerated() where t.kind == .word {
            if t.text == "order", i + 1 < s.count, s[i + 1].kind == .word, s[i + 1].text == "by" { return true }
            if t.text == "from" { froms.append(i) }
            if t.text == "join" { return false }
        }
        guard froms.count == 1, froms[0] + 2 < s.count, s[froms[0] + 1].kind == .word,
              s[froms[0] + 2].kind == .punctuation, s[froms[0] + 2].text == "(" else { return false }
        // The call is the only FROM item: no comma outside parentheses after it.
        var depth = 0
        for t in s[(froms[0] + 2)...] where t.kind == .punctuation {
            if t.text == "(" { depth += 1 } else if t.text == ")" { depth -= 1 } else if t.text == ",", depth == 0 { return false }
        }
        return true
    }

    /// Whether the analysis holds nothing that points into its text (`timeExpressions`,
    /// `deterministicRewrites`: byte ranges to rewrite): then it is that of every text of its shape
    /// (`numbersMasked`), since no rule looks at a number's value, only at its being one.
    var fitsEveryTextOfItsShape: Bool { timeExpressions.isEmpty && deterministicRewrites.isEmpty }

    /// A number `maskedShape` replaced: where it starts in the shape (where its `0` stands) and in
    /// the text, and its length in the text.
    struct MaskedNumber: Equatable {
        var shapeAt: Int
        var textAt: Int
        var length: Int
    }

    /// `sql` with every number written in it outside quotes (a run of digits not inside a name: `aid =
    /// 52311`, `- 4977`, `1.5`, not `t1` or `$1`) replaced by `0` — the shape that texts differing only in
    /// their numbers share, as pgbench's and many drivers' simple-protocol statements do (their keys
    /// written into the text). Nil when there is no such number, or the text has what this plain scan
    /// does not follow: dollar quotes, backslashes, comments, an unclosed quote.
    static func numbersMasked(_ sql: String) -> String? { maskedShape(sql)?.shape }

    /// `numbersMasked`'s shape of `sql` and the numbers it replaced, in order.
    static func maskedShape(_ sql: String) -> (shape: String, numbers: [MaskedNumber])? {
        // Runs on every Query a client sends (`QueryText`): over the text's bytes in place, each byte
        // classed by one table look-up (`MaskClass`), a name copied as one run, the shape written
        // straight into its string. (Until 2026-12-07 every byte went through a chain of comparisons
        // and calls of `SQLLexer.isIdentChar`: the scan took a third more instructions, pgchorusd
        // 1.6 % more per TPC-B transaction — BENCHMARKS.md.)
        var text = sql
        return text.withUTF8 { b -> (shape: String, numbers: [MaskedNumber])? in
            let n = b.count
            // (A backslash may escape a quote: E'…\'…'. Looked for by memchr: a step per byte through
            // the buffer cost a third as much as the scan below.)
            if let base = b.baseAddress, memchr(base, Int32(UInt8(ascii: "\\")), n) != nil { return nil }
            var numbers: [MaskedNumber] = []
            var followed = true
            let shape = MaskClass.table.withUnsafeBufferPointer { cls in
                String(unsafeUninitializedCapacity: n) { out -> Int in
                    var i = 0
                    var o = 0
                    while i < n {
                        let c = b[i]
                        switch cls[Int(c)] {
                        case MaskClass.name:
                            // A name: its digits and letters go as they are (a `$` in it is looked at
                            // below, as before).
                            repeat { out[o] = b[i]; o += 1; i += 1 } while i < n && cls[Int(b[i])] & MaskClass.nameOrDigit != 0
                        case MaskClass.digit:
                            // A number (what came before is no name: a name's run takes its digits).
                            let start = i
                            i += 1
                            while i < n, cls[Int(b[i])] == MaskClass.digit { i += 1 }
                            numbers.append(MaskedNumber(shapeAt: o, textAt: start, length: i - start))
                            out[o] = UInt8(ascii: "0")
                            o += 1
                        case MaskClass.quote:
                            // A string or quoted name, copied as it is ('' and "" inside close and reopen it).
                            var close = i + 1
                            while close < n, b[close] != c { close += 1 }
                            guard close < n else { followed = false; return 0 }
                            while i <= close { out[o] = b[i]; o += 1; i += 1 }
                        case MaskClass.dollar:
                            // `$1` (a parameter, its digits kept: `$` goes on a name) or a dollar quote.
                            if i + 1 < n, cls[Int(b[i + 1])] != MaskClass.digit { followed = false; return 0 }
                            out[o] = c; o += 1; i += 1
                            while i < n, cls[Int(b[i])] == MaskClass.digit { out[o] = b[i]; o += 1; i += 1 }
                        case MaskClass.dash where i + 1 < n && b[i + 1] == UInt8(ascii: "-"),
                             MaskClass.slash where i + 1 < n && b[i + 1] == UInt8(ascii: "*"):
                            followed = false
                            return 0
                        default:
                            out[o] = c; o += 1; i += 1
                        }
                    }
                    return o
                }
            }
            return followed && !numbers.isEmpty ? (shape, numbers) : nil
        }
    }

    /// What `maskedShape` does with a byte, by one look-up: a name's byte (`SQLLexer.isIdentStart`:
    /// a letter, `_`, a byte of a multi-byte character), a digit, a quote, `$`, `-`, `/`, or any
    /// other (copied).
    enum MaskClass {
        static let other: UInt8 = 0
        static let name: UInt8 = 1
        static let digit: UInt8 = 2
        static let nameOrDigit: UInt8 = 3
        static let quote: UInt8 = 4
        static let dollar: UInt8 = 8
        static let dash: UInt8 = 16
        static let slash: UInt8 = 32

        static let table: [UInt8] = (0...255).map { (v: Int) -> UInt8 in
            let c = UInt8(v)
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit
            case UInt8(ascii: "'"), UInt8(ascii: "\""): return quote
            case UInt8(ascii: "$"): return dollar
            case UInt8(ascii: "-"): return dash
            case UInt8(ascii: "/"): return slash
            default: return SQLLexer.isIdentStart(c) ? name : other
            }
        }
    }

    /// This analysis of a text whose numbers `maskedShape` gave as `numbers`, its byte ranges moved
    /// into that text's shape — so that it serves every text of the shape (`fromShape`). Nil when a
    /// range holds a number (`CURRENT_TIMESTAMP(3)`: its rewrite carries the precision).
    func intoShape(_ numbers: [MaskedNumber]) -> StatementAnalysis? {
        movingRanges { r in
            var shift = 0
            for n in numbers {
                if n.textAt + n.length <= r.lowerBound { shift += n.length - 1; continue }
                if n.textAt < r.upperBound { return nil }
                break
            }
            return (r.lowerBound - shift)..<(r.upperBound - shift)
        }
    }

    /// An analysis kept in its shape's terms (`intoShape`), its byte ranges moved into the text whose
    /// numbers `maskedShape` gave as `numbers`. (Consuming, as `resolved`.)
    consuming func fromShape(_ numbers: [MaskedNumber]) -> StatementAnalysis {
        movingRanges { r in
            var shift = 0
            for n in numbers {
                guard n.shapeAt < r.lowerBound else { break }
                shift += n.length - 1
            }
            return (r.lowerBound + shift)..<(r.upperBound + shift)
        }! // (every range moves: never nil)
    }

    /// This analysis with every byte range it holds given by `move` (itself when it holds none: the
    /// usual case, on the path of every statement); nil when `move` gives nil for one.
    private consuming func movingRanges(_ move: (Range<Int>) -> Range<Int>?) -> StatementAnalysis? {
        guard !fitsEveryTextOfItsShape else { return self }
        var a = self
        for k in a.timeExpressions.indices {
            guard let r = move(a.timeExpressions[k].range) else { return nil }
            a.timeExpressions[k].range = r
        }
        for k in a.deterministicRewrites.indices {
            guard let r = move(a.deterministicRewrites[k].range) else { return nil }
            a.deterministicRewrites[k].range = r
        }
        return a
    }

    /// The relation named at `i` (`schema.name` or `name`; the last part, lower-cased) and the index after it.
    static func relationName(_ s: [SQLToken], at i: Int) -> (name: String, next: Int)? {
        var j = i
        var name: String?
        while j < s.count, s[j].kind == .word || s[j].kind == .quotedIdentifier {
            let t = s[j]
            name = t.kind == .word ? t.text : String(t.text.dropFirst().dropLast()).lowercased()
            if j + 1 < s.count, s[j + 1].kind == .punctuation, s[j + 1].text == "." { j += 2 } else { break }
        }
        return name.map { ($0, j + 1) }
    }

    /// A table (lower-cased relation name) and the event of a write of it that fires its triggers:
    /// `insert`, `update`, `delete` or `truncate` (PostgreSQL's `pg_trigger.tgtype` bits).
    public struct WriteTarget: Sendable, Hashable {
        public var table: String
        public var event: String
        public init(table: String, event: String) {
            self.table = table
            self.event = event
        }
    }

    /// The tables a statement writes, with the events that fire their triggers: `INSERT INTO t` (also
    /// `UPDATE` with `ON CONFLICT … DO UPDATE`), `COPY t … FROM`, `MERGE INTO t` (all three),
    /// `UPDATE [ONLY] t`, `DELETE FROM [ONLY] t` (also in a CTE), `TRUNCATE [TABLE] [ONLY] t, u`. Only
    /// in a statement that writes them when it runs, not in a definition such as `CREATE RULE … DO
    /// INSTEAD UPDATE t`.
    static func writeTargets(_ s: [SQLToken], first: String) -> [WriteTarget] {
        switch first {
        case "insert", "update", "delete", "merge", "with", "copy", "truncate": break
        default: return []
        }
        var out: [WriteTarget] = []
        func add(_ name: String?, _ events: [String]) {
            if let name { out += events.map { WriteTarget(table: name, event: $0) } }
        }
        func relation(after i: Int) -> (name: String, next: Int)? {
            relationName(s, at: s.word(at: i) == "only" ? i + 1 : i)
        }
        lazy var upsert = zip(s, s.dropFirst()).contains { $0.kind == .word && $0.text == "do" && $1.kind == .word && $1.text == "update" }
        for target in insertingTargets(s) {
            switch target.verb {
            case "merge": add(target.relation, ["insert", "update", "delete"])
            case "insert": add(target.relation, upsert ? ["insert", "update"] : ["insert"])
            default: add(target.relation, ["insert"])
            }
        }
        for i in s.indices where s[i].kind == .word {
            // (Runs for every write's every word: other first letters skip the comparisons below.)
            switch s[i].text.utf8.first {
            case UInt8(ascii: "u"), UInt8(ascii: "d"), UInt8(ascii: "t"): break
            default: continue
            }
            // A statement's own keyword: first, after a CTE's `(`, or after the CTEs' closing `)`
            // (not `FOR UPDATE`, `ON CONFLICT DO UPDATE`, or a column called so).
            let starts = i == 0 || s.isPunctuation("(", at: i - 1) || s.isPunctuation(")", at: i - 1)
            switch s.word(at: i) {
            case "update" where starts:
                add(relation(after: i + 1)?.name, ["update"])
            case "delete" where starts && s.word(at: i + 1) == "from":
                add(relation(after: i + 2)?.name, ["delete"])
            case "truncate" where i == 0:
                var j = s.word(at: 1) == "table" ? 2 : 1
                while let r = relation(after: j) {
                    add(r.name, ["truncate"])
                    j = r.next
                    if s.isPunctuation("*", at: j) { j += 1 }
                    guard s.isPunctuation(",", at: j) else { break }
                    j += 1
                }
            default: break
            }
        }
        return out
    }

    /// The relations a statement inserts into: `INSERT INTO x`, `COPY x … FROM`, `MERGE INTO x`
    /// (anywhere in the statement, so CTEs count too).
    static func insertTargets(_ s: [SQLToken]) -> [String] {
        insertingTargets(s).map(\.relation)
    }

    /// `insertTargets` with the verb that inserts into each (`insert`, `merge`, `copy`): what
    /// `writeTargets` tells their triggers' events by.
    static func insertingTargets(_ s: [SQLToken]) -> [(verb: String, relation: String)] {
        var out: [(verb: String, relation: String)] = []
        for (i, t) in s.enumerated() where t.kind == .word {
            if (t.text == "insert" || t.text == "merge"), s.word(at: i + 1) == "into",
               // (MERGE INTO ONLY t)
               let r = relationName(s, at: t.text == "merge" && s.word(at: i + 2) == "only" ? i + 3 : i + 2) {
                out.append((t.text, r.name))
            } else if t.text == "copy", i == 0, let r = relationName(s, at: i + 1),
                      s.contains(where: { $0.kind == .word && $0.text == "from" }) {
                out.append((t.text, r.name))
            }
        }
        return out
    }

    /// `sql` with every time expression replaced by `timestamp` (a `timestamptz` literal such as
    /// `2026-11-27 02:53:26.123456+00`) cast to the expression's type.
    public func rewritingTime(in sql: String, timestamp: String) -> String {
        replacingTime(in: sql, with: "'\(timestamp)'")
    }

    /// `sql` with every time expression replaced by parameter `$n` cast to the expression's type,
    /// for a named prepared statement (a literal would freeze the time of its first use).
    public func rewritingTime(in sql: String, parameter n: Int) -> String {
        replacingTime(in: sql, with: "$\(n)")
    }

    /// `sql` with its time expressions replaced by `value` (nil: left as they are) and, when
    /// `deterministic`, its `deterministicRewrites` applied.
    public func rewriting(in sql: String, time value: String?, deterministic: Bool) -> String {
        var edits: [DeterministicValues.Rewrite] = deterministic ? deterministicRewrites : []
        if let value {
            edits += timeExpressions.map { .init(range: $0.range, text: DeterministicValues.timeReplacement(type: $0.type, value: value)) }
        }
        guard !edits.isEmpty else { return sql }
        var bytes = Array(sql.utf8)
        // Later edits first, so earlier ranges stay valid; an edit inside another one's range is dropped.
        var lowest = bytes.count
        for e in edits.sorted(by: { $0.range.lowerBound > $1.range.lowerBound }) where e.range.upperBound <= lowest {
            bytes.replaceSubrange(e.range, with: Array(e.text.utf8))
            lowest = e.range.lowerBound
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private func replacingTime(in sql: String, with value: String) -> String {
        rewriting(in: sql, time: value, deterministic: false)
    }

    /// The highest `$n` parameter number used in `sql` (0 when none).
    /// A simple Query of several statements whose last one is a plain COMMIT/END (`BEGIN; …; COMMIT`,
    /// or `…; COMMIT` inside a transaction): the text before that COMMIT, so the session can run it
    /// and put the COMMIT through the vote, and whether the text opens the transaction (a leading
    /// BEGIN / START TRANSACTION). nil for anything else — one statement, a COMMIT not last, or other
    /// transaction control (ROLLBACK, SAVEPOINT, a second BEGIN or COMMIT) among the statements.
    public static func trailingCommit(of sql: String) -> (body: String, opensTransaction: Bool)? {
        let tokens = SQLLexer.significant(sql)
        var statements: [[SQLToken]] = [[]]
        var separators: [SQLToken] = []
        for t in tokens {
            if t.kind == .punctuation && t.text == ";" {
                if !statements[statements.count - 1].isEmpty {
                    statements.append([])
                    separators.append(t)
                }
            } else {
                statements[statements.count - 1].append(t)
            }
        }
        if statements.last?.isEmpty == true { statements.removeLast() }
        // separators[k] ends statement k: the one before the COMMIT is where the body ends.
        guard statements.count >= 2, let last = statements.last, separators.count >= statements.count - 1,
              let commit = last.first, commit.kind == .word, commit.text == "commit" || commit.text == "end" else { return nil }
        let rest = last.dropFirst().map(\.text)
        guard rest.isEmpty || rest == ["work"] || rest == ["transaction"] || rest == ["and", "no", "chain"]
                || rest == ["work", "and", "no", "chain"] || rest == ["transaction", "and", "no", "chain"] else { return nil }
        let words = statements.dropLast().map { $0.first?.kind == .word ? $0.first!.text : "" }
        let opens = words[0] == "begin" || (words[0] == "start" && statements[0].dropFirst().first?.text == "transaction")
        for (i, w) in words.enumerated() where transactionControl.contains(w) && !(i == 0 && opens) { return nil }
        let body = String(decoding: Array(sql.utf8)[..<separators[statements.count - 2].range.lowerBound], as: UTF8.self)
        return (body, opens)
    }

    /// A simple Query with a COMMIT/END/ROLLBACK/ABORT that is not its last statement
    /// (`BEGIN; …; COMMIT; BEGIN; …; COMMIT`, `BEGIN; …; COMMIT; SELECT …`): its text cut after each
    /// of them, so the session can run the parts one after the other as separate Queries — each
    /// `BEGIN; …; COMMIT` part then goes through the vote (`trailingCommit(of:)`). PostgreSQL runs the
    /// statements after a COMMIT of a message in a new implicit transaction, as a part of their own
    /// does, and skips the rest of the message after an error, as the session does with the parts.
    /// nil when there is nothing to cut, and where cutting would change what PostgreSQL does: two-phase
    /// or chained transaction control, a `BEGIN ATOMIC` body, or a last part of one statement that
    /// PostgreSQL refuses inside a transaction block (VACUUM, CREATE DATABASE …), which the message as
    /// sent would fail.
    public static func transactionSegments(of sql: String) -> [String]? {
        // Asked of every Query: one statement (at most a trailing ';') is ruled out by a byte scan
        // (memchr: a step per byte through the UTF-8 view took 1.7 % of pgchorusd's instructions in
        // TPC-B with two backends).
        var text = sql
        let several = text.withUTF8 { b -> Bool in
            guard b.count <= 1 << 20, let base = b.baseAddress, let found = memchr(base, Int32(UInt8(ascii: ";")), b.count) else { return false }
            let after = UnsafePointer<UInt8>(found.assumingMemoryBound(to: UInt8.self)) - base + 1
            return b[after...].contains { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 && $0 != 0x3B }
        }
        guard several else { return nil }
        let tokens = SQLLexer.significant(sql)
        var statements: [(tokens: [SQLToken], end: Int)] = []
        var current: [SQLToken] = []
        var depth = 0
        for t in tokens {
            if t.kind == .punctuation {
                if t.text == "(" { depth += 1 } else if t.text == ")" { depth = max(0, depth - 1) }
                if t.text == ";" && depth == 0 {
                    if !current.isEmpty { statements.append((current, t.range.upperBound)) }
                    current = []
                    continue
                }
            }
            current.append(t)
        }
        if !current.isEmpty { statements.append((current, sql.utf8.count)) }
        guard statements.count >= 2 else { return nil }
        func word(_ s: [SQLToken], _ i: Int) -> String? { i < s.count && s[i].kind == .word ? s[i].text : nil }
        var cuts: [Int] = []
        for (i, s) in statements.enumerated() {
            let first = word(s.tokens, 0) ?? ""
            let words = s.tokens.compactMap { $0.kind == .word ? $0.text : nil }
            if zip(words, words.dropFirst()).contains(where: { $0 == "begin" && $1 == "atomic" }) { return nil }
            if first == "prepare" && word(s.tokens, 1) == "transaction" { return nil }
            guard ["commit", "end", "rollback", "abort"].contains(first) else { continue }
            if word(s.tokens, 1) == "prepared" { return nil }
            // AND CHAIN opens the next transaction at once; AND NO CHAIN is a plain COMMIT.
            if let c = words.firstIndex(of: "chain"), c >= 1, words[c - 1] != "no" { return nil }
            // ROLLBACK TO SAVEPOINT stays inside its transaction.
            if first == "rollback" && words.contains("to") { continue }
            if i < statements.count - 1 { cuts.append(s.end) }
        }
        guard !cuts.isEmpty else { return nil }
        if let last = statements.last, cuts.last.map({ c in statements.filter { $0.end > c }.count == 1 }) == true {
            let first = word(last.tokens, 0) ?? ""
            let second = word(last.tokens, 1) ?? ""
            let words = Set(last.tokens.compactMap { $0.kind == .word ? $0.text : nil })
            if ["vacuum", "reindex", "cluster"].contains(first) || (first == "alter" && second == "system")
                || ((first == "create" || first == "drop" || first == "alter") && ["database", "tablespace", "subscription"].contains(second))
                || words.contains("concurrently") {
                return nil
            }
        }
        let bytes = Array(sql.utf8)
        var parts: [String] = []
        var start = 0
        for c in cuts + [bytes.count] where c > start {
            parts.append(String(decoding: bytes[start..<c], as: UTF8.self))
            start = c
        }
        return parts.count >= 2 ? parts : nil
    }

    /// A notification a transaction may hold until its commit: the simple Query is exactly one
    /// `NOTIFY channel [, 'payload']` or `SELECT pg_notify('channel', 'payload')` with literals.
    public struct HeldNotification: Sendable, Equatable {
        /// The statement (`NOTIFY` answers `NOTIFY`; `SELECT pg_notify` answers one void row).
        public var isSelect: Bool
        /// The statement to run once the transaction has committed.
        public var sql: String
    }

    /// The notification `sql` sends, when pgchorus can hold it (see `HeldNotification`); nil for
    /// anything else, and for what PostgreSQL would refuse (an empty or over-long channel, a payload
    /// of 8000 bytes or more), which then runs as sent and gets PostgreSQL's own answer.
    public static func heldNotification(of sql: String) -> HeldNotification? {
        // Asked of every statement in a transaction: most are ruled out without lexing them.
        guard sql.utf8.count < 8_300, Self.mentionsNotify(sql) else { return nil }
        var s = SQLLexer.significant(sql)
        if let last = s.last, last.kind == .punctuation, last.text == ";" { s.removeLast() }
        func plainString(_ t: SQLToken) -> String? {
            guard t.kind == .string, t.text.hasPrefix("'"), t.text.hasSuffix("'"), t.text.count >= 2 else { return nil }
            return String(t.text.dropFirst().dropLast()).replacingOccurrences(of: "''", with: "'")
        }
        func punct(_ i: Int, _ p: String) -> Bool { i < s.count && s[i].kind == .punctuation && s[i].text == p }
        guard !s.contains(where: { $0.kind == .punctuation && $0.text == ";" }), let first = s.first, first.kind == .word else { return nil }
        var channel: String?
        var payload = ""
        var isSelect = false
        if first.text == "notify", s.count >= 2, let c = folded(s[1]) {
            channel = c
            if s.count == 4, punct(2, ","), let p = plainString(s[3]) {
                payload = p
            } else if s.count != 2 {
                return nil
            }
        } else if first.text == "select" {
            // SELECT [pg_catalog.]pg_notify('c', 'p')
            var i = 1
            if s.count > 3, s[1].kind == .word, s[1].text == "pg_catalog", punct(2, ".") { i = 3 }
            guard s.count == i + 6, s[i].kind == .word, s[i].text == "pg_notify", punct(i + 1, "("), let c = plainString(s[i + 2]),
                  punct(i + 3, ","), let p = plainString(s[i + 4]), punct(i + 5, ")") else { return nil }
            channel = c
            payload = p
            isSelect = true
        }
        guard let channel, !channel.isEmpty, channel.utf8.count < 64, payload.utf8.count < 8000 else { return nil }
        return HeldNotification(isSelect: isSelect, sql: sql)
    }

    /// Whether "notify" appears anywhere in `sql`, in any ASCII case (a cheap test before lexing).
    /// (Over the text's bytes in place, each compared with a letter as `| 0x20`, which makes an ASCII
    /// capital its small letter and no other byte one: asked of every statement in a transaction with
    /// two backends or more, a walk through the text's UTF-8 view with an array for the word took 2.4 %
    /// of pgchorusd's instructions in TPC-B — BENCHMARKS.md.)
    static func mentionsNotify(_ sql: String) -> Bool {
        var text = sql
        return text.withUTF8 { mentionsNotify(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// Whether `b` holds the letters of `notify` in any case (a message's bytes, before its text is decoded).
    static func mentionsNotify(bytes b: UnsafeRawBufferPointer) -> Bool {
        guard b.count >= 6 else { return false }
        for i in 0...(b.count - 6) where b[i] | 0x20 == UInt8(ascii: "n") {
            if b[i + 1] | 0x20 == UInt8(ascii: "o"), b[i + 2] | 0x20 == UInt8(ascii: "t"), b[i + 3] | 0x20 == UInt8(ascii: "i"),
               b[i + 4] | 0x20 == UInt8(ascii: "f"), b[i + 5] | 0x20 == UInt8(ascii: "y") { return true }
        }
        return false
    }

    public static func highestParameter(in sql: String) -> Int {
        SQLLexer.tokens(sql).reduce(0) { m, t in
            t.kind == .other && t.text.hasPrefix("$") ? max(m, Int(t.text.dropFirst()) ?? 0) : m
        }
    }
}
