/// Volatile values made identical on every backend instead of refused.
///
/// A column default such as `DEFAULT now()` or `DEFAULT gen_random_uuid()` is evaluated by each
/// backend for each row it inserts, so every backend would store its own value. pgchorus rewrites
/// such calls in definitions (column defaults, views, function and DO bodies, and the VALUES of an
/// INSERT) into calls of small functions in the `pgchorus` schema that every backend evaluates to
/// the same value:
///
/// - `pgchorus.now()` is the transaction's time, which pgchorus chooses once per transaction and sets
///   on every backend of the session before the transaction's first statement (`stampSQL`);
/// - `pgchorus.gen_random_uuid()`, `pgchorus.random()` and `pgchorus.clock_timestamp()` draw from a
///   stream that is a hash (SHA-256) of a per-session secret seed (a startup parameter drawn from the
///   system's CSPRNG), the transaction's stamp and a counter: every backend of the session runs the
///   same statements in the same order, so it draws the same values for the same rows.
///
/// Outside a pgchorus session (no seed) each function is PostgreSQL's own, so the schema stays
/// usable by a direct connection. A value is made identical only where the rows are produced in the
/// same order on every backend (VALUES, COPY data, a function or trigger called for them); a per-row
/// value over rows chosen in physical order (ALTER TABLE … ADD with such a default, CREATE TABLE … AS
/// … FROM, UPDATE of several rows) stays refused.
public enum DeterministicValues {
    /// Startup parameter and setting names (placeholders PostgreSQL accepts for any dotted name).
    public static let seedSetting = "pgchorus.seed"
    public static let stampSetting = "pgchorus.tx"
    public static let counterSetting = "pgchorus.n"

    /// A function call replaced in a definition, by the bare name of the built-in called.
    static let callReplacements: [String: String] = [
        "now": "pgchorus.now()", "transaction_timestamp": "pgchorus.now()", "statement_timestamp": "pgchorus.now()",
        "clock_timestamp": "pgchorus.clock_timestamp()",
        "gen_random_uuid": "pgchorus.gen_random_uuid()", "uuid_generate_v4": "pgchorus.gen_random_uuid()",
        "uuid_generate_v1": "pgchorus.gen_random_uuid()", "uuid_generate_v1mc": "pgchorus.gen_random_uuid()",
        "random": "pgchorus.random()",
    ]

    /// Calls that give each row its own value: identical only where rows come in the same order everywhere.
    static let perRowCalls: Set<String> = ["clock_timestamp", "gen_random_uuid", "uuid_generate_v4", "uuid_generate_v1", "uuid_generate_v1mc", "random"]

    /// SQL's time keywords and the type each gives (`CURRENT_TIMESTAMP` …), made from `pgchorus.now()`.
    static let timeKeywords: [String: String] = [
        "current_timestamp": "timestamptz", "current_date": "date", "current_time": "timetz",
        "localtimestamp": "timestamp", "localtime": "time",
    ]

    /// The expression for a time keyword (with its precision, if given) in a definition.
    static func keywordReplacement(type: String, precision: String?) -> String {
        if type == "timestamptz" && precision == nil { return "pgchorus.now()" }
        if type == "date" { return "(pgchorus.now())::date" }
        return "(pgchorus.now())::\(type)\(precision.map { "(\($0))" } ?? "")"
    }

    /// The time string literals PostgreSQL reads at the moment it parses them ('now' is the
    /// transaction's start; the others midnight of a day), with the day offset of each.
    static let timeLiterals: [String: Int?] = ["now": nil, "today": 0, "tomorrow": 1, "yesterday": -1]

    /// The statement pgchorus sends (its reply unseen by the client) before a transaction's first
    /// statement: the transaction's stamp (a per-session number and its time), the counter reset.
    public static func stampSQL(transaction: Int, timestamp: String) -> String {
        "SELECT pg_catalog.set_config('\(stampSetting)', '\(transaction);\(timestamp)', false), pg_catalog.set_config('\(counterSetting)', '0', false)"
    }

    /// The session's seed: 128 bits from the system's CSPRNG, as hex.
    public static func newSeed() -> String {
        var rng = SystemRandomNumberGenerator()
        return (0..<2).map { _ in
            let v = rng.next() as UInt64
            let hex = String(v, radix: 16)
            return String(repeating: "0", count: 16 - hex.count) + hex
        }.joined()
    }

