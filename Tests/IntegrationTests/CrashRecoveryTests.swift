import Foundation
import LocalCluster
import Testing
import TestSupport

/// pgchorusd killed inside the commit protocol: after a restart no pgchorus prepared transaction
/// is left and every backend agrees with the decision.
@Suite struct CrashRecoveryTests {
    struct Daemon {
        let process = Process()

        init(config: String, hook: String?) throws {
            process.executableURL = URL(fileURLWithPath: DaemonTests.binary("pgchorusd"))
            process.arguments = ["--config", config, "--log-level", "error"]
            var env = ProcessInfo.processInfo.environment
            env["PGCHORUS_TEST_HOOK"] = hook
            process.environment = env
            try process.run()
        }

        func waitUntilServing(port: Int) async throws -> Bool {
            for _ in 0..<150 {
                guard process.isRunning else { return false }
                let out = try Clients.psql("host=127.0.0.1 port=\(port) user=postgres dbname=postgres", ["-At", "-c", "select 1"])
                if out.exitCode == 0 { return true }
                try await Task.sleep(for: .milliseconds(100))
            }
            return false
        }

        func waitForExit() async throws -> Int32? {
            for _ in 0..<150 where process.isRunning { try await Task.sleep(for: .milliseconds(100)) }
            return process.isRunning ? nil : process.terminationStatus
        }

        func stop() {
            if process.isRunning { process.terminate() }
            for _ in 0..<100 where process.isRunning { usleep(50_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
    }

    /// Writes the configuration of one node (id `node`) in front of `servers`, listening on `port`; its
    /// state and admin socket in `dir`.
    static func writeNodeConfig(_ config: String, node: String, port: Int, servers: [LocalPostgresServer]) throws {
        try "[node]\nid = \"\(node)\"\nstate_directory = \"state\"\n[admin]\nsocket = \"admin.sock\"\n[proxy]\nlisten_address = \"127.0.0.1\"\nlisten_port = \(port)\n\n\(backendsTOML(servers))"
            .write(toFile: config, atomically: true, encoding: .utf8)
    }

    @Test(arguments: [
        ("exit-after-prepare", "0", [1, 1, 1], false), ("exit-after-first-commit-prepared", "1", [0, 1, 1], false),
        ("exit-after-prepare", "0", [1, 1, 1], true), ("exit-after-first-commit-prepared", "1", [0, 1, 1], true),
    ])
    func aNodeKilledInsideTheCommitLeavesNothingInDoubtAfterRestart(hook: String, rowsAfter: String, preparedAfterCrash: [Int], autocommit: Bool) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pgchorus-crash-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await withPostgresServers(count: 3) { servers in
            let port = try FreePort.pick()
            let config = "\(dir)/pgchorus.toml"
            try Self.writeNodeConfig(config, node: "crashy", port: port, servers: servers)
            let conn = "host=127.0.0.1 port=\(port) user=postgres dbname=postgres"

            let first = try Daemon(config: config, hook: hook)
            defer { first.stop() }
            #expect(try await first.waitUntilServing(port: port))
            #expect(try Clients.psql(conn, ["-c", "create table t (id int)"]).exitCode == 0)
            // An explicit transaction, or an autocommit write (wrapped and voted the same way).
            let commit = try Clients.psql(conn, autocommit ? ["-c", "insert into t values (1)"] : ["-c", "begin", "-c", "insert into t values (1)", "-c", "commit"])
            #expect(commit.exitCode != 0, "the client must not get an acknowledgement: \(commit.report)")
            #expect(try await first.waitForExit() == 75)
            #expect(try servers.map { try Consistency.preparedCount($0) } == preparedAfterCrash)

            let second = try Daemon(config: config, hook: nil)
            defer { second.stop() }
            #expect(try await second.waitUntilServing(port: port))
            for s in servers {
                #expect(try Consistency.preparedCount(s) == 0)
                #expect(try s.psql("select count(*) from t") == rowsAfter)
            }
            let through = try Clients.psql(conn, ["-At", "-c", "select count(*) from t"])
            #expect(through.stdoutLines.last == rowsAfter)
        }
    }
}
