import LocalCluster
import Testing
import TestSupport

/// Python's psycopg2 through the proxy, by `Scripts/psycopg_client.py` (one subcommand per concern).
@Suite struct PsycopgTests {
    func run(_ check: String, _ proxy: RunningProxy) async throws -> CommandOutput {
        let connection = proxy.connectionString()
        let out = try await runBlocking { try Clients.pythonScript("psycopg_client.py", [connection, check]) }
        #expect(out.exitCode == 0, "\(out.report)")
        #expect(out.stdoutLines.last == "PASSED \(check)", "\(out.report)")
        return out
    }

    /// psycopg 3 (python3-psycopg): server-side parameters, libpq's pipeline mode (`executemany`,
    /// `Connection.pipeline()`, an error inside one), automatic prepared statements and DEALLOCATE ALL,
    /// binary COPY, COPY … TO STDOUT with a parameter, a named cursor, a cancel; then pipelined
    /// transactions beside sessions counting their rows. Every step answers as PostgreSQL does
    /// directly (the script passes against one server too) and the three backends end identical.
    @Test func psycopg3PipelinesAndServerSideParameters() async throws {
        try await runClientCheck("psycopg3_client.py", "pipeline", timeout: .seconds(150))
    }

    @Test func parametersNullByteaNamedCursorAndExecutemany() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let out = try await run("parameters", proxy)
                for line in ["ok parameters 3 x'y", "ok null", "ok bytea 16384 bytes", "ok named cursor 1000 rows in 8 batches", "ok executemany 100 rows"] {
                    #expect(out.stdoutLines.contains(line), "missing \(line): \(out.report)")
                }
                #expect(try servers[0].psql("select count(*), sum(i) from many") == "100|5050")
            }
        }
    }

    @Test func copyExpertInBothDirections() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let out = try await run("copy", proxy)
                #expect(out.stdoutLines.contains("ok copy out 1000 rows identical"), "\(out.report)")
                #expect(try servers[0].psql("select count(*), count(s), min(i), max(i) from copied") == "1000|858|1|1000")
            }
        }
    }

    @Test func largeObjectOfOneMebibyteRoundTrips() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let out = try await run("large-object", proxy)
                #expect(out.stdoutLines.contains("ok large object read back 1048576 bytes"), "\(out.report)")
                let oid = try #require(out.stdoutLines.first { $0.hasPrefix("oid ") }.flatMap { Int($0.dropFirst(4)) }, "\(out.report)")
                #expect(try servers[0].psql("select length(lo_get(\(oid)))") == "1048576")
            }
        }
    }

    @Test func listenNotifyDeliversPayloadsAndTheClientsOwnPid() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let out = try await run("notify", proxy)
                #expect(out.stdoutLines.contains("ok notify from another session: hello"), "\(out.report)")
                #expect(out.stdoutLines.contains("ok self notification pid equals backend pid"), "\(out.report)")
            }
        }
    }

    @Test func cancelStopsARunningQueryAndTheConnectionStaysUsable() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let out = try await run("cancel", proxy)
                #expect(out.stdoutLines.contains("ok cancelled with 57014"), "\(out.report)")
                #expect(out.stdoutLines.contains("ok connection works after cancel"), "\(out.report)")
            }
        }
    }

    @Test func errorInATransactionThenRollbackThenQueryWorks() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let out = try await run("errors", proxy)
                #expect(out.stdoutLines.contains("ok division by zero 22012"), "\(out.report)")
                #expect(out.stdoutLines.contains("ok failed transaction 25P02"), "\(out.report)")
                #expect(out.stdoutLines.contains("ok rollback then query works"), "\(out.report)")
                #expect(try servers[0].psql("select count(*) from e") == "0")
            }
        }
    }
}
