import LocalCluster
import Testing
import TestSupport
import Wire

/// psql, the client people use first, through the proxy: output, scripts, COPY and errors.
@Suite struct PsqlTests {
    func psql(_ proxy: RunningProxy, database: String = "postgres", _ arguments: [String], input: String? = nil) async throws -> CommandOutput {
        let connection = proxy.connectionString(database: database)
        return try await runBlocking { try Clients.psql(connection, arguments, input: input) }
    }

    @Test func singleAndMultiStatementCommandsPrintExactlyWhatTheBackendWouldPrint() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let single = try await psql(proxy, ["-c", "select 1 as a, 'x' as b"])
                #expect(single.exitCode == 0, "\(single.report)")
                #expect(single.stdout == " a | b \n---+---\n 1 | x\n(1 row)\n\n", "\(single.report)")

                let multi = try await psql(proxy, ["-A", "-t", "-c", "select 1; select 2"])
                #expect(multi.exitCode == 0, "\(multi.report)")
                #expect(multi.stdout == "1\n2\n", "\(multi.report)")

                // The same commands straight to the backend print the same bytes.
                let direct = try await runBlocking { try Clients.psql(servers[0].connectionString(), ["-c", "select 1 as a, 'x' as b"]) }
                #expect(direct.stdout == single.stdout)
            }
        }
    }

    @Test func scriptWithCopyInAndOutLeavesExactlyTheRowsOnTheBackend() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let script = """
                create table t (id int primary key, name text);
                \\copy t from stdin
                1\tone
                2\ttwo words
                3\t\\N
                \\.
                \\copy t to stdout

                """
                let out = try await psql(proxy, ["-q", "-v", "ON_ERROR_STOP=1"], input: script)
                #expect(out.exitCode == 0, "\(out.report)")
                #expect(out.stdout == "1\tone\n2\ttwo words\n3\t\\N\n", "\(out.report)")

                let rows = try servers[0].psql("select id, coalesce(name, '<null>') from t order by id")
                #expect(rows == "1|one\n2|two words\n3|<null>")
            }
        }
    }

    @Test func errorsExitWithCodeOneAndTheSessionGoesOn() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let failed = try await psql(proxy, ["-c", "select 1/0"])
                #expect(failed.exitCode == 1, "\(failed.report)")
                #expect(failed.stderr.contains("ERROR:  division by zero"), "\(failed.report)")

                let script = """
                select 1/0;
                select 'after' as x;

                """
                let goesOn = try await psql(proxy, ["-A", "-t", "-v", "ON_ERROR_STOP=0"], input: script)
                #expect(goesOn.exitCode == 0, "\(goesOn.report)")
                #expect(goesOn.stderr.contains("division by zero"), "\(goesOn.report)")
                #expect(goesOn.stdout == "after\n", "\(goesOn.report)")

                let verbose = try await psql(proxy, ["-A", "-t"], input: "\\set VERBOSITY verbose\nselect 1/0;\n")
                #expect(verbose.stderr.contains("ERROR:  22012: division by zero"), "\(verbose.report)")
            }
        }
    }

    @Test func unknownDatabaseIsRefusedWithTheBackendsMessageAnd3D000() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let out = try await psql(proxy, database: "nope", ["-c", "select 1"])
                #expect(out.exitCode == 2, "\(out.report)")
                #expect(out.stderr.contains("database \"nope\" does not exist"), "\(out.report)")

                let client = try RawPostgresClient(port: proxy.port)
                let refused = try client.startup(database: "nope")
                #expect(refused.compactMap(\.errorState) == ["3D000"], "\(refused)")
            }
        }
    }

    @Test func backslashCReconnectsToAnotherDatabase() async throws {
        try await withPostgresServers(count: 1) { servers in
            _ = try servers[0].psql("create database other")
            try await withProxy(backends: servers) { proxy in
                let script = """
                select current_database();
                \\c other
                select current_database();
                \\c postgres
                select current_database();

                """
                let out = try await psql(proxy, ["-A", "-t", "-v", "ON_ERROR_STOP=1"], input: script)
                #expect(out.exitCode == 0, "\(out.report)")
                #expect(out.stdoutLines == [
                    "postgres",
                    "You are now connected to database \"other\" as user \"postgres\".",
                    "other",
                    "You are now connected to database \"postgres\" as user \"postgres\".",
                    "postgres",
                ], "\(out.report)")
            }
        }
    }

    @Test func copyFromStdinWithABadRowFailsAndLeavesTheTableEmpty() async throws {
        try await withPostgresServers(count: 1) { servers in
            _ = try servers[0].psql("create table n (i int)")
            try await withProxy(backends: servers) { proxy in
                let script = """
                copy n from stdin;
                1
                x
                3
                \\.
                select count(*) from n;

                """
                let out = try await psql(proxy, ["-A", "-t", "-v", "ON_ERROR_STOP=0"], input: script)
                #expect(out.stderr.contains("invalid input syntax for type integer: \"x\""), "\(out.report)")
                // The session survived the failed COPY and answers the next statement.
                #expect(out.stdout == "0\n", "\(out.report)")
                #expect(try servers[0].psql("select count(*) from n") == "0")
            }
        }
    }

    @Test func copyToStdoutOfTenThousandRowsArrivesComplete() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let out = try await psql(proxy, ["-q", "-c", "copy (select g, md5(g::text) from generate_series(1, 10000) g) to stdout"])
                #expect(out.exitCode == 0, "\(out.stderr)")
                let lines = out.stdoutLines
                #expect(lines.count == 10000)
                #expect(lines.first == "1\tc4ca4238a0b923820dcc509a6f75849b")
                #expect(lines.last == "10000\tb7a782741f667201b54880c925faec4b")
                #expect(Set(lines.map { $0.split(separator: "\t")[0] }).count == 10000)
            }
        }
    }
}
