import NIOCore
@testable import Proxy
import Testing
import Wire

/// Who is out of step after one cycle, and why: `OutcomeJudge`, without sockets.
@Suite struct OutcomeJudgeTests {
    func digest(_ messages: [BackendMessage]) -> OutcomeDigest { OutcomeDigest(of: messages) }

    func error(_ sqlState: String, _ message: String = "boom") -> BackendMessage {
        .errorResponse(ErrorFields(severity: "ERROR", sqlState: sqlState, message: message))
    }

    let field = BackendMessage.Field(name: "a", tableOID: 0, columnNumber: 0, typeOID: 25, typeSize: -1, typeModifier: -1, format: 0)

    func rows(_ values: [[String?]]) -> OutcomeDigest {
        digest([.rowDescription([field, field])] + values.map { .dataRow($0.map { $0.map { ByteBuffer(string: $0) } }) }
               + [.commandComplete("SELECT \(values.count)"), .readyForQuery(.idle)])
    }

    let updated = [BackendMessage.commandComplete("UPDATE 1"), .readyForQuery(.inTransaction)]

    @Test func allAlikeFailsNobody() {
        let d = digest(updated)
        #expect(OutcomeJudge.judge([(0, d), (1, d), (2, d)], lead: 0, wrote: true) == OutcomeJudge.Verdict())
    }

    @Test func theMinorityIsFailedWithWhatDiffered() {
        let good = digest([.commandComplete("UPDATE 1"), .readyForQuery(.idle)])
        let bad = digest([.commandComplete("UPDATE 0"), .readyForQuery(.idle)])
        let v = OutcomeJudge.judge([(0, good), (1, good), (2, bad)], lead: 0, wrote: true)
        #expect(v.fail.map(\.index) == [2])
        #expect(v.fail[0].reason.contains("got C:UPDATE 0 where the others had C:UPDATE 1"), "\(v.fail[0].reason)")
        // A tie goes to the side of the lead.
        #expect(OutcomeJudge.judge([(0, bad), (1, good)], lead: 0, wrote: true).fail.map(\.index) == [1])
    }

    @Test func aRowDifferenceNamesTheRowAndTheColumn() {
        let a = rows([["1", "x"], ["2", "y"]])
        let b = rows([["1", "x"], ["2", "z"]])
        let v = OutcomeJudge.judge([(0, a), (1, a), (2, b)], lead: 0, wrote: false)
        #expect(v.fail.map(\.index) == [2])
        let reason = v.fail.first?.reason ?? ""
        #expect(reason.contains("row 2 differs: got ('2', 'z'), expected ('2', 'y') (column 2: 'z' vs 'y')"), "\(reason)")
    }

    @Test func differentErrorsNameBothMessages() {
        let a = digest([error("23505", "duplicate key"), .readyForQuery(.failed)])
        let b = digest([error("23503", "foreign key"), .readyForQuery(.failed)])
        let reason = OutcomeJudge.judge([(0, a), (1, a), (2, b)], lead: 0, wrote: true).fail.first?.reason ?? ""
        #expect(reason.contains("E:23503") && reason.contains("\"foreign key\"") && reason.contains("\"duplicate key\""), "\(reason)")
    }

    @Test(arguments: ["57014", "55P03", "40P01", "40001"])
    func aTimingOutcomeOfTheLeadFailsNobody(sqlState: String) {
        // In a transaction block: the lead's is aborted, the followers' are aborted to match.
        let lead = digest([error(sqlState), .readyForQuery(.failed)])
        let follower = digest(updated)
        let v = OutcomeJudge.judge([(0, lead), (1, follower), (2, follower)], lead: 0, wrote: true)
        #expect(v.fail.isEmpty)
        #expect(v.abortTransaction == [1, 2])
        // A follower with an outcome of its own (also aborted) is left as it is.
        let alsoAborted = digest([error("22012"), .readyForQuery(.failed)])
        #expect(OutcomeJudge.judge([(0, lead), (1, alsoAborted)], lead: 0, wrote: true) == OutcomeJudge.Verdict())
    }

    @Test func aFollowerThatCommittedWhatTheLeadCancelledIsFailed() {
        let lead = digest([error("57014"), .readyForQuery(.idle)])
        let committed = digest([.commandComplete("COPY 10"), .readyForQuery(.idle)])
        let v = OutcomeJudge.judge([(0, lead), (1, committed)], lead: 0, wrote: true)
        #expect(v.fail.map(\.index) == [1])
        // A read that the lead's cancel stopped and a follower finished changes nothing.
        #expect(OutcomeJudge.judge([(0, lead), (1, committed)], lead: 0, wrote: false).fail.isEmpty)
    }

    @Test func aTimingOutcomeOfAFollowerAloneIsLeftToTheVoteInABlockAndADifferenceOutside() {
        // In a transaction block: the vote judges it (its PREPARE will fail); nobody is failed now.
        let lead = digest(updated)
        let aborted = digest([error("40001"), .readyForQuery(.failed)])
        let v = OutcomeJudge.judge([(0, lead), (1, lead), (2, aborted)], lead: 0, wrote: true)
        #expect(v.fail.isEmpty)
        #expect(v.leaveToVote == [2])
        // Outside a block it lacks a write the lead committed: failed.
        let committed = digest([.commandComplete("INSERT 0 1"), .readyForQuery(.idle)])
        let cancelled = digest([error("57014"), .readyForQuery(.idle)])
        #expect(OutcomeJudge.judge([(0, committed), (1, committed), (2, cancelled)], lead: 0, wrote: true).fail.map(\.index) == [2])
    }

    @Test(arguments: ["57014", "55P03", "40P01", "40001"])
    func aReadOutsideATransactionThatAFollowerAloneEndedWithATimingOutcomeFailsNobody(sqlState: String) {
        // (A statement_timeout running out on a slower follower: nothing changed there.)
        let answered = rows([["1", "x"]])
        let timedOut = digest([error(sqlState), .readyForQuery(.idle)])
        #expect(OutcomeJudge.judge([(0, answered), (1, timedOut)], lead: 0, wrote: false) == OutcomeJudge.Verdict())
        // Two such followers do not outvote the lead.
        #expect(OutcomeJudge.judge([(0, answered), (1, timedOut), (2, timedOut)], lead: 0, wrote: false) == OutcomeJudge.Verdict())
        // A follower that answered otherwise is still failed beside them.
        let other = rows([["2", "x"]])
        #expect(OutcomeJudge.judge([(0, answered), (1, timedOut), (2, other)], lead: 0, wrote: false).fail.map(\.index) == [2])
        // A write is another matter (above): it lacks what the lead committed.
        let committed = digest([.commandComplete("INSERT 0 1"), .readyForQuery(.idle)])
        #expect(OutcomeJudge.judge([(0, committed), (1, timedOut)], lead: 0, wrote: true).fail.map(\.index) == [1])
    }

    @Test func theVoteFollowsTheLeadsTimingFailure() {
        // The lead could not PREPARE (40001): rolled back where it prepared, nobody failed.
        let v = CommitVote(prepared: [false, true, true], timingFailure: true)
        #expect(v.decision == .rollback)
        #expect(v.finishOn == [1, 2])
        #expect(v.fail.isEmpty)
        #expect(CommitVote(prepared: [false, true, true], timingFailure: false) == CommitVote(prepared: [false, true, true]))
    }
}