    /// The functions, created once per database (with the commit log, see `ClientSessionHandler.schemaDDL`).
    /// Names inside are schema-qualified so a user's search_path cannot redirect them.
    static let functionsDDL = """
    CREATE FUNCTION pgchorus.now() RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $f$
      SELECT coalesce(nullif(pg_catalog.split_part(pg_catalog.current_setting('pgchorus.tx', true), ';', 2), '')::timestamptz, pg_catalog.now())
    $f$;
    CREATE FUNCTION pgchorus.draw() RETURNS bytea LANGUAGE plpgsql VOLATILE AS $f$
    DECLARE
      s text := pg_catalog.current_setting('pgchorus.seed', true);
      n bigint;
    BEGIN
      IF s IS NULL OR s = '' THEN RETURN NULL; END IF;
      n := coalesce(nullif(pg_catalog.current_setting('pgchorus.n', true), ''), '0')::bigint + 1;
      PERFORM pg_catalog.set_config('pgchorus.n', n::text, false);
      RETURN pg_catalog.sha256(pg_catalog.convert_to(s || ';' || coalesce(pg_catalog.current_setting('pgchorus.tx', true), '') || ';' || n, 'UTF8'));
    END $f$;
    CREATE FUNCTION pgchorus.gen_random_uuid() RETURNS uuid LANGUAGE plpgsql VOLATILE AS $f$
    DECLARE h bytea := pgchorus.draw();
    BEGIN
      IF h IS NULL THEN RETURN pg_catalog.gen_random_uuid(); END IF;
      h := pg_catalog.set_byte(h, 6, (pg_catalog.get_byte(h, 6) & 15) | 64);
      h := pg_catalog.set_byte(h, 8, (pg_catalog.get_byte(h, 8) & 63) | 128);
      RETURN pg_catalog.encode(pg_catalog.substr(h, 1, 16), 'hex')::uuid;
    END $f$;
    CREATE FUNCTION pgchorus.random() RETURNS double precision LANGUAGE plpgsql VOLATILE AS $f$
    DECLARE h bytea := pgchorus.draw();
    BEGIN
      IF h IS NULL THEN RETURN pg_catalog.random(); END IF;
      RETURN (('x' || pg_catalog.encode(pg_catalog.substr(h, 1, 7), 'hex'))::bit(56)::bigint >> 4)::double precision / 4503599627370496.0;
    END $f$;
    CREATE FUNCTION pgchorus.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql VOLATILE AS $f$
    DECLARE n bigint;
    BEGIN
      IF coalesce(pg_catalog.current_setting('pgchorus.seed', true), '') = '' THEN RETURN pg_catalog.clock_timestamp(); END IF;
      n := coalesce(nullif(pg_catalog.current_setting('pgchorus.n', true), ''), '0')::bigint + 1;
      PERFORM pg_catalog.set_config('pgchorus.n', n::text, false);
      RETURN pgchorus.now() + pg_catalog.make_interval(secs => n / 1000000.0);
    END $f$;
    """

