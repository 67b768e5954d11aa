import Logging
import NIOCore
import NIOPosix
import State
import Wire

/// What an open session carries to a backend brought (back) into service (`takeIn`): its named
/// prepared statements and its `SET`s, replayed at a transaction boundary. What cannot be carried is
/// remembered too: such a session ends with a clear error instead of going on without the backend.
struct SessionReplay {
    /// Named statements the backends hold, in the order they were made: each Parse as it went to
    /// them (rewritten or not), recorded once the lead answered it (`parseAnswered`).
    var statements: [(name: String, bytes: ByteBuffer)] = []
    /// Named Parses sent whose answer from the lead has not come: token → name and message. One
    /// PostgreSQL refuses (a syntax error, a name in use) never becomes a statement.
    private(set) var pendingParses: [Int: (name: String, bytes: ByteBuffer)] = [:]
    private var parseTokens = 0
    /// `SET` statements (session level) in force, in order, the latest for each setting (`settingKey`).
    private(set) var settingEntries: [(key: String, sql: String)] = []
    var settings: [String] { settingEntries.map(\.sql) }
    /// Custom `x.y` settings the client has set, by `SET` or by a `set_config()` with the name as a
    /// literal (at most `maximumCustomNames`): `pg_settings` does not show them, so a take-in asks
    /// the lead for each by name (`settingsQuery`). Never forgotten: a RESET or DISCARD may be rolled back.
    private(set) var customNames: Set<String> = []
    static let maximumCustomNames = 256
    /// Why the session's state cannot be replayed on another backend (nil: it can).
    var unreplayable: String?
    /// Texts seen to change nothing of this (a driver's statements come again and again), by their
    /// shape when they have numbers (`QueryText.masked`): what `noteSQL` looks for has no digit.
    var ordinary = TextMemo<Bool>()
    /// A statement may have changed the session's `statement_timeout` (the session asks the lead again).
    var timeoutMayHaveChanged = false

    /// Notes what a client message's text does to the session's state (when it arrives; a group's
    /// named statements are followed when it is sent, `apply`). `query`: the Query's text, decoded
    /// already (else it is decoded here).
    mutating func note(_ frame: PostgresFrame, query: QueryText? = nil) {
        switch frame.type {
        case FrontendMessage.Kind.parse.rawValue:
            guard case let .parse(p)? = try? FrontendMessage(frame: frame) else { return }
            noteSQL(p.query)
        case FrontendMessage.Kind.query.rawValue:
            if let query = query ?? QueryText(frame) { noteSQL(query.sql, shape: query.shapeKey) }
        default:
            break
        }
    }

    /// A group is sent to the backends with these named Parses and Closes of statements: each Parse
    /// is given a token, returned with its place among the group's Parses, to be answered by the lead;
    /// each Close is returned with its place among the group's Closes (`closeAnswered`).
    mutating func apply(_ changes: [StatementChange]) -> (parses: [(parse: Int, name: String, token: Int)], closes: [(close: Int, name: String)]) {
        var sent: (parses: [(parse: Int, name: String, token: Int)], closes: [(close: Int, name: String)]) = ([], [])
        for change in changes {
            switch change {
            case let .parsed(parse, name, bytes):
                parseTokens += 1
                pendingParses[parseTokens] = (name, bytes)
                sent.parses.append((parse, name, parseTokens))
            case let .closed(close, name):
                sent.closes.append((close, name))
            }
        }
        return sent
    }

    /// The lead answered the Parse of `token` with ParseComplete: the backends hold it (a statement of
    /// that name before it was dropped, or PostgreSQL would have refused this one).
    mutating func parseAnswered(_ token: Int) {
        guard let p = pendingParses.removeValue(forKey: token) else { return }
        statements.removeAll { $0.name == p.name }
        statements.append(p)
    }

    /// The cycle of the Parse of `token` ended without its ParseComplete (refused, or skipped after an error).
    mutating func parseUnanswered(_ token: Int) {
        pendingParses[token] = nil
    }

