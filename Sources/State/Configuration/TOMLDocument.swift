import TOMLKit

/// A parsed TOML file as plain Sendable values, with the source line of every key
/// (TOMLKit does not expose value positions, so lines are found by scanning the text).
struct TOMLDocument: Sendable {
    indirect enum Value: Sendable {
        case string(String)
        case int(Int)
        case double(Double)
        case bool(Bool)
        case table([String: Value])
        case array([Value])
        case other(String)

        var typeName: String {
            switch self {
            case .string: "a string"
            case .int: "an integer"
            case .double: "a float"
            case .bool: "a boolean"
            case .table: "a table"
            case .array: "an array"
            case let .other(t): "a \(t)"
            }
        }
    }

    let file: String
    let root: [String: Value]
    /// Line of each key path ("proxy.listen_port", "backends[2].port"; array indices 1-based).
    let lines: [String: Int]

    init(text: String, file: String) throws(ConfigurationError) {
        self.file = file
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigurationError(file: file, line: error.source.begin.line, key: nil, message: "TOML syntax error: \(error.description)")
        } catch {
            throw ConfigurationError(file: file, line: nil, key: nil, message: "TOML syntax error: \(error)")
        }
        self.root = Self.convert(table)
        self.lines = Self.scanLines(text)
    }

    func line(of path: String) -> Int? {
        if let l = lines[path] { return l }
        // Fall back to the closest enclosing table or key that was located.
        var p = path
        while let dot = p.lastIndex(where: { $0 == "." || $0 == "[" }) {
            p = String(p[..<dot])
            if let l = lines[p] { return l }
        }
        return nil
    }

    private static func convert(_ table: TOMLTable) -> [String: Value] {
        var out: [String: Value] = [:]
        for key in table.keys {
            if let v = table[key] { out[key] = convert(v) }
        }
        return out
    }

    private static func convert(_ v: TOMLValueConvertible) -> Value {
        switch v.type {
        case .string: return .string(v.string ?? "")
        case .int: return .int(v.int ?? 0)
        case .double: return .double(v.double ?? 0)
        case .bool: return .bool(v.bool ?? false)
        case .table: return .table(v.table.map(convert) ?? [:])
        case .array: return .array(v.array.map { $0.map(convert) } ?? [])
        default: return .other(v.type.rawValue)
        }
    }

    /// Finds the line of each `[table]`, `[[array]]` and `key =`; enough for error messages.
    private static func scanLines(_ text: String) -> [String: Int] {
        var result: [String: Int] = [:]
        var arrayCounts: [String: Int] = [:]
        var prefix = ""
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(inSet: " \t\r")
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[[") , let end = line.range(of: "]]") {
                let name = unquote(String(line[line.index(line.startIndex, offsetBy: 2)..<end.lowerBound]))
                let count = (arrayCounts[name] ?? 0) + 1
                arrayCounts[name] = count
                prefix = "\(name)[\(count)]"
                result[prefix] = n + 1
                if count == 1 { result[name] = n + 1 }
            } else if line.hasPrefix("["), let end = line.firstIndex(of: "]") {
                let name = unquote(String(line[line.index(after: line.startIndex)..<end]))
                // A sub-table of the latest array element: `[backends.tls]` after `[[backends]]`.
                var resolved = name
                for (arrayName, count) in arrayCounts where name.hasPrefix(arrayName + ".") {
                    resolved = "\(arrayName)[\(count)]" + name.dropFirst(arrayName.count)
                }
                prefix = resolved
                result[prefix] = n + 1
            } else if let eq = line.firstIndex(of: "=") {
                let key = unquote(String(line[..<eq]).trimmingCharacters(inSet: " \t"))
                let path = prefix.isEmpty ? key : "\(prefix).\(key)"
                if result[path] == nil { result[path] = n + 1 }
            }
        }
        return result
    }

    private static func unquote(_ s: String) -> String {
        s.split(separator: ".").map { part in
            var p = part.trimmingCharacters(inSet: " \t")
            if p.count >= 2, (p.hasPrefix("\"") && p.hasSuffix("\"")) || (p.hasPrefix("'") && p.hasSuffix("'")) {
                p = String(p.dropFirst().dropLast())
            }
            return p
        }.joined(separator: ".")
    }
}

extension StringProtocol {
    func trimmingCharacters(inSet set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
