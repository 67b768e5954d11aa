import NIOCore
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

/// The cluster-wide side of the order (`EpochSchedule(clusterWide: true)`): what the node holds of
/// the lock on the lead, and what it grants under it.
@Suite struct ClusterEpochScheduleTests {
    @Test func nothingIsGrantedBeforeTheNodeHoldsTheLock() {
        var s = EpochSchedule(clusterWide: true)
        let a = s.request(.statement)
        #expect(a.granted.isEmpty)
        #expect(s.wantedHold == .shared)
        #expect(s.held(.shared) == [a.ticket])
        #expect(s.wantedHold == .shared)
    }

    @Test func aCommitWantsTheLockExclusiveOnceTheStatementsFinishAndGivesItBackAfter() {
        var s = EpochSchedule(clusterWide: true)
        _ = s.held(.shared)
        let a = s.request(.statement)
        let c = s.request(.commit)
        #expect(c.granted.isEmpty)
        // The statement still runs: the lock stays shared, the commit waits.
        #expect(s.wantedHold == .shared)
        #expect(s.end(a.ticket).isEmpty)
        #expect(s.wantedHold == .exclusive)
        // Still shared: nothing is granted under a hold about to change.
        let late = s.request(.statement)
        #expect(late.granted.isEmpty)
        #expect(s.held(.none).isEmpty)
        #expect(s.held(.exclusive) == [c.ticket])
        #expect(s.epoch == 1)
        // While the commit applies the lock stays exclusive; after it, statements want it shared.
        #expect(s.wantedHold == .exclusive)
        #expect(s.end(c.ticket).isEmpty)
        #expect(s.wantedHold == .shared)
        #expect(s.held(.none).isEmpty)
        #expect(s.held(.shared) == [late.ticket])
    }

    @Test func anotherNodeWaitingStopsNewStatementsAndTheLockGoesOnceTheRunningOnesFinish() {
        var s = EpochSchedule(clusterWide: true)
        _ = s.held(.shared)
        let a = s.request(.statement)
        s.remoteWants()
        #expect(s.remoteWaiting)
        // A running statement is probed (it may wait on a lock of the other node's commit).
        #expect(s.blockers == [a.ticket])
        let b = s.request(.statement)
        #expect(b.granted.isEmpty)
        #expect(s.wantedHold == .shared)
        #expect(s.end(a.ticket).isEmpty)
        #expect(s.wantedHold == .none)
        // Let go: the other node no longer waits on this one; the waiting statement wants it back.
        #expect(s.held(.none).isEmpty)
        #expect(!s.remoteWaiting)
        #expect(s.wantedHold == .shared)
        #expect(s.held(.shared) == [b.ticket])
    }

    @Test func aParkedStatementDoesNotKeepAnotherNodeWaiting() {
        var s = EpochSchedule(clusterWide: true)
        _ = s.held(.shared)
        let a = s.request(.statement)
        s.remoteWants()
        #expect(s.wantedHold == .shared)
        _ = s.park([a.ticket])
        #expect(s.wantedHold == .none)
    }

    @Test func anIdleNodeKeepsTheLockSharedUntilAskedAndIgnoresAskingWhileItHoldsNothing() {
        var s = EpochSchedule(clusterWide: true)
        s.remoteWants()
        #expect(!s.remoteWaiting)
        _ = s.held(.shared)
        #expect(s.wantedHold == .shared)
        s.remoteWants()
        #expect(s.wantedHold == .none)
    }

    @Test func anExclusiveStatementNeedsTheLockExclusiveAndKeepsItWhileItRuns() {
        var s = EpochSchedule(clusterWide: true)
        _ = s.held(.shared)
        let ddl = s.request(.exclusive)
        #expect(ddl.granted.isEmpty)
        #expect(s.wantedHold == .exclusive)
        _ = s.held(.none)
        #expect(s.held(.exclusive) == [ddl.ticket])
        s.remoteWants()
        #expect(s.wantedHold == .exclusive)
        #expect(s.end(ddl.ticket).isEmpty)
        #expect(s.wantedHold == .none)
    }

