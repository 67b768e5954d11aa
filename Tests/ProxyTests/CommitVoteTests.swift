@testable import Proxy
import Testing

/// The seed's commit vote, checked against every success/failure pattern of 1 to 5 backends.
@Suite struct CommitVoteTests {
    /// The rule as the seed states it, written out independently of `CommitVote`.
    struct Expected: Equatable, CustomStringConvertible {
        var commit: Bool
        var finishOn: [Int]
        var fail: [Int]
        var description: String { "\(commit ? "commit" : "rollback") finishOn=\(finishOn) fail=\(fail)" }
    }

    static func expected(_ prepared: [Bool]) -> Expected {
        var successes: [Int] = []
        var failures: [Int] = []
        for index in 0..<prepared.count {
            if prepared[index] { successes.append(index) } else { failures.append(index) }
        }
        if successes.isEmpty {
            // Everybody failed alike: roll back (nothing to finish), nobody diverged.
            return Expected(commit: false, finishOn: [], fail: [])
        }
        if successes.count > failures.count {
            return Expected(commit: true, finishOn: successes, fail: failures)
        }
        if failures.count > successes.count {
            return Expected(commit: false, finishOn: successes, fail: successes)
        }
        // Exact tie: commit, the failures are failed.
        return Expected(commit: true, finishOn: successes, fail: failures)
    }

    @Test(arguments: 1...5)
    func everyPattern(backends n: Int) {
        var checked = 0
        for mask in 0..<(1 << n) {
            let prepared = (0..<n).map { mask & (1 << $0) != 0 }
            let vote = CommitVote(prepared: prepared)
            let want = Self.expected(prepared)
            let got = Expected(commit: vote.decision == .commit, finishOn: vote.finishOn, fail: vote.fail)
            #expect(got == want, "prepared = \(prepared)")
            checked += 1
        }
        #expect(checked == 1 << n)
    }

    @Test func namedCases() {
        // 3 backends, one failed PREPARE: commit on the two, fail the one.
        let a = CommitVote(prepared: [true, false, true])
        #expect(a.decision == .commit)
        #expect(a.finishOn == [0, 2])
        #expect(a.fail == [1])
        // 3 backends, two failed: roll back the survivor and fail it.
        let b = CommitVote(prepared: [false, true, false])
        #expect(b.decision == .rollback)
        #expect(b.finishOn == [1])
        #expect(b.fail == [1])
        // 4 backends, 2 against 2: commit, fail the failures.
        let c = CommitVote(prepared: [false, true, true, false])
        #expect(c.decision == .commit)
        #expect(c.finishOn == [1, 2])
        #expect(c.fail == [0, 3])
        // Everybody failed: roll back, nobody is failed.
        let d = CommitVote(prepared: [false, false, false])
        #expect(d.decision == .rollback)
        #expect(d.finishOn.isEmpty)
        #expect(d.fail.isEmpty)
        // One backend that succeeded: commit.
        let e = CommitVote(prepared: [true])
        #expect(e.decision == .commit)
        #expect(e.finishOn == [0])
        #expect(e.fail.isEmpty)
    }
}