    /// Notifications raised by routines, held until the vote commits. A routine's `pg_notify(…)` is
    /// rewritten to `pgchorus.pg_notify(…)` when it is defined; that function notifies as PostgreSQL
    /// does, except in a transaction the session will put through the vote (the session sets
    /// `pgchorus.hold_notifications` on before it), where it records the notification in
    /// `pgchorus.held_notifications` — a row in the transaction, so a rollback (or a rolled-back
    /// savepoint) drops it, and nothing keeps PostgreSQL from preparing the transaction. Once the vote
    /// has committed, `pgchorus.release_notifications()` on each backend sends its session's rows (in
    /// their order) and deletes them; a transaction that commits without the vote calls it before its
    /// COMMIT, and the rest of that transaction notifies directly. Rows are keyed by a hash of the
    /// session's seed, the same on each of its backends, and numbered in the order held (the primary
    /// key online recovery needs to replay their deletion). Row-level security keeps each session to its
    /// own rows.
    static let notificationsDDL = """
    CREATE TABLE IF NOT EXISTS pgchorus.held_notifications (
      session text NOT NULL, n bigint NOT NULL, held_at timestamptz NOT NULL, channel text NOT NULL, payload text,
      PRIMARY KEY (session, n));
    GRANT SELECT, INSERT, DELETE ON pgchorus.held_notifications TO PUBLIC;
    -- A session sees and deletes only its own rows (keyed by its seed, which only it knows): no role
    -- reads another's pending payloads or drops its notifications. The owner and superusers (the
    -- resolver's pruning, recovery's dump) are not bound by it.
    ALTER TABLE pgchorus.held_notifications ENABLE ROW LEVEL SECURITY;
    CREATE POLICY own_session ON pgchorus.held_notifications
      USING (session = pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to('notify;' || coalesce(pg_catalog.current_setting('pgchorus.seed', true), ''), 'UTF8')), 'hex'));
    CREATE FUNCTION pgchorus.pg_notify(channel text, payload text) RETURNS void LANGUAGE plpgsql VOLATILE AS $f$
    DECLARE
      s text := coalesce(pg_catalog.current_setting('pgchorus.seed', true), '');
      k text;
      n bigint;
    BEGIN
      -- What PostgreSQL would refuse is refused now, by PostgreSQL.
      IF coalesce(pg_catalog.current_setting('\(holdSetting)', true), '') <> 'on' OR s = '' OR coalesce(channel, '') = ''
         OR pg_catalog.octet_length(channel) >= 64 OR pg_catalog.octet_length(coalesce(payload, '')) >= 8000 THEN
        PERFORM pg_catalog.pg_notify(channel, payload);
        RETURN;
      END IF;
      k := pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to('notify;' || s, 'UTF8')), 'hex');
      -- Numbered after what the session holds: the same numbers on each of its backends.
      SELECT coalesce(max(h.n), 0) + 1 INTO n FROM pgchorus.held_notifications h WHERE h.session = k;
      INSERT INTO pgchorus.held_notifications (session, n, held_at, channel, payload) VALUES (k, n, pgchorus.now(), channel, payload);
    END $f$;
    CREATE FUNCTION pgchorus.release_notifications() RETURNS void LANGUAGE plpgsql VOLATILE AS $f$
    DECLARE
      k text := pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to('notify;' || coalesce(pg_catalog.current_setting('pgchorus.seed', true), ''), 'UTF8')), 'hex');
      r record;
    BEGIN
      PERFORM pg_catalog.set_config('\(holdSetting)', 'off', true);
      FOR r IN SELECT h.channel, h.payload FROM pgchorus.held_notifications h WHERE h.session = k ORDER BY h.n LOOP
        PERFORM pg_catalog.pg_notify(r.channel, r.payload);
      END LOOP;
      DELETE FROM pgchorus.held_notifications WHERE session = k;
    END $f$;
    """

    /// The session-level setting that makes `pgchorus.pg_notify` hold (see `notificationsDDL`).
    public static let holdSetting = "pgchorus.hold_notifications"

    // MARK: finding what to rewrite

    /// A piece of SQL text to replace (byte range in the statement) and its replacement.
    public struct Rewrite: Sendable, Equatable {
        public var range: Range<Int>
        public var text: String
    }

    /// The replacement of the call or keyword at `i` in a definition, and the range it replaces, or nil.
    /// `tokens` are significant tokens; ranges are shifted by `offset` (for a body inside a string).
    static func replacement(in tokens: [SQLToken], at i: Int, offset: Int = 0) -> Rewrite? {
        let t = tokens[i]
        guard t.kind == .word else { return nil }
        let qualified = tokens.isPunctuation(".", at: i - 1)
        let builtin = qualified && i >= 2 && tokens[i - 2].kind == .word && tokens[i - 2].text == "pg_catalog"
        if qualified && !builtin { return nil }
        let start = (builtin ? tokens[i - 2].range.lowerBound : t.range.lowerBound) + offset
        if let call = callReplacements[t.text], tokens.isPunctuation("(", at: i + 1), tokens.isPunctuation(")", at: i + 2) {
            return Rewrite(range: start..<(tokens[i + 2].range.upperBound + offset), text: call)
        }
        if let type = timeKeywords[t.text] {
            if tokens.isPunctuation("(", at: i + 1) {
                guard type != "date", i + 3 < tokens.count, tokens[i + 2].kind == .number, tokens.isPunctuation(")", at: i + 3) else { return nil }
                return Rewrite(range: start..<(tokens[i + 3].range.upperBound + offset),
                               text: keywordReplacement(type: type, precision: tokens[i + 2].text))
            }
            return Rewrite(range: start..<(t.range.upperBound + offset), text: keywordReplacement(type: type, precision: nil))
        }
        return nil
    }

    /// `pg_notify(` or `pg_catalog.pg_notify(` in a routine's body: `pgchorus.pg_notify(`, which holds
    /// the notification while the transaction waits for the vote (`notificationsDDL`).
    static func notifyReplacement(in tokens: [SQLToken], at i: Int, offset: Int) -> Rewrite? {
        let t = tokens[i]
        guard t.kind == .word, t.text == "pg_notify", i + 1 < tokens.count, tokens[i + 1].kind == .punctuation, tokens[i + 1].text == "(" else { return nil }
        let qualified = tokens.isPunctuation(".", at: i - 1)
        let builtin = qualified && i >= 2 && tokens[i - 2].kind == .word && tokens[i - 2].text == "pg_catalog"
        if qualified && !builtin { return nil }
        let start = (builtin ? tokens[i - 2].range.lowerBound : t.range.lowerBound) + offset
        return Rewrite(range: start..<(t.range.upperBound + offset), text: "pgchorus.pg_notify")
    }

