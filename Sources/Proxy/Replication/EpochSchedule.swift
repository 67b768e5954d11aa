/// The order of commits and statements that makes every backend see the same committed
/// transactions in every statement (**pure**: events in, grants out; `CommitEpochs` runs it node-wide).
///
/// A statement's snapshot is taken when it starts on a backend, and a `COMMIT PREPARED` lands on each
/// backend at its own moment; lead-first execution orders row locks but not what a statement sees. So
/// commits are applied in *epochs*: a commit (or a group of them) is applied on the backends only while
/// no statement is running, and statements start only between epochs. Then a statement starts, on the
/// lead and on every follower, after exactly the commits of the epochs before it.
///
/// A statement that waits on a lock (or for its client's data) is **parked**: it has taken its
/// snapshot already (row lock) or will take it after the lock is granted (relation lock) — either way
/// a commit applied meanwhile is seen alike on every backend, while making the commit wait for it would
/// deadlock when the lock's holder is that very commit. Parked holders never hold anything up.
///
/// Kinds:
/// - `statement`: a cycle sent to every backend (writes, and reads compared across backends);
/// - `exclusive`: an autocommit write outside the vote (DDL, COPY, two-phase commit off), which commits
///   on each backend at its own end: it runs while nothing else runs;
/// - `commit`: the `COMMIT PREPARED`s of one vote on every backend.
///
/// Grants: commits whenever every statement holder is parked (they bypass the queue: a waiting
/// statement may be parked on the very locks a commit frees); statements and exclusive ones in arrival
/// order, a statement while no commit is applying or queued and no exclusive one runs unparked, an
/// exclusive one while every holder is parked and no commit applies.
///
/// **Cluster-wide** (`clusterWide`, several clustering nodes): the node's epochs are also ordered
/// against every other node's by a lock on the lead backend that each node holds through its own
/// connection (`ClusterOrder`): *shared* while statements of the node run, *exclusive* while its
/// commits or exclusive statements do. `hold` is what the node holds now (the cluster order tells it
/// with `held(_:)`), `wantedHold` what it should hold next; nothing is granted under a hold that is
/// about to change. A node that is told another node waits for the lock (`remoteWaiting`) starts no
/// new statement and lets the lock go once its own statements have finished or parked.
public struct EpochSchedule: Sendable {
    public enum Kind: Sendable, Equatable { case statement, exclusive, commit }

    /// What the node holds of the cluster-wide order lock.
    public enum Hold: Sendable, Equatable { case none, shared, exclusive }

    /// Whether epochs are ordered across clustering nodes (see above).
    public let clusterWide: Bool
    /// The cluster-wide lock the node holds now (always `.exclusive` when not `clusterWide`).
    public private(set) var hold: Hold
    /// Another node waits for the cluster-wide lock: no new statement starts until it is let go.
    public private(set) var remoteWaiting = false

    struct Holder: Sendable, Equatable {
        var kind: Kind
        var parked = false
    }

    private(set) var holders: [Int: Holder] = [:]
    /// Statements and exclusive statements waiting, in arrival order.
    private(set) var queue: [(ticket: Int, kind: Kind)] = []
    /// Commits waiting for the running statements to finish or park.
    private(set) var queuedCommits: [Int] = []
    private var nextTicket = 1
    /// Commit groups applied so far.
    public private(set) var epoch = 0

    public init(clusterWide: Bool = false) {
        self.clusterWide = clusterWide
        self.hold = clusterWide ? .none : .exclusive
    }

    /// The cluster order now holds `hold` (it reports `.none` before it lets a lock go); returns the
    /// tickets granted now. Having let the lock go, the node no longer keeps another node waiting.
    public mutating func held(_ hold: Hold) -> [Int] {
        guard clusterWide else { return [] }
        self.hold = hold
        if hold == .none { remoteWaiting = false }
        return admit()
    }

    /// Another node waits for the cluster-wide lock (ignored while the node holds nothing).
    public mutating func remoteWants() {
        guard clusterWide, hold != .none else { return }
        remoteWaiting = true
    }

