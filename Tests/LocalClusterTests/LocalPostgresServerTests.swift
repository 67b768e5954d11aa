import Foundation
import Glibc
import Synchronization
import Testing

@testable import LocalCluster

/// Real PostgreSQL servers started, queried, crashed, restarted and cleaned up.
@Suite struct LocalPostgresServerTests {
    @Test func twoServersAnswerSurviveAnImmediateStopAndLeaveNothingBehind() async throws {
        let leftovers = try await withPostgresServers(count: 2) { servers in
            #expect(servers.map(\.name) == ["db1", "db2"])
            #expect(servers[0].port != servers[1].port)
            for server in servers {
                #expect(server.host == "127.0.0.1")
                #expect(try server.psql("SHOW max_prepared_transactions") == "10")
                #expect(try server.psql("SHOW port") == String(server.port))
                #expect(try server.psql("SHOW listen_addresses") == "127.0.0.1")
                #expect(try server.psql("SHOW fsync") == "off")
                #expect(try server.psql("SHOW server_version_num").hasPrefix("1"))
            }

            let crashed = servers[0]
            // Committed with synchronous_commit on, so the row is in the WAL before the "crash".
            _ = try crashed.psql("SET synchronous_commit = on; CREATE TABLE survivors (id int); INSERT INTO survivors VALUES (42);")
            try crashed.stop(mode: .immediate)
            #expect(!crashed.isServerRunning())
            let refused = #expect(throws: LocalClusterError.self) { try crashed.psql("SELECT 1") }
            #expect(refused?.kind == .queryFailed)
            #expect(refused?.description.contains("db1") == true)
            try crashed.stop(mode: .immediate)  // idempotent
            #expect(try servers[1].psql("SELECT 1") == "1")

            try crashed.restart()
            #expect(crashed.isServerRunning())
            #expect(try crashed.psql("SELECT id FROM survivors") == "42")
            #expect(try crashed.psql("SHOW port") == String(crashed.port))

            crashed.kill()
            #expect(!crashed.isServerRunning())
            try crashed.restart()
            #expect(try crashed.psql("SELECT count(*) FROM survivors") == "1")

            for server in servers {
                #expect(server.removesDirectoryOnRemove)
                #expect(FileManager.default.fileExists(atPath: server.dataDirectory + "/PG_VERSION"))
            }
            return servers.map { ($0.directory, $0.dataDirectory) }
        }
        for (directory, dataDirectory) in leftovers {
            #expect(!FileManager.default.fileExists(atPath: directory), "\(directory) was not removed")
            #expect(processes(mentioning: dataDirectory).isEmpty, "a postgres process for \(dataDirectory) is still running")
        }
    }

    @Test func serversAreRemovedWhenTheBodyThrows() async throws {
        struct Boom: Error {}
        let seen = Mutex<[String]>([])
        await #expect(throws: Boom.self) {
            try await withPostgresServers(count: 1) { servers in
                seen.withLock { $0 = servers.map(\.dataDirectory) }
                #expect(try servers[0].psql("SELECT 2") == "2")
                throw Boom()
            }
        }
        let dataDirectories = seen.withLock { $0 }
        #expect(dataDirectories.count == 1)
        for dataDirectory in dataDirectories {
            #expect(!FileManager.default.fileExists(atPath: dataDirectory))
            #expect(processes(mentioning: dataDirectory).isEmpty)
        }
    }

    @Test func passwordAuthenticationIsEnforcedOverTCP() async throws {
        let options = PostgresServerOptions(authMethod: "scram-sha-256", superuserPassword: "it's s3cret")
        try await withPostgresServers(count: 1, options: options) { servers in
            let server = servers[0]
            let missing = #expect(throws: LocalClusterError.self) { try server.psql("SELECT 1") }
            #expect(missing?.description.contains("no password supplied") == true, "\(String(describing: missing))")
            let wrong = #expect(throws: LocalClusterError.self) { try server.psql("SELECT 1", password: "wrong") }
            #expect(wrong?.description.contains("password authentication failed") == true, "\(String(describing: wrong))")
            #expect(try server.psql("SELECT current_user", password: "it's s3cret") == "postgres")
            let rules = try server.psql(
                "SELECT type || ' ' || coalesce(address, '-') || ' ' || auth_method FROM pg_hba_file_rules WHERE 'all' = ANY(database) ORDER BY line_number",
                password: "it's s3cret")
            #expect(rules.split(separator: "\n") == ["local - trust", "host 127.0.0.1 scram-sha-256", "host ::1 scram-sha-256"])
            // The password file given to initdb is gone.
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: server.directory).filter { $0.contains("pwfile") }
            #expect(leftovers.isEmpty)
        }
    }

    @Test func aGivenDirectoryIsKeptAndReused() throws {
        let directory = FileManager.default.temporaryDirectory.path + "/pgchorus-kept-" + String(UUID().uuidString.prefix(8))
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try LocalPostgresServer.start(options: PostgresServerOptions(name: "kept"), in: directory)
        defer { first.remove() }
        #expect(!first.removesDirectoryOnRemove)
        #expect(first.directory == directory)
        _ = try first.psql("SET synchronous_commit = on; CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here');")
        first.remove()
        #expect(FileManager.default.fileExists(atPath: directory + "/data/PG_VERSION"))
        #expect(!first.isServerRunning())
        #expect(throws: LocalClusterError.self) { try first.restart() }

        let second = try LocalPostgresServer.start(options: PostgresServerOptions(name: "kept"), in: directory)
        defer { second.remove() }
        #expect(try second.psql("SELECT v FROM kept") == "still here")
        #expect(try second.psql("SHOW port") == String(second.port))
        // Our settings block is rewritten, not appended again.
        let conf = try String(contentsOfFile: directory + "/data/postgresql.conf", encoding: .utf8)
        #expect(conf.components(separatedBy: ServerConfiguration.marker).count == 2)
    }

    @Test func aFailedStartShowsTheServerLogAndCleansUp() throws {
        let name = "broken-" + String(UUID().uuidString.prefix(8))
        let options = PostgresServerOptions(name: name, extraSettings: ["shared_buffers": "plenty"])
        let error = try #require(throws: LocalClusterError.self) { try LocalPostgresServer.start(options: options) }
        #expect(error.kind == .startFailed)
        #expect(error.description.contains("invalid value for parameter \"shared_buffers\""), "\(error)")
        let temp = FileManager.default.temporaryDirectory.path
        for root in Set([temp, "/tmp"]) {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
            #expect(!entries.contains { $0.contains(name) }, "a directory for \(name) was left in \(root)")
        }
    }
    @Test func aTakenPortIsReportedWithTheBindError() throws {
        let listener = try LoopbackListener()
        defer { listener.close() }
        let options = PostgresServerOptions(name: "taken", port: listener.port)
        let error = try #require(throws: LocalClusterError.self) { try LocalPostgresServer.start(options: options) }
        #expect(error.kind == .startFailed)
        #expect(error.description.contains("127.0.0.1:\(listener.port)"))
        #expect(ServerLog.reportsPortTaken(error.description), "\(error)")
    }
}

