import State
import Testing

/// The node's write gate: closing, draining, waking the sessions held at it, and the lease.
@Suite struct WriteGateTests {
    final class Woken: @unchecked Sendable {
        var count = 0
    }

    @Test func drainedOnlyWhenClosedAndNoSessionIsBusy() {
        let gate = WriteGate()
        gate.sessionBusy(true)
        #expect(!gate.drained(id: "r1"))
        gate.close(id: "r1", lease: 30)
        #expect(gate.isClosed)
        #expect(!gate.drained(id: "r1"))
        gate.sessionBusy(false)
        #expect(gate.drained(id: "r1"))
        #expect(!gate.drained(id: "r2"))
        gate.open(id: "r1")
        #expect(!gate.isClosed)
        #expect(!gate.drained(id: "r1"))
    }

    @Test func openingWakesTheWaitersOnce() {
        let gate = WriteGate()
        let woken = Woken()
        #expect(gate.waitForOpening { woken.count += 1 } == nil)
        gate.close(id: "r1", lease: 30)
        let a = gate.waitForOpening { woken.count += 1 }
        let b = gate.waitForOpening { woken.count += 10 }
        #expect(a != nil && b != nil)
        gate.cancelWait(b!)
        gate.open(id: "other")
        #expect(woken.count == 0)
        gate.open(id: "r1")
        #expect(woken.count == 1)
        gate.open()
        #expect(woken.count == 1)
    }

    @Test func theLeaseOpensAGateNobodyOpens() {
        let gate = WriteGate()
        let woken = Woken()
        gate.close(id: "r1", lease: 5)
        _ = gate.waitForOpening { woken.count += 1 }
        gate.expire(now: WallClock.monotonic() + 1)
        #expect(gate.isClosed)
        gate.expire(now: WallClock.monotonic() + 6)
        #expect(!gate.isClosed)
        #expect(woken.count == 1)
    }
}
