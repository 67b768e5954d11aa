@testable import Proxy
import Testing

/// SplitMix64: a seedable generator, so the random inputs are the same on every run.
struct LexerTestRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct SQLLexerTests {
    typealias Kind = SQLToken.Kind

    /// The significant tokens as (kind, text) pairs.
    func significant(_ sql: String) -> [(Kind, String)] {
        SQLLexer.significant(sql).map { ($0.kind, $0.text) }
    }

    func words(_ sql: String) -> [String] {
        SQLLexer.significant(sql).filter { $0.kind == .word }.map(\.text)
    }

    func strings(_ sql: String) -> [String] {
        SQLLexer.significant(sql).filter { $0.kind == .string }.map(\.text)
    }

    /// Token ranges start at 0, follow each other without gap or overlap, are never empty, end
    /// at the last byte, and each token's text is what its range holds (lower-cased for words).
    func expectTiles(_ sql: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let bytes = Array(sql.utf8)
        let tokens = SQLLexer.tokens(sql)
        var next = 0
        var joined: [UInt8] = []
        for t in tokens {
            #expect(t.range.lowerBound == next, "gap or overlap at \(next) in \(sql.debugDescription)", sourceLocation: sourceLocation)
            #expect(!t.range.isEmpty, "empty token at \(next) in \(sql.debugDescription)", sourceLocation: sourceLocation)
            guard t.range.lowerBound >= 0, t.range.upperBound <= bytes.count, t.range.lowerBound <= t.range.upperBound else {
                Issue.record("range \(t.range) outside 0..<\(bytes.count) in \(sql.debugDescription)", sourceLocation: sourceLocation)
                return
            }
            let slice = String(decoding: bytes[t.range], as: UTF8.self)
            switch t.kind {
            case .word:
                #expect(t.text == slice.lowercased(), sourceLocation: sourceLocation)
            case .string, .quotedIdentifier, .number, .punctuation:
                #expect(t.text == slice, sourceLocation: sourceLocation)
            case .other:
                #expect(slice.hasPrefix(t.text), sourceLocation: sourceLocation)
            case .whitespace, .comment:
                break
            }
            joined += bytes[t.range]
            next = t.range.upperBound
        }
        #expect(next == bytes.count, "tokens end at \(next) of \(bytes.count) in \(sql.debugDescription)", sourceLocation: sourceLocation)
        #expect(joined == bytes, sourceLocation: sourceLocation)
    }

    @Test func standardStringWithDoubledQuote() {
        let sql = "select 'it''s now()', 'x' from t"
        #expect(strings(sql) == ["'it''s now()'", "'x'"])
        #expect(words(sql) == ["select", "from", "t"])
        expectTiles(sql)
    }

    @Test func backslashIsNotAnEscapeInAStandardString() {
        // standard_conforming_strings: 'a\' is a whole string, so now() after it is code.
        let sql = #"select 'a\', now()"#
        #expect(strings(sql) == [#"'a\'"#])
        #expect(words(sql) == ["select", "now"])
        expectTiles(sql)
    }

