/// An `INSERT … SELECT … FROM` whose rows come from a scan without ORDER BY, and what the statement
/// itself tells of how many rows it gives. A per-row value drawn while the rows are inserted — a
/// SERIAL/IDENTITY column's `nextval()`, a per-row `gen_random_uuid()` default, an explicit
/// `nextval()` in the select list — goes to the rows in the order the scan returns them: each
/// backend's physical order (which updates and (auto)vacuum make differ) or its plan's (which its
/// statistics choose). Several rows numbered so get other numbers on each backend; one row cannot.
/// `StatementTracker.refusal(for:)` decides with the catalog (its columns' defaults, unique keys).
public struct UnorderedInsert: Sendable, Equatable {
    /// The relation inserted into, lower-cased, without schema (as `SequenceOrdering`'s catalog names it).
    public var relation: String
    /// The columns named (nil: all), as PostgreSQL folds them.
    public var columns: [String]?
    /// The SELECT gives at most one row whatever the tables hold, or rows in an order of its own:
    /// aggregates without GROUP BY (`SELECT max(n) + 1 FROM t`), or no FROM at its own level (`SELECT $1 WHERE NOT EXISTS (…)`,
    /// whose rows, if a set-returning call gives several, come in the statement's own order).
    public var atMostOneRow = false
    /// The SELECT reads one table and its WHERE compares these of its columns with constants
    /// (`col = $1`, `t.col = 'x'::text`, joined by AND): with a unique key among them it meets at most
    /// one row.
    public var keyed: Keyed?
    /// The select list calls `nextval()` itself.
    public var drawsNextval = false

    public struct Keyed: Sendable, Equatable {
        public var relation: String
        public var columns: Set<String>

        /// Some unique key of the relation has all its columns among `columns`.
        public func meetsOneRow(uniqueKeys: [String: [[String]]]) -> Bool {
            uniqueKeys[relation]?.contains { !$0.isEmpty && $0.allSatisfy(columns.contains) } == true
        }
    }

    /// Whether the catalog's unique keys (column lists, per relation) show the SELECT meets at most one row.
    public func meetsOneRow(uniqueKeys: [String: [[String]]]) -> Bool {
        atMostOneRow || keyed?.meetsOneRow(uniqueKeys: uniqueKeys) == true
    }

    /// Aggregates: one row per group, one row without GROUP BY.
    static let aggregates: Set<String> = [
        "count", "sum", "min", "max", "avg", "array_agg", "string_agg", "bool_and", "bool_or", "every",
        "bit_and", "bit_or", "bit_xor", "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "xmlagg",
        "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "range_agg", "range_intersect_agg",
        "percentile_cont", "percentile_disc", "mode", "corr", "covar_pop", "covar_samp",
    ]
    /// Words that end the clause before them at the SELECT's own level.
    static let clauseEnds: Set<String> = [
        "from", "where", "group", "having", "window", "order", "limit", "offset", "fetch", "for",
        "union", "intersect", "except", "on", "returning",
    ]
    /// Words after a FROM item that are no alias.
    static let notAliases: Set<String> = clauseEnds.union([
        "join", "inner", "left", "right", "full", "cross", "natural", "lateral", "tablesample", "using", "set",
    ])

    /// The INSERT … SELECT of `s` (one statement's significant tokens) when its rows come in a scan's
    /// order, else nil. Only an ORDER BY of the SELECT itself orders them (one in a subquery, a window
    /// or an aggregate does not); a FROM of one set-returning call gives them in its own order
    /// (`StatementAnalysis.rowsComeInOrder`).
    ///
    /// Led by a WITH (`WITH moved AS (DELETE FROM queue … RETURNING *) INSERT INTO archive (job, v)
    /// SELECT id, v FROM moved`), the INSERT after its common table expressions; a SELECT reading one
    /// of them (or one after `INSERT INTO t (…) WITH …`) is never keyed by a table's unique key.
    static func of(_ s: [SQLToken]) -> UnorderedInsert? {
        guard s.word(at: 0) == "with" else { return of(s, ctes: []) }
        guard let w = commonTableExpressions(s, at: 0), s.word(at: w.next) == "insert" else { return nil }
        return of(Array(s[w.next...]), ctes: w.names)
    }

