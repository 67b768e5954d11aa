@testable import Proxy
import State
import TestSupport
import LocalCluster
import Synchronization
import Foundation
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

    /// DDL through another node (`remoteChanges`): its database's catalog is unknown while the change is
    /// open, a load that began before it is dropped, and one after it ended is kept; other databases
    /// keep theirs; a change whose close is lost ends with its lease.
    @Test func ddlThroughAnotherNodeHoldsTheCatalogUnknownUntilItEnds() throws {
        let ordering = SequenceOrdering()
        let before = ordering.tables(in: "app")
        ordering.store(["orders"], database: "app", generation: before.generation)
        ordering.store(["ledger"], database: "other", generation: ordering.tables(in: "other").generation)
        let loading = ordering.tables(in: "app") // a load starts here …
        ordering.remoteChanges(from: "node2", open: [("c1", ["app"], 30)], closed: [])
        #expect(ordering.tables(in: "app").tables == nil)
        #expect(ordering.remoteChangeOpen(in: "app"))
        #expect(ordering.tables(in: "other").tables == ["ledger"])
        // … and ends while the change is open: dropped (it may have read the catalog before the DDL).
        ordering.store(["orders"], database: "app", generation: loading.generation)
        #expect(ordering.tables(in: "app").tables == nil)
        // Renewed by the next message (a heartbeat listing it): still open, nothing loaded meanwhile.
        ordering.remoteChanges(from: "node2", open: [("c1", ["app"], 30)], closed: [])
        let during = ordering.tables(in: "app")
        ordering.store(["orders"], database: "app", generation: during.generation)
        #expect(ordering.tables(in: "app").tables == nil)
        ordering.remoteChanges(from: "node2", open: [], closed: ["c1"])
        #expect(!ordering.remoteChangeOpen(in: "app"))
        let after = ordering.tables(in: "app")
        #expect(after.tables == nil, "what was loaded before the DDL is stale")
        ordering.store(["orders", "s"], database: "app", generation: after.generation)
        #expect(ordering.tables(in: "app").tables == ["orders", "s"])
        // A change whose close never arrives ends with its lease.
        ordering.remoteChanges(from: "node3", open: [("c2", ["app"], 0.05)], closed: [])
        #expect(ordering.tables(in: "app").tables == nil)
        Thread.sleep(forTimeInterval: 0.1)
        #expect(!ordering.remoteChangeOpen(in: "app"))
        let expired = ordering.tables(in: "app")
        #expect(expired.tables == nil)
        ordering.store(["orders", "s"], database: "app", generation: expired.generation)
        #expect(ordering.tables(in: "app").tables == ["orders", "s"])
        // A peer heard again after it was lost: every catalog is loaded afresh.
        ordering.invalidateAll()
        #expect(ordering.tables(in: "app").tables == nil)
        #expect(ordering.tables(in: "other").tables == nil)
    }

    /// Sessions keep what they read of the catalog while `changes` stays (`knownCatalog`): every change
    /// of what is kept must move it, a question must not, and an answer read while a remote change is
    /// open (its lease may run out unseen) is not lasting.
    @Test func everyChangeOfTheCatalogIsCountedAndOnlyLastingAnswersAreSaidSo() throws {
        let ordering = SequenceOrdering()
        var seen = ordering.changes
        func moved(_ what: Comment) -> Bool {
            let now = ordering.changes
            defer { seen = now }
            return now != seen
        }
        // Nothing kept for the database (one backend): unknown, and lasting.
        #expect(ordering.view(in: "app").view == nil && ordering.view(in: "app").lasting)
        _ = ordering.tables(in: "app")
        _ = ordering.routinesNotify(in: "app")
        #expect(!moved("questions"), "a question counted as a change")
        ordering.store(["orders"], database: "app", generation: 0)
        #expect(moved("store"))
        let loaded = ordering.view(in: "app")
        #expect(loaded.view?.tables == ["orders"] && loaded.lasting)
        _ = ordering.view(in: "app")
        #expect(!moved("questions"))
        ordering.invalidate("app")
        #expect(moved("invalidate"))
        #expect(ordering.view(in: "app").view == nil && ordering.view(in: "app").lasting, "stale, until a load is stored")
        ordering.store(["orders"], database: "app", generation: ordering.tables(in: "app").generation)
        #expect(moved("store"))
        ordering.notifiedAnyway(in: "app")
        #expect(moved("notified anyway"))
        ordering.invalidateAll()
        #expect(moved("invalidate all"))
        ordering.store(["orders"], database: "app", generation: ordering.tables(in: "app").generation)
        #expect(moved("store"))
        // A remote change: counted when it opens; unknown meanwhile, and not lasting.
        ordering.remoteChanges(from: "node2", open: [("c1", ["app"], 0.05)], closed: [])
        #expect(moved("remote change opened"))
        let during = ordering.view(in: "app")
        #expect(during.view == nil && !during.lasting)
        // Its lease runs out: counted when a question finds it so.
        Thread.sleep(forTimeInterval: 0.1)
        #expect(!moved("time alone"))
        let after = ordering.view(in: "app")
        #expect(moved("lease ran out"))
        #expect(after.view == nil && after.lasting, "stale (loaded before the DDL) until a load is stored")
        // Closing a change counts too.
        ordering.remoteChanges(from: "node2", open: [("c2", ["app"], 30)], closed: [])
        #expect(moved("opened"))
        ordering.remoteChanges(from: "node2", open: [], closed: ["c2"])
        #expect(moved("closed"))
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

/// What sets a follower's sequences to the lead's after a sequence-drawing statement ended differently
/// on the backends (`SequenceResync.setvals`).
@Suite struct SequenceResyncTests {
    /// The looks for a lock cycle keep their connection to the lead from one look to the next (one
    /// `pgchorus-sequences` session on the lead after three looks), open another when the lead closed
    /// it (terminated here): the next look still answers; closed when the wait ends.
    @Test func theLooksForALockCycleKeepOneConnectionAndReplaceAClosedOne() async throws {
        try await withPostgresServers(count: 1) { servers in
            let server = servers[0]
            let configuration = try Configuration.parse(text: "[node]\nid = \"t\"\n\n" + backendsTOML(servers), file: "test.toml")
            let lead = configuration.backends[0]
            let connections = SequenceResync.LookConnections()
            let lookers = "select count(*) from pg_stat_activity where application_name = 'pgchorus-sequences'"
            for _ in 0..<3 {
                // A holder that waits for nobody: the look answers false.
                let answer = SequenceResync.holderWaits(for: 1, holder: 2, lead: lead, database: "postgres",
                                                        configuration: configuration, connections: connections)
                #expect((try? answer.get()) == false, "\(answer)")
            }
            #expect(connections.count == 1)
            #expect(try server.psql(lookers) == "1")
            #expect(try server.psql("select count(pg_terminate_backend(pid)) from pg_stat_activity where application_name = 'pgchorus-sequences'") == "1")
            // (Once its process has gone, its FATAL and end of file have reached the kept connection,
            // which the next look finds closed; a look already on its way would fail, and the one a
            // second later reconnect.)
            #expect(try await eventually(10) { try server.psql(lookers) == "0" })
            let after = SequenceResync.holderWaits(for: 1, holder: 2, lead: lead, database: "postgres",
                                                   configuration: configuration, connections: connections)
            #expect((try? after.get()) == false, "\(after)")
            #expect(try server.psql(lookers) == "1")
            // The wait ended: closed, nothing of the node's left in the database.
            connections.close(SequenceResync.lookKey(lead: lead, database: "postgres"))
            #expect(connections.count == 0)
            #expect(try await eventually(10) { try server.psql(lookers) == "0" })
        }
    }

    @Test func onlyTheSequencesThatDifferAreSetAndANeverDrawnOneGoesBackToItsStart() {
        let lead: [String: SequenceResync.Value] = [
            "public.s_id_seq": .init(last: "7", start: "1"),
            "public.same": .init(last: "3", start: "1"),
            "\"Odd\".\"it's\"": .init(last: nil, start: "100"),
            "public.only_on_lead": .init(last: "2", start: "1"),
        ]
        let follower: [String: SequenceResync.Value] = [
            "public.s_id_seq": .init(last: "6", start: "1"),
            "public.same": .init(last: "3", start: "1"),
            "\"Odd\".\"it's\"": .init(last: "101", start: "100"),
        ]
        let set = SequenceResync.setvals(wanted: lead, have: follower)
        #expect(set.map(\.name) == ["\"Odd\".\"it's\"", "public.s_id_seq"])
        #expect(set.map(\.sql) == [
            "SELECT pg_catalog.setval('\"Odd\".\"it''s\"'::regclass, 100, false)",
            "SELECT pg_catalog.setval('public.s_id_seq'::regclass, 7, true)",
        ])
        #expect(SequenceResync.setvals(wanted: lead, have: lead).isEmpty)
    }

    /// The holders' numbers of the cluster-wide lock: a holder that never gave its number back shows
    /// in the next one's, which then realigns them with its release.
    @Test func aHolderThatNeverReleasedItsNumberShowsInTheNextOnes() {
        #expect(ClusterOrderMarks.cleanlyReleased(taken: 1, released: nil))
        #expect(ClusterOrderMarks.cleanlyReleased(taken: 8, released: 7))
        #expect(!ClusterOrderMarks.cleanlyReleased(taken: 9, released: 7))
        #expect(!ClusterOrderMarks.cleanlyReleased(taken: 2, released: nil))
        #expect(ClusterOrderMarks.releaseSQL(nil, realign: false) == "")
        let writable = "pg_catalog.current_setting('transaction_read_only') = 'off'"
        #expect(ClusterOrderMarks.releaseSQL(8, realign: false)
            == "SELECT CASE WHEN \(writable) THEN pg_catalog.nextval(pg_catalog.to_regclass('pgchorus.order_released')) END; ")
        #expect(ClusterOrderMarks.releaseSQL(9, realign: true)
            == "SELECT CASE WHEN \(writable) THEN pg_catalog.setval(pg_catalog.to_regclass('pgchorus.order_released'), 9) END; ")
    }
}
