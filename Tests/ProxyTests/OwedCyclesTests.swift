import NIOCore
@testable import Proxy
import Testing
import Wire

/// Which cycles a backend owes and by when (`OwedCycles`), and when the answer of an autocommit write
/// outside the vote may go to the client (`AnswerWhenAll`), with the time as input.
@Suite struct OwedCyclesTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    func cycle(_ seq: Int, at sentAt: NIODeadline, allowance: TimeAmount? = nil, ordered: Bool = false) -> Proxy.Expectation {
        Proxy.Expectation(seq: seq, kind: .client, ordered: ordered, sentAt: sentAt, allowance: allowance)
    }

    @Test func cyclesAreAnsweredOldestFirstAndTheNextCountsFromWhenTheLastFinished() {
        var owed = OwedCycles(since: t0)
        owed.add(cycle(1, at: t0, allowance: .seconds(3)))
        owed.add(cycle(2, at: t0, allowance: .seconds(3)))
        #expect(owed.head?.seq == 1)
        #expect(owed.headDeadline == t0 + .seconds(3))
        let finished = owed.finishHead(at: t0 + .seconds(2))
        #expect(finished?.seq == 1)
        // Cycle 2 was sent at t0 but reached at 2 s: its allowance counts from then.
        #expect(owed.head?.seq == 2 && owed.headDeadline == t0 + .seconds(5))
        let second = owed.finishHead(at: t0 + .seconds(3))
        #expect(second?.seq == 2)
        #expect(owed.isEmpty && owed.headDeadline == nil)
        let none = owed.finishHead(at: t0 + .seconds(4))
        #expect(none == nil)
    }

    @Test func aCycleSentBeforeTheLeadAnsweredHasNoDeadlineUntilItDoes() {
        var owed = OwedCycles(since: t0)
        owed.add(cycle(7, at: t0))
        owed.add(cycle(8, at: t0))
        #expect(owed.headDeadline == nil)
        owed.leadAnswered(7, allowance: .seconds(3))
        #expect(owed.headDeadline == t0 + .seconds(3))
        // Set once: a later answer of the same cycle (a new lead's) does not extend it.
        owed.leadAnswered(7, allowance: .seconds(10))
        #expect(owed.headDeadline == t0 + .seconds(3))
        #expect(owed.cycles[1].allowance == nil)
    }

    @Test func progressRestartsTheClockOnlyWhileSomethingIsOwed() {
        var owed = OwedCycles(since: t0)
        owed.progress(at: t0 + .seconds(5))
        #expect(owed.headSince == t0)
        owed.add(cycle(1, at: t0, allowance: .seconds(3)))
        owed.progress(at: t0 + .seconds(2))
        #expect(owed.headDeadline == t0 + .seconds(5))
    }

    @Test func aLargeWriteHoldsTheDeadlineBackUpToItsBoundThenRestartsIt() {
        var owed = OwedCycles(since: t0)
        owed.add(cycle(1, at: t0, allowance: .seconds(3)))
        owed.largeWriteBegan(at: t0)
        owed.largeWriteBegan(at: t0 + .seconds(1))
        #expect(owed.effectiveDeadline == t0 + OwedCycles.largeWriteBound)
        owed.largeWriteDone(at: t0 + .seconds(8))
        // One of the two is still being written: the bound counts from the first.
        #expect(owed.effectiveDeadline == t0 + OwedCycles.largeWriteBound)
        owed.largeWriteDone(at: t0 + .seconds(9))
        #expect(owed.largeWritesInFlight == 0 && owed.effectiveDeadline == t0 + .seconds(12))
    }

    @Test func droppingEverythingCountsTheCyclesSentInTheLeadsOrder() {
        var owed = OwedCycles(since: t0)
        owed.add(cycle(1, at: t0, ordered: true))
        owed.add(cycle(2, at: t0))
        owed.add(cycle(3, at: t0, ordered: true))
        #expect(owed.owes(2) && !owed.owes(4))
        let ordered = owed.removeAll()
        #expect(ordered == 2)
        #expect(owed.isEmpty && !owed.owes(2))
        let again = owed.removeAll()
        #expect(again == 0)
    }

    @Test func theClientsAnswerWaitsUntilNoBackendOwesTheCycle() {
        var answer = AnswerWhenAll()
        answer.expect(4)
        let ready = PostgresFrame(bytes: ByteBuffer(bytes: [UInt8(ascii: "Z"), 0, 0, 0, 5, UInt8(ascii: "I")]))
        answer.hold(4, frame: ready)
        // The lead finished, its answer is held: the client does not go on yet.
        let goesOn = answer.leadFinished(4)
        #expect(!goesOn)
        var owing: Set<Int> = [4]
        let early = answer.releasable(stillOwed: { owing.contains($0) })
        #expect(early == nil)
        #expect(answer.holdsReady)
        owing = []
        let released = answer.releasable(stillOwed: { owing.contains($0) })
        #expect(released?.seq == 4 && released?.frame.bytes == ready.bytes)
        #expect(!answer.holdsReady && answer.awaiting == 4)
        let other = answer.answered(3)
        let this = answer.answered(4)
        #expect(!other && this && answer.awaiting == nil)
    }

    @Test func anAnswerNotHeldLetsTheClientGoOnWhenTheLeadFinishes() {
        // One backend left, or the lead's ReadyForQuery went out at once: nothing to wait for.
        var answer = AnswerWhenAll()
        answer.expect(9)
        let earlier = answer.leadFinished(8)
        let this = answer.leadFinished(9)
        let held = answer.releasable(stillOwed: { _ in false })
        #expect(!earlier && this && answer.awaiting == nil && held == nil)
    }
}