    /// `WITH [RECURSIVE] name [(columns)] AS [[NOT] MATERIALIZED] (…) [, …]` at `start`: the names and
    /// the index after the list; nil for anything else (a recursive query's SEARCH or CYCLE clause too).
    static func commonTableExpressions(_ s: [SQLToken], at start: Int) -> (names: Set<String>, next: Int)? {
        guard s.word(at: start) == "with" else { return nil }
        var i = start + 1
        if s.word(at: i) == "recursive" { i += 1 }
        var names: Set<String> = []
        for _ in 0..<1000 {
            guard i < s.count, s[i].kind == .word || s[i].kind == .quotedIdentifier, let name = StatementAnalysis.folded(s[i]) else { return nil }
            names.insert(name.lowercased())
            i += 1
            if s.isPunctuation("(", at: i) { i = s.closingParenthesis(of: i) + 1 }
            guard s.word(at: i) == "as" else { return nil }
            i += 1
            if s.word(at: i) == "not" { i += 1 }
            if s.word(at: i) == "materialized" { i += 1 }
            guard s.isPunctuation("(", at: i) else { return nil }
            i = s.closingParenthesis(of: i) + 1
            guard s.isPunctuation(",", at: i) else { return (names, i) }
            i += 1
        }
        return nil
    }

    private static func of(_ s: [SQLToken], ctes: Set<String>) -> UnorderedInsert? {
        guard s.contains(where: { $0.kind == .word && $0.text == "from" }), let target = StatementAnalysis.insertColumns(s) else { return nil }
        let orderBy = s.indices.contains { s.word(at: $0) == "order" && s.word(at: $0 + 1) == "by" }
        if !orderBy && StatementAnalysis.rowsComeInOrder(s) { return nil }
        var insert = UnorderedInsert(relation: target.relation, columns: target.columns)
        // The SELECT at the statement's own level (not one in a CTE or a subquery).
        var depth = 0
        var select: Int?
        for i in 2..<s.count {
            let t = s[i]
            if t.kind == .punctuation { if t.text == "(" { depth += 1 } else if t.text == ")" { depth -= 1 } }
            if depth == 0, t.kind == .word, t.text == "select" { select = i; break }
        }
        guard let start = select else { return insert }
        // `INSERT INTO t (…) WITH c AS (…) SELECT …`: the SELECT may read c.
        var ctes = ctes
        if let w = (2..<start).first(where: { s.word(at: $0) == "with" }), let list = commonTableExpressions(s, at: w) { ctes.formUnion(list.names) }
        // Its clauses at its own level.
        var clauses: [(word: String, at: Int)] = []
        depth = 0
        for i in (start + 1)..<s.count {
            let t = s[i]
            if t.kind == .punctuation { if t.text == "(" { depth += 1 } else if t.text == ")" { depth -= 1 } }
            if depth == 0, t.kind == .word, clauses.count < 64, clauseEnds.contains(t.text) { clauses.append((t.text, i)) }
        }
        if clauses.contains(where: { $0.word == "order" && s.word(at: $0.at + 1) == "by" }) { return nil }
        let listEnd = clauses.first?.at ?? s.count
        // `INSERT INTO archive SELECT * FROM t …`: without a column list the SELECT's columns fill the
        // table's from the first; a `*` is taken to fill them all (no default drawn).
        if target.columns == nil, ((start + 1)..<listEnd).contains(where: { j in
            s.isPunctuation("*", at: j) && (s.word(at: j - 1) == "select" || s.isPunctuation(",", at: j - 1) || s.isPunctuation(".", at: j - 1))
                && (j + 1 == listEnd || s.isPunctuation(",", at: j + 1))
        }) { return nil }
        insert.drawsNextval = calls(in: s, start + 1, listEnd).contains("nextval")
        let setOperation = clauses.contains { ["union", "intersect", "except"].contains($0.word) }
        guard !setOperation else { return insert }
        guard let from = clauses.first(where: { $0.word == "from" }) else {
            insert.atMostOneRow = true
            return insert
        }
        let listCalls = calls(in: s, start + 1, from.at, aggregatesOnly: true)
        // (A set-returning call over the aggregate's one row, `generate_series(1, count(*))`, gives its
        // rows in its own order; an aggregate that follows its input's order is refused on its own,
        // `StatementAnalysis.unorderedAggregates`.)
        if !clauses.contains(where: { $0.word == "group" }), listCalls.contains(where: aggregates.contains) {
            insert.atMostOneRow = true
            return insert
        }
        insert.keyed = keyed(s, from: from.at, clauses: clauses).flatMap { ctes.contains($0.relation) ? nil : $0 }
        return insert
    }

