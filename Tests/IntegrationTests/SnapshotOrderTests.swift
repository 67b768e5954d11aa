import Foundation
import LocalCluster
import Testing
import TestSupport

/// One order of commits and statements on every backend (`CommitEpochs`): a statement sees the same
/// committed transactions on each backend, so writes that read rows they do not lock stay identical
/// and plain reads never fail a backend by timing. Three real backends, psycopg2 clients
/// (`Scripts/snapshot_client.py`), then the backends compared directly.
@Suite struct SnapshotOrderTests {
    func run(_ check: String, config: String = "") async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers, config: config) { proxy in
                let out = try await runBlocking {
                    try Clients.pythonScript("snapshot_client.py", [proxy.connectionString(), check], timeout: .seconds(150))
                }
                #expect(out.exitCode == 0, "\(out.report)")
                #expect(out.stdoutLines.last == "PASSED \(check)", "\(out.report)")
                let status = proxy.server.context.registry.snapshot().map { "\($0.backend.id) \($0.status.rawValue): \($0.reason)" }
                #expect(proxy.server.context.registry.online().map(\.id) == ["db1", "db2", "db3"], "\(status)")
                let sums = try Consistency.checksums(servers)
                #expect(Set(sums).count == 1, "\(sums)")
                for s in servers { #expect(try Consistency.preparedCount(s) == 0) }
            }
        }
    }

    /// The repro: `INSERT INTO summary SELECT k, count(*) FROM t` while another session inserts.
    @Test func aWriteThatCountsRowsAnotherSessionCommitsIsIdenticalEverywhere() async throws {
        try await run("summary")
    }

    /// Reads (autocommit and in transactions) while another session commits: nobody is failed.
    @Test func readsDuringCommitsFailNoBackend() async throws {
        try await run("reads")
    }

    /// Transfers on hot rows in transactions (lock waits on prepared transactions) alongside writes that
    /// read the transfers' rows without locking them.
    @Test func hotRowTransactionsAndWritesThatReadThemStayIdentical() async throws {
        try await run("mixed")
    }
}
