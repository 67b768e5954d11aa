import NIOCore
import NIOPosix
import State
import Synchronization

/// Keeps sequence values identical on every backend. Statements that draw sequence values
/// (explicit nextval/setval, inserts into tables with SERIAL/IDENTITY columns) run one at a time
/// node-wide, each on every backend before the next starts, so every backend hands out the values
/// in the same order. Unlike a table lock held to the end of the transaction (pgpool-II's
/// insert_lock), the order is held only for one statement.
public final class SequenceOrdering: Sendable {
    struct CatalogEntry {
        var generation = 0
        var loadedGeneration = -1
        var tables: Set<String> = []
        /// Some definition (a column default, a view, a routine) uses the `pgchorus` functions.
        var deterministic = false
        /// Columns whose default gives each row its own value (`pgchorus.gen_random_uuid()` …), per table.
        var perRowDefaults: [String: Set<String>] = [:]
        /// Columns that draw a sequence value (SERIAL, IDENTITY, a nextval() default), per table.
        var sequenceColumns: [String: Set<String>] = [:]
        /// Unique keys of plain columns (column lists), per table.
        var uniqueKeys: [String: [[String]]] = [:]
        /// Some routine's body may notify (`pg_notify`, `NOTIFY`): a trigger may make PREPARE impossible.
        var notifies = false
        /// A PREPARE failed for a notification although the catalog did not say so (dynamic SQL …).
        var notifiedAnyway = false
        /// Some routine's body calls `pgchorus.pg_notify` (its `pg_notify` was rewritten): its
        /// notifications are held while a transaction waits for the vote.
        var holdsNotifications = false
        /// Function names whose every definition is STABLE or IMMUTABLE.
        var readers: Set<String> = []
        /// Function names some definition of which takes rows `SKIP LOCKED` or tries an advisory lock.
        var lockStateRoutines: Set<String> = []
        /// Tables with an enabled trigger whose routine does so: the routines' names, per table and event.
        var lockStateTriggers: [StatementAnalysis.WriteTarget: Set<String>] = [:]
        /// DDL of this database through other nodes that has not ended (`RemoteChange`), by node and
        /// change id: while one is open the catalog counts as unknown and is not loaded.
        var remote: [String: [String: NIODeadline]] = [:]
        /// Loaded, not stale, and no DDL open through another node.
        var usable: Bool { loadedGeneration == generation && remote.isEmpty }
    }

    /// What one catalog load found (rows of `catalogSQL`).
    struct Catalog: Sendable, Equatable {
        var sequenceTables: Set<String> = []
        var perRowDefaults: [String: Set<String>] = [:]
        var sequenceColumns: [String: Set<String>] = [:]
        var uniqueKeys: [String: [[String]]] = [:]
        var deterministic = false
        var notifies = false
        var holdsNotifications = false
        var readers: Set<String> = []
        var lockStateRoutines: Set<String> = []
        var lockStateTriggers: [StatementAnalysis.WriteTarget: Set<String>] = [:]
        /// The `i` row came: the load's snapshot is its own (see `catalogSQL`).
        var fresh = false
        /// The load ended in an error: not to be stored.
        var failed = false

        /// Takes one row of `catalogSQL`: kind, relation, column.
        mutating func add(kind: String, relation: String, column: String?) {
            switch kind {
            case "s":
                sequenceTables.insert(relation)
                if let column { sequenceColumns[relation, default: []].insert(column) }
            case "u": if let column { uniqueKeys[relation, default: []].append(column.split(separator: "\u{1F}").map(String.init)) }
            case "v": if let column { perRowDefaults[relation, default: []].insert(column) }
            case "f": deterministic = true
            case "n": notifies = true
            case "h": holdsNotifications = true
            case "r": readers.insert(relation)
            case "k": lockStateRoutines.insert(relation)
            case "t":
                if let column, let colon = column.firstIndex(of: ":") {
                    let target = StatementAnalysis.WriteTarget(table: relation, event: String(column[..<colon]))
                    lockStateTriggers[target, default: []].insert(String(column[column.index(after: colon)...]))
                }
            case "i": fresh = true
            default: break
            }
        }
    }