    /// Names of the calls between `lower` and `upper`, not those inside subqueries; with
    /// `aggregatesOnly`, not those followed by OVER (window calls aggregate nothing).
    private static func calls(in s: [SQLToken], _ lower: Int, _ upper: Int, aggregatesOnly: Bool = false) -> [String] {
        var out: [String] = []
        var i = lower
        while i < upper {
            if s.isPunctuation("(", at: i), s.word(at: i + 1) == "select" || s.word(at: i + 1) == "with" {
                i = s.closingParenthesis(of: i) + 1
                continue
            }
            if let name = s.word(at: i), s.isPunctuation("(", at: i + 1), !s.isPunctuation(".", at: i - 1) {
                var after = s.closingParenthesis(of: i + 1) + 1
                if s.word(at: after) == "filter", s.isPunctuation("(", at: after + 1) { after = s.closingParenthesis(of: after + 1) + 1 }
                if !(aggregatesOnly && s.word(at: after) == "over") { out.append(name) }
            }
            i += 1
        }
        return out
    }

    /// `FROM [ONLY] [schema.]table [[AS] alias] WHERE a = $1 AND t.b = 'x' …`: the table and the columns
    /// its WHERE pins to constants; nil for anything else (joins, several tables, OR at the top).
    private static func keyed(_ s: [SQLToken], from: Int, clauses: [(word: String, at: Int)]) -> Keyed? {
        guard let t = tableAndAlias(s, at: from + 1), s.word(at: t.next) == "where",
              let w = clauses.firstIndex(where: { $0.at == t.next }) else { return nil }
        // (`a IS DISTINCT FROM b` does not end it.)
        let end = clauses[(w + 1)...].first(where: { $0.word != "from" })?.at ?? s.count
        guard let columns = pinnedColumns(s, t.next + 1, end, of: [t.relation, t.alias ?? t.relation]) else { return nil }
        return Keyed(relation: t.relation, columns: columns)
    }

    /// `UPDATE [ONLY] t [[AS] alias] SET … [FROM …] WHERE …`: the table updated and the columns of it
    /// the WHERE pins to constants (none: an empty set); nil when `s` is no UPDATE with a WHERE.
    static func keyedUpdate(_ s: [SQLToken]) -> Keyed? {
        guard s.word(at: 0) == "update", let t = tableAndAlias(s, at: 1) else { return nil }
        var depth = 0
        var whereAt: Int?
        var end = s.count
        for j in t.next..<s.count {
            if s[j].kind == .punctuation { if s[j].text == "(" { depth += 1 } else if s[j].text == ")" { depth -= 1 } }
            guard depth == 0, let word = s.word(at: j) else { continue }
            if word == "where", whereAt == nil { whereAt = j }
            if word == "returning" { end = j; break }
        }
        guard let w = whereAt, w < end else { return nil }
        return Keyed(relation: t.relation, columns: pinnedColumns(s, w + 1, end, of: [t.relation, t.alias ?? t.relation]) ?? [])
    }

    /// `[ONLY] [schema.]table [*] [[AS] alias]` at `i`: the table (lower-cased, without schema), its
    /// alias, and the index after them.
    private static func tableAndAlias(_ s: [SQLToken], at start: Int) -> (relation: String, alias: String?, next: Int)? {
        var i = start
        if s.word(at: i) == "only" { i += 1 }
        var relation: String?
        while i < s.count, s[i].kind == .word || s[i].kind == .quotedIdentifier {
            relation = s[i].kind == .word ? s[i].text : String(s[i].text.dropFirst().dropLast()).lowercased()
            if s.isPunctuation(".", at: i + 1) { i += 2 } else { i += 1; break }
        }
        guard let relation else { return nil }
        if s.isPunctuation("*", at: i) { i += 1 }
        var alias: String?
        if s.word(at: i) == "as" { i += 1 }
        if i < s.count, s[i].kind == .quotedIdentifier || (s[i].kind == .word && !notAliases.contains(s[i].text)) {
            alias = StatementAnalysis.folded(s[i])
            i += 1
        }
        return (relation, alias, i)
    }

