import ArgumentParser
import Foundation
import LocalCluster
import State
import Synchronization
import UnixSignals

/// `pgchorus demo`: real PostgreSQL backends and pgchorusd in front of them, in the foreground.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a local demo cluster: N real PostgreSQL backends and pgchorusd in front, ready for psql.",
        discussion: "Backends listen on 127.0.0.1 ports P+1…P+N, pgchorusd on 127.0.0.1:P. Ctrl-C (or SIGTERM) stops everything.")

    @Option(help: "Number of PostgreSQL backends.")
    var backends: Int = 3

    @Option(help: "Number of clustering nodes.")
    var nodes: Int = 1

    @Option(help: "Port of pgchorusd; backends use the next N ports.")
    var port: Int = 6432

    @Option(help: "Directory for the backends' data and the generated configuration (kept afterwards). Default: a temporary directory, removed afterwards.")
    var dir: String?

    func validate() throws {
        guard (1...9).contains(backends) else { throw ValidationError("--backends must be between 1 and 9") }
        guard (1...9).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 9") }
        guard nodes == 1 else {
            throw ValidationError("--nodes > 1 needs the state service among nodes, which this version does not have yet; run with --nodes 1")
        }
        guard (1024...(65535 - backends)).contains(port) else { throw ValidationError("--port must leave room for the backend ports (1024…\(65535 - backends))") }
    }

    func run() async throws {
        // Trap the signals before anything starts, so Ctrl-C at any moment still cleans up.
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        let stopRequest = StopRequest()
        let watcher = Task { [signals] in
            for await signal in signals {
                stopRequest.withLock { $0 = "received \(signal)" }
            }
        }
        defer { watcher.cancel() }
        struct Interrupted: Error {}
        func checkStop() throws { if stopRequest.withLock({ $0 }) != nil { throw Interrupted() } }
        let directory: String
        let temporary = dir == nil
        if let dir {
            directory = URL(fileURLWithPath: dir).standardizedFileURL.path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } else {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("pgchorus-demo-\(getpid())").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        chmod(directory, 0o755)
        var servers: [LocalPostgresServer] = []
        var daemon: Process?
        func cleanUp() {
            if let daemon, daemon.isRunning {
                daemon.terminate()
                for _ in 0..<100 where daemon.isRunning { usleep(100_000) }
                if daemon.isRunning { kill(daemon.processIdentifier, SIGKILL) }
            }
            for s in servers.reversed() {
                say("stopping backend \(s.name) (port \(s.port))")
                s.remove()
            }
            if temporary { try? FileManager.default.removeItem(atPath: directory) }
        }
        do {
            for i in 1...backends {
                let options = PostgresServerOptions(name: "db\(i)", port: port + i, maxPreparedTransactions: 64, maxConnections: 200)
                try checkStop()
                say("starting backend db\(i): PostgreSQL on 127.0.0.1:\(port + i), data in \(directory)/db\(i)")
                servers.append(try LocalPostgresServer.start(options: options, in: "\(directory)/db\(i)"))
            }
            try checkStop()
            let configPath = "\(directory)/pgchorus.toml"
            try Self.configuration(port: port, backends: servers).write(toFile: configPath, atomically: true, encoding: .utf8)
            let daemonPath = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
                .deletingLastPathComponent().appendingPathComponent("pgchorusd").path
            guard FileManager.default.isExecutableFile(atPath: daemonPath) else {
                throw DemoError("pgchorusd not found next to this pgchorus at \(daemonPath)")
            }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: daemonPath)
            process.arguments = ["--config", configPath]
            try process.run()
            daemon = process
            guard Self.waitForPort(port, while: { process.isRunning && stopRequest.withLock({ $0 }) == nil }) else {
                try checkStop()
                throw DemoError("pgchorusd did not start listening on 127.0.0.1:\(port) (see its messages above)")
            }
            say("""

            pgchorus demo ready: pgchorusd on 127.0.0.1:\(port) in front of \(servers.count) PostgreSQL backend(s) (\(servers.map { "\($0.name) :\($0.port)" }.joined(separator: ", "))).
            connect:  psql -h 127.0.0.1 -p \(port) -U postgres
            url:      postgresql://postgres@127.0.0.1:\(port)/postgres
            config:   \(configPath)
            Press Ctrl-C to stop everything.

            """)
            // Wait for SIGINT/SIGTERM, or for the daemon to exit on its own.
            var reason = ""
            while reason.isEmpty {
                if let r = stopRequest.withLock({ $0 }) {
                    reason = r
                } else if !process.isRunning {
                    reason = "pgchorusd exited with status \(process.terminationStatus)"
                } else {
                    try? await Task.sleep(for: .milliseconds(200))
                }
            }
            say("\n\(reason); stopping the demo")
            cleanUp()
            say("demo stopped\(temporary ? "" : "; data kept in \(directory)")")
        } catch is Interrupted {
            say("\n\(stopRequest.withLock { $0 } ?? "interrupted"); stopping the demo")
            cleanUp()
            throw ExitCode(130)
        } catch {
            printError("pgchorus demo: \(error)")
            cleanUp()
            throw ExitCode(1)
        }
    }

    static func configuration(port: Int, backends: [LocalPostgresServer]) -> String {
        var text = """
        # Generated by `pgchorus demo`. Every key is described in docs/configuration.md.
        [node]
        id = "node1"

        [proxy]
        listen_address = "127.0.0.1"
        listen_port = \(port)

        [auth]
        # The demo trusts loopback clients, as a fresh PostgreSQL does.
        [[auth.rules]]
        address = "127.0.0.0/8"
        method = "trust"

        """
        for b in backends {
            text += """

            [[backends]]
            id = "\(b.name)"
            host = "127.0.0.1"
            port = \(b.port)

            """
        }
        return text
    }

    /// Polls until something accepts TCP connections on 127.0.0.1:port (at most 30 s).
    static func waitForPort(_ port: Int, while alive: () -> Bool) -> Bool {
        for _ in 0..<300 {
            guard alive() else { return false }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let ok = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            close(fd)
            if ok { return true }
            usleep(100_000)
        }
        return false
    }
}

/// Set once a stop signal arrives; read by the demo between steps.
final class StopRequest: Sendable {
    private let reason = Mutex<String?>(nil)
    func withLock<R>(_ body: (inout String?) -> R) -> R { reason.withLock { body(&$0) } }
}

struct DemoError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Prints a line at once (stdout may be a pipe, where `print` would hold it back).
func say(_ text: String) {
    let line = Array((text + "\n").utf8)
    var offset = 0
    while offset < line.count {
        let n = line.withUnsafeBytes { write(1, $0.baseAddress! + offset, $0.count - offset) }
        if n <= 0 { break }
        offset += n
    }
}