    struct Waiter {
        var ticket: Int
        var grant: @Sendable () -> Void
    }

    struct LockState {
        var holder: Int?
        /// Where the holder's statement runs on its lead: backend id and server process id.
        var holderLead: (backend: String, pid: Int32)?
        /// The holder's statement has ended and the followers' sequences are being set to the lead's
        /// (`SequenceResync`): pgchorus' own bounded work, no lock of a client's in its way.
        var resyncing = false
        var waiters: [Waiter] = []
        var nextTicket = 1
    }

    private let catalog = Mutex<[String: CatalogEntry]>([:])
    /// Counts the changes of what is kept of any database's catalog (a load stored, DDL, a remote change
    /// opened, closed or expired, a notification seen anyway): what a session read at one count is what
    /// it would read again while the count stays (`changes`, `ClientSessionHandler.knownCatalog`).
    private let changeCount = Atomic<Int>(0)
    private let lock = Mutex(LockState())
    /// The thread of `SequenceResync` (started at its first use): its own, as the process-wide pool may
    /// be busy with other blocking work while the turn waits.
    private let resyncPool = LazyThreadPool(threads: 1)
    /// The thread of the waiters' looks for a lock cycle: another one, so that a resync, which ends a
    /// turn, never queues behind looks (each a connection to the lead, every second per waiter — on a
    /// loaded host a resync waited behind them until a waiter's 10 s ran out).
    private let cycleLookPool = LazyThreadPool(threads: 1)

    /// Runs `body` on the resync thread; the result comes on `eventLoop`.
    func runResync<T: Sendable>(on eventLoop: EventLoop, _ body: @escaping @Sendable () -> T) -> EventLoopFuture<T> {
        resyncPool.started.runIfActive(eventLoop: eventLoop, body)
    }

    /// The looks' connections to the leads, kept from one look to the next (touched on that thread only).
    private let cycleLookConnections = SequenceResync.LookConnections()

    /// Runs `body` on the thread of the looks for a lock cycle, with the connections kept there; the
    /// result comes on `eventLoop`.
    func runCycleLook<T: Sendable>(on eventLoop: EventLoop,
                                   _ body: @escaping @Sendable (SequenceResync.LookConnections) -> T) -> EventLoopFuture<T> {
        let connections = cycleLookConnections
        return cycleLookPool.started.runIfActive(eventLoop: eventLoop) { body(connections) }
    }

    /// Closes the looks' connection of `key` (`SequenceResync.lookKey`) on their thread, after any look
    /// under way: a wait that looked has ended. (Another session still waiting there opens another at
    /// its next look.)
    func closeCycleLook(_ key: String) {
        let connections = cycleLookConnections
        cycleLookPool.ifStarted?.submit { _ in connections.close(key) }
    }

    /// Stops both threads (the server is closing); the looks' connections close once their thread has ended.
    func shutdown() {
        resyncPool.shutdown()
        let connections = cycleLookConnections
        if let pool = cycleLookPool.ifStarted {
            pool.submit { _ in connections.closeAll() }
        }
        cycleLookPool.shutdown()
    }

    public init() {}

    // MARK: which tables draw sequence values

