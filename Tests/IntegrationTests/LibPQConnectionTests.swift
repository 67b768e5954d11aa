import LocalCluster
import State
import Testing

/// `LibPQConnection`'s prepared statements (the commit order's probe runs one every fraction of a
/// millisecond) against real servers: prepared once, run with new parameters each time, asked of two
/// servers at once, errors with their SQLSTATE and the connection usable afterwards.
@Suite struct LibPQConnectionTests {
    static let sql = "SELECT g, g * 2 FROM generate_series(1, $1::int) g WHERE g <> ALL($2::int[]) ORDER BY g"

    @Test func aPreparedStatementRunsAgainWithNewParametersAndTwoServersAreAskedAtOnce() async throws {
        try await withPostgresServers(count: 2) { servers in
            let a = try LibPQConnection(servers[0].connectionString(), target: servers[0].name)
            let b = try LibPQConnection(servers[1].connectionString(), target: servers[1].name)
            let first = try a.preparedQuery("t_rows", Self.sql, ["3", "{}"], timeout: 5)
            #expect(first == [["1", "2"], ["2", "4"], ["3", "6"]])
            // The second run reuses the statement prepared on `a` (preparing it again would fail with 42P05).
            let second = try a.preparedQuery("t_rows", Self.sql, ["4", "{2,3}"], timeout: 5)
            #expect(second == [["1", "2"], ["4", "8"]])
            let prepared = try a.query("SELECT count(*) FROM pg_prepared_statements WHERE name = 't_rows'")
            #expect(prepared == [["1"]])

            // Both servers asked before either answer is read.
            try a.sendPrepared("t_rows", Self.sql, ["2", "{1}"], timeout: 5)
            try b.sendPrepared("t_rows", Self.sql, ["1", "{}"], timeout: 5)
            let fromB = try b.results(timeout: 5)
            let fromA = try a.results(timeout: 5)
            #expect(fromA == [["2", "4"]])
            #expect(fromB == [["1", "2"]])
        }
    }

    @Test func aFailingRunThrowsItsSQLStateAndTheStatementStaysUsable() async throws {
        try await withPostgresServers(count: 1) { servers in
            let c = try LibPQConnection(servers[0].connectionString(), target: servers[0].name)
            let sql = "SELECT 10 / $1::int"
            var state: String?
            do {
                _ = try c.preparedQuery("t_div", sql, ["0"], timeout: 5)
            } catch let failure as LibPQConnection.Failure {
                state = failure.sqlState
            }
            #expect(state == "22012")
            let rows = try c.preparedQuery("t_div", sql, ["5"], timeout: 5)
            #expect(rows == [["2"]])
        }
    }
}
