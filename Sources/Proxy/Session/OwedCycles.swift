import NIOCore
import Wire

/// What a backend's replies to one cycle (up to its ReadyForQuery) are for.
enum CycleKind: Equatable {
    /// A client's statements: the lead's replies go to the client, every backend's are compared.
    case client
    /// The first phase of the commit vote (commit-log insert + PREPARE TRANSACTION).
    case prepare
    /// The second phase: COMMIT PREPARED or ROLLBACK PREPARED.
    case finish
    /// pgchorus' own housekeeping (e.g. creating the commit log); replies are only logged.
    case internalQuery
    /// Loading the tables that draw sequence values (lead only).
    case catalog
    /// A read sent to this backend alone (`read_routing`): its replies go to the client, uncompared.
    case routedRead
    /// A statement pgchorus adds around the client's (BEGIN/ROLLBACK of a wrapped autocommit write).
    case hidden
    /// The session's settings asked of the lead for a backend being taken in (lead only, `takeIn`).
    case sessionSettings
}

/// One cycle a backend owes replies for.
struct Expectation {
    var seq: Int
    var kind: CycleKind
    /// The lead's ReadyForQuery is kept back: an autocommit write waits for its commit vote.
    var holdReady = false
    /// Sent to this backend as a follower, in the lead's order (counted by `LeadHandover`).
    var ordered = false
    /// The client's ReadyForQuery of this cycle waits until every backend has finished it (an
    /// autocommit write outside the vote: another session may rely on it at once).
    var answerWhenAll = false
    /// When the cycle was written to this backend.
    var sentAt = NIODeadline.now()
    /// How long a follower may work on the cycle once it has reached it (half as long again as the
    /// lead took, plus `replication.follower_timeout`); nil while the lead has not answered it.
    var allowance: TimeAmount?
}

/// The cycles one backend of a session owes replies for, oldest first, and the deadline it is held
/// to (**pure**: the time comes in). A cycle is owed from when it is written to the backend until its
/// ReadyForQuery comes back; the oldest counts from when the one before it finished or the backend
/// last sent something, whichever is later (`FollowerDeadlines` reads the deadline).
struct OwedCycles {
    private(set) var cycles: [Expectation] = []
    /// When the oldest cycle started counting: when the previous one finished, or when the backend
    /// last sent something (progress).
    private(set) var headSince: NIODeadline
    /// Large statements being written to this backend (`ClientSessionHandler.largeFollowerWrite`): no
    /// deadline runs meanwhile — the time is the node's, not the backend's — up to `largeWriteBound`.
    private(set) var largeWritesInFlight = 0
    private(set) var largeWriteStarted: NIODeadline?

    /// A backend that stops reading while a large statement is written to it is still failed this
    /// long after the write began.
    static let largeWriteBound = TimeAmount.seconds(30)

    init(since: NIODeadline = .now()) {
        headSince = since
    }

    var isEmpty: Bool { cycles.isEmpty }
    /// The cycle the backend answers now.
    var head: Expectation? { cycles.first }

    func owes(_ seq: Int) -> Bool { cycles.contains { $0.seq == seq } }

    /// Cycle `cycle` was written to the backend.
    mutating func add(_ cycle: Expectation) {
        cycles.append(cycle)
    }

    /// The oldest cycle is finished (its ReadyForQuery came): the next one counts from `now`.
    @discardableResult
    mutating func finishHead(at now: NIODeadline) -> Expectation? {
        guard !cycles.isEmpty else { return nil }
        headSince = now
        return cycles.removeFirst()
    }

    /// The backend left the session: it owes nothing. Returns how many of the dropped cycles were
    /// sent in the lead's order (they no longer hold back a new lead, see `LeadHandover`).
    mutating func removeAll() -> Int {
        let ordered = cycles.reduce(0) { $0 + ($1.ordered ? 1 : 0) }
        cycles.removeAll()
        return ordered
    }