    /// The time literal a string token holds ('now', 'today' …; case and spaces as PostgreSQL allows), if any.
    static func timeLiteral(_ t: SQLToken) -> String? {
        guard t.kind == .string, t.text.first == "'", t.text.count >= 3, t.text.count <= 14 else { return nil }
        var inner = Substring(t.text.dropFirst().dropLast().lowercased())
        while inner.first == " " || inner.first == "\t" { inner.removeFirst() }
        while inner.last == " " || inner.last == "\t" { inner.removeLast() }
        return timeLiterals.keys.contains(String(inner)) ? String(inner) : nil
    }

    /// Typed time literals (`'now'::timestamptz`, `CAST('today' AS date)`, `timestamp 'now'`,
    /// `date 'tomorrow'` …): each as a range and the type of `StatementAnalysis.timeExpressions`. A bare
    /// `'now'` is left alone: without a type it may be text.
    static func typedTimeLiterals(_ s: [SQLToken]) -> [(range: Range<Int>, type: String)] {
        var out: [(range: Range<Int>, type: String)] = []
        for (i, t) in s.enumerated() where t.kind == .string {
            guard let literal = timeLiteral(t), let day = timeLiterals[literal] else { continue }
            let offset = day.map { $0 < 0 ? "- \(-$0)" : "+ \($0)" }
            if (s.isPunctuation(":", at: i + 1) && s.isPunctuation(":", at: i + 2)) || (s.word(at: i + 1) == "as" && s.isPunctuation("(", at: i - 1) && s.word(at: i - 2) == "cast") {
                // The cast that follows gives the type.
                out.append((t.range, offset.map { "day\($0)" } ?? "(literal)"))
                continue
            }
            // type 'literal': the type's words end right before the string — `timestamp`, `time(3)`,
            // `timestamp(6) with time zone` …
            var first = i - 1
            var zone: String?
            if s.word(at: i - 1) == "zone", s.word(at: i - 2) == "time", let w = s.word(at: i - 3), w == "with" || w == "without" {
                zone = w
                first = i - 4
            }
            var precision: String?
            if first >= 3, s.isPunctuation(")", at: first), s[first - 1].kind == .number, s.isPunctuation("(", at: first - 2) {
                precision = s[first - 1].text
                first -= 3
            }
            var type: String?
            switch s.word(at: first) {
            case "date" where zone == nil && precision == nil: type = "date"
            case "timestamptz" where zone == nil: type = "timestamptz"
            case "timetz" where zone == nil: type = "timetz"
            case "timestamp", "time": type = s.word(at: first)! + (zone == "with" ? "tz" : "")
            default: break
            }
            guard var type else { continue }
            if let precision { type += "(\(precision))" }
            out.append((s[first].range.lowerBound..<t.range.upperBound, offset.map { "day\($0):\(type)" } ?? "cast:\(type)"))
        }
        return out
    }