    /// The columns (of the table called one of `names`) that the conjuncts of the WHERE between
    /// `lower` and `upper` compare with constants; nil when an OR joins them at the top.
    private static func pinnedColumns(_ s: [SQLToken], _ lower: Int, _ upper: Int, of names: Set<String>) -> Set<String>? {
        var conjuncts: [Range<Int>] = []
        var depth = 0
        var begin = lower
        for j in lower..<max(lower, upper) {
            if s[j].kind == .punctuation { if s[j].text == "(" { depth += 1 } else if s[j].text == ")" { depth -= 1 } }
            guard depth == 0, let word = s.word(at: j) else { continue }
            if word == "or" { return nil }
            if word == "and" {
                conjuncts.append(begin..<j)
                begin = j + 1
            }
        }
        conjuncts.append(begin..<max(begin, upper))
        var columns: Set<String> = []
        for c in conjuncts {
            guard let eq = c.first(where: { s.isPunctuation("=", at: $0) }) else { continue }
            if let column = column(s, c.lowerBound..<eq, of: names), isConstant(s, (eq + 1)..<c.upperBound) {
                columns.insert(column)
            } else if let column = column(s, (eq + 1)..<c.upperBound, of: names), isConstant(s, c.lowerBound..<eq) {
                columns.insert(column)
            }
        }
        return columns
    }

    /// The column `r` names exactly (`col`, `t.col`, `"Col"`), of the table called one of `names`.
    private static func column(_ s: [SQLToken], _ r: Range<Int>, of names: Set<String>) -> String? {
        switch r.count {
        case 1:
            return s[r.lowerBound].kind == .word || s[r.lowerBound].kind == .quotedIdentifier ? StatementAnalysis.folded(s[r.lowerBound]) : nil
        case 3:
            guard s.isPunctuation(".", at: r.lowerBound + 1), let table = StatementAnalysis.folded(s[r.lowerBound]),
                  names.contains(table) || names.contains(table.lowercased()), s[r.lowerBound + 2].kind != .punctuation else { return nil }
            return StatementAnalysis.folded(s[r.lowerBound + 2])
        default:
            return nil
        }
    }

    /// Whether `r` is a constant: a literal or parameter, maybe negative, maybe cast (`$1::int`,
    /// `'x'::varchar(20)`, `CAST($1 AS bigint)`).
    private static func isConstant(_ s: [SQLToken], _ r: Range<Int>) -> Bool {
        var i = r.lowerBound
        func literal(_ j: Int) -> Bool {
            guard j < r.upperBound else { return false }
            let t = s[j]
            return t.kind == .string || t.kind == .number || (t.kind == .other && t.text.hasPrefix("$") && t.text.count > 1)
        }
        /// Type name tokens: words, numbers, parentheses, brackets, commas, dots.
        func typeTokens(_ range: Range<Int>) -> Bool {
            !range.isEmpty && range.allSatisfy { j in
                s[j].kind == .word || s[j].kind == .quotedIdentifier || s[j].kind == .number
                    || (s[j].kind == .punctuation && ["(", ")", "[", "]", ",", "."].contains(s[j].text))
            }
        }
        if s.word(at: i) == "cast", s.isPunctuation("(", at: i + 1) {
            let close = s.closingParenthesis(of: i + 1)
            guard close == r.upperBound - 1, literal(i + 2) || (s.isPunctuation("-", at: i + 2) && literal(i + 3)) else { return false }
            let value = s.isPunctuation("-", at: i + 2) ? i + 3 : i + 2
            return s.word(at: value + 1) == "as" && typeTokens((value + 2)..<close)
        }
        if s.isPunctuation("-", at: i) { i += 1 }
        guard literal(i) else { return false }
        i += 1
        while i < r.upperBound {
            guard s.isPunctuation(":", at: i), s.isPunctuation(":", at: i + 1) else { return false }
            var j = i + 2
            while j < r.upperBound, !s.isPunctuation(":", at: j) { j += 1 }
            guard typeTokens((i + 2)..<j) else { return false }
            i = j
        }
        return true
    }
}
