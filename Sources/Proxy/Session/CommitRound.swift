import Wire

/// One client COMMIT's two-phase commit across the session's backends (**pure**): preparing →
/// decided (a commit waits there for its turn in the node's order) → finishing → answered. The session sends what it says
/// (PREPARE TRANSACTION, then COMMIT or ROLLBACK PREPARED) and reports each participant's outcome;
/// the round decides with `CommitVote`, says whom to fail and when, and what the client is answered.
struct CommitRound {
    enum Phase: Equatable {
        /// PREPARE TRANSACTION sent to every participant; their outcomes are coming in.
        case preparing
        /// Every outcome is in and the vote has decided; a commit's COMMIT PREPAREDs wait here for the
        /// commit's turn in the node's order (`CommitEpochs`), a rollback goes on at once.
        case decided
        /// COMMIT/ROLLBACK PREPARED sent; waiting for the participants to finish it.
        case finishing
        /// Every participant has finished: the client is answered.
        case answered
    }

    let gid: String
    /// The client's COMMIT group, answered message by message.
    let frames: [PostgresFrame]
    /// The backends voting (live when the vote began).
    let participants: [Int]
    /// The vote ends an autocommit write whose replies the client already has: it gets only the ReadyForQuery.
    let autocommit: Bool
    private(set) var phase = Phase.preparing
    private(set) var prepared: [Int: Bool] = [:]
    /// Transaction status of each participant after its prepare cycle.
    private(set) var statusAfterPrepare: [Int: BackendMessage.TransactionStatus] = [:]
    /// The first error of the prepare phase (the lead's if it has one), byte-exact: the client's on a rollback.
    private(set) var error: PostgresFrame?
    /// The transaction's outcome is a timing one (see `CommitVote.init(prepared:timingFailure:)`): the
    /// lead's PREPARE failed with one, or a follower's transaction ended with a conflict between
    /// transactions (`conflictSQLStates`).
    private(set) var timingFailure = false
    /// Followers whose PREPARE failed with a timing outcome that is not a conflict (a statement or
    /// lock timeout, a cancel: slower or blocked where the others are not).
    private(set) var slowFollowers: Set<Int> = []
    private(set) var vote: CommitVote?
    /// Participants still finishing (COMMIT/ROLLBACK PREPARED, or ROLLBACK of an aborted block).
    private(set) var finishing: Set<Int> = []
    /// Failed once the round has finished: a rollback's successes, a commit's failed COMMIT PREPAREDs.
    private(set) var failAfterFinish: [Int] = []
    /// Followers whose COMMIT PREPARED waits for the lead's (`leadFinishing`) to finish.
    private(set) var followersAfterLead: [Int] = []
    private(set) var leadFinishing: Int?
    /// COMMIT PREPARED '…' or ROLLBACK PREPARED '…', and the cycle it is sent in.
    private(set) var finishCommand = ""
    private(set) var finishSeq = 0

    init(gid: String, frames: [PostgresFrame], participants: [Int], autocommit: Bool) {
        self.gid = gid
        self.frames = frames
        self.participants = participants
        self.autocommit = autocommit
    }

    /// What the vote decided, in backend indices.
    struct Decision: Equatable {
        var vote: CommitVote
        /// The participants to finish (COMMIT or ROLLBACK PREPARED).
        var successes: [Int]
        /// A commit's failures, failed at once (a rollback's successes are failed after they finish).
        var failNow: [Int]
    }

    /// What the session sends once the decision may be carried out.
    struct Finish: Equatable {
        var command: String
        /// Participants to send `command` now.
        var now: [Int]
        /// Followers whose `command` waits until the lead has finished (`followersAfterLead`).
        var afterLead: [Int]
        /// Participants that failed their PREPARE but stay (a timing outcome, a rollback): their aborted
        /// transaction block is ended with ROLLBACK in the same cycle.
        var rollback: [Int]
    }

    /// A serialization failure or a deadlock: a conflict between concurrent transactions, which each
    /// server resolves on its own timing. Whichever backend had it — the lead, or a follower alone —
    /// the transaction rolls back everywhere and nobody is failed: such an outcome says nothing
    /// against a server, and the client retries it as it retries one from PostgreSQL. (A follower
    /// alone ending it with a statement or lock timeout, or a cancel, is slower or blocked where the
    /// others are not: the vote fails it, so one slow server cannot fail every transaction.)
    static let conflictSQLStates: Set<String> = ["40001", "40P01"]