    /// DDL through one node while that node applies a commit, and another node waits for the lock: once
    /// the commit is applied the node must let the lock go (it starts no exclusive statement while
    /// another node waits), not keep it exclusive for a statement it will not start. Before, it kept
    /// it: every node's order stood still until the other node disconnected this one's order
    /// connection after `replication.follower_timeout`, and then still thought it held the lock.
    @Test func anExclusiveStatementQueuedBehindACommitLetsTheLockGoToAWaitingNode() {
        var s = EpochSchedule(clusterWide: true)
        _ = s.held(.shared)
        let parked = s.request(.statement)
        #expect(parked.granted == [parked.ticket])
        _ = s.park([parked.ticket])
        let c = s.request(.commit)
        #expect(s.wantedHold == .exclusive)
        _ = s.held(.none)
        #expect(s.held(.exclusive) == [c.ticket])
        let ddl = s.request(.exclusive)
        #expect(ddl.granted.isEmpty)
        s.remoteWants()
        // While the commit applies the lock stays exclusive.
        #expect(s.wantedHold == .exclusive)
        #expect(s.end(c.ticket).isEmpty)
        // Applied: the DDL does not start while the other node waits, so the lock goes to that node.
        #expect(s.wantedHold == .none)
        #expect(s.held(.none).isEmpty)
        #expect(!s.remoteWaiting)
        // Then the DDL wants the lock exclusive again and runs once it is held.
        #expect(s.wantedHold == .exclusive)
        #expect(s.held(.exclusive) == [ddl.ticket])
    }

    @Test func aNodeOnItsOwnOrdersAsBefore() {
        var s = EpochSchedule()
        #expect(s.hold == .exclusive)
        s.remoteWants()
        #expect(!s.remoteWaiting)
        #expect(s.request(.statement).granted.count == 1)
        #expect(s.wantedHold == .exclusive)
    }
}

/// What `CommitEpochs` does when the order must go on without a statement: the statement's transaction
/// is doomed (its session rolls it back at the vote), once.
@Suite struct EpochDoomTests {
    final class Count: @unchecked Sendable {
        var n = 0
    }

    /// A follower's COMMIT PREPARED that waited for a statement longer than it may goes ahead and takes
    /// the statement's doom with it: that transaction must commit nowhere.
    @Test func aFollowerCommitThatGoesAheadDoomsTheStatementsItWaitedFor() {
        var state = CommitEpochs.State(schedule: EpochSchedule())
        let statement = state.schedule.request(.statement).ticket
        let other = state.schedule.request(.statement).ticket
        let doomed = Count(), went = Count(), spared = Count()
        state.dooms[statement] = { doomed.n += 1 }
        state.dooms[other] = { spared.n += 1 }
        state.pending[statement] = ["db2"]
        state.pending[other] = ["db2"]
        let commit = 1_000
        state.deferrals[commit] = [statement]
        state.followerWaits = [CommitEpochs.FollowerWait(commit: commit, backend: "db2", since: NIODeadline.now() - TimeAmount.seconds(10), go: { went.n += 1 })]
        for callback in state.readyFollowers(waiting: []) { callback() }
        #expect(went.n == 1)
        #expect(doomed.n == 1)
        #expect(spared.n == 0, "a statement the commit did not wait for is not doomed")
        #expect(state.followerWaits.isEmpty)
        // Taken out: a second look dooms nothing again.
        #expect(state.doom([statement]).isEmpty)
    }

