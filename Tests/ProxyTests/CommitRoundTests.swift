import NIOCore
@testable import Proxy
import Testing
import Wire

/// One COMMIT's two-phase commit, preparing → decided → finishing → answered, without sockets.
@Suite struct CommitRoundTests {
    let gid = "pgchorus:n1:42"

    func query(_ sql: String) -> PostgresFrame {
        var b = ByteBuffer()
        FrontendMessage.query(sql).encode(into: &b)
        return PostgresFrame(bytes: b)
    }

    var errorFrame: PostgresFrame {
        BackendMessage.errorResponse(ErrorFields(severity: "ERROR", sqlState: "23505", message: "duplicate key")).frame
    }

    func round(_ participants: [Int] = [0, 1, 2], autocommit: Bool = false) -> CommitRound {
        CommitRound(gid: gid, frames: autocommit ? [] : [query("COMMIT")], participants: participants, autocommit: autocommit)
    }

    /// A round whose participants 0, 1, … (0 the lead) answered their PREPARE as `ok` says; a failure
    /// left its transaction block aborted, with `errorFrame`.
    func prepared(_ ok: [Bool], autocommit: Bool = false) -> CommitRound {
        var r = round(Array(ok.indices), autocommit: autocommit)
        for (i, success) in ok.enumerated() {
            _ = r.prepareFinished(i, ok: success, status: success ? .idle : .failed, error: success ? nil : errorFrame,
                                  isLead: i == 0, timingSQLState: nil)
        }
        return r
    }

    /// Every participant prepared, the vote committed, its COMMIT PREPAREDs sent in cycle 4.
    func committing(followersWaitForLead: Bool = false) -> (CommitRound, CommitRound.Finish?) {
        var r = prepared([true, true, true])
        _ = r.decide(doomError: nil)
        let f = r.finish(seq: 4, lead: 0, live: { _ in true }, followersWaitForLead: followersWaitForLead)
        return (r, f)
    }

    @Test func theVoteWaitsForEveryParticipant() {
        var r = round()
        let ready1 = r.prepareFinished(0, ok: true, status: .idle, error: nil, isLead: true, timingSQLState: nil)
        #expect(!ready1)
        let ready2 = r.prepareFinished(1, ok: true, status: .idle, error: nil, isLead: false, timingSQLState: nil)
        #expect(!ready2)
        // A second report of the same participant counts once.
        let ready3 = r.prepareFinished(1, ok: false, status: .idle, error: nil, isLead: false, timingSQLState: nil)
        #expect(!ready3)
        #expect(r.prepared[1] == true)
        // A backend that is not voting does not count.
        let ready4 = r.prepareFinished(3, ok: true, status: .idle, error: nil, isLead: false, timingSQLState: nil)
        #expect(!ready4)
        let ready5 = r.prepareFinished(2, ok: true, status: .idle, error: nil, isLead: false, timingSQLState: nil)
        #expect(ready5)
        #expect(r.phase == .preparing && r.readyToDecide)
    }

    @Test func aMajorityCommitsAndTheMinorityIsFailedAtOnce() {
        var r = prepared([true, false, true])
        let d = r.decide(doomError: nil)
        #expect(d.vote.decision == .commit && d.successes == [0, 2] && d.failNow == [1])
        #expect(r.phase == .decided)
        // Its turn came: COMMIT PREPARED on the successes; the failed one is not rolled back (it is failed).
        let f = r.finish(seq: 9, lead: 0, live: { $0 != 1 }, followersWaitForLead: false)
        #expect(f == CommitRound.Finish(command: "COMMIT PREPARED '\(gid)'", now: [0, 2], afterLead: [], rollback: []))
        #expect(r.phase == .finishing && r.finishSeq == 9)
        let answered1 = r.answerIfFinished()
        #expect(!answered1)
        r.finishFinished(0, failed: false)
        r.finishFinished(2, failed: false)
        let answered2 = r.answerIfFinished()
        #expect(answered2)
        let answered3 = r.answerIfFinished()
        #expect(!answered3)
        #expect(r.phase == .answered && r.failAfterFinish.isEmpty)
        #expect(r.answer() == [.message(.commandComplete("COMMIT")), .message(.readyForQuery(.idle))])
    }