    /// Participant `index` ended its prepare cycle: `ok` when it answered PREPARE TRANSACTION, with its
    /// first error if any. `timingSQLState`: the timing outcome its transaction ended with (at its
    /// PREPARE, or earlier in the transaction for a follower the comparison left to the vote): any of
    /// the lead's, or a follower's conflict (`conflictSQLStates`), makes the outcome the transaction's.
    /// Returns true when every participant's outcome is in and the round is ready to decide.
    mutating func prepareFinished(_ index: Int, ok: Bool, status: BackendMessage.TransactionStatus, error: PostgresFrame?,
                                  isLead: Bool, timingSQLState: String?) -> Bool {
        guard phase == .preparing, participants.contains(index), prepared[index] == nil else { return false }
        prepared[index] = ok
        statusAfterPrepare[index] = status
        let decisive = !ok && timingSQLState.map { isLead || Self.conflictSQLStates.contains($0) } == true
        // The client's error: the lead's, else a decisive follower's conflict, else the first.
        if let error, self.error == nil || isLead || (decisive && !errorIsLeads) {
            self.error = error
            errorIsLeads = isLead
            errorFrom = index
        }
        if decisive { timingFailure = true }
        if !ok, !isLead, timingSQLState != nil { timingKnown.insert(index) }
        if !ok, !isLead, !decisive, timingSQLState != nil { slowFollowers.insert(index) }
        return readyToDecide
    }

    /// Follower `index` failed its PREPARE in a transaction block that a timing outcome (`timingSQLState`)
    /// had aborted earlier, which the comparison judged only after that failure came in (the follower
    /// finished the statement and its PREPARE before another follower finished the statement): it
    /// counts as if known then, with `error` as its error. Until 2026-12-06 it counted as an ordinary
    /// failure (25P02): a follower's serialization failure could have it failed instead of rolling
    /// the transaction back, and two slow followers of three had the lead failed.
    mutating func followerTimingKnownLate(_ index: Int, timingSQLState: String, error: PostgresFrame) {
        guard phase == .preparing, prepared[index] == false, !timingKnown.contains(index) else { return }
        timingKnown.insert(index)
        let decisive = Self.conflictSQLStates.contains(timingSQLState)
        if self.error == nil || errorFrom == index || (decisive && !errorIsLeads) {
            self.error = error
            errorIsLeads = false
            errorFrom = index
        }
        if decisive { timingFailure = true } else { slowFollowers.insert(index) }
    }

    /// `error` is the lead's own; which participant's it is.
    private var errorIsLeads = false
    private var errorFrom: Int?
    /// Followers whose failed PREPARE is known to come from a timing outcome.
    private var timingKnown: Set<Int> = []

    var readyToDecide: Bool { phase == .preparing && participants.allSatisfy { prepared[$0] != nil } }

    /// Decides. A doomed transaction (a statement of it may have seen a commit on some backends only)
    /// rolls back with `doomError` as the client's answer and fails nobody, as a lead's timing outcome does.
    mutating func decide(doomError: PostgresFrame?) -> Decision {
        if let doomError { error = doomError }
        let ok = participants.map { prepared[$0] ?? false }
        // Followers that were only slower (their timeouts) outnumbering the successes roll the
        // transaction back, and that says nothing against the servers that could commit it: nobody is
        // failed (until 2026-12-06 two slow followers of three had the lead failed).
        let onlySlowFailed = participants.indices.allSatisfy { ok[$0] || slowFollowers.contains(participants[$0]) }
        let vote = CommitVote(prepared: ok, timingFailure: timingFailure || doomError != nil
                                  || (onlySlowFailed && CommitVote(prepared: ok).decision == .rollback))
        self.vote = vote
        phase = .decided
        let successes = vote.finishOn.map { participants[$0] }
        let failures = vote.fail.map { participants[$0] }
        if vote.decision == .commit {
            return Decision(vote: vote, successes: successes, failNow: failures)
        }
        failAfterFinish = failures
        return Decision(vote: vote, successes: successes, failNow: [])
    }