    /// The catalog query, rows of (kind, relation, column): `s` a relation's IDENTITY column or column
    /// with a nextval() default; `u` a unique key of a table's plain columns (not partial, not
    /// deferrable, of a table no other relation shares its name with and no table inherits from; its
    /// columns in the third field, separated by U+001F); `v` a column whose default gives each row its own value through the
    /// `pgchorus` functions of `DeterministicValues`; `f` once when some definition uses those
    /// functions at all (a default or view, recorded in pg_depend, or a routine's body); `n`/`h` once
    /// when some routine may notify / holds its notifications; `r` a function name whose every
    /// definition, in any schema, is a STABLE or IMMUTABLE function, or an aggregate whose every support
    /// function is (PostgreSQL marks every aggregate IMMUTABLE, whatever its transition function does;
    /// procedures and window functions do not count): calls of it read (`StatementAnalysis.resolved`);
    /// `k` a function name some definition of which takes rows `SKIP LOCKED` or tries an advisory lock;
    /// `t` a table with an enabled trigger whose routine does so (the event and the routine's name,
    /// `insert:take_job`, in the third field: one row per event the trigger fires on);
    /// `i` once when the load saw the catalog as it is now — not from a REPEATABLE READ or SERIALIZABLE
    /// snapshot taken earlier in the session's transaction, whose load is not stored.
    static let catalogSQL = """
    SELECT DISTINCT 's', lower(c.relname), a.attname::text FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
    WHERE c.relkind IN ('r', 'p') AND (a.attidentity <> '' OR pg_catalog.pg_get_expr(d.adbin, d.adrelid) LIKE '%nextval(%')
    UNION ALL SELECT 'u', lower(c.relname), (SELECT pg_catalog.string_agg(a.attname::text, pg_catalog.chr(31) ORDER BY k.n)
      FROM pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY k(attnum, n)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum)
    FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
    WHERE c.relkind IN ('r', 'p') AND i.indisunique AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL
      AND (c.relkind = 'p' OR NOT c.relhassubclass)
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class o WHERE lower(o.relname) = lower(c.relname) AND o.oid <> c.oid
        AND o.relkind IN ('r', 'p', 'v', 'm', 'f'))
    UNION ALL SELECT 'v', lower(c.relname), a.attname::text FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_catalog.pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
    WHERE c.relkind IN ('r', 'p') AND pg_catalog.pg_get_expr(d.adbin, d.adrelid) ~ 'pgchorus\\.(gen_random_uuid|random|clock_timestamp)\\('
    UNION ALL SELECT 'f', '', NULL WHERE EXISTS (
      SELECT 1 FROM pg_catalog.pg_depend dep JOIN pg_catalog.pg_proc p ON dep.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND dep.refobjid = p.oid
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgchorus'
    ) OR EXISTS (
      SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname <> 'pgchorus' AND n.nspname <> 'pg_catalog' AND p.prosrc LIKE '%pgchorus.%'
    )
    UNION ALL SELECT 'n', '', NULL WHERE EXISTS (
      SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname NOT IN ('pgchorus', 'pg_catalog', 'information_schema')
        AND pg_catalog.regexp_replace(p.prosrc, 'pgchorus\\.pg_notify', '', 'gi') ~* '(pg_notify|\\mnotify\\M)'
    )
    UNION ALL SELECT 'h', '', NULL WHERE EXISTS (
      SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname NOT IN ('pgchorus', 'pg_catalog', 'information_schema') AND p.prosrc ILIKE '%pgchorus.pg_notify%'
    )
    UNION ALL SELECT DISTINCT 'k', p.proname::text, NULL FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname NOT IN ('pgchorus', 'pg_catalog', 'information_schema') AND p.prosrc ~* '(skip\\s+locked|pg_try_advisory)'
    UNION ALL SELECT DISTINCT 't', lower(c.relname), e.event || ':' || p.proname FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      JOIN (VALUES ('insert', 4), ('delete', 8), ('update', 16), ('truncate', 32)) e(event, bit) ON (t.tgtype::int & e.bit) <> 0
      WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND p.prosrc ~* '(skip\\s+locked|pg_try_advisory)'
    UNION ALL SELECT 'r', f.proname::text, NULL FROM (
      SELECT p.proname, p.provolatile <> 'v' AND (p.prokind = 'f' OR (p.prokind = 'a' AND p.oid NOT IN (
        SELECT a.aggfnoid FROM pg_catalog.pg_aggregate a JOIN pg_catalog.pg_proc s
          ON s.oid IN (a.aggtransfn, a.aggfinalfn, a.aggcombinefn, a.aggserialfn, a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn)
        WHERE s.provolatile = 'v'))) AS reads
      FROM pg_catalog.pg_proc p
    ) f GROUP BY f.proname HAVING pg_catalog.bool_and(f.reads)
    UNION ALL SELECT 'i', '', NULL WHERE pg_catalog.current_setting('transaction_isolation') = 'read committed'
      OR pg_catalog.now() = pg_catalog.statement_timestamp()
    """

