import Foundation
import LocalCluster
import Testing
import TestSupport

/// The shipped executables: `pgchorus config check` and `pgchorusd` run as a real process.
@Suite struct DaemonTests {
    static func binary(_ name: String, file: StaticString = #filePath) -> String {
        let root = URL(fileURLWithPath: "\(file)").deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/\(name)").path
    }

    func scratch() throws -> String {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("pgchorus-daemon-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    @Test func configCheckAcceptsAGoodFileAndNamesLineAndKeyOfABadOne() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = "\(dir)/good.toml"
        try "[proxy]\nlisten_address = \"127.0.0.1\"\nlisten_port = 6432\n\n[[backends]]\nid = \"db1\"\nhost = \"127.0.0.1\"\nport = 5433\n"
            .write(toFile: good, atomically: true, encoding: .utf8)
        let ok = try CommandRunner.run(Self.binary("pgchorus"), ["config", "check", good], timeout: .seconds(30))
        #expect(ok.exitCode == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("\(good): OK"))
        #expect(ok.stdout.contains("1 backend(s): db1 (127.0.0.1:5433)"))

        let bad = "\(dir)/bad.toml"
        try "[proxy]\nlisten_address = \"127.0.0.1\"\nlisten_port = \"6432\"\n\n[[backends]]\nid = \"db1\"\nhost = \"127.0.0.1\"\n"
            .write(toFile: bad, atomically: true, encoding: .utf8)
        let no = try CommandRunner.run(Self.binary("pgchorus"), ["config", "check", bad], timeout: .seconds(30))
        #expect(no.exitCode == 1)
        #expect(no.stderr.contains("\(bad):3: key \"proxy.listen_port\": expected an integer, found a string"), "\(no.stderr)")

        let missing = try CommandRunner.run(Self.binary("pgchorus"), ["config", "check", "\(dir)/none.toml"], timeout: .seconds(30))
        #expect(missing.exitCode == 1)
        #expect(missing.stderr.contains("none.toml: cannot read the configuration file"), "\(missing.stderr)")

        let daemon = try CommandRunner.run(Self.binary("pgchorusd"), ["--config", bad], timeout: .seconds(30))
        #expect(daemon.exitCode == 2)
        #expect(daemon.stderr.contains("\(bad):3: key \"proxy.listen_port\""), "\(daemon.stderr)")
    }

    @Test func daemonServesPsqlAndStopsOnSIGTERM() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await withPostgresServers(count: 1) { servers in
            let port = try FreePort.pick()
            let config = "\(dir)/pgchorus.toml"
            try "[node]\nstate_directory = \"state\"\n[admin]\nsocket = \"admin.sock\"\n[proxy]\nlisten_address = \"127.0.0.1\"\nlisten_port = \(port)\n\n\(backendsTOML(servers))"
                .write(toFile: config, atomically: true, encoding: .utf8)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Self.binary("pgchorusd"))
            process.arguments = ["--config", config, "--log-level", "warning"]
            try process.run()
            defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
            var out: CommandOutput?
            for _ in 0..<400 {
                let attempt = try Clients.psql("host=127.0.0.1 port=\(port) user=postgres dbname=postgres", ["-A", "-t", "-c", "select 6 * 7"])
                if attempt.exitCode == 0 { out = attempt; break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(out?.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "42")
            process.terminate()
            for _ in 0..<100 where process.isRunning { try await Task.sleep(for: .milliseconds(100)) }
            #expect(!process.isRunning)
            #expect(process.terminationStatus == 0)
        }
    }

    @Test func aBackendWithoutPreparedTransactionsIsRefusedAtStartWithAClearReason() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await withPostgresServers(count: 1) { servers in
            let noPrepared = try LocalPostgresServer.start(options: PostgresServerOptions(name: "db2", maxPreparedTransactions: 0))
            defer { noPrepared.remove() }
            let port = try FreePort.pick()
            let config = "\(dir)/pgchorus.toml"
            try "[node]\nstate_directory = \"state\"\n[admin]\nsocket = \"admin.sock\"\n[proxy]\nlisten_address = \"127.0.0.1\"\nlisten_port = \(port)\n\n\(backendsTOML(servers + [noPrepared]))"
                .write(toFile: config, atomically: true, encoding: .utf8)
            let log = "\(dir)/daemon.log"
            FileManager.default.createFile(atPath: log, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Self.binary("pgchorusd"))
            process.arguments = ["--config", config, "--log-level", "error"]
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            try process.run()
            defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
            var ok = false
            for _ in 0..<400 {
                if try Clients.psql("host=127.0.0.1 port=\(port) user=postgres dbname=postgres", ["-c", "create table t (v int)"]).exitCode == 0 { ok = true; break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(ok)
            #expect(try servers[0].psql("select count(*) from pg_tables where tablename = 't'") == "1")
            #expect(try noPrepared.psql("select count(*) from pg_tables where tablename = 't'") == "0")
            process.terminate()
            for _ in 0..<100 where process.isRunning { try await Task.sleep(for: .milliseconds(100)) }
            let text = try String(contentsOfFile: log, encoding: .utf8)
            #expect(text.contains("max_prepared_transactions is 0 on db2"), "\(text)")
        }
    }
}
