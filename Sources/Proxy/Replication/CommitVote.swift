/// The commit vote of the seed: after PREPARE TRANSACTION on every participant,
/// more successes than failures commits (the failures are failed), more failures rolls back
/// (the successes are failed), an exact tie commits (the failures are failed).
public struct CommitVote: Sendable, Equatable {
    public enum Decision: Sendable, Equatable {
        case commit
        case rollback
    }

    public let decision: Decision
    /// Backends that must run COMMIT PREPARED or ROLLBACK PREPARED (those whose PREPARE succeeded).
    public let finishOn: [Int]
    /// Backends to take out of service.
    public let fail: [Int]

    /// `prepared[i]` is true when backend i answered PREPARE TRANSACTION successfully.
    /// `timingFailure`: the transaction ended with a timing outcome — the lead's PREPARE failed with
    /// one (a serialization failure, a deadlock, a cancel), or a follower's transaction with a
    /// serialization failure or deadlock (`CommitRound.conflictSQLStates`): that outcome is the
    /// transaction's. It is rolled back where it prepared and nobody is failed, however the others
    /// voted: a serializable transaction that one server had to abort is not evidence against the
    /// servers that could commit it, nor against the server that could not.
    public init(prepared: [Bool], timingFailure: Bool) {
        if timingFailure {
            self.init(decision: .rollback, finishOn: prepared.indices.filter { prepared[$0] }, fail: [])
        } else {
            self.init(prepared: prepared)
        }
    }

    private init(decision: Decision, finishOn: [Int], fail: [Int]) {
        self.decision = decision; self.finishOn = finishOn; self.fail = fail
    }

    public init(prepared: [Bool]) {
        let successes = prepared.indices.filter { prepared[$0] }
        let failures = prepared.indices.filter { !prepared[$0] }
        if successes.count >= failures.count && !successes.isEmpty {
            decision = .commit
            finishOn = successes
            fail = failures
        } else {
            decision = .rollback
            finishOn = successes
            // With no success at all (e.g. a deferred constraint failed everywhere) nobody diverged.
            fail = successes
        }
    }
}
