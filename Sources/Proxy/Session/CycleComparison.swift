/// The comparison of a session's client cycles across its backends (**pure**). Each backend's
/// finished cycles wait here, reduced to their `OutcomeDigest`, until every live backend has finished
/// the same one; then the oldest is compared, and `OutcomeJudge` says who is out of step. A follower
/// whose transaction a timing outcome aborted while the lead's went on is left to the commit vote:
/// its answers are not compared until its transaction has ended. Cycles of a doomed transaction
/// (`uncompared`) are not compared at all.
struct CycleComparison {
    /// Finished cycles not compared yet, per backend (by index), oldest first.
    private(set) var waiting: [[(seq: Int, digest: OutcomeDigest)]] = []
    /// Cycles that could change data (for `OutcomeJudge`), until compared.
    private(set) var writing: Set<Int> = []
    /// Followers left to the commit vote (see `OutcomeJudge.Verdict.leaveToVote`), with the timing
    /// SQLSTATE that aborted their transaction.
    private(set) var leftToVote: [Int: String] = [:]

    /// One cycle where the backends did not all agree.
    struct Judged {
        var seq: Int
        var entries: [(index: Int, digest: OutcomeDigest)]
        var verdict: OutcomeJudge.Verdict
    }

    /// Cycle `seq` could change data.
    mutating func noteWrite(_ seq: Int) { writing.insert(seq) }

    /// Cycle `seq` will not be compared (the followers got the lead's timing outcome instead of it).
    mutating func forget(_ seq: Int) { writing.remove(seq) }

    /// Backend `index` finished client cycle `seq` with this outcome.
    mutating func finished(_ index: Int, seq: Int, digest: OutcomeDigest) {
        while waiting.count <= index { waiting.append([]) }
        waiting[index].append((seq, digest))
    }

    /// Backend `index` left the session: what it finished is not compared.
    mutating func backendGone(_ index: Int) {
        if waiting.indices.contains(index) { waiting[index].removeAll() }
    }

    /// The transaction was voted on (every participant's has ended): every backend is compared again.
    mutating func transactionVoted() { leftToVote.removeAll() }

    /// Whether backend `index` has finished a cycle not compared yet.
    func hasFinished(_ index: Int) -> Bool {
        waiting.indices.contains(index) && !waiting[index].isEmpty
    }

    /// Compares, oldest first, the cycles every backend in `live` has finished, until one where they
    /// differ: its verdict (the backends it leaves to the vote are noted here); nil when no more cycle
    /// is finished everywhere. With one live backend nothing is compared (and nothing kept).
    mutating func next(live: [Int], lead: Int, uncompared: (Int) -> Bool) -> Judged? {
        guard live.count > 1 else {
            // (Their storage kept: with one backend this runs for every cycle, and each new cycle
            // allocated them again.)
            for i in waiting.indices where !waiting[i].isEmpty { waiting[i].removeAll(keepingCapacity: true) }
            if !writing.isEmpty { writing.removeAll(keepingCapacity: true) }
            return nil
        }
        for _ in 0..<10_000 {
            guard live.allSatisfy({ waiting.indices.contains($0) && !waiting[$0].isEmpty }) else { return nil }
            var entries: [(index: Int, digest: OutcomeDigest)] = []
            entries.reserveCapacity(live.count)
            var seq = 0
            for i in live {
                let c = waiting[i].removeFirst()
                seq = c.seq
                if leftToVote[i] != nil {
                    // Its transaction was aborted by a timing outcome: not compared until it ends.
                    if c.digest.statusAfter == OutcomeJudge.idle { leftToVote[i] = nil }
                    continue
                }
                entries.append((i, c.digest))
            }
            let wrote = writing.remove(seq) != nil
            guard entries.count > 1, !uncompared(seq) else { continue }
            // The usual case, every backend alike: nothing to judge.
            if entries.allSatisfy({ $0.digest == entries[0].digest }) { continue }
            let verdict = OutcomeJudge.judge(entries, lead: lead, wrote: wrote)
            for i in verdict.leaveToVote {
                leftToVote[i] = entries.first { $0.index == i }?.digest.timingSQLState ?? "40001"
            }
            return Judged(seq: seq, entries: entries, verdict: verdict)
        }
        return nil
    }
}