    /// The lead finished cycle `seq`: if this backend was sent it before (the vote, COPY data, what is
    /// not lead-first), it has `allowance` for it from now on.
    mutating func leadAnswered(_ seq: Int, allowance: TimeAmount) {
        for j in cycles.indices where cycles[j].seq == seq && cycles[j].allowance == nil {
            cycles[j].allowance = allowance
        }
    }

    /// The client's ReadyForQuery of cycle `seq` waits until every backend has finished it.
    mutating func answerWhenAll(_ seq: Int) {
        if let j = cycles.firstIndex(where: { $0.seq == seq }) { cycles[j].answerWhenAll = true }
    }

    /// The backend sent something at `now`: its oldest cycle counts from then (a follower streaming a
    /// long answer more slowly than the lead is not failed for it; a frozen one sends nothing).
    mutating func progress(at now: NIODeadline) {
        if !cycles.isEmpty { headSince = now }
    }

    /// A large statement starts being written to the backend at `now`.
    mutating func largeWriteBegan(at now: NIODeadline) {
        if largeWritesInFlight == 0 { largeWriteStarted = now }
        largeWritesInFlight += 1
    }

    /// A large statement has been written at `now`: the backend has it, its time counts from now.
    mutating func largeWriteDone(at now: NIODeadline) {
        largeWritesInFlight = max(0, largeWritesInFlight - 1)
        if largeWritesInFlight == 0 { largeWriteStarted = nil }
        headSince = now
    }

    /// By when the backend must finish its oldest cycle; nil when nothing is owed or the lead has not
    /// answered the cycle yet (no allowance).
    var headDeadline: NIODeadline? {
        guard let head = cycles.first, let allowance = head.allowance else { return nil }
        return max(headSince, head.sentAt) + allowance
    }

    /// The deadline the backend is held to: while a large write to it is in flight, no earlier than
    /// `largeWriteBound` after that write began.
    var effectiveDeadline: NIODeadline? {
        guard largeWritesInFlight > 0, let started = largeWriteStarted else { return headDeadline }
        let bound = started + Self.largeWriteBound
        return headDeadline.map { max($0, bound) } ?? bound
    }
}

/// An autocommit write outside the vote (DDL, CREATE DATABASE/ROLE, COPY, …) is answered only once
/// every backend has done it, since a session the client opens next may rely on it; the client's next
/// messages wait until that answer has gone out, so no reply of a later cycle overtakes it (**pure**).
struct AnswerWhenAll {
    /// The cycle whose answer the client's next messages wait for.
    private(set) var awaiting: Int?
    /// The lead's ReadyForQuery of that cycle, kept until no live backend owes the cycle.
    private(set) var heldReady: (seq: Int, frame: PostgresFrame)?

    var holdsReady: Bool { heldReady != nil }

    /// Cycle `seq` is such a write, on its way.
    mutating func expect(_ seq: Int) {
        awaiting = seq
    }

    /// The lead's ReadyForQuery of cycle `seq`, kept back.
    mutating func hold(_ seq: Int, frame: PostgresFrame) {
        heldReady = (seq, frame)
    }

    /// The lead finished cycle `seq`. True when the client may go on now: its answer was not held
    /// (it went out at once, e.g. with one backend left).
    mutating func leadFinished(_ seq: Int) -> Bool {
        guard seq == awaiting, heldReady?.seq != seq else { return false }
        awaiting = nil
        return true
    }

    /// The held ReadyForQuery, if no backend owes its cycle any more (`stillOwed`), taken out; the
    /// caller sends it and then calls `answered`.
    mutating func releasable(stillOwed: (Int) -> Bool) -> (seq: Int, frame: PostgresFrame)? {
        guard let held = heldReady, !stillOwed(held.seq) else { return nil }
        heldReady = nil
        return held
    }

    /// The answer of cycle `seq` has gone to the client. True when the client's messages that waited may go on.
    mutating func answered(_ seq: Int) -> Bool {
        guard awaiting == seq else { return false }
        awaiting = nil
        return true
    }
}