    /// The lead answered a Close of statement `name` with CloseComplete: the backends hold it no more.
    /// (A Parse of the name sent before the Close was answered before it; one sent after, after it.)
    mutating func closeAnswered(_ name: String) {
        statements.removeAll { $0.name == name }
    }

    /// Statements dropped where the session cannot count the answers (SQL `DEALLOCATE`, a function)
    /// are found at the take-in: the lead names the statements it holds (`settingsQuery`).
    mutating func keepOnly(_ held: Set<String>) -> [String] {
        let gone = statements.map(\.name).filter { !held.contains($0) }
        if !gone.isEmpty { statements.removeAll { !held.contains($0.name) } }
        return gone
    }

    /// A custom setting's name (`customNames`), quoted or not; others are ignored.
    mutating func noteCustomName(_ key: String) {
        var name = key
        if name.count > 1, name.hasPrefix("\""), name.hasSuffix("\"") { name = String(name.dropFirst().dropLast()).replacing("\"\"", with: "\"") }
        guard name.contains("."), !name.lowercased().hasPrefix("pgchorus."), !name.contains(" "),
              customNames.count < Self.maximumCustomNames else { return }
        customNames.insert(name.lowercased())
    }

    /// The names given as literals to `set_config(…)` in a text.
    mutating func noteSetConfigs(_ sql: String) {
        let tokens = SQLLexer.tokens(sql, trivia: false)
        for i in tokens.indices where tokens[i].kind == .word && tokens[i].text == "set_config" && i + 2 < tokens.count {
            guard tokens[i + 1].text == "(", tokens[i + 2].kind == .string, tokens[i + 2].text.hasPrefix("'") else { continue }
            noteCustomName(String(tokens[i + 2].text.dropFirst().dropLast()).replacing("''", with: "'"))
        }
    }

    /// Follows `DISCARD ALL` in a text that mentions it (each statement of it looked at by its words):
    /// the settings as recorded (`settings`, the fallback of a take-in) are reset. Prepared statements
    /// dropped by SQL are found at the take-in instead (`keepOnly`): a DEALLOCATE that PostgreSQL
    /// refused or never ran drops nothing.
    mutating func noteDrops(_ sql: String) {
        var statement: [SQLToken] = []
        func finish() {
            defer { statement = [] }
            guard statement.count == 2, statement[0].kind == .word, statement[0].text == "discard",
                  statement[1].kind == .word, statement[1].text == "all" else { return }
            settingEntries = []
        }
        for token in SQLLexer.tokens(sql, trivia: false) {
            if token.kind == .punctuation, token.text == ";" { finish() } else { statement.append(token) }
        }
        finish()
    }

    /// The words `noteSQL` looks for anywhere in a text, found in one scan (`mentioned`): `DISCARD ALL`
    /// (`noteDrops`), `set_config(…)` (`noteSetConfigs`), `statement_timeout`, and those that may make
    /// the session's state impossible to carry (`hold`, `temp`: looked at closer when one is there).
    static let noteWords = ["discard", "set_config", "statement_timeout", "hold", "temp"].map { Array($0.utf8) }
    static let discardFound: UInt64 = 1, setConfigFound: UInt64 = 2, statementTimeoutFound: UInt64 = 4
    static let holdOrTempFound: UInt64 = 8 | 16

