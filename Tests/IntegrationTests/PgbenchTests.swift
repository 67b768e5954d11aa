import LocalCluster
import Testing
import TestSupport

/// pgbench through the proxy in its three query modes, checked by transaction counts rather than speed.
@Suite struct PgbenchTests {
    /// One backend for all steps: the history rows of the three runs add up on it.
    @Test func initialisesAndRunsInSimpleExtendedAndPreparedModesWithoutFailures() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let port = proxy.port
                let initialise = try await runBlocking { try Clients.pgbench(port: port, ["-i", "-s", "1", "-q"]) }
                #expect(initialise.exitCode == 0, "\(initialise.report)")
                #expect(initialise.stderr.contains("done in"), "\(initialise.report)")
                #expect(try servers[0].psql("select count(*) from pgbench_accounts") == "100000")

                for mode in ["simple", "extended", "prepared"] {
                    // -n: without it pgbench truncates pgbench_history before each run.
                    let run = try await runBlocking { try Clients.pgbench(port: port, ["-M", mode, "-c", "4", "-j", "2", "-t", "100", "-n"]) }
                    #expect(run.exitCode == 0, "mode \(mode): \(run.report)")
                    #expect(run.stdout.contains("query mode: \(mode)"), "mode \(mode): \(run.report)")
                    #expect(run.stdout.contains("number of transactions actually processed: 400/400"), "mode \(mode): \(run.report)")
                    #expect(run.stdout.contains("number of failed transactions: 0"), "mode \(mode): \(run.report)")
                }

                #expect(try servers[0].psql("select count(*) from pgbench_history") == "1200")
                // Every transaction moved the same delta through accounts, tellers and branches.
                let sums = try servers[0].psql("select (select sum(abalance) from pgbench_accounts) = (select sum(delta) from pgbench_history) and (select sum(tbalance) from pgbench_tellers) = (select sum(delta) from pgbench_history) and (select sum(bbalance) from pgbench_branches) = (select sum(delta) from pgbench_history)")
                #expect(sums == "t")
            }
        }
    }
}