    @Test func aMajorityOfFailuresRollsBackAndFailsTheSuccessesAfterwards() {
        var r = prepared([false, false, true])
        let d = r.decide(doomError: nil)
        #expect(d.vote.decision == .rollback && d.successes == [2] && d.failNow.isEmpty)
        let f = r.finish(seq: 5, lead: 0, live: { _ in true }, followersWaitForLead: true)
        // The failures' aborted blocks end with ROLLBACK; the success's prepared transaction is rolled back.
        #expect(f == CommitRound.Finish(command: "ROLLBACK PREPARED '\(gid)'", now: [2], afterLead: [], rollback: [0, 1]))
        r.finishFinished(2, failed: false)
        r.finishFinished(0, failed: false)
        let answeredBeforeLast = r.answerIfFinished()
        #expect(!answeredBeforeLast)
        r.finishFinished(1, failed: false)
        let answered4 = r.answerIfFinished()
        #expect(answered4)
        #expect(r.failAfterFinish == [2])
        #expect(r.error == errorFrame)
        #expect(r.answer() == [.error, .message(.readyForQuery(.idle))])
    }

    @Test func aTieCommits() {
        var r = prepared([true, false])
        let decision1 = r.decide(doomError: nil)
        #expect(decision1.vote.decision == .commit)
    }

    @Test func aLeadsTimingOutcomeRollsBackAndFailsNobody() {
        var r = round()
        let serialization = BackendMessage.errorResponse(ErrorFields(severity: "ERROR", sqlState: "40001", message: "could not serialize")).frame
        _ = r.prepareFinished(1, ok: true, status: .idle, error: nil, isLead: false, timingSQLState: nil)
        _ = r.prepareFinished(0, ok: false, status: .failed, error: serialization, isLead: true, timingSQLState: "40001")
        _ = r.prepareFinished(2, ok: true, status: .idle, error: nil, isLead: false, timingSQLState: nil)
        let d = r.decide(doomError: nil)
        #expect(d.vote.decision == .rollback && d.failNow.isEmpty && d.successes == [1, 2])
        let f = r.finish(seq: 3, lead: 0, live: { _ in true }, followersWaitForLead: false)
        // The lead's aborted block is rolled back in the same cycle; nobody is failed afterwards.
        #expect(f?.now == [1, 2] && f?.rollback == [0])
        for i in [0, 1, 2] { r.finishFinished(i, failed: false) }
        let answered5 = r.answerIfFinished()
        #expect(answered5 && r.failAfterFinish.isEmpty)
        #expect(r.error == serialization)
    }

    /// Serializable transactions on three backends: a follower alone may have to abort one (its own
    /// interleaving of the concurrent transactions). The transaction rolls back everywhere, the
    /// client gets that follower's 40001 to retry, and nobody is failed — before, the vote failed
    /// that follower (or, two followers aborting it, the lead).
    @Test func aFollowersConflictRollsBackAndFailsNobody() {
        let serialization = BackendMessage.errorResponse(ErrorFields(severity: "ERROR", sqlState: "40001", message: "could not serialize")).frame
        for conflicted in [[1], [1, 2]] {
            var r = round()
            for i in [0, 1, 2] {
                let c = conflicted.contains(i)
                _ = r.prepareFinished(i, ok: !c, status: .idle, error: c ? serialization : nil, isLead: i == 0, timingSQLState: c ? "40001" : nil)
            }
            let d = r.decide(doomError: nil)
            #expect(d.vote.decision == .rollback && d.failNow.isEmpty && d.successes == [0, 1, 2].filter { !conflicted.contains($0) })
            let f = r.finish(seq: 3, lead: 0, live: { _ in true }, followersWaitForLead: false)
            #expect(f?.command == "ROLLBACK PREPARED '\(gid)'")
            for i in [0, 1, 2] { r.finishFinished(i, failed: false) }
            let answered = r.answerIfFinished()
            #expect(answered && r.failAfterFinish.isEmpty)
            #expect(r.error == serialization)
            #expect(r.answer() == [.error, .message(.readyForQuery(.idle))])
        }
        // A deadlock that aborted a follower's block earlier (its PREPARE then fails with 25P02) counts alike.
        var r = round()
        let aborted = BackendMessage.errorResponse(ErrorFields(severity: "ERROR", sqlState: "40P01", message: "deadlock on db2")).frame
        _ = r.prepareFinished(0, ok: true, status: .idle, error: nil, isLead: true, timingSQLState: nil)
        _ = r.prepareFinished(1, ok: false, status: .failed, error: aborted, isLead: false, timingSQLState: "40P01")
        _ = r.prepareFinished(2, ok: true, status: .idle, error: nil, isLead: false, timingSQLState: nil)
        let d = r.decide(doomError: nil)
        #expect(d.vote.decision == .rollback && d.failNow.isEmpty && r.error == aborted)
        #expect(r.finish(seq: 3, lead: 0, live: { _ in true }, followersWaitForLead: false)?.rollback == [1])
    }