    /// Runs on every statement a client sends: it works on the text's bytes (a look at its first ones,
    /// one scan for a few words) and builds nothing it does not keep; a text already seen to change
    /// nothing — or one of its shape (`shape`: `QueryText.masked`) — is passed over at once.
    mutating func noteSQL(_ sql: String, shape: MemoKey? = nil) {
        let key = shape ?? ordinary.key(sql)
        if let key, ordinary[key] != nil { return }
        let head = Self.head(of: sql)
        func starts(_ p: String) -> Bool { head.starts(with: p.utf8) }
        if starts("set local ") || starts("set transaction") || starts("set constraints") {
            if starts("set local statement_timeout") { timeoutMayHaveChanged = true }
            return
        }
        if starts("set ") || starts("reset ") {
            // One setting (a trailing semicolon allowed), not a SET followed by other statements.
            var bytes = Array(sql.utf8)
            while let last = bytes.last, Self.isSpace(last) { bytes.removeLast() }
            if bytes.last == UInt8(ascii: ";") { bytes.removeLast() }
            if !bytes.contains(UInt8(ascii: ";")) {
                let key = Self.settingKey(head) ?? sql
                if key == "statement_timeout" || key == "all" { timeoutMayHaveChanged = true }
                noteCustomName(key)
                // A setting set again replaces what was replayed for it; a RESET needs no replay (a
                // backend taken in starts from the same defaults); RESET ALL leaves the role as it is.
                if key == "all" {
                    settingEntries.removeAll { $0.key != "role" && $0.key != "session authorization" }
                } else {
                    settingEntries.removeAll { $0.key == key }
                    if starts("set ") { settingEntries.append((key, sql)) }
                }
                return
            }
        }
        let found = Self.mentioned(sql, needles: Self.noteWords)
        // (Such a text is never kept as ordinary: it is looked at each time.)
        let drops = found & Self.discardFound != 0
        if drops { noteDrops(sql) }
        // (Kept as ordinary afterwards if nothing else is there: the names are noted once. They are
        // in quotes, which a shape keeps as they are.)
        if found & Self.setConfigFound != 0 { noteSetConfigs(sql) }
        // (Never kept as ordinary: each run may change it.)
        let namesTimeout = found & Self.statementTimeoutFound != 0
        if drops || namesTimeout { timeoutMayHaveChanged = true }
        guard unreplayable == nil else { return }
        for (prefix, what) in Self.unreplayablePrefixes where starts(prefix) && !starts("prepare transaction") {
            // A table dropped at its transaction's commit is gone by the boundary where a backend is taken in.
            if what == Self.temporaryTable, StatementAnalysis(sql).temporaryObjectDroppedAtCommit { return }
            unreplayable = what
            return
        }
        // The rest may sit anywhere in the text: a quick look for the words first, the lexer's words
        // (outside literals and comments) only when one is there.
        guard found & Self.holdOrTempFound != 0 else {
            if !drops, !namesTimeout, let key { ordinary.keep(true, for: key) }
            return
        }
        let words = SQLLexer.tokens(sql, trivia: false).map { $0.kind == .word ? $0.text : "" }
        func follows(_ a: String, _ b: (String) -> Bool) -> Bool { zip(words, words.dropFirst()).contains { $0 == a && b($1) } }
        if words.contains("declare") && follows("with", { $0 == "hold" }) { unreplayable = "a cursor WITH HOLD" }
        if follows("into", { $0.hasPrefix("temp") }) { unreplayable = Self.temporaryTable }
        if unreplayable == nil, !drops, !namesTimeout, let key { ordinary.keep(true, for: key) }
    }

