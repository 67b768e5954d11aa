import LocalCluster
import Testing
import Wire

/// The row-lock scene of the order's tests (a table `r` holding row 1): `holder` updates that row in a
/// transaction it leaves open; `waiter` opens a transaction and sends `statement` without reading its
/// answer. Returns once `lead` shows a statement starting with `prefix` waiting on a lock (polled off
/// the pool, at most 30 s).
public func waitBehindHeldRow(holder: RawPostgresClient, waiter: RawPostgresClient, statement: String,
                              seenAs prefix: String, on lead: LocalPostgresServer, password: String? = nil) async throws {
    #expect(try holder.query("BEGIN; UPDATE r SET v = 1 WHERE id = 1").allSatisfy { $0.errorState == nil })
    #expect(try waiter.query("BEGIN").allSatisfy { $0.errorState == nil })
    try waiter.send(.query(statement))
    _ = try await runBlocking {
        try eventuallyBlocking(30) {
            try lead.psql("select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like '\(prefix)%'", password: password) == "1"
        }
    }
}