    /// A follower alone timing out (a statement or lock timeout, a cancel) is slower or blocked where
    /// the others are not: the majority commits and fails it, so one slow server cannot make every
    /// transaction fail.
    @Test func aFollowersTimeoutIsStillJudgedByTheVote() {
        let timeout = BackendMessage.errorResponse(ErrorFields(severity: "ERROR", sqlState: "57014", message: "statement timeout")).frame
        var r = round()
        _ = r.prepareFinished(0, ok: true, status: .idle, error: nil, isLead: true, timingSQLState: nil)
        _ = r.prepareFinished(1, ok: false, status: .failed, error: timeout, isLead: false, timingSQLState: "57014")
        _ = r.prepareFinished(2, ok: true, status: .idle, error: nil, isLead: false, timingSQLState: nil)
        let d = r.decide(doomError: nil)
        #expect(d.vote.decision == .commit && d.failNow == [1])
    }

    /// Two followers of three timing out outvote the lead: the transaction rolls back (the client gets
    /// a follower's timeout), and nobody is failed — the lead could commit, the others were slower.
    @Test func slowFollowersOutvotingTheLeadRollBackAndFailNobody() {
        let timeout = BackendMessage.errorResponse(ErrorFields(severity: "ERROR", sqlState: "55P03", message: "lock timeout")).frame
        var r = round()
        _ = r.prepareFinished(0, ok: true, status: .idle, error: nil, isLead: true, timingSQLState: nil)
        _ = r.prepareFinished(1, ok: false, status: .failed, error: timeout, isLead: false, timingSQLState: "55P03")
        _ = r.prepareFinished(2, ok: false, status: .failed, error: timeout, isLead: false, timingSQLState: "57014")
        let d = r.decide(doomError: nil)
        #expect(d.vote.decision == .rollback && d.vote.fail.isEmpty && d.failNow.isEmpty, "\(d)")
        #expect(d.successes == [0])
        #expect(r.error == timeout)
        // One of them failing otherwise (a constraint): the majority rule as before, the lead failed.
        var mixed = round()
        _ = mixed.prepareFinished(0, ok: true, status: .idle, error: nil, isLead: true, timingSQLState: nil)
        _ = mixed.prepareFinished(1, ok: false, status: .failed, error: timeout, isLead: false, timingSQLState: "55P03")
        _ = mixed.prepareFinished(2, ok: false, status: .failed, error: errorFrame, isLead: false, timingSQLState: nil)
        #expect(mixed.decide(doomError: nil).vote.fail == [0])
    }

    /// A follower's PREPARE failed (25P02) before the comparison had judged the statement that aborted
    /// its block with a timing outcome: learnt before the decision, it counts as that outcome — a
    /// conflict rolls back and fails nobody, with the conflict as the client's error.
    @Test func aFollowersTimingOutcomeLearntAfterItsPrepareCountsAsIt() {
        let aborted = BackendMessage.errorResponse(ErrorFields(severity: "ERROR", sqlState: "25P02", message: "aborted")).frame
        let conflict = BackendMessage.errorResponse(ErrorFields(severity: "ERROR", sqlState: "40001", message: "conflict on db2")).frame
        var r = round([0, 1])
        _ = r.prepareFinished(0, ok: true, status: .idle, error: nil, isLead: true, timingSQLState: nil)
        _ = r.prepareFinished(1, ok: false, status: .failed, error: aborted, isLead: false, timingSQLState: nil)
        r.followerTimingKnownLate(1, timingSQLState: "40001", error: conflict)
        let d = r.decide(doomError: nil)
        #expect(d.vote.decision == .rollback && d.vote.fail.isEmpty, "\(d)")
        #expect(r.error == conflict)
        // Without it, the tie commits and the follower is failed.
        var plain = round([0, 1])
        _ = plain.prepareFinished(0, ok: true, status: .idle, error: nil, isLead: true, timingSQLState: nil)
        _ = plain.prepareFinished(1, ok: false, status: .failed, error: aborted, isLead: false, timingSQLState: nil)
        #expect(plain.decide(doomError: nil).failNow == [1])
    }

