import Synchronization

/// The node's budget for large client messages (`proxy.message_memory`): a session reserves a
/// message of 1 MiB or more as soon as its length field arrives, before its body is buffered, and
/// gives the reservation back once the message has been passed to every backend. A client whose
/// message does not fit gets SQLSTATE 53200 and its session ends; the node never grows past the
/// budget because a few clients send huge statements at once.
final class MessageMemory: Sendable {
    /// Messages smaller than this are not counted: they are the everyday traffic.
    static let largeMessage = 1 << 20

    let limit: Int
    private let reserved = Atomic<Int>(0)

    init(limit: Int) {
        self.limit = limit
    }

    /// Reserves `bytes`; false when that would pass the limit.
    func reserve(_ bytes: Int) -> Bool {
        var current = reserved.load(ordering: .relaxed)
        while current + bytes <= limit {
            let (exchanged, original) = reserved.compareExchange(expected: current, desired: current + bytes, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }

    func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        reserved.wrappingSubtract(bytes, ordering: .relaxed)
    }

    /// Bytes reserved right now, all sessions together.
    var inUse: Int { reserved.load(ordering: .relaxed) }
}
