/// A small PostgreSQL lexer: enough to find keywords and function names outside string literals,
/// quoted identifiers, dollar quotes and comments. It never fails; unknown bytes become `.other`.
public struct SQLToken: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case word          // identifier or keyword (unquoted), lower-cased in `text`
        case quotedIdentifier
        case string        // '…', E'…', $tag$…$tag$, B'…', X'…'
        case number
        case punctuation   // ( ) , ; . :: etc., one character each
        case comment
        case whitespace
        case other
    }

    public var kind: Kind
    /// The token's text; lower-cased for words.
    public var text: String
    /// The token's range in the original string's UTF-8 bytes.
    public var range: Range<Int>
}

public enum SQLLexer {
    public static func tokens(_ sql: String) -> [SQLToken] {
        tokens(sql, trivia: true)
    }

    /// A byte that may start an unquoted name (a letter, `_`, any non-ASCII byte).
    static func isIdentStart(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c == 95 || c >= 128 }

    /// A byte that may go on an unquoted name (also a digit or `$`).
    static func isIdentChar(_ c: UInt8) -> Bool { isIdentStart(c) || (c >= 48 && c <= 57) || c == 36 }

    /// Every token; without whitespace and comments unless `trivia`. Runs on every statement a
    /// client sends, so it works on bytes and builds no string it does not keep.
    static func tokens(_ sql: String, trivia: Bool) -> [SQLToken] {
        let b = Array(sql.utf8)
        var out: [SQLToken] = []
        out.reserveCapacity(b.count / 3)
        var i = 0
        func isSpace(_ c: UInt8) -> Bool { c == 32 || c == 9 || c == 10 || c == 13 || c == 12 }
        func text(_ r: Range<Int>) -> String { b.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[r]), as: UTF8.self) } }
        /// A word lower-cased: ASCII directly, anything else through Unicode case mapping.
        func lowered(_ r: Range<Int>) -> String {
            b.withUnsafeBufferPointer { p in
                let bytes = UnsafeBufferPointer(rebasing: p[r])
                if bytes.allSatisfy({ $0 < 128 }) {
                    return String(unsafeUninitializedCapacity: bytes.count) { out in
                        for (k, c) in bytes.enumerated() { out[k] = (c >= 65 && c <= 90) ? c | 0x20 : c }
                        return bytes.count
                    }
                }
                return String(decoding: bytes, as: UTF8.self).lowercased()
            }
        }
        while i < b.count {
            let start = i
            let c = b[i]
            if isSpace(c) {
                while i < b.count, isSpace(b[i]) { i += 1 }
                if trivia { out.append(SQLToken(kind: .whitespace, text: " ", range: start..<i)) }
            } else if c == 45, i + 1 < b.count, b[i + 1] == 45 { // -- comment
                while i < b.count, b[i] != 10 { i += 1 }
                if trivia { out.append(SQLToken(kind: .comment, text: "", range: start..<i)) }
            } else if c == 47, i + 1 < b.count, b[i + 1] == 42 { // /* nested */ comment
                var depth = 0
                while i < b.count {
                    if b[i] == 47, i + 1 < b.count, b[i + 1] == 42 { depth += 1; i += 2; continue }
                    if b[i] == 42, i + 1 < b.count, b[i + 1] == 47 { depth -= 1; i += 2; if depth == 0 { break }; continue }
                    i += 1
                }
                if trivia { out.append(SQLToken(kind: .comment, text: "", range: start..<i)) }
            } else if c == 39 || ((c == 69 || c == 101 || c == 66 || c == 98 || c == 88 || c == 120 || c == 85 || c == 117) && i + 1 < b.count && b[i + 1] == 39) {
                // '…' with '' escapes; E'…' also with backslash escapes.
                let escapes = c == 69 || c == 101
                i += c == 39 ? 1 : 2
                while i < b.count {
                    if escapes && b[i] == 92 { i += 2; continue }
                    if b[i] == 39 {
                        if i + 1 < b.count, b[i + 1] == 39 { i += 2; continue }
                        i += 1
                        break
                    }
                    i += 1
                }
                i = min(i, b.count)
                out.append(SQLToken(kind: .string, text: text(start..<i), range: start..<i))
            } else if c == 34 { // "identifier"
                i += 1
                while i < b.count {
                    if b[i] == 34 {
                        if i + 1 < b.count, b[i + 1] == 34 { i += 2; continue }
                        i += 1
                        break
                    }
                    i += 1
                }
                out.append(SQLToken(kind: .quotedIdentifier, text: text(start..<i), range: start..<i))
            } else if c == 36, i + 1 < b.count, b[i + 1] == 36 || Self.isIdentStart(b[i + 1]) {
                // $tag$ … $tag$ (a $1 parameter does not start with a letter, so it is not this)
                var j = i + 1
                while j < b.count, b[j] != 36, Self.isIdentChar(b[j]) { j += 1 }
                if j < b.count, b[j] == 36 {
                    let tag = Array(b[i...j])
                    var k = j + 1
                    var end = b.count
                    while k + tag.count <= b.count {
                        if b[k] == 36, b[k..<(k + tag.count)].elementsEqual(tag) { end = k + tag.count; break }
                        k += 1
                    }
                    i = end
                    out.append(SQLToken(kind: .string, text: text(start..<i), range: start..<i))
                } else {
                    i += 1
                    out.append(SQLToken(kind: .other, text: "$", range: start..<i))
                }
            } else if Self.isIdentStart(c) {
                while i < b.count, Self.isIdentChar(b[i]) { i += 1 }
                out.append(SQLToken(kind: .word, text: lowered(start..<i), range: start..<i))
            } else if c >= 48 && c <= 57 {
                while i < b.count, (b[i] >= 48 && b[i] <= 57) || b[i] == 46 || b[i] == 101 || b[i] == 69 { i += 1 }
                out.append(SQLToken(kind: .number, text: text(start..<i), range: start..<i))
            } else if c == 36 { // $1
                i += 1
                while i < b.count, b[i] >= 48 && b[i] <= 57 { i += 1 }
                out.append(SQLToken(kind: .other, text: text(start..<i), range: start..<i))
            } else {
                i += 1
                out.append(SQLToken(kind: .punctuation, text: text(start..<i), range: start..<i))
            }
        }
        return out
    }

    /// The significant tokens (no whitespace or comments).
    public static func significant(_ sql: String) -> [SQLToken] {
        tokens(sql, trivia: false)
    }
}

extension Array where Element == SQLToken {
    /// The word (lower-cased) at `j`, or nil: out of range, or not an unquoted word.
    func word(at j: Int) -> String? { j >= 0 && j < count && self[j].kind == .word ? self[j].text : nil }

    /// Whether the token at `j` is the punctuation `p`.
    func isPunctuation(_ p: String, at j: Int) -> Bool { j >= 0 && j < count && self[j].kind == .punctuation && self[j].text == p }

    /// The index of the parenthesis that closes the one at `open` (the last index when none does).
    func closingParenthesis(of open: Int) -> Int {
        var depth = 0
        for i in open..<count where self[i].kind == .punctuation {
            if self[i].text == "(" { depth += 1 } else if self[i].text == ")" { depth -= 1; if depth == 0 { return i } }
        }
        return count - 1
    }
}
