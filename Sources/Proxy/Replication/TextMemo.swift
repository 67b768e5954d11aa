/// What was worked out for recent statement texts, so a text a client sends again (a driver's
/// parameterized statement parsed for every execution, `BEGIN`, `COMMIT`) is not analysed again
/// (**pure**). Only for results that depend on the text alone. Bounded per session: at most
/// `capacity` texts of at most `maximumTextBytes` each; when full it starts afresh.
struct TextMemo<Value> {
    private var values: [MemoKey: Value] = [:]
    let capacity: Int
    let maximumTextBytes: Int

    /// The longest text kept by default.
    static var defaultMaximumTextBytes: Int { 2048 }

    init(capacity: Int = 32, maximumTextBytes: Int = TextMemo.defaultMaximumTextBytes) {
        self.capacity = capacity
        self.maximumTextBytes = maximumTextBytes
    }

    var count: Int { values.count }

    /// A text too long to keep is not looked up either: hashing a statement of many megabytes
    /// (psycopg2 sends 50 MB queries) would cost more than it could save.
    subscript(text: String) -> Value? {
        key(text).flatMap { values[$0] }
    }

    /// `text` as this memo's key; nil for a text too long to keep (its digest not worked out).
    func key(_ text: String) -> MemoKey? {
        text.utf8.count <= maximumTextBytes ? MemoKey(text) : nil
    }

    /// The value kept for `key`'s text (its digest worked out once for all the memos it is looked up in).
    subscript(key: MemoKey) -> Value? {
        guard key.text.utf8.count <= maximumTextBytes else { return nil }
        return values[key]
    }

    /// Keeps `value` for `text` (a text too long to keep is not kept).
    mutating func keep(_ value: Value, for text: String) {
        if let key = key(text) { keep(value, for: key) }
    }

    mutating func keep(_ value: Value, for key: MemoKey) {
        guard key.text.utf8.count <= maximumTextBytes else { return }
        if values.count >= capacity, values[key] == nil { values.removeAll(keepingCapacity: true) }
        values[key] = value
    }

    /// `text`'s value, worked out by `make` if not kept.
    mutating func value(for text: String, _ make: () -> Value) -> Value {
        guard let key = key(text) else { return make() }
        if let v = values[key] { return v }
        let v = make()
        keep(v, for: key)
        return v
    }
}

/// A text as a memo's key (**pure**): a digest of its bytes worked out once, so that a dictionary
/// hashes those 8 bytes rather than the whole text, in each memo the text is looked up in (a simple
/// Query is looked up by its shape twice: `SessionReplay`'s memo and the tracker's — the two String
/// hashes were 4 % of pgchorusd's instructions in TPC-B, BENCHMARKS.md). Keys are equal when their
/// texts are (the digests compared first); texts whose digests collide are told apart by the
/// comparison, and a memo holds at most a few dozen texts of one session, so a client that made
/// them collide on purpose slows only its own look-ups, and only that much.
struct MemoKey: Hashable {
    let text: String
    let digest: UInt64

    init(_ text: String) {
        var t = text
        self.digest = t.withUTF8 { Self.digest(of: UnsafeRawBufferPointer($0)) }
        self.text = t
    }

    /// A key with the digest given (tests: texts whose digests collide).
    init(text: String, digest: UInt64) {
        self.text = text
        self.digest = digest
    }

    static func == (a: MemoKey, b: MemoKey) -> Bool {
        a.digest == b.digest && a.text == b.text
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(digest)
    }

    /// Eight bytes at a time, each word mixed in by a multiply and a shift, the length last (mixed in
    /// with the first word's bits it collided: "b" and "a\0" — `keysTellTextsApartByDigestAndText`);
    /// the dictionary's own seeded hasher then hashes the result.
    static func digest(of bytes: UnsafeRawBufferPointer) -> UInt64 {
        let k: UInt64 = 0x9E37_79B9_7F4A_7C15
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        var i = 0
        while i + 8 <= bytes.count {
            h = (h ^ bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* k
            h ^= h >> 29
            i += 8
        }
        if i < bytes.count {
            var tail: UInt64 = 0
            var shift: UInt64 = 0
            while i < bytes.count {
                tail |= UInt64(bytes[i]) << shift
                shift += 8
                i += 1
            }
            h = (h ^ tail) &* k
            h ^= h >> 29
        }
        h = (h ^ UInt64(bytes.count)) &* k
        return h ^ (h >> 32)
    }
}
