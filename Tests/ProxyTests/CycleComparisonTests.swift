@testable import Proxy
import Testing
import Wire

/// When a session's cycles are compared across its backends, and which: `CycleComparison`.
@Suite struct CycleComparisonTests {
    func digest(_ messages: [BackendMessage]) -> OutcomeDigest { OutcomeDigest(of: messages) }

    var updated: OutcomeDigest { digest([.commandComplete("UPDATE 1"), .readyForQuery(.inTransaction)]) }
    var updatedNone: OutcomeDigest { digest([.commandComplete("UPDATE 0"), .readyForQuery(.inTransaction)]) }
    var committed: OutcomeDigest { digest([.commandComplete("COMMIT"), .readyForQuery(.idle)]) }
    var serializationFailure: OutcomeDigest {
        digest([.errorResponse(ErrorFields(severity: "ERROR", sqlState: "40001", message: "could not serialize")), .readyForQuery(.failed)])
    }

    /// Runs `next` until nothing is left, as the session does.
    func drain(_ c: inout CycleComparison, live: [Int], uncompared: Set<Int> = []) -> [CycleComparison.Judged] {
        var out: [CycleComparison.Judged] = []
        for _ in 0..<100 {
            guard let j = c.next(live: live, lead: 0, uncompared: { uncompared.contains($0) }) else { break }
            out.append(j)
        }
        return out
    }

    @Test func aCycleIsComparedOnceEveryLiveBackendHasFinishedIt() {
        var c = CycleComparison()
        c.noteWrite(1)
        c.finished(0, seq: 1, digest: updated)
        c.finished(1, seq: 1, digest: updated)
        // (What the session asks before it builds the list of live backends for `next`.)
        #expect(c.hasFinished(0) && c.hasFinished(1) && !c.hasFinished(2) && !c.hasFinished(7))
        let judged1 = drain(&c, live: [0, 1, 2])
        #expect(judged1.isEmpty)
        #expect(c.writing == [1])
        c.finished(2, seq: 1, digest: updatedNone)
        #expect(c.hasFinished(2))
        let judged = drain(&c, live: [0, 1, 2])
        #expect(judged.map(\.seq) == [1])
        #expect(judged.first?.verdict.fail.map(\.index) == [2])
        #expect(c.writing.isEmpty)
        #expect(!c.hasFinished(0) && !c.hasFinished(1) && !c.hasFinished(2), "compared: nothing finished is left")
    }

    @Test func cyclesAlikeAreComparedSilentlyOldestFirst() {
        var c = CycleComparison()
        for seq in 1...3 {
            for i in 0..<3 { c.finished(i, seq: seq, digest: seq == 3 && i == 1 ? updatedNone : updated) }
        }
        let judged = drain(&c, live: [0, 1, 2])
        #expect(judged.map(\.seq) == [3])
        #expect(c.waiting.allSatisfy { $0.isEmpty })
    }

    @Test func aBackendThatLeftIsNotWaitedFor() {
        var c = CycleComparison()
        c.finished(0, seq: 1, digest: updated)
        c.finished(1, seq: 1, digest: updated)
        c.finished(2, seq: 1, digest: updatedNone)
        // Backend 2 was failed before the comparison: the others agree, nothing to judge.
        c.backendGone(2)
        let judged2 = drain(&c, live: [0, 1])
        #expect(judged2.isEmpty)
        #expect(c.waiting.allSatisfy { $0.isEmpty })
    }

    @Test func withOneLiveBackendNothingIsKept() {
        var c = CycleComparison()
        c.noteWrite(1)
        c.finished(0, seq: 1, digest: updated)
        let judged3 = drain(&c, live: [0])
        #expect(judged3.isEmpty)
        #expect(c.writing.isEmpty && c.waiting.allSatisfy { $0.isEmpty })
    }

    @Test func aDoomedTransactionsCyclesAreNotCompared() {
        var c = CycleComparison()
        c.noteWrite(4)
        c.finished(0, seq: 4, digest: updated)
        c.finished(1, seq: 4, digest: updatedNone)
        let judged4 = drain(&c, live: [0, 1], uncompared: [4])
        #expect(judged4.isEmpty)
        #expect(c.writing.isEmpty)
    }

    @Test func aFollowerLeftToTheVoteIsNotComparedUntilItsTransactionEnds() {
        var c = CycleComparison()
        // Cycle 1: the follower hit a serialization failure where the lead went on.
        c.finished(0, seq: 1, digest: updated)
        c.finished(1, seq: 1, digest: updated)
        c.finished(2, seq: 1, digest: serializationFailure)
        let first = drain(&c, live: [0, 1, 2])
        #expect(first.first?.verdict.leaveToVote == [2] && first.first?.verdict.fail.isEmpty == true)
        #expect(c.leftToVote == [2: "40001"])
        // Cycle 2: its aborted block answers differently; it is not compared (the vote will judge it).
        c.finished(0, seq: 2, digest: updated)
        c.finished(1, seq: 2, digest: updated)
        c.finished(2, seq: 2, digest: serializationFailure)
        let judged5 = drain(&c, live: [0, 1, 2])
        #expect(judged5.isEmpty)
        // Its transaction ends (idle): compared again from the next cycle on.
        c.finished(0, seq: 3, digest: committed)
        c.finished(1, seq: 3, digest: committed)
        c.finished(2, seq: 3, digest: digest([.commandComplete("ROLLBACK"), .readyForQuery(.idle)]))
        let judged6 = drain(&c, live: [0, 1, 2])
        #expect(judged6.isEmpty)
        #expect(c.leftToVote.isEmpty)
        c.finished(0, seq: 4, digest: updated)
        c.finished(1, seq: 4, digest: updated)
        c.finished(2, seq: 4, digest: updatedNone)
        let judged7 = drain(&c, live: [0, 1, 2])
        #expect(judged7.first?.verdict.fail.map(\.index) == [2])
    }

    @Test func theVoteEndsWhatWasLeftToIt() {
        var c = CycleComparison()
        c.finished(0, seq: 1, digest: updated)
        c.finished(1, seq: 1, digest: serializationFailure)
        c.finished(2, seq: 1, digest: updated)
        _ = drain(&c, live: [0, 1, 2])
        #expect(c.leftToVote == [1: "40001"])
        c.transactionVoted()
        #expect(c.leftToVote.isEmpty)
    }
}