    /// What `value` reads of the catalog of `database`, when that catalog is loaded and not stale.
    private func loaded<T>(in database: String, _ value: (CatalogEntry) -> T) -> T? {
        catalog.withLock { c in
            // (Nothing kept for the database, as with one backend: nothing loaded. Asked on the path
            // of every statement, where an empty entry was made, copied and dropped to say so.)
            guard c.keys.contains(database) else { return nil }
            let e = current(&c, database)
            return e.usable ? value(e) : nil
        }
    }

    /// The count of changes of what is kept of the catalogs: while it stays, every question asked of
    /// them gets the answer it got (a remote change's lease running out counts once it is seen, so a
    /// session keeps only answers read while none was open: `View`).
    var changes: Int { changeCount.load(ordering: .acquiring) }

    /// Changes what is kept of the catalogs, then counts the change (after it, so that a session that
    /// reads the new count reads what was changed).
    private func changing<T>(_ body: (inout [String: CatalogEntry]) -> T) -> T {
        let result = catalog.withLock { body(&$0) }
        changeCount.add(1, ordering: .releasing)
        return result
    }

    /// The entry of `database`, its expired remote changes let go (each a new generation: what was
    /// loaded while one was open, before its DDL committed, is stale; counted as a change).
    private func current(_ c: inout [String: CatalogEntry], _ database: String, now: NIODeadline? = nil) -> CatalogEntry {
        guard var e = c[database] else { return CatalogEntry() }
        guard !e.remote.isEmpty else { return e }
        let now = now ?? .now()
        var expired = false
        for (node, changes) in e.remote {
            let live = changes.filter { $0.value > now }
            if live.count != changes.count { expired = true }
            e.remote[node] = live.isEmpty ? nil : live
        }
        if expired {
            e.generation += 1
            // (Under the catalog's lock: counted before it is let go, which is soon enough — a session
            // never keeps an answer read while a remote change was open.)
            changeCount.add(1, ordering: .releasing)
        }
        c[database] = e
        return e
    }

    /// Everything a session asks of its database's catalog on the path of each statement, as loaded
    /// (a reference: a session hands it around several times a statement, each copy one retain).
    final class View: Sendable {
        /// The tables whose inserts draw sequence values.
        let tables: Set<String>
        /// Some definition uses the `pgchorus` functions.
        let deterministic: Bool
        /// What judges an `INSERT … SELECT` without ORDER BY (`UnorderedInsert`).
        let rowOrder: RowOrderCatalog
        /// The function names whose every definition (any schema, any arguments) is STABLE or
        /// IMMUTABLE (calls of functions not known otherwise count as writes while unknown).
        let readers: Set<String>
        /// The function names some definition of which takes rows `SKIP LOCKED` or tries an advisory
        /// lock (`StatementTracker.lockStateRoutines`).
        let lockStateRoutines: Set<String>
        /// The tables whose triggers run such a routine (`StatementTracker.lockStateTriggers`).
        let lockStateTriggers: [StatementAnalysis.WriteTarget: Set<String>]

        fileprivate init(_ e: CatalogEntry) {
            tables = e.tables
            deterministic = e.deterministic
            rowOrder = RowOrderCatalog(perRowDefaults: e.perRowDefaults, sequenceColumns: e.sequenceColumns, uniqueKeys: e.uniqueKeys)
            readers = e.readers
            lockStateRoutines = e.lockStateRoutines
            lockStateTriggers = e.lockStateTriggers
        }
    }

