/// Reads one TOML table key by key with the expected type, and reports keys nobody asked for,
/// so a typo such as `listen_prot` is an error naming its line instead of a silent default.
struct TableReader {
    let document: TOMLDocument
    let path: String
    let table: [String: TOMLDocument.Value]
    private(set) var consumed: Set<String> = []

    init(document: TOMLDocument, path: String, table: [String: TOMLDocument.Value]) {
        self.document = document; self.path = path; self.table = table
    }

    func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func error(_ key: String, _ message: String) -> ConfigurationError {
        let p = keyPath(key)
        return ConfigurationError(file: document.file, line: document.line(of: p), key: p, message: message)
    }

    private mutating func value(_ key: String) -> TOMLDocument.Value? {
        consumed.insert(key)
        return table[key]
    }

    private func wrongType(_ key: String, _ v: TOMLDocument.Value, expected: String) -> ConfigurationError {
        error(key, "expected \(expected), found \(v.typeName)")
    }

    mutating func string(_ key: String) throws(ConfigurationError) -> String? {
        guard let v = value(key) else { return nil }
        guard case let .string(s) = v else { throw wrongType(key, v, expected: "a string") }
        return s
    }

    mutating func string(_ key: String, default d: String) throws(ConfigurationError) -> String {
        try string(key) ?? d
    }

    mutating func int(_ key: String, default d: Int, range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        guard let v = value(key) else { return d }
        guard case let .int(i) = v else { throw wrongType(key, v, expected: "an integer") }
        guard range.contains(i) else { throw error(key, "\(i) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return i
    }

    mutating func requiredInt(_ key: String, range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        guard table[key] != nil else { throw error(key, "missing required key") }
        return try int(key, default: 0, range: range)
    }

    mutating func requiredString(_ key: String) throws(ConfigurationError) -> String {
        guard let s = try string(key) else { throw error(key, "missing required key") }
        guard !s.isEmpty else { throw error(key, "must not be empty") }
        return s
    }

    /// Seconds as an integer or a float.
    mutating func duration(_ key: String, default d: Double, range: ClosedRange<Double>) throws(ConfigurationError) -> Double {
        guard let v = value(key) else { return d }
        let x: Double
        switch v {
        case let .int(i): x = Double(i)
        case let .double(f): x = f
        default: throw wrongType(key, v, expected: "a number of seconds")
        }
        guard range.contains(x) else { throw error(key, "\(x) is out of range \(range.lowerBound)...\(range.upperBound) seconds") }
        return x
    }

    mutating func bool(_ key: String, default d: Bool) throws(ConfigurationError) -> Bool {
        guard let v = value(key) else { return d }
        guard case let .bool(b) = v else { throw wrongType(key, v, expected: "true or false") }
        return b
    }

    mutating func oneOf(_ key: String, _ choices: [String], default d: String) throws(ConfigurationError) -> String {
        let s = try string(key, default: d)
        guard choices.contains(s) else {
            throw error(key, "\"\(s)\" is not one of " + choices.map { "\"\($0)\"" }.joined(separator: ", "))
        }
        return s
    }

    mutating func subtable(_ key: String) throws(ConfigurationError) -> TableReader {
        guard let v = value(key) else { return TableReader(document: document, path: keyPath(key), table: [:]) }
        guard case let .table(t) = v else { throw wrongType(key, v, expected: "a table ([\(keyPath(key))])") }
        return TableReader(document: document, path: keyPath(key), table: t)
    }

    /// An array of tables (`[[key]]`); element paths are 1-based: `backends[1]`.
    mutating func tables(_ key: String) throws(ConfigurationError) -> [TableReader] {
        guard let v = value(key) else { return [] }
        guard case let .array(items) = v else { throw wrongType(key, v, expected: "an array of tables ([[\(keyPath(key))]])") }
        var out: [TableReader] = []
        for (i, item) in items.enumerated() {
            guard case let .table(t) = item else { throw wrongType(key, item, expected: "a table ([[\(keyPath(key))]])") }
            out.append(TableReader(document: document, path: "\(keyPath(key))[\(i + 1)]", table: t))
        }
        return out
    }

    /// Fails on the first key that no reader consumed (sorted, so the error is stable).
    func rejectUnknownKeys() throws(ConfigurationError) {
        for key in table.keys.sorted() where !consumed.contains(key) {
            throw error(key, "unknown key (see docs/configuration.md for the valid keys)")
        }
    }
}
