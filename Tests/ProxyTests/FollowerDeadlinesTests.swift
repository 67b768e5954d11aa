import NIOCore
@testable import Proxy
import State
import Testing

/// Every wait on a backend has a deadline: `FollowerDeadlines`' decisions, with the time as input.
@Suite struct FollowerDeadlinesTests {
    let deadlines = FollowerDeadlines(followerTimeout: .seconds(3))
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    /// Three ready backends that owe nothing, all counting from `t0`.
    func session(_ count: Int = 3) -> [BackendSession] {
        (0..<count).map { i in
            var b = BackendSession(backend: Configuration.Backend(id: "db\(i + 1)", host: "127.0.0.1", port: 5432 + i),
                                   login: BackendLogin(user: "u", credential: .none, nonce: "n"))
            b.phase = .ready
            b.owed = OwedCycles(since: t0)
            return b
        }
    }

    func owe(_ b: inout BackendSession, sentAt: NIODeadline, allowance: TimeAmount?) {
        b.owed.add(Expectation(seq: b.owed.cycles.count + 1, kind: .client, sentAt: sentAt, allowance: allowance))
    }

    @Test func aFollowerHasHalfAsLongAgainAsTheLeadPlusTheTimeout() {
        #expect(deadlines.allowance(leadTook: .milliseconds(200)) == .milliseconds(3300))
        #expect(deadlines.allowance(leadTook: .zero) == .seconds(3))
    }

    @Test func aFollowerPastItsDeadlineIsFailedAndOneWithinItIsNot() {
        var b = session()
        owe(&b[1], sentAt: t0, allowance: .seconds(3))
        owe(&b[2], sentAt: t0, allowance: .seconds(5))
        #expect(deadlines.nextCheck(b, lead: 0, probedAt: nil) == t0 + .seconds(3))
        #expect(deadlines.check(b, lead: 0, probedAt: nil, now: t0 + .milliseconds(2999)).fail.isEmpty)
        #expect(deadlines.check(b, lead: 0, probedAt: nil, now: t0 + .seconds(3)).fail == [1])
        #expect(deadlines.check(b, lead: 0, probedAt: nil, now: t0 + .seconds(6)).fail == [1, 2])
    }

    /// A follower whose statements waited on a commit the node itself held back there (a COMMIT
    /// PREPARED deferred by the order of commits) has the timeout from the end of that wait; one the
    /// node did not hold back is failed as before.
    @Test func aFollowerTheNodeHeldBackHasTheTimeoutFromThen() {
        var b = session()
        owe(&b[1], sentAt: t0, allowance: .seconds(3))
        owe(&b[2], sentAt: t0, allowance: .seconds(3))
        let heldUntil = t0 + .seconds(2)
        let held: (Int) -> NIODeadline? = { $0 == 1 ? heldUntil : nil }
        let at4 = deadlines.check(b, lead: 0, probedAt: nil, now: t0 + .seconds(4), heldBack: held)
        #expect(at4.fail == [2])
        #expect(at4.recheckAt == heldUntil + .seconds(3))
        #expect(deadlines.check(b, lead: 0, probedAt: nil, now: heldUntil + .seconds(3), heldBack: held).fail == [1, 2])
        // Held back long ago (before its statement was even sent): no extra time.
        #expect(deadlines.check(b, lead: 0, probedAt: nil, now: t0 + .seconds(3), heldBack: { _ in t0 - .seconds(10) }).fail == [1, 2])
    }

    @Test func aFollowerWithoutAnAllowanceWaitsForTheLead() {
        // Sent before the lead answered (not lead-first): no deadline until the lead has.
        var b = session()
        owe(&b[1], sentAt: t0, allowance: nil)
        #expect(deadlines.nextCheck(b, lead: 0, probedAt: nil) == nil)
        #expect(deadlines.check(b, lead: 0, probedAt: nil, now: t0 + .seconds(100)).fail.isEmpty)
    }

    @Test func progressRestartsAFollowersTime() {
        // A follower that sent something (rows of a long answer) counts from then; so does its next cycle.
        var b = session()
        owe(&b[1], sentAt: t0, allowance: .seconds(3))
        b[1].owed.progress(at: t0 + .seconds(2))
        #expect(deadlines.check(b, lead: 0, probedAt: nil, now: t0 + .seconds(4)).fail.isEmpty)
        #expect(deadlines.check(b, lead: 0, probedAt: nil, now: t0 + .seconds(5)).fail == [1])
    }