    @Test func aDoomedTransactionRollsBackWithItsOwnError() {
        var r = prepared([true, true])
        let doom = BackendMessage.errorResponse(ErrorFields(severity: "ERROR", sqlState: "40001", message: "doomed")).frame
        let d = r.decide(doomError: doom)
        #expect(d.vote.decision == .rollback && d.failNow.isEmpty)
        #expect(r.error == doom)
    }

    @Test func aParticipantLostBeforeTheDecisionCountsAsAFailure() {
        var r = round()
        _ = r.prepareFinished(0, ok: true, status: .idle, error: nil, isLead: true, timingSQLState: nil)
        _ = r.prepareFinished(1, ok: true, status: .idle, error: nil, isLead: false, timingSQLState: nil)
        let readyAfterLoss1 = r.participantLost(2)
        #expect(readyAfterLoss1)
        let d = r.decide(doomError: nil)
        #expect(d.vote.decision == .commit && d.failNow == [2])
        // Lost again (its channel's close after the failure): nothing changes.
        let readyAfterLoss2 = r.participantLost(2)
        #expect(!readyAfterLoss2)
    }

    @Test func aParticipantLostWhileFinishingIsNotWaitedFor() {
        var (r, _) = committing()
        r.finishFinished(0, failed: false)
        r.finishFinished(1, failed: false)
        let readyAfterLoss3 = r.participantLost(2)
        #expect(!readyAfterLoss3)
        let answered6 = r.answerIfFinished()
        #expect(answered6)
    }

    @Test func aCommitThatFailsOnOneBackendFailsItOnceTheRoundIsOver() {
        var (r, _) = committing()
        r.finishFinished(0, failed: false)
        r.finishFinished(1, failed: true)
        r.finishFinished(2, failed: false)
        let answered7 = r.answerIfFinished()
        #expect(answered7 && r.failAfterFinish == [1])
    }

    @Test func parkedStatementsMakeTheFollowersCommitAfterTheLead() {
        var (r, f) = committing(followersWaitForLead: true)
        #expect(f?.now == [0] && f?.afterLead == [1, 2])
        let released1 = r.followersReleased(leadLive: true)
        #expect(released1.isEmpty)
        r.finishFinished(0, failed: false)
        let released2 = r.followersReleased(leadLive: true)
        #expect(released2 == [1, 2])
        let released3 = r.followersReleased(leadLive: true)
        #expect(released3.isEmpty)
        #expect(r.awaitsFinish(1) && !r.awaitsFinish(0))
        r.finishFinished(1, failed: false)
        r.finishFinished(2, failed: false)
        let answered8 = r.answerIfFinished()
        #expect(answered8)
    }

    @Test func theFollowersGoWhenTheLeadIsLostBeforeItsCommitFinished() {
        var (r, _) = committing(followersWaitForLead: true)
        let readyAfterLoss4 = r.participantLost(0)
        #expect(!readyAfterLoss4)
        let released4 = r.followersReleased(leadLive: false)
        #expect(released4 == [1, 2])
    }

    @Test func theAnswerFollowsTheClientsMessages() {
        var parse = ByteBuffer()
        FrontendMessage.parse(FrontendMessage.Parse(name: "", query: "COMMIT", parameterTypes: [])).encode(into: &parse)
        var bind = ByteBuffer()
        FrontendMessage.bind(FrontendMessage.Bind(portal: "", statement: "", parameterFormats: [], parameters: [], resultFormats: [])).encode(into: &bind)
        var execute = ByteBuffer()
        FrontendMessage.execute(portal: "", maxRows: 0).encode(into: &execute)
        let frames = [parse, bind, execute].map { PostgresFrame(bytes: $0) }
        func decided(_ ok: Bool) -> CommitRound {
            var r = CommitRound(gid: gid, frames: frames, participants: [0], autocommit: false)
            _ = r.prepareFinished(0, ok: ok, status: ok ? .idle : .failed, error: ok ? nil : errorFrame, isLead: true, timingSQLState: nil)
            _ = r.decide(doomError: nil)
            return r
        }
        #expect(decided(true).answer() == [.message(.parseComplete), .message(.bindComplete), .message(.commandComplete("COMMIT")),
                                           .message(.readyForQuery(.idle))])
        #expect(decided(false).answer() == [.message(.parseComplete), .message(.bindComplete), .error, .message(.readyForQuery(.idle))])
        // An autocommit write's client has its statement's replies: only the outcome and the ReadyForQuery.
        var auto = prepared([false, false], autocommit: true)
        _ = auto.decide(doomError: nil)
        #expect(auto.answer() == [.error, .message(.readyForQuery(.idle))])
    }
}