    /// What is loaded of the catalog of `database`, or nil while it is unknown (not loaded, stale, DDL
    /// through another node open; `tables(in:)` gives its tables, with the generation a load starts at).
    /// `lasting`: the answer stays while `changes` does — not while a remote change is open, whose
    /// lease may run out unseen.
    func view(in database: String) -> (view: View?, lasting: Bool) {
        catalog.withLock { c in
            guard c.keys.contains(database) else { return (nil, true) }
            let e = current(&c, database)
            guard e.usable else { return (nil, e.remote.isEmpty) }
            return (View(e), true)
        }
    }

    // MARK: DDL through other nodes

    /// A peer's open catalog changes (`ClusterOrderSignal`): each database they name counts as
    /// unknown while one is open (renewed for its lease by every message that lists it), and again
    /// once it ends; `closed` ends changes at once.
    public func remoteChanges(from node: String, open: [(id: String, databases: [String], lease: Double)], closed: [String]) {
        let now = NIODeadline.now()
        changing { c in
            for database in Array(c.keys) {
                var e = current(&c, database, now: now)
                var mine = e.remote[node] ?? [:]
                let before = mine.count
                for id in closed { mine[id] = nil }
                if mine.count != before { e.generation += 1 }
                e.remote[node] = mine.isEmpty ? nil : mine
                c[database] = e
            }
            for change in open {
                for database in change.databases {
                    var e = current(&c, database, now: now)
                    let lease = min(max(change.lease, 0), 60)
                    if e.remote[node]?[change.id] == nil { e.generation += 1 }
                    e.remote[node, default: [:]][change.id] = now + .milliseconds(Int64(lease * 1000))
                    c[database] = e
                }
            }
        }
    }

    /// Whether DDL of `database` through another node is open: its catalog is not loaded meanwhile.
    func remoteChangeOpen(in database: String) -> Bool {
        catalog.withLock { c in !current(&c, database).remote.isEmpty }
    }

    /// Every catalog may be stale (a peer heard again after it was lost, quorum regained).
    public func invalidateAll() {
        changing { c in
            for k in Array(c.keys) { c[k]?.generation += 1 }
        }
    }

    /// Whether a routine of `database` (a trigger, a function) may notify — PostgreSQL then refuses
    /// to PREPARE the transaction that ran it — or nil while unknown.
    func routinesNotify(in database: String) -> Bool? {
        catalog.withLock { c in
            let e = current(&c, database)
            if e.notifiedAnyway { return true }
            return e.usable ? e.notifies : nil
        }
    }

    /// Whether a routine of `database` calls `pgchorus.pg_notify` (notifications held for the vote),
    /// or nil while unknown.
    func routinesHoldNotifications(in database: String) -> Bool? {
        loaded(in: database) { $0.holdsNotifications }
    }

    /// A PREPARE in `database` failed because the transaction notified: its transactions go without
    /// the vote from now on (until the node restarts), whatever the catalog says.
    func notifiedAnyway(in database: String) {
        changing { $0[database, default: CatalogEntry()].notifiedAnyway = true }
    }

    /// The known sequence-drawing tables of `database`, or nil while unknown (callers then assume all).
    func tables(in database: String) -> (tables: Set<String>?, generation: Int) {
        catalog.withLock { c in
            let e = current(&c, database)
            return (e.usable ? e.tables : nil, e.generation)
        }
    }

    /// DDL ran (or finished) in `database`: what was loaded may be stale.
    func invalidate(_ database: String) {
        changing { $0[database, default: CatalogEntry()].generation += 1 }
    }

    /// Stores a load of sequence-drawing tables only (see `store(_:database:generation:)`).
    func store(_ tables: Set<String>, database: String, generation: Int) {
        store(Catalog(sequenceTables: tables), database: database, generation: generation)
    }