    /// What the lead is asked for a backend being taken in: the names of the prepared statements it
    /// holds (one dropped where pgchorus cannot see it is not carried), and a statement per setting the session has
    /// changed, as the lead has it now — a setting of a transaction that rolled back is undone there,
    /// one made by `set_config()` or in a Query of several statements is there, a refused one is not.
    /// (Custom `x.y` settings do not show in `pg_settings`: those the client SET are looked up by
    /// name.) Then its session authorization and role. Rows: (order, statement).
    func settingsQuery(loginUser: String) -> String {
        let literal = LibPQConnection.literal
        // Name and value travel as hex of their UTF-8: the statement is ASCII whatever the session's
        // client_encoding (the lead answers in it, and the backend taken in reads it in its own).
        func hex(_ e: String) -> String { "pg_catalog.encode(pg_catalog.convert_to(\(e), 'UTF8'), 'hex')" }
        let text = "pg_catalog.convert_from(pg_catalog.decode(%L, ''hex''), ''UTF8'')"
        let setConfig = "pg_catalog.format('SELECT pg_catalog.set_config(\(text), \(text), false)', "
        var parts = ["SELECT 1, \(setConfig)\(hex("name")), \(hex("pg_catalog.current_setting(name)"))) FROM pg_catalog.pg_settings "
            + "WHERE source = 'session' AND name NOT LIKE 'pgchorus.%'"]
        let custom = customNames.sorted()
        if !custom.isEmpty {
            parts.append("SELECT 2, \(setConfig)\(hex("n")), \(hex("v"))) FROM (VALUES \(custom.map { "(\(literal($0)))" }.joined(separator: ", "))) AS c(n), "
                + "LATERAL (SELECT pg_catalog.current_setting(n, true) AS v) AS s WHERE v IS NOT NULL")
        }
        parts.append("SELECT 3, pg_catalog.format('SET SESSION AUTHORIZATION %I', session_user) WHERE session_user <> \(literal(loginUser))")
        parts.append("SELECT 4, pg_catalog.format('SET ROLE %I', current_user) WHERE current_user <> session_user")
        parts.append("SELECT \(Self.preparedRow), name FROM pg_catalog.pg_prepared_statements WHERE NOT from_sql")
        return parts.joined(separator: " UNION ALL ") + " ORDER BY 1"
    }

    /// The rows of `settingsQuery` that name a prepared statement the lead holds (the others set a setting).
    static let preparedRow = "5"

    /// The setting a `SET` or `RESET` (its `head`) is about, lower-cased: its name, or `time zone`,
    /// `session authorization`, `session characteristics`, `all` (RESET ALL); nil when not told.
    static func settingKey(_ head: [UInt8]) -> String? {
        var rest = head.starts(with: "set ".utf8) ? head.dropFirst(4) : head.starts(with: "reset ".utf8) ? head.dropFirst(6) : head[...]
        for two in ["session authorization", "session characteristics", "time zone"] where rest.starts(with: two.utf8) { return two }
        if rest.starts(with: "session ".utf8) { rest = rest.dropFirst(8) }
        let name = rest.prefix { $0 != 32 && $0 != UInt8(ascii: "=") }
        guard !name.isEmpty, name.count < rest.count || head.count < 64 else { return nil }
        return name.elementsEqual("timezone".utf8) ? "time zone" : String(decoding: name, as: UTF8.self)
    }

    /// Statements whose start makes the session's state impossible to carry to another backend.
    static let temporaryTable = "a temporary table"
    static let unreplayablePrefixes: [(String, String)] = [
        ("create temp", temporaryTable), ("create local temp", temporaryTable),
        ("create global temp", temporaryTable), ("listen ", "LISTEN"), ("prepare ", "a prepared statement made with SQL PREPARE"),
        ("load ", "a loaded library"),
    ]

    static func isSpace(_ c: UInt8) -> Bool { c == 32 || (c >= 9 && c <= 13) }

    /// The text's first bytes (at most `limit`), ASCII lower-cased, leading white space dropped and
    /// each run of it one space.
    static func head(of sql: String, limit: Int = 64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(limit)
        var space = false
        for c in sql.utf8 {
            if isSpace(c) {
                space = !out.isEmpty
                continue
            }
            if space {
                out.append(32)
                space = false
            }
            guard out.count < limit else { break }
            out.append(c >= 65 && c <= 90 ? c | 0x20 : c)
            if out.count == limit { break }
        }
        return out
    }

    /// Whether any of `words` (lower-case ASCII) occurs in `sql`, ignoring ASCII case.
    static func mentions(_ sql: String, _ words: [String]) -> Bool {
        mentions(sql, needles: words.map { Array($0.utf8) })
    }

    /// `mentions` with the words as bytes (non-empty, lower-case ASCII).
    static func mentions(_ sql: String, needles: [[UInt8]]) -> Bool {
        mentioned(sql, needles: needles, stopAtFirst: true) != 0
    }