    /// The node's own commit changes its hold from shared to exclusive, which lets the lock go for a
    /// moment: another node's queued commit may be applied then, though no signal said it waits. A
    /// parked statement not yet on every backend (reading more than its target) is cancelled first and
    /// waited for; past the bound the hold changes and its transaction is doomed. Exclusive → shared
    /// lets nothing go and touches nothing.
    @Test func anOwnCommitsChangeOfHoldDealsWithParkedStatementsFirst() {
        var state = CommitEpochs.State(schedule: EpochSchedule(clusterWide: true))
        _ = state.schedule.held(.shared)
        let parked = state.schedule.request(.statement).ticket
        let targetOnly = state.schedule.request(.statement).ticket
        let everywhere = state.schedule.request(.statement).ticket
        let commit = state.schedule.request(.commit).ticket
        let cancelled = Count(), doomed = Count(), spared = Count()
        state.cancels[parked] = { cancelled.n += 1 }
        state.dooms[parked] = { doomed.n += 1 }
        for t in [targetOnly, everywhere] {
            state.cancels[t] = { spared.n += 1 }
            state.dooms[t] = { spared.n += 1 }
        }
        state.targetOnly.insert(targetOnly)
        // Waiting on the lead, not yet sent to the followers; the others have reached every backend
        // or read only their target.
        state.pending[parked] = ["db1", "db2", "db3"]
        state.targets[parked] = [CommitEpochs.Target(backend: "db1", pid: 1)]
        state.pending[targetOnly] = ["db1", "db2", "db3"]
        state.targets[targetOnly] = [CommitEpochs.Target(backend: "db1", pid: 2)]
        state.pending[everywhere] = ["db2"]
        state.targets[everywhere] = [CommitEpochs.Target(backend: "db2", pid: 3)]
        _ = state.schedule.park([parked, targetOnly, everywhere])
        #expect(!state.schedule.remoteWaiting)
        #expect(state.schedule.wantedHold == .exclusive, "the commit wants the lock exclusive once the statements are parked")
        _ = commit

        let start = NIODeadline.now()
        let first = state.beforeLettingGo(to: .exclusive, now: start, bound: .seconds(1))
        #expect(first.wait)
        for c in first.cancels { c() }
        #expect(cancelled.n == 1)
        // Still within the bound: no second cancel, still waiting.
        let again = state.beforeLettingGo(to: .exclusive, now: start + .milliseconds(500), bound: .seconds(1))
        #expect(again.wait && again.cancels.isEmpty)
        // Past it: the hold changes, and the statement's transaction commits nowhere.
        let past = state.beforeLettingGo(to: .exclusive, now: start + .seconds(2), bound: .seconds(1))
        #expect(!past.wait)
        #expect(past.overdue == [parked])
        for d in past.dooms { d() }
        #expect(doomed.n == 1)
        #expect(spared.n == 0)

        // Exclusive → shared goes down without a gap: nothing to do.
        var down = CommitEpochs.State(schedule: EpochSchedule(clusterWide: true))
        _ = down.schedule.held(.exclusive)
        let p2 = down.schedule.request(.statement).ticket
        down.cancels[p2] = { spared.n += 1 }
        down.pending[p2] = ["db1", "db2"]
        down.targets[p2] = [CommitEpochs.Target(backend: "db1", pid: 4)]
        _ = down.schedule.park([p2])
        let d = down.beforeLettingGo(to: .shared, now: .now(), bound: .seconds(1))
        #expect(!d.wait && d.cancels.isEmpty && d.overdue.isEmpty)
    }

    /// One statement running on db2 (pid 42) that db2's COMMIT PREPARED of `commit` has waited for since
    /// `since`: its doom counts in `doomed`, the commit's going ahead in `went`.
    func followerCommitWaiting(_ state: inout CommitEpochs.State, commit: Int, since: NIODeadline, doomed: Count, went: Count) -> Int {
        let statement = state.schedule.request(.statement).ticket
        state.dooms[statement] = { doomed.n += 1 }
        state.pending[statement] = ["db2"]
        state.targets[statement] = [CommitEpochs.Target(backend: "db2", pid: 42)]
        state.deferrals[commit] = [statement]
        state.followerWaits = [CommitEpochs.FollowerWait(commit: commit, backend: "db2", since: since, go: { went.n += 1 })]
        return statement
    }

    /// Within its bound the commit still waits for the statement, and nothing is doomed.
    @Test func aFollowerCommitWithinItsBoundWaitsAndDoomsNothing() {
        var state = CommitEpochs.State(schedule: EpochSchedule())
        let doomed = Count(), went = Count()
        _ = followerCommitWaiting(&state, commit: 1_000, since: .now(), doomed: doomed, went: went)
        for callback in state.readyFollowers(waiting: []) { callback() }
        #expect(went.n == 0)
        #expect(doomed.n == 0)
        #expect(state.followerWaits.count == 1)
    }