    /// The decision may be carried out now (a commit's turn came; a rollback at once), in cycle `seq`.
    /// `live` says which backends are still in the session; `lead` is the session's lead;
    /// `followersWaitForLead`: statements were parked at the commit's grant, so the followers' COMMIT
    /// PREPAREDs go once the lead's has finished; `onlyFirst` (a test hook) sends the command to the
    /// first success only.
    mutating func finish(seq: Int, lead: Int, live: (Int) -> Bool, followersWaitForLead: Bool, onlyFirst: Bool = false) -> Finish? {
        guard let vote, phase == .decided else { return nil }
        phase = .finishing
        let successes = vote.finishOn.map { participants[$0] }
        let failures = Set(vote.fail.map { participants[$0] })
        let targets = onlyFirst ? Array(successes.prefix(1)) : successes
        finishCommand = vote.decision == .commit ? "COMMIT PREPARED '\(gid)'" : "ROLLBACK PREPARED '\(gid)'"
        finishSeq = seq
        let afterLead = vote.decision == .commit && followersWaitForLead && targets.contains(lead)
        var out = Finish(command: finishCommand, now: [], afterLead: [], rollback: [])
        for i in targets where live(i) {
            finishing.insert(i)
            if afterLead && i != lead { out.afterLead.append(i) } else { out.now.append(i) }
        }
        if afterLead { leadFinishing = lead }
        followersAfterLead = out.afterLead
        for i in participants where !successes.contains(i) && !failures.contains(i) && live(i) {
            if let s = statusAfterPrepare[i], s != .idle {
                out.rollback.append(i)
                finishing.insert(i)
            }
        }
        return out
    }

    /// Participant `index` finished its COMMIT/ROLLBACK PREPARED (`failed`: with an error and no
    /// command tag). A commit that did not apply on it fails it once the round is over.
    mutating func finishFinished(_ index: Int, failed: Bool) {
        guard phase == .finishing, finishing.contains(index) else { return }
        if failed, vote?.decision == .commit { failAfterFinish.append(index) }
        finishing.remove(index)
    }

    /// What losing participant `index` changes: before the decision it counts as a failed PREPARE
    /// (true: the round is now ready to decide); while finishing it is no longer waited for.
    mutating func participantLost(_ index: Int) -> Bool {
        guard participants.contains(index) else { return false }
        switch phase {
        case .preparing:
            if prepared[index] == nil { prepared[index] = false }
            return readyToDecide
        case .finishing:
            finishing.remove(index)
            followersAfterLead.removeAll { $0 == index }
            return false
        case .decided, .answered:
            return false
        }
    }

    /// The followers held for the lead's COMMIT PREPARED, once it has finished (or the lead is gone:
    /// `leadLive` false). Each is returned once.
    mutating func followersReleased(leadLive: Bool) -> [Int] {
        guard !followersAfterLead.isEmpty, let l = leadFinishing, !finishing.contains(l) || !leadLive else { return [] }
        defer { followersAfterLead = [] }
        return followersAfterLead
    }

    /// Whether participant `index` still has the round's command to run (a deferred COMMIT PREPARED
    /// sent once the node's order lets it land).
    func awaitsFinish(_ index: Int) -> Bool { phase == .finishing && finishing.contains(index) }

    /// True once, when every participant has finished: the round is answered.
    mutating func answerIfFinished() -> Bool {
        guard phase == .finishing, finishing.isEmpty else { return false }
        phase = .answered
        return true
    }

    /// One message of the client's answer.
    enum Answer: Equatable {
        case message(BackendMessage)
        /// The transaction's error: the first PREPARE error (byte-exact) unless FATAL, else pgchorus' own 40000.
        case error
    }

    /// The client's answer to its COMMIT group: each message answered as PostgreSQL would (COMMIT or
    /// the error for the Query/Execute; after an error nothing more of the group but the ReadyForQuery).
    func answer() -> [Answer] {
        guard let vote else { return [] }
        var out: [Answer] = []
        if autocommit && vote.decision == .rollback { out.append(.error) }
        var answeredError = false
        for f in frames {
            switch f.type {
            case FrontendMessage.Kind.query.rawValue, FrontendMessage.Kind.execute.rawValue:
                if vote.decision == .commit {
                    out.append(.message(.commandComplete("COMMIT")))
                } else {
                    out.append(.error)
                    answeredError = true
                }
            case FrontendMessage.Kind.parse.rawValue where !answeredError:
                out.append(.message(.parseComplete))
            case FrontendMessage.Kind.bind.rawValue where !answeredError:
                out.append(.message(.bindComplete))
            case FrontendMessage.Kind.describe.rawValue where !answeredError:
                if case .describe(.statement, _)? = try? FrontendMessage(frame: f) { out.append(.message(.parameterDescription([]))) }
                out.append(.message(.noData))
            case FrontendMessage.Kind.close.rawValue where !answeredError:
                out.append(.message(.closeComplete))
            default:
                break
            }
        }
        out.append(.message(.readyForQuery(.idle)))
        return out
    }
}