    /// Which of `needles` (non-empty, lower-case ASCII; at most 64) `sql` has, ASCII case ignored, in
    /// one scan: bit i set for `needles[i]`. `stopAtFirst`: the scan ends at the first found.
    static func mentioned(_ sql: String, needles: [[UInt8]], stopAtFirst: Bool = false) -> UInt64 {
        precondition(needles.count <= 64)
        let all: UInt64 = needles.count == 64 ? ~0 : (1 << UInt64(needles.count)) - 1
        let scan = { (text: UnsafeBufferPointer<UInt8>) -> UInt64 in
            var found: UInt64 = 0
            guard text.count > 0 else { return found }
            for i in 0..<text.count {
                let c = text[i] >= 65 && text[i] <= 90 ? text[i] | 0x20 : text[i]
                for (j, n) in needles.enumerated() where n[0] == c && i + n.count <= text.count && found & (1 << UInt64(j)) == 0 {
                    var k = 1
                    while k < n.count, (text[i + k] >= 65 && text[i + k] <= 90 ? text[i + k] | 0x20 : text[i + k]) == n[k] { k += 1 }
                    guard k == n.count else { continue }
                    found |= 1 << UInt64(j)
                    if stopAtFirst || found == all { return found }
                }
            }
            return found
        }
        if let found = sql.utf8.withContiguousStorageIfAvailable(scan) { return found }
        return Array(sql.utf8).withUnsafeBufferPointer(scan)
    }
}

/// Online recovery's part in the session: the write gate (`WriteGate`) and the take-in of a backend
/// brought back into service.
extension ClientSessionHandler {
    /// Nothing sent and unanswered, no transaction open: the session may be held at the gate, and a
    /// backend taken in, without anything being in flight.
    var isQuiet: Bool {
        guard phase == .relaying else { return true }
        return lastStatus == .idle && waitingGroup == nil && nothingUnderWay && backends.allSatisfy { !$0.isLive || $0.owed.isEmpty }
    }

    /// Tells the node's gate when this session turns busy or quiet (called after every flush).
    func noteGateBusy() {
        let busy = (phase == .relaying || phase == .draining) && !isQuiet
        guard busy != gateBusy else { return }
        gateBusy = busy
        shared.gate.sessionBusy(busy)
    }

    /// At a transaction boundary, before a client group is sent: holds it while the gate is closed, and
    /// takes in a backend brought back into service. True when the group was held.
    func holdAtBoundary() -> Bool {
        guard isQuiet, let context else { return false }
        announceBusy()
        if shared.gate.mayBeClosed {
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            if let ticket = shared.gate.waitForOpening({ loop.execute { bound.value.gateOpened() } }) {
                gateTicket = ticket
                holdCurrentGroup()
                noteGateBusy()
                return true
            }
        }
        guard let joining = joiningSinceLastLook() else { return false }
        if let what = replay.unreplayable {
            logger.warning("session ends: backend(s) \(joining.map(\.id)) came into service and this session holds \(what)")
            fatal(ErrorFields(severity: "FATAL", sqlState: "57P01",
                              message: "pgchorus brought backend \(joining.map(\.id).joined(separator: ", ")) into service, and this session holds \(what), which cannot be carried to it",
                              hint: "Reconnect: a new session uses every online backend."))
            return true
        }
        holdCurrentGroup()
        takeIn(joining)
        return true
    }

    /// For a pipeline about to be forwarded before its Sync (`forwardOpenGroup`): false when it must
    /// wait for its Sync instead, where `holdAtBoundary` holds it at the gate or takes a backend in.
    func mayForwardEarly() -> Bool {
        guard isQuiet else { return true }
        announceBusy()
        if shared.gate.mayBeClosed || joiningSinceLastLook() != nil {
            noteGateBusy()
            return false
        }
        return true
    }

