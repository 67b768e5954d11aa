@testable import Proxy
import Synchronization
import Testing

/// When a new lead may take statements after its predecessor failed.
@Suite struct LeadHandoverTests {
    final class Grants: Sendable {
        let tickets = Mutex<[Int]>([])
        var all: [Int] { tickets.withLock { $0 } }
        func record(_ ticket: Int) { tickets.withLock { $0.append(ticket) } }
    }

    @Test func nothingOutstandingGrantsAtOnce() {
        let handover = LeadHandover()
        let grants = Grants()
        handover.leadChanged(from: nil, to: "db2")
        let ticket = handover.awaitTurn(lead: "db2", after: "db1") { grants.record($0) }
        #expect(grants.all == [ticket])
    }

    @Test func waitsUntilNoSessionWaitsOnTheFailedLeadAndTheNewLeadHasCaughtUp() {
        let handover = LeadHandover()
        let grants = Grants()
        // Two sessions have statements waiting on db1, their lead; db1 answered two that went on to db2, one to db3.
        handover.leadChanged(from: nil, to: "db1")
        handover.leadChanged(from: nil, to: "db1")
        handover.released(to: "db2")
        handover.released(to: "db2")
        handover.released(to: "db3")
        // The first session to see db1 fail promotes db2 and waits for it.
        let ticket = handover.awaitTurn(lead: "db2", after: "db1") { grants.record($0) }
        handover.leadChanged(from: "db1", to: nil)
        handover.finished(on: "db2")
        #expect(grants.all.isEmpty)
        // The other session releases what db1 answered it before its end came, then stops waiting on db1.
        handover.released(to: "db2")
        handover.leadChanged(from: "db1", to: nil)
        handover.finished(on: "db2")
        // db2 still owes one statement the old lead ordered (what a handover that times out reports).
        #expect(grants.all.isEmpty)
        #expect(handover.outstanding(failed: "db1", lead: "db2").leading == 0)
        #expect(handover.outstanding(failed: "db1", lead: "db2").following == 1)
        handover.finished(on: "db2")
        #expect(grants.all == [ticket])
        // A grant comes once; what db3 still owes is not db2's concern.
        handover.finished(on: "db3")
        #expect(grants.all == [ticket])
    }

    @Test func aCancelledWaitIsNeverGranted() {
        let handover = LeadHandover()
        let grants = Grants()
        handover.released(to: "db2")
        let first = handover.awaitTurn(lead: "db2", after: "db1") { grants.record($0) }
        let second = handover.awaitTurn(lead: "db2", after: "db1") { grants.record($0) }
        handover.cancel(first)
        handover.finished(on: "db2", count: 1)
        #expect(grants.all == [second])
    }
}
