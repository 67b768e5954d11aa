@testable import Proxy
import Synchronization
import Testing

/// The node-wide catalog of tables that draw sequence values, and the order itself.
@Suite struct SequenceOrderingTests {
    @Test func aCatalogLoadedBeforeAnyDDLIsKept() {
        let ordering = SequenceOrdering()
        let start = ordering.tables(in: "app")
        #expect(start.tables == nil)
        ordering.store(["orders"], database: "app", generation: start.generation)
        // Without this, every INSERT in a database that never saw DDL waited for the order
        // and reloaded the catalog.
        #expect(ordering.tables(in: "app").tables == ["orders"])
        #expect(ordering.tables(in: "other").tables == nil)
    }

    @Test func ddlMakesTheCatalogStaleAndDropsALoadThatStartedBefore() {
        let ordering = SequenceOrdering()
        let before = ordering.tables(in: "app")
        ordering.store(["orders"], database: "app", generation: before.generation)
        ordering.invalidate("app")
        let stale = ordering.tables(in: "app")
        #expect(stale.tables == nil)
        // A load that began before the DDL finished after it: dropped.
        ordering.store(["orders"], database: "app", generation: before.generation)
        #expect(ordering.tables(in: "app").tables == nil)
        ordering.store(["orders", "invoices"], database: "app", generation: stale.generation)
        #expect(ordering.tables(in: "app").tables == ["orders", "invoices"])
    }

    @Test func theOrderIsGrantedOneHolderAtATimeInArrivalOrder() {
        let ordering = SequenceOrdering()
        let granted = Mutex<[Int]>([])
        let first = ordering.acquire { granted.withLock { $0.append(1) } }
        let second = ordering.acquire { granted.withLock { $0.append(2) } }
        let third = ordering.acquire { granted.withLock { $0.append(3) } }
        #expect(granted.withLock { $0 } == [1])
        ordering.release(first)
        #expect(granted.withLock { $0 } == [1, 2])
        ordering.release(second)
        ordering.release(third)
        #expect(granted.withLock { $0 } == [1, 2, 3])
    }
}