    /// Busy first, then the look at the gate (see `WriteGate.closedFlag`): a recovery that closes the
    /// gate after the look counts this session and waits for its statement.
    private func announceBusy() {
        guard !gateBusy else { return }
        gateBusy = true
        shared.gate.sessionBusy(true)
    }

    /// The online backends this session lacks, looked up only when the cluster's view changed since the
    /// session last found none (one counter read per statement); nil: none.
    private func joiningSinceLastLook() -> [Configuration.Backend]? {
        let generation = shared.registry.viewGeneration
        guard generation != joinCheckedGeneration else { return nil }
        let joining = joiningBackends()
        guard !joining.isEmpty else {
            joinCheckedGeneration = generation
            return nil
        }
        return joining
    }

    func holdCurrentGroup() {
        if admittingSegment, currentGroup.count == 1 {
            // A part of a cut Query goes back to its parts (held client messages would wait behind
            // the cut Query for ever): `replayHeldFrames` admits it again.
            segments.putBack(currentGroup[0])
        } else {
            heldFrames.insert(contentsOf: currentGroup, at: 0)
            // Their ReadyForQuery is counted again when they are handled again (`handleRelayFrame`):
            // counted twice, a Query cut at its COMMITs later waited for an answer that never came.
            if !admittingSegment, let last = currentGroup.last,
               last.type == FrontendMessage.Kind.query.rawValue || last.type == FrontendMessage.Kind.sync.rawValue
               || last.type == FrontendMessage.Kind.functionCall.rawValue {
                readiesOwed = max(0, readiesOwed - 1)
            }
        }
        currentGroup = []
        currentGroupBytes = 0
    }

    func gateOpened() {
        gateTicket = nil
        guard phase == .relaying else { return }
        replayHeldFrames()
        flushClient()
    }

    /// Online backends this session does not use yet.
    func joiningBackends() -> [Configuration.Backend] {
        guard liveCount > 0 else { return [] }
        let mine = Set(backends.filter(\.isLive).map(\.backend.id))
        return shared.registry.online().filter { !mine.contains($0.id) }
    }

