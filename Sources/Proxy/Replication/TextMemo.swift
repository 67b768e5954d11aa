/// What was worked out for recent statement texts, so a text a client sends again (a driver's
/// parameterized statement parsed for every execution, `BEGIN`, `COMMIT`) is not analysed again
/// (**pure**). Only for results that depend on the text alone. Bounded per session: at most
/// `capacity` texts of at most `maximumTextBytes` each; when full it starts afresh.
struct TextMemo<Value> {
    private var values: [String: Value] = [:]
    let capacity: Int
    let maximumTextBytes: Int

    init(capacity: Int = 32, maximumTextBytes: Int = 2048) {
        self.capacity = capacity
        self.maximumTextBytes = maximumTextBytes
    }

    var count: Int { values.count }

    /// A text too long to keep is not looked up either: hashing a statement of many megabytes
    /// (psycopg2 sends 50 MB queries) would cost more than it could save.
    subscript(text: String) -> Value? {
        guard text.utf8.count <= maximumTextBytes else { return nil }
        return values[text]
    }

    /// Keeps `value` for `text` (a text too long to keep is not kept).
    mutating func keep(_ value: Value, for text: String) {
        guard text.utf8.count <= maximumTextBytes else { return }
        if values.count >= capacity, values[text] == nil { values.removeAll(keepingCapacity: true) }
        values[text] = value
    }

    /// `text`'s value, worked out by `make` if not kept.
    mutating func value(for text: String, _ make: () -> Value) -> Value {
        if let v = self[text] { return v }
        let v = make()
        keep(v, for: text)
        return v
    }
}