    @Test func aLargeStatementStillBeingWrittenIsTheNodesTimeUpToABound() {
        var b = session()
        owe(&b[1], sentAt: t0, allowance: .seconds(3))
        b[1].owed.largeWriteBegan(at: t0)
        #expect(deadlines.check(b, lead: 0, probedAt: nil, now: t0 + .seconds(10)).fail.isEmpty)
        // A follower that stops reading altogether is still failed.
        #expect(deadlines.check(b, lead: 0, probedAt: nil, now: t0 + .seconds(30)).fail == [1])
    }

    @Test func theLastLiveBackendIsNeverFailed() {
        var b = session(2)
        owe(&b[1], sentAt: t0, allowance: .seconds(3))
        b[0].dying = true
        #expect(deadlines.check(b, lead: 0, probedAt: nil, now: t0 + .seconds(60)).fail.isEmpty)
        #expect(deadlines.nextCheck(b, lead: 0, probedAt: nil) == nil)
        // Of two late followers with a live lead, both go: the lead carries on.
        var c = session()
        owe(&c[1], sentAt: t0, allowance: .seconds(3))
        owe(&c[2], sentAt: t0, allowance: .seconds(3))
        #expect(deadlines.check(c, lead: 0, probedAt: nil, now: t0 + .seconds(9)).fail == [1, 2])
    }

    @Test func aSilentLeadIsProbedNotFailed() {
        var b = session()
        owe(&b[0], sentAt: t0, allowance: nil)
        #expect(deadlines.nextCheck(b, lead: 0, probedAt: nil) == t0 + .milliseconds(1500))
        let early = deadlines.check(b, lead: 0, probedAt: nil, now: t0 + .seconds(1))
        #expect(early == FollowerDeadlines.Check())
        let due = deadlines.check(b, lead: 0, probedAt: nil, now: t0 + .seconds(2))
        #expect(due.fail.isEmpty && due.probeLead == .seconds(2))
        // Probed at 2 s: the next probe half a timeout later, not at once again.
        #expect(deadlines.nextCheck(b, lead: 0, probedAt: t0 + .seconds(2)) == t0 + .milliseconds(3500))
        #expect(deadlines.check(b, lead: 0, probedAt: t0 + .seconds(2), now: t0 + .seconds(3)).probeLead == nil)
        // With no other live backend there is nothing to probe it for.
        var alone = session(1)
        owe(&alone[0], sentAt: t0, allowance: nil)
        #expect(deadlines.nextCheck(alone, lead: 0, probedAt: nil) == nil)
    }

    @Test func theEarliestOfDeadlinesAndProbeIsWhenToLookNext() {
        var b = session()
        owe(&b[0], sentAt: t0, allowance: nil)
        owe(&b[1], sentAt: t0, allowance: .seconds(1))
        #expect(deadlines.nextCheck(b, lead: 0, probedAt: nil) == t0 + .seconds(1))
        let check = deadlines.check(b, lead: 0, probedAt: nil, now: t0 + .seconds(2))
        #expect(check.fail == [1] && check.probeLead == .seconds(2))
    }
}

/// A deadline check that runs late (the node's event loop was busy with a large message) reads the
/// replies that came meanwhile before it fails anyone, but not for ever.
@Suite struct LateDeadlineCheckTests {
    let deadlines = FollowerDeadlines(followerTimeout: .seconds(3))
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    @Test func aCheckOnTimeDecidesAtOnce() {
        #expect(deadlines.recheck(due: t0, now: t0 + .milliseconds(5), deferringSince: nil) == nil)
        #expect(deadlines.recheck(due: t0, now: t0 + FollowerDeadlines.lateCheck, deferringSince: nil) == nil)
    }

    @Test func aLateCheckLooksAgainOnceTheRepliesAreRead() {
        let now = t0 + .seconds(2)
        #expect(deadlines.recheck(due: t0, now: now, deferringSince: nil) == now + .milliseconds(20))
        // Still late a second after the first deferral: put off again.
        #expect(deadlines.recheck(due: now, now: now + .seconds(1), deferringSince: now) == now + .seconds(1) + .milliseconds(20))
    }

    @Test func aNodeBusyAllTheTimeStillDecidesAfterTheFollowerTimeout() {
        let since = t0
        #expect(deadlines.recheck(due: t0 + .seconds(3), now: t0 + .seconds(3) + .seconds(1), deferringSince: since) == nil)
    }
}
