@testable import Proxy
import Testing

/// The order of commits and statements (`EpochSchedule`), driven without sockets.
@Suite struct EpochScheduleTests {
    @Test func statementsRunTogetherAndACommitWaitsForThemToFinish() {
        var s = EpochSchedule()
        let a = s.request(.statement)
        let b = s.request(.statement)
        #expect(a.granted == [a.ticket])
        #expect(b.granted == [b.ticket])
        let c = s.request(.commit)
        #expect(c.granted.isEmpty)
        #expect(s.blockers == [a.ticket, b.ticket])
        #expect(s.end(a.ticket).isEmpty)
        #expect(s.end(b.ticket) == [c.ticket])
        #expect(s.epoch == 1)
    }

    @Test func aStatementArrivingWhileACommitWaitsOrAppliesWaitsForIt() {
        var s = EpochSchedule()
        let a = s.request(.statement)
        let c = s.request(.commit)
        // Writer preference: a new statement does not overtake the waiting commit.
        let late = s.request(.statement)
        #expect(late.granted.isEmpty)
        #expect(s.end(a.ticket) == [c.ticket])
        // While the commit applies, the statement still waits; it starts in the next epoch.
        #expect(!s.isGranted(late.ticket))
        #expect(s.end(c.ticket) == [late.ticket])
    }

    @Test func commitsWaitingTogetherApplyAsOneGroup() {
        var s = EpochSchedule()
        let a = s.request(.statement)
        let c1 = s.request(.commit)
        let c2 = s.request(.commit)
        #expect(s.end(a.ticket) == [c1.ticket, c2.ticket])
        #expect(s.epoch == 1)
        // A commit arriving while others apply joins at once: commits do not exclude each other.
        let c3 = s.request(.commit)
        #expect(c3.granted == [c3.ticket])
    }

    /// The deadlock a plain readers-writer order would have: a statement waits on the lead for a row
    /// lock of a prepared transaction whose COMMIT PREPARED waits for that statement.
    @Test func aParkedStatementDoesNotHoldUpTheCommitItWaitsFor() {
        var s = EpochSchedule()
        let waiting = s.request(.statement)
        let running = s.request(.statement)
        let c = s.request(.commit)
        #expect(c.granted.isEmpty)
        #expect(s.park([waiting.ticket]).isEmpty)
        #expect(s.blockers == [running.ticket])
        #expect(s.end(running.ticket) == [c.ticket])
        // Parking is for statements only: a commit's turn is never parked.
        #expect(s.park([c.ticket]).isEmpty)
        #expect(s.blockers.isEmpty)
    }

    @Test func anExclusiveStatementRunsAlone() {
        var s = EpochSchedule()
        let a = s.request(.statement)
        let ddl = s.request(.exclusive)
        #expect(ddl.granted.isEmpty)
        // Arrival order: a statement behind the waiting DDL waits too.
        let b = s.request(.statement)
        #expect(b.granted.isEmpty)
        #expect(s.end(a.ticket) == [ddl.ticket])
        let c = s.request(.commit)
        #expect(c.granted.isEmpty, "a commit waits while the exclusive statement runs")
        #expect(s.end(ddl.ticket) == [c.ticket])
        #expect(s.end(c.ticket) == [b.ticket])
    }

    /// An exclusive statement waiting on a lock (e.g. ALTER TABLE behind an open transaction) lets the
    /// transaction holding that lock go on, or the two would wait for each other forever.
    @Test func aParkedExclusiveStatementLetsOthersRun() {
        var s = EpochSchedule()
        let ddl = s.request(.exclusive)
        #expect(ddl.granted == [ddl.ticket])
        let other = s.request(.statement)
        #expect(other.granted.isEmpty)
        #expect(s.park([ddl.ticket]) == [other.ticket])
        let c = s.request(.commit)
        #expect(c.granted.isEmpty)
        #expect(s.end(other.ticket) == [c.ticket])
    }

    @Test func anExclusiveStatementWaitsUntilEveryHolderIsParkedAndNoCommitApplies() {
        var s = EpochSchedule()
        let a = s.request(.statement)
        let c = s.request(.commit)
        let ddl = s.request(.exclusive)
        #expect(s.park([a.ticket]) == [c.ticket])
        #expect(!s.isGranted(ddl.ticket))
        #expect(s.end(c.ticket) == [ddl.ticket])
    }

    @Test func aWaiterThatGivesUpLeavesTheQueue() {
        var s = EpochSchedule()
        let a = s.request(.statement)
        let c = s.request(.commit)
        let b = s.request(.statement)
        #expect(!s.isGranted(b.ticket))
        // The commit withdrew while waiting: the statement behind it starts at once.
        #expect(s.end(c.ticket) == [b.ticket])
        #expect(!s.hasWaiters)
        #expect(s.end(a.ticket).isEmpty)
        #expect(s.epoch == 0)
    }
}