    /// A statement cancelled on the lead too late (it had finished there), on its way to the follower
    /// or running there, is waited for past the cancel's bound: the commit goes ahead of it only after the
    /// overall bound, and its transaction is not doomed before. (A loaded CI host took more than the
    /// cancel's second to carry such a statement to its follower, and its transaction got 40001.)
    @Test func aStatementCancelledTooLateAndRunningOnTheFollowerIsWaitedFor() {
        var state = CommitEpochs.State(schedule: EpochSchedule())
        let doomed = Count(), went = Count()
        let statement = followerCommitWaiting(&state, commit: 1_000, since: .now() - TimeAmount.seconds(2), doomed: doomed, went: went)
        state.cancelled[statement] = NIODeadline.now() - TimeAmount.seconds(2)
        for callback in state.readyFollowers(waiting: []) { callback() }
        #expect(went.n == 0 && doomed.n == 0, "still waited for")
        #expect(state.followerWaits.count == 1)
        // Finished on the lead, not yet sent to the follower (running nowhere): waited for as well.
        state.targets[statement] = []
        for callback in state.readyFollowers(waiting: []) { callback() }
        #expect(went.n == 0 && doomed.n == 0, "still waited for on its way")
        // Still on the lead, cancelled as long ago: the commit goes ahead, the transaction doomed.
        state.targets[statement] = [CommitEpochs.Target(backend: "db1", pid: 41)]
        for callback in state.readyFollowers(waiting: []) { callback() }
        #expect(went.n == 1 && doomed.n == 1)
        // Past the overall bound, even running on the follower.
        _ = followerCommitWaiting(&state, commit: 1_001, since: .now() - TimeAmount.seconds(10), doomed: doomed, went: went)
        for callback in state.readyFollowers(waiting: []) { callback() }
        #expect(went.n == 2 && doomed.n == 2)
    }

    /// A process the probe sees waiting for its client counts as waiting only where its statement is in
    /// `COPY … FROM STDIN` (`State.awaitsClient`): elsewhere it has not read the statement yet, or has
    /// just finished it (pg_stat_activity pairs a `state` of moments ago with the wait of now). Until
    /// 2026-12-06 such a sighting parked a statement that a follower had not started yet, and another
    /// node's COMMIT PREPARED reached that follower first: psycopg 3's `INSERT … SELECT count(*)`
    /// beside pipelined writers through two nodes counted differently there (the order trace: the
    /// statement written to every backend, the lead done, `P db1 …:Client:ClientRead`, `PK`, then the
    /// other node's `CP` on db3 before db3 had run it).
    @Test func aWaitForTheClientCountsOnlyInCopyFromStdin() {
        var state = CommitEpochs.State(schedule: EpochSchedule())
        let statement = state.schedule.request(.statement).ticket
        let lead = CommitEpochs.Target(backend: "db1", pid: 41), follower = CommitEpochs.Target(backend: "db2", pid: 42)
        state.targets[statement] = [lead, follower]
        let seen: [CommitEpochs.Target: CommitEpochs.Wait] = [lead: .client, follower: .afterSnapshot]
        #expect(state.waitsThatCount(seen) == [follower: .afterSnapshot], "a row lock counts, the client read does not")
        state.awaitsClient.insert(statement)
        #expect(state.waitsThatCount(seen) == seen, "in COPY FROM STDIN both count")
    }

    /// The same for a follower's COMMIT PREPARED waiting for a statement parked at its grant: the
    /// statement seen on that follower waiting for its client is waited for, unless it is in COPY.
    @Test func aFollowerCommitWaitsForAStatementSeenReadingItsClientOutsideCopy() {
        var state = CommitEpochs.State(schedule: EpochSchedule())
        let doomed = Count(), went = Count()
        let statement = followerCommitWaiting(&state, commit: 1_000, since: .now(), doomed: doomed, went: went)
        let seen: [CommitEpochs.Target: CommitEpochs.Wait] = [CommitEpochs.Target(backend: "db2", pid: 42): .client]
        for callback in state.readyFollowers(waiting: Set(state.waitsThatCount(seen).keys)) { callback() }
        #expect(went.n == 0, "not yet started there, perhaps: the commit waits")
        state.awaitsClient.insert(statement)
        for callback in state.readyFollowers(waiting: Set(state.waitsThatCount(seen).keys)) { callback() }
        #expect(went.n == 1 && doomed.n == 0, "waiting for COPY data there: the commit goes")
    }
}