/// Options are checked before anything is started; binaries are found or explained.
@Suite struct LocalClusterSetupTests {
    @Test func invalidOptionsAreRefusedWithAReason() {
        let cases: [(PostgresServerOptions, String)] = [
            (PostgresServerOptions(authMethod: "scram-sha-256"), "needs a superuserPassword"),
            (PostgresServerOptions(authMethod: "peer"), "authMethod \"peer\""),
            (PostgresServerOptions(port: 70000), "port 70000"),
            (PostgresServerOptions(extraSettings: ["port": "1"]), "managed by LocalCluster"),
            (PostgresServerOptions(extraSettings: ["bad key": "1"]), "not a valid setting name"),
        ]
        for (options, expected) in cases {
            let error = #expect(throws: LocalClusterError.self) { try options.validate() }
            #expect(error?.kind == .invalidOptions)
            #expect(error?.description.contains(expected) == true, "\(String(describing: error)) should mention \(expected)")
        }
    }

    @Test func optionsNeverPrintThePassword() {
        let options = PostgresServerOptions(authMethod: "md5", superuserPassword: "hunter2")
        #expect(!"\(options)".contains("hunter2"))
    }

    @Test func binariesAreFoundOrTheFixIsNamed() throws {
        #expect(try PostgresBinaries.directory().hasSuffix("/bin"))
        let missing = #expect(throws: LocalClusterError.self) {
            try PostgresBinaries.directory(environment: [:], searchRoot: "/nonexistent/postgresql")
        }
        #expect(missing?.description.contains("apt-get install postgresql") == true)
        let badOverride = #expect(throws: LocalClusterError.self) {
            try PostgresBinaries.directory(environment: ["PGCHORUS_PG_BIN": "/nonexistent/bin"], searchRoot: "/usr/lib/postgresql")
        }
        #expect(badOverride?.description.contains("PGCHORUS_PG_BIN") == true)
    }

    @Test func configurationBlockIsRewrittenAndQuoted() {
        let options = PostgresServerOptions(extraSettings: ["application_name": "it's"])
        let settings = ServerConfiguration.settings(options: options, port: 5999, socketDirectory: "/tmp/x")
        let once = ServerConfiguration.postgresqlConf(original: "# initdb\n", settings: settings)
        let twice = ServerConfiguration.postgresqlConf(original: once, settings: settings)
        #expect(once == twice)
        #expect(once.hasPrefix("# initdb\n" + ServerConfiguration.marker))
        #expect(once.contains("port = '5999'\n"))
        #expect(once.contains("unix_socket_directories = '/tmp/x'\n"))
        #expect(once.contains("application_name = 'it''s'\n"))
        #expect(ServerConfiguration.hbaConf(authMethod: "md5").contains("host    all          all   127.0.0.1/32   md5"))
    }
}

/// PIDs whose command line mentions `text` (the postmaster's shows `-D <data directory>`).
private func processes(mentioning text: String) -> [String] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.filter { entry in
        guard entry.allSatisfy(\.isNumber),
              let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline")
        else { return false }
        let commandLine = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
        return commandLine.contains(text)
    }
}

/// A socket listening on 127.0.0.1 on a kernel-chosen port, to occupy a port.
private final class LoopbackListener {
    let fd: Int32
    let port: Int

    init() throws {
        struct SocketError: Error {}
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = fd >= 0 && withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 1) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else {
            if fd >= 0 { _ = Glibc.close(fd) }
            throw SocketError()
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() { _ = Glibc.close(fd) }
}