    /// Connects and logs in to `joining` as the client's user, replays the session's state on them,
    /// then lets the held client messages go on to every backend. Meanwhile the lead is asked for the
    /// session's settings as they are (`SessionReplay.settingsQuery`).
    func takeIn(_ joining: [Configuration.Backend]) {
        guard let context else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        takeInSettings = []
        takeInPrepared = []
        takeInSettingsFailed = false
        takenIn = []
        takeInSettingsSeq = nextSeq
        backends[lead].owed.add(Expectation(seq: nextSeq, kind: .sessionSettings))
        nextSeq += 1
        var question = ByteBuffer()
        FrontendMessage.query(replay.settingsQuery(loginUser: start.user)).encode(into: &question)
        backends[lead].write(question)
        takingIn = Set(joining.indices.map { backends.count + $0 })
        for backend in joining {
            logger.info("taking backend \(backend.id) into the session")
            addBackend(backend)
        }
        let timeout = configuration.proxy.backendConnectTimeout
        takeInTimer = context.eventLoop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
            let session = bound.value
            for i in session.takingIn ?? [] {
                session.takeInEnded(i, .unreachable("no answer within \(timeout) s (proxy.backend_connect_timeout) while logging in"))
            }
        }
    }

    /// How the login of a backend being taken in ended.
    func takeInEnded(_ index: Int, _ outcome: LoginRound.Outcome) {
        guard takingIn?.contains(index) == true else { return }
        takingIn?.remove(index)
        let backend = backends[index].backend
        switch outcome {
        case .ready:
            // Its statements and settings once the lead has said what it holds (`finishTakeIn`).
            takenIn.append(index)
            ProxyMetrics.backendsTakenIn.increment()
        default:
            backends[index].phase = .closed
            backends[index].channel?.close(promise: nil)
            let reason: String
            switch outcome {
            case let .refused(fields): reason = "refused a session's login: \(fields.sqlState ?? "") \(fields.message ?? "")"
            case let .unreachable(why): reason = "could not be taken into an open session: \(why)"
            default: reason = "could not be taken into an open session"
            }
            logger.error("backend \(backend.description) \(reason)")
            if shared.registry.fencedReason() == nil { shared.failBackendClusterWide(backend.id, reason: reason) }
        }
        guard takingIn?.isEmpty == true else { return }
        takeInTimer?.cancel()
        takeInTimer = nil
        finishTakeIn()
    }

    /// A row of the lead's answer to the settings question: a statement that sets one, or the name of
    /// a prepared statement the lead holds.
    func recordSessionSetting(_ frame: PostgresFrame) {
        if frame.type == BackendMessage.Kind.errorResponse.rawValue { takeInSettingsFailed = true }
        guard frame.type == BackendMessage.Kind.dataRow.rawValue, case let .dataRow(columns)? = try? BackendMessage(frame: frame),
              columns.count == 2, let kind = columns[0], let value = columns[1] else { return }
        if kind.readableBytesView.elementsEqual(SessionReplay.preparedRow.utf8) {
            takeInPrepared.insert(String(buffer: value))
        } else {
            takeInSettings?.append(String(buffer: value))
        }
    }

    /// The lead has answered the settings question (or was lost before it did).
    func sessionSettingsAnswered() {
        takeInSettingsSeq = nil
        guard phase == .relaying || phase == .draining else { return }
        if takingIn?.isEmpty == true { finishTakeIn() }
    }

    /// Every login of the take-in has ended and the lead has answered the settings question: the
    /// backends taken in get the settings, each in a Query of its own (one refused there keeps none
    /// after it from it) — the lead's answer, or, had it none, the client's SETs as recorded — and
    /// the held client messages go on.
    private func finishTakeIn() {
        guard takeInSettingsSeq == nil, takingIn?.isEmpty == true else { return }
        let settings = takeInSettingsFailed ? replay.settings : takeInSettings ?? []
        if takeInSettingsFailed {
            logger.warning("the lead did not tell this session's settings: backend(s) taken in get the session's SET statements as sent")
        } else {
            // A statement dropped by SQL (DEALLOCATE, also in a function) is not carried: the lead
            // no longer holds it.
            let gone = replay.keepOnly(takeInPrepared)
            if !gone.isEmpty { logger.debug("named statements gone from the lead, not given to the backend(s) taken in: \(gone)") }
        }
        for index in takenIn where backends[index].isLive {
            // The settings first: a statement is parsed with the search_path in force.
            for setting in settings { sendOwn(setting, to: index) }
            if notificationHold == true { sendOwn(Self.notificationHoldSQL(true), to: index) }
            // Each with a Sync of its own: one PostgreSQL refused here (a named Parse with a syntax
            // error) fails there too, and does not make the server skip the ones after it.
            for s in replay.statements {
                var statement = ByteBuffer()
                statement.writeImmutableBuffer(s.bytes)
                FrontendMessage.sync.encode(into: &statement)
                sendOwn(statement, to: index)
            }
        }
        takenIn = []
        takeInSettings = nil
        takeInPrepared = []
        takingIn = nil
        // The cluster's lead (the first online backend) leads this session too: every session orders
        // its locks on the same backend.
        if let first = shared.registry.online().first?.id,
           let i = backends.indices.first(where: { backends[$0].isLive && backends[$0].backend.id == first }), i != lead {
            if let error = leadLocksLostError(lead: backends[lead].backend.id, becauseOf: "hands the lead to backend \(first), brought into service") {
                logger.warning("session ends: backend \(first) came into service and leads now, and this session held a session-level advisory lock on its lead")
                fatal(error)
                return
            }
            lead = i
            noteLeadOrdering()
        }
        seenViewGeneration = shared.registry.viewGeneration
        logger.debug("session backends now", metadata: ["backends": "\(backends.filter(\.isLive).map(\.backend.id))"])
        replayHeldFrames()
        flushClient()
    }
}
