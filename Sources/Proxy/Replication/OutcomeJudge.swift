/// Decides, for one cycle that every live backend of a session has answered, which backends are out
/// of step. Pure: the session runs what it returns.
///
/// - Every outcome alike: nothing to do.
/// - The lead's outcome is a timing one (cancel, statement/lock timeout, deadlock, serialization
///   failure): it is the session's. No backend is failed for answering differently, except one that
///   committed on its own what the lead rolled back (an autocommit write the lead never made). A
///   follower still in a healthy transaction block while the lead's is aborted gets its transaction
///   aborted too, so what follows gives the same outcomes everywhere.
/// - A follower whose transaction block a timing outcome aborted while the lead's went on is left to
///   the commit vote (its PREPARE fails: a serialization failure or deadlock rolls the transaction
///   back everywhere, failing nobody; a timeout or cancel fails it if the others commit).
/// - A follower whose read outside a transaction alone ended with a timing outcome (the client's
///   `statement_timeout` running out on a slower follower, one with a cold cache after its recovery)
///   changed nothing: it is not failed.
/// - Otherwise the majority outcome wins (a tie goes to the side of the lead) and every other
///   backend is failed, with a reason that names what differed.
struct OutcomeJudge {
    struct Verdict: Equatable {
        /// Backends to take out of service, with why.
        var fail: [Failure] = []
        /// Followers whose open transaction must be aborted to match the lead's.
        var abortTransaction: [Int] = []
        /// Followers whose transaction block a timing outcome aborted where the lead's goes on: the
        /// commit vote judges them (their PREPARE fails), and until their transaction ends their
        /// answers are not compared.
        var leaveToVote: [Int] = []
    }

    struct Failure: Equatable {
        var index: Int
        var reason: String
    }

    static let idle = UInt8(ascii: "I")
    static let inTransaction = UInt8(ascii: "T")
    static let failedTransaction = UInt8(ascii: "E")

    /// `entries` are the live backends' outcomes of one cycle; `wrote` says whether the cycle could
    /// change data (from the statement analysis).
    static func judge(_ entries: [(index: Int, digest: OutcomeDigest)], lead: Int, wrote: Bool) -> Verdict {
        var verdict = Verdict()
        guard let first = entries.first, !entries.allSatisfy({ $0.digest == first.digest }) else { return verdict }
        let leadDigest = entries.first(where: { $0.index == lead })?.digest
        if let leadDigest, let timing = leadDigest.timingSQLState {
            for e in entries where e.index != lead && e.digest != leadDigest {
                let status = e.digest.statusAfter
                if leadDigest.statusAfter == failedTransaction && status == inTransaction {
                    verdict.abortTransaction.append(e.index)
                } else if leadDigest.statusAfter == idle && status == idle && !e.digest.hasError && wrote {
                    verdict.fail.append(Failure(index: e.index, reason:
                        "committed a write that the lead backend ended with \(timing) (\(leadDigest.errorMessages.first ?? "")): [\(e.digest.description)] against the lead's [\(leadDigest.description)]"))
                }
            }
            return verdict
        }
        // A follower whose transaction block a timing outcome aborted (a serialization failure the lead
        // did not hit, at another moment of a concurrent commit) is not failed for it here: the vote is.
        var judged = entries
        if let leadDigest, !leadDigest.hasError {
            for e in entries where e.index != lead && e.digest.timingSQLState != nil && e.digest.statusAfter == failedTransaction {
                verdict.leaveToVote.append(e.index)
            }
            judged.removeAll { verdict.leaveToVote.contains($0.index) }
            // (Until 2026-12-06 it was outvoted by the lead — with three backends, two such followers
            // outvoted the lead.)
            if !wrote && leadDigest.statusAfter == idle {
                judged.removeAll { $0.index != lead && $0.digest.timingSQLState != nil && $0.digest.statusAfter == idle }
            }
        }
        var groups: [(digest: OutcomeDigest, members: [Int])] = []
        for e in judged {
            if let g = groups.firstIndex(where: { $0.digest == e.digest }) { groups[g].members.append(e.index) } else { groups.append((e.digest, [e.index])) }
        }
        let best = groups.map(\.members.count).max() ?? 0
        guard let winner = groups.first(where: { $0.members.count == best && $0.members.contains(lead) })
            ?? groups.first(where: { $0.members.count == best }) else { return verdict }
        for g in groups where g.digest != winner.digest {
            for i in g.members {
                verdict.fail.append(Failure(index: i, reason:
                    "statement outcome differs from \(winner.members.count) other backend(s): \(g.digest.difference(from: winner.digest))"))
            }
        }
        return verdict
    }
}