    /// The cluster-wide lock the node should hold next. A commit group or an exclusive statement ready
    /// to go wants it exclusive; running or waiting statements want it shared (one held exclusive is
    /// kept while anything granted under it runs); a node another node waits for lets it go once its
    /// statements are finished or parked; an idle node keeps it shared (its next statement starts at
    /// once) until another node asks for it.
    public var wantedHold: Hold {
        guard clusterWide else { return .exclusive }
        let unparked = holders.values.contains { !$0.parked || $0.kind == .commit }
        if hold == .exclusive && holders.values.contains(where: { $0.kind != .statement && (!$0.parked || $0.kind == .commit) }) {
            return .exclusive
        }
        if hold == .exclusive && unparked { return .exclusive }
        // Commits are applied under a held exclusive lock even while another node waits (then it is let
        // go); an exclusive statement is not started then (`admit`), so it must not keep the lock either:
        // wanting it exclusive while never granting under it held every node's order until another node
        // disconnected this one's order connection (DDL through one node racing commits through another).
        if !queuedCommits.isEmpty || (queue.first?.kind == .exclusive && !remoteWaiting) {
            if allStatementsParked { return .exclusive }
        }
        if unparked { return hold == .none ? .shared : hold }
        if remoteWaiting { return .none }
        return .shared
    }

    /// Asks for a turn of `kind`; returns its ticket and every ticket granted now (it may be among them).
    public mutating func request(_ kind: Kind) -> (ticket: Int, granted: [Int]) {
        let ticket = nextTicket
        nextTicket += 1
        if kind == .commit { queuedCommits.append(ticket) } else { queue.append((ticket, kind)) }
        return (ticket, admit())
    }

    /// A holder finished (on every backend), or a waiter gave up: returns the tickets granted now.
    public mutating func end(_ ticket: Int) -> [Int] {
        if holders.removeValue(forKey: ticket) == nil {
            queue.removeAll { $0.ticket == ticket }
            queuedCommits.removeAll { $0 == ticket }
        }
        return admit()
    }

    /// The holders found waiting on a lock or for their client: they hold nothing up any more.
    public mutating func park(_ tickets: some Sequence<Int>) -> [Int] {
        for t in tickets where holders[t] != nil && holders[t]?.kind != .commit { holders[t]?.parked = true }
        return admit()
    }

    /// The running holders that hold up a waiting turn: the ones worth probing (empty when nothing waits).
    public var blockers: [Int] {
        guard !queuedCommits.isEmpty || !queue.isEmpty || remoteWaiting else { return [] }
        return holders.filter { $0.value.kind != .commit && !$0.value.parked }.keys.sorted()
    }

    /// The statements parked now (a commit granted now must not overtake them on the followers).
    public var parkedStatements: [Int] {
        holders.filter { $0.value.kind != .commit && $0.value.parked }.keys.sorted()
    }

    public func kind(of ticket: Int) -> Kind? { holders[ticket]?.kind }

    /// Whether anything waits.
    public var hasWaiters: Bool { !queuedCommits.isEmpty || !queue.isEmpty }

    public func isGranted(_ ticket: Int) -> Bool { holders[ticket] != nil }

    private var allStatementsParked: Bool {
        holders.values.allSatisfy { $0.kind == .commit || $0.parked }
    }

    private var commitApplying: Bool { holders.values.contains { $0.kind == .commit } }

    /// The hold that grants may rely on: none while it is about to change.
    private var stableHold: Hold { hold == wantedHold ? hold : .none }

    private mutating func admit() -> [Int] {
        var granted: [Int] = []
        let hold = stableHold
        if !queuedCommits.isEmpty, allStatementsParked, hold == .exclusive {
            for t in queuedCommits { holders[t] = Holder(kind: .commit) }
            granted += queuedCommits
            queuedCommits = []
            epoch += 1
        }
        while let head = queue.first {
            guard !commitApplying, queuedCommits.isEmpty else { break }
            switch head.kind {
            case .statement:
                guard hold != .none, !remoteWaiting else { return granted }
                guard !holders.values.contains(where: { $0.kind == .exclusive && !$0.parked }) else { return granted }
            case .exclusive:
                guard hold == .exclusive, !remoteWaiting else { return granted }
                guard allStatementsParked else { return granted }
            case .commit:
                break
            }
            queue.removeFirst()
            holders[head.ticket] = Holder(kind: head.kind)
            granted.append(head.ticket)
            // An exclusive statement runs alone until it finishes or parks.
            if head.kind == .exclusive { break }
        }
        return granted
    }
}
