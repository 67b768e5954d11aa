import Wire

/// The parts of a simple Query cut at its COMMITs (**pure**): `BEGIN; …; COMMIT; BEGIN; …; COMMIT`
/// from a migration tool or a psql script runs as its parts, one after the other, each a Query of its
/// own (`StatementAnalysis.transactionSegments`), so each `BEGIN; …; COMMIT` goes through the vote.
/// The client sees one answer, as from PostgreSQL: the parts' ReadyForQuery messages are kept back but
/// for the last, and after an error the remaining parts are skipped (PostgreSQL skips the rest of a
/// message after an error). The first part waits for the ReadyForQuery messages of the client's
/// pipelined cycles before the Query, so it is judged in the transaction state they leave.
struct QuerySegments {
    /// Parts not sent yet.
    private(set) var left: [PostgresFrame] = []
    /// A part that is not the last runs: its ReadyForQuery is not the client's.
    private(set) var running = false
    /// The running part answered an error: the rest of the Query is skipped.
    private(set) var failed = false
    /// The previous part has answered (or the Query waits for earlier cycles): the next part waits to
    /// be admitted.
    private(set) var ready = false
    /// ReadyForQuery messages of cycles before the Query still to reach the client.
    private(set) var earlierReadies = 0

    /// A cut Query is in progress: client messages that come meanwhile wait, and the client's
    /// messages pass through `clientMessage`.
    var inProgress: Bool { running || ready }

    /// The next part may be admitted now.
    var mayAdmit: Bool { ready && earlierReadies == 0 }

    /// A Query was cut into `parts`, with `readiesOwed` ReadyForQuery messages owed to the client
    /// (this Query's own included). True when its first part may go at once.
    mutating func start(_ parts: [PostgresFrame], readiesOwed: Int) -> Bool {
        left = parts
        earlierReadies = max(0, readiesOwed - 1)
        if earlierReadies > 0 {
            ready = true
            return false
        }
        return true
    }

    /// Takes the next part to send as a client Query of its own.
    mutating func nextPart() -> PostgresFrame? {
        guard !left.isEmpty else { return nil }
        let part = left.removeFirst()
        running = !left.isEmpty
        failed = false
        ready = false
        return part
    }

    /// The part `nextPart` gave was held before it was sent (the recovery's gate, a backend being
    /// taken in): it is the next part again, to be admitted when the session goes on.
    mutating func putBack(_ part: PostgresFrame) {
        left.insert(part, at: 0)
        running = false
        ready = true
    }

    /// What happens to a message for the client while a cut Query is in progress.
    enum Pass: Equatable {
        /// It goes to the client.
        case pass
        /// It goes to the client, and the held client messages (or the next part) may go on.
        case passAndGoOn
        /// A part's ReadyForQuery: kept back; the next part may go on.
        case keepAndGoOn
    }

    /// One message for the client (`type`, `length` its whole length with the type byte).
    mutating func clientMessage(type: UInt8, length: Int) -> Pass {
        let isReady = type == BackendMessage.Kind.readyForQuery.rawValue && length == 6
        if earlierReadies > 0 {
            guard isReady else { return .pass }
            earlierReadies -= 1
            return earlierReadies == 0 ? .passAndGoOn : .pass
        }
        guard running else { return .pass }
        if type == BackendMessage.Kind.errorResponse.rawValue {
            failed = true
            return .pass
        }
        guard isReady else { return .pass }
        running = false
        if failed {
            left = []
            return .passAndGoOn
        }
        ready = true
        return .keepAndGoOn
    }
}