    @Test func escapeStringWithBackslashQuote() {
        let sql = #"select E'\'now()\\', e'it''s', now()"#
        #expect(strings(sql) == [#"E'\'now()\\'"#, "e'it''s'"])
        #expect(words(sql) == ["select", "now"])
        expectTiles(sql)
        // E'\'' alone.
        #expect(significant(#"E'\''"#).map(\.0) == [.string])
        expectTiles(#"E'\''"#)
    }

    @Test func bitAndHexStrings() {
        #expect(strings("select B'101', X'ff'") == ["B'101'", "X'ff'"])
    }

    @Test func dollarQuotes() {
        let plain = "select $$ now() 'x' \"y\" $$, 1"
        #expect(strings(plain) == ["$$ now() 'x' \"y\" $$"])
        #expect(words(plain) == ["select"])
        expectTiles(plain)

        let tagged = "do $body$ begin perform now(); raise notice $$x$$; end $body$; select 2"
        #expect(strings(tagged) == ["$body$ begin perform now(); raise notice $$x$$; end $body$"])
        #expect(words(tagged) == ["do", "select"])
        expectTiles(tagged)

        // A different tag inside does not close the quote.
        let nested = "$a$ $b$ now() $b$ $a$"
        #expect(significant(nested).map(\.0) == [.string])
        expectTiles(nested)
    }

    @Test func unterminatedQuotesRunToTheEnd() {
        for sql in ["select 'abc", "select E'abc\\", "select \"abc", "select $$abc", "select $t$abc $t", "select /* abc /* x */"] {
            let tokens = SQLLexer.tokens(sql)
            #expect(tokens.last?.range.upperBound == sql.utf8.count, "\(sql)")
            #expect(!words(sql).contains("abc"), "\(sql)")
            expectTiles(sql)
        }
    }

    @Test func quotedIdentifiers() {
        let sql = #"select "now()", "a""b", "Now" from t"#
        let tokens = significant(sql)
        #expect(tokens.filter { $0.0 == .quotedIdentifier }.map(\.1) == [#""now()""#, #""a""b""#, #""Now""#])
        #expect(words(sql) == ["select", "from", "t"])
        expectTiles(sql)
    }

    @Test func comments() {
        let line = "select 1 -- now() random()\n, 2"
        #expect(words(line) == ["select"])
        #expect(SQLLexer.tokens(line).filter { $0.kind == .comment }.count == 1)
        expectTiles(line)

        let nested = "select /* outer /* inner now() */ still comment random() */ now()"
        #expect(words(nested) == ["select", "now"])
        let comments = SQLLexer.tokens(nested).filter { $0.kind == .comment }
        #expect(comments.count == 1)
        let bytes = Array(nested.utf8)
        #expect(String(decoding: bytes[comments[0].range], as: UTF8.self) == "/* outer /* inner now() */ still comment random() */")
        expectTiles(nested)

        // A comment at the very end without a newline.
        expectTiles("select 1 --")
        expectTiles("select 1 /*")
    }

    @Test func numbers() {
        let sql = "select 1, 42, 3.14, 1e10, .5"
        let numbers = significant(sql).filter { $0.0 == .number }.map(\.1)
        #expect(numbers == ["1", "42", "3.14", "1e10", "5"])
        expectTiles(sql)
    }

    @Test func parameters() {
        let sql = "select $1, $12 from t where a = $3"
        let params = significant(sql).filter { $0.0 == .other }.map(\.1)
        #expect(params == ["$1", "$12", "$3"])
        #expect(strings(sql).isEmpty)
        expectTiles(sql)
    }

    @Test func wordsAreLowerCasedAndKeepDollars() {
        #expect(words("SELECT Now() FROM T$x") == ["select", "now", "from", "t$x"])
        #expect(significant("a::int").map(\.1) == ["a", ":", ":", "int"])
    }

    @Test func fixedEdgeCasesTile() {
        let cases = [
            "", " ", "'", "''", "E'", "E'\\", "e'\\'", "\"", "\"\"", "$", "$$", "$a", "$a$", "$1", "$1$", "-", "--", "/", "/*",
            "/*/", "*/", "/* /* */", "1.", "1e", "x'", "b'", "é", "😀'now()'", "\u{0}", "select\u{0}now()",
            "$é$ now() $é$", "U&'x'", "\r\n\t\u{0C}",
        ]
        for sql in cases { expectTiles(sql) }
    }

    /// A random string over an alphabet heavy in the characters the lexer treats specially,
    /// plus arbitrary ASCII and non-ASCII scalars.
    fileprivate static func randomSQL(using rng: inout LexerTestRandom) -> String {
        let special: [Character] = ["'", "\"", "$", "-", "/", "*", "\\", "E", "e", "B", "x", "a", "t", "1", "9", ".", " ", "\n", ";", "(", ")", ":"]
        let unicode: [Character] = ["é", "€", "😀", "中", "\u{301}", "ß", "\u{FEFF}"]
        let length = Int.random(in: 0...40, using: &rng)
        var s = ""
        for _ in 0..<length {
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<6:
                s.append(special.randomElement(using: &rng)!)
            case 6..<8:
                s.unicodeScalars.append(Unicode.Scalar(UInt8.random(in: 0...127, using: &rng)))
            case 8:
                s.append(unicode.randomElement(using: &rng)!)
            default:
                // Any valid scalar outside the surrogate range.
                var v = UInt32.random(in: 0x80...0x10FFFF, using: &rng)
                if (0xD800...0xDFFF).contains(v) { v = 0xE000 }
                s.unicodeScalars.append(Unicode.Scalar(v)!)
            }
        }
        return s
    }

    @Test func randomInputNeverCrashesAndTokensTile() {
        var rng = LexerTestRandom(seed: 0x5351_4C4C_4558_4552) // "SQLLEXER"
        for _ in 0..<5000 {
            let sql = Self.randomSQL(using: &rng)
            expectTiles(sql)
            // The analysis on top of the lexer must be total too.
            let analysis = StatementAnalysis(sql)
            _ = analysis.rewritingTime(in: sql, timestamp: "2026-11-27 02:53:26+00")
            _ = analysis.rewritingTime(in: sql, parameter: 3)
            _ = StatementAnalysis.highestParameter(in: sql)
        }
    }
}