    /// Stores a load that started at `generation`; dropped when DDL came in between.
    func store(_ loaded: Catalog, database: String, generation: Int) {
        changing { c in
            // A database with no DDL seen yet has no entry: it is at generation 0, like `tables(in:)` says.
            var e = c[database] ?? CatalogEntry()
            guard e.generation == generation else { return }
            e.tables = loaded.sequenceTables
            e.deterministic = loaded.deterministic
            e.perRowDefaults = loaded.perRowDefaults
            e.sequenceColumns = loaded.sequenceColumns
            e.uniqueKeys = loaded.uniqueKeys
            e.notifies = loaded.notifies
            e.holdsNotifications = loaded.holdsNotifications
            e.readers = loaded.readers
            e.lockStateRoutines = loaded.lockStateRoutines
            e.lockStateTriggers = loaded.lockStateTriggers
            e.loadedGeneration = generation
            c[database] = e
        }
    }

    // MARK: the order

    /// Asks for the order; `grant` runs (on any thread: hop to your event loop) once it is yours.
    func acquire(_ grant: @escaping @Sendable () -> Void) -> Int {
        let (ticket, now) = lock.withLock { s -> (Int, Bool) in
            let t = s.nextTicket
            s.nextTicket += 1
            if s.holder == nil {
                s.holder = t
                return (t, true)
            }
            s.waiters.append(Waiter(ticket: t, grant: grant))
            return (t, false)
        }
        if now { grant() }
        return ticket
    }

    /// The ticket holding the order now (nil: nobody): a waiter that sees it change knows the order moves.
    func holder() -> Int? {
        lock.withLock { $0.holder }
    }

    /// The holder (`ticket`) runs its statement in this server process of its lead backend.
    func noteHolderLead(_ ticket: Int, backend: String, pid: Int32) {
        lock.withLock { s in
            if s.holder == ticket { s.holderLead = (backend, pid) }
        }
    }

    /// The lead backend and server process of the holder's statement, when it said so.
    func holderLead() -> (backend: String, pid: Int32)? {
        lock.withLock { $0.holder == nil ? nil : $0.holderLead }
    }

    /// The holder (`ticket`) sets the followers' sequences to the lead's before it gives the order
    /// back: its statement runs nowhere any more (no lock cycle can pass through it).
    func holderResyncs(_ ticket: Int) {
        lock.withLock { s in
            if s.holder == ticket {
                s.holderLead = nil
                s.resyncing = true
            }
        }
    }

    /// The holder has set the followers' sequences before its statement (`resyncSequencesThenSend`),
    /// which runs now on its lead: `backend`, server process `pid`.
    func holderResynced(_ ticket: Int, backend: String, pid: Int32) {
        lock.withLock { s in
            if s.holder == ticket {
                s.holderLead = (backend, pid)
                s.resyncing = false
            }
        }
    }

    /// Whether the holder is setting the followers' sequences (`holderResyncs`).
    func holderIsResyncing() -> Bool {
        lock.withLock { $0.holder != nil && $0.resyncing }
    }

    /// Gives the order back (or gives up waiting for it).
    func release(_ ticket: Int) {
        let next = lock.withLock { s -> Waiter? in
            if s.holder == ticket {
                s.holder = nil
                s.holderLead = nil
                s.resyncing = false
                guard !s.waiters.isEmpty else { return nil }
                let w = s.waiters.removeFirst()
                s.holder = w.ticket
                return w
            }
            s.waiters.removeAll { $0.ticket == ticket }
            return nil
        }
        next?.grant()
    }
}

/// Per table: the columns whose defaults give each row its own value, those that draw a sequence
/// value, and the unique keys (see `SequenceOrdering.catalogSQL`).
public struct RowOrderCatalog: Sendable, Equatable {
    public var perRowDefaults: [String: Set<String>] = [:]
    public var sequenceColumns: [String: Set<String>] = [:]
    public var uniqueKeys: [String: [[String]]] = [:]
}