    /// Untyped time literals given as a column's default in CREATE TABLE or ALTER TABLE … ADD
    /// (`ts timestamptz DEFAULT 'now'`), or a domain's in CREATE DOMAIN: PostgreSQL reads them when it runs the DDL, with the column's
    /// type, and keeps that time as the default of every later row — each backend its own time. Those
    /// of a column whose type is a time type come back like `typedTimeLiterals`' (the transaction's
    /// time, the same everywhere); a column of another type (`status text DEFAULT 'now'`) keeps the
    /// text. `unknown` is true when `ALTER COLUMN … SET DEFAULT` gives one, whose column type the
    /// statement does not say.
    static func timeDefaults(_ s: [SQLToken], first: String) -> (typed: [(range: Range<Int>, type: String)], unknown: Bool) {
        guard first == "create" || first == "alter" else { return ([], false) }
        var typed: [(range: Range<Int>, type: String)] = []
        var unknown = false
        for (i, t) in s.enumerated() where t.kind == .string && s.word(at: i - 1) == "default" {
            guard let literal = timeLiteral(t), let day = timeLiterals[literal] else { continue }
            // Typed forms ('now'::date, CAST) are `typedTimeLiterals`'.
            if s.isPunctuation(":", at: i + 1) && s.isPunctuation(":", at: i + 2) { continue }
            if s.word(at: i - 2) == "set" { unknown = true; continue }
            let typeAt: Int
            if first == "create", s.word(at: 1) == "domain" {
                // CREATE DOMAIN [schema.]name [AS] type … DEFAULT 'now': every column of the domain
                // without a default of its own gets that time.
                var m = 2
                while m + 1 < i, s.isPunctuation(".", at: m + 1) { m += 2 }
                m += 1
                if s.word(at: m) == "as" { m += 1 }
                typeAt = m
            } else {
                // The column definition this DEFAULT belongs to: back to a ',' or '(' at its own depth (in
                // ALTER TABLE, to its ADD).
                var j = i - 2, depth = 0
                while j >= 0 {
                    if s.isPunctuation(")", at: j) { depth += 1 } else if s.isPunctuation("(", at: j) { if depth == 0 { break }; depth -= 1 } else if depth == 0, s.isPunctuation(",", at: j) || (first == "alter" && s.word(at: j) == "add") { break }
                    j -= 1
                }
                if first == "alter" && s.word(at: j) != "add" { continue }
                var k = j + 1
                // ALTER TABLE … ADD [COLUMN] [IF NOT EXISTS] name type …
                while let w = s.word(at: k), ["column", "if", "not", "exists"].contains(w), k < i { k += 1 }
                // k is the column's name; its type follows.
                typeAt = k + 1
            }
            var type: String?
            switch s.word(at: typeAt) {
            case "timestamptz", "date", "timetz": type = s.word(at: typeAt)
            case "timestamp", "time":
                var m = typeAt + 1
                if s.isPunctuation("(", at: m) { m += 3 }
                let zone = s.word(at: m) == "with" && s.word(at: m + 1) == "time" && s.word(at: m + 2) == "zone"
                type = s.word(at: typeAt)! + (zone ? "tz" : "")
            default: break
            }
            guard let type, !s.isPunctuation("[", at: typeAt + 1) else { continue }
            typed.append((t.range, day.map { "day\($0 < 0 ? "- \(-$0)" : "+ \($0)"):\(type)" } ?? "cast:\(type)"))
        }
        return (typed, unknown)
    }

    /// The SQL replacing a time expression of `type` (see `StatementAnalysis.timeExpressions`) by
    /// `value` (a quoted timestamptz literal, a `$n` parameter or an expression giving a timestamptz).
    static func timeReplacement(type: String, value: String, cast: Bool = true) -> String {
        let v = cast ? "\(value)::timestamptz" : value
        if type == "timestamptz" { return v }
        if type == "(literal)" { return "(\(v))" }
        if type.hasPrefix("cast:") { return "((\(v))::\(type.dropFirst(5)))" }
        if type.hasPrefix("day") {
            let parts = type.dropFirst(3).split(separator: ":", maxSplits: 1)
            let day = "((\(v))::date \(parts[0]))"
            return parts.count == 2 ? "(\(day)::\(parts[1]))" : day
        }
        return "(\(v))::\(type)"
    }

    /// Rewrites inside the dollar-quoted body of a function, procedure or DO block: its time and
    /// per-row calls run when the body runs, so they become the `pgchorus` functions (and a typed time
    /// literal becomes `pgchorus.now()`, read when the body runs).
    /// The text inside a dollar-quoted string (a routine's or DO block's body) and where it starts in the statement.
    static func bodyContent(_ token: SQLToken) -> (content: String, offset: Int)? {
        guard token.kind == .string, token.text.first == "$", let tagEnd = token.text.dropFirst().firstIndex(of: "$") else { return nil }
        let tagLength = token.text.utf8.distance(from: token.text.startIndex, to: tagEnd) + 1
        guard token.text.utf8.count >= 2 * tagLength else { return nil }
        return (String(decoding: Array(token.text.utf8)[tagLength..<(token.text.utf8.count - tagLength)], as: UTF8.self), token.range.lowerBound + tagLength)
    }

    static func bodyRewrites(_ token: SQLToken) -> [Rewrite] {
        guard let (content, offset) = bodyContent(token) else { return [] }
        let tokens = SQLLexer.significant(content)
        var out: [Rewrite] = []
        var i = 0
        while i < tokens.count {
            if let r = notifyReplacement(in: tokens, at: i, offset: offset) ?? replacement(in: tokens, at: i, offset: offset) {
                out.append(r)
                while i < tokens.count, tokens[i].range.upperBound + offset <= r.range.upperBound { i += 1 }
                continue
            }
            i += 1
        }
        for l in typedTimeLiterals(tokens) {
            out.append(Rewrite(range: (l.range.lowerBound + offset)..<(l.range.upperBound + offset),
                               text: timeReplacement(type: l.type, value: "pgchorus.now()", cast: false)))
        }
        return out.sorted { $0.range.lowerBound < $1.range.lowerBound }
    }
}
