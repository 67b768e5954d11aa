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
        discussion: """
        Backends listen on 127.0.0.1 ports P+1…P+N. With one node, pgchorusd listens on 127.0.0.1:P and its configuration is         D/pgchorus.toml; with K nodes, node i listens on 127.0.0.(i+1):P (its state service on UDP port P of the same address)         and its configuration is D/node<i>/pgchorus.toml. `pgchorus status --config <that file>` shows a node's view.         Ctrl-C (or SIGTERM) stops everything.
        """)

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
        var daemons: [Process] = []
        func cleanUp() {
            for daemon in daemons where daemon.isRunning { daemon.terminate() }
            for daemon in daemons {
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
                let options = PostgresServerOptions(name: "db\(i)", port: port + i, maxPreparedTransactions: 64, maxConnections: 200,
                                                    extraSettings: ["wal_level": "logical"])
                try checkStop()
                say("starting backend db\(i): PostgreSQL on 127.0.0.1:\(port + i), data in \(directory)/db\(i)")
                servers.append(try LocalPostgresServer.start(options: options, in: "\(directory)/db\(i)"))
            }
            try checkStop()
            let layout = Self.layout(nodes: nodes, directory: directory)
            if nodes > 1 {
                var rng = SystemRandomNumberGenerator()
                let key = (0..<32).map { _ in String(UInt8.random(in: 0...255, using: &rng), radix: 16) }.joined()
                try (key + "\n").write(toFile: "\(directory)/cluster.key", atomically: true, encoding: .utf8)
                chmod("\(directory)/cluster.key", 0o600)
            }
            for node in layout {
                try FileManager.default.createDirectory(atPath: node.directory, withIntermediateDirectories: true)
                try Self.configuration(node: node, all: layout, port: port, backends: servers)
                    .write(toFile: node.configPath, atomically: true, encoding: .utf8)
            }
            // Next to this pgchorus (a build directory), or the package's /usr/sbin/pgchorusd beside /usr/bin.
            let here = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
            let candidates = [here.appendingPathComponent("pgchorusd").path,
                              here.deletingLastPathComponent().appendingPathComponent("sbin/pgchorusd").path]
            guard let daemonPath = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
                throw DemoError("pgchorusd not found next to this pgchorus (looked at \(candidates.joined(separator: ", ")))")
            }
            for node in layout {
                try checkStop()
                say("starting pgchorusd \(node.id) on \(node.address):\(port), configuration \(node.configPath)")
                let process = Process()
                process.executableURL = URL(fileURLWithPath: daemonPath)
                process.arguments = ["--config", node.configPath]
                try process.run()
                daemons.append(process)
            }
            for (node, process) in zip(layout, daemons) {
                guard Self.waitForPort(port, host: node.address, while: { process.isRunning && stopRequest.withLock({ $0 }) == nil }) else {
                    try checkStop()
                    throw DemoError("pgchorusd \(node.id) did not start listening on \(node.address):\(port) (see its messages above)")
                }
            }
            let first = layout[0]
            let cli = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
            var lines = ""
            for node in layout {
                lines += "  \(node.id): psql -h \(node.address) -p \(port) -U postgres    status: \(cli) status --config \(node.configPath)\n"
            }
            say("""

            pgchorus demo ready: \(layout.count) pgchorusd node(s) in front of \(servers.count) PostgreSQL backend(s) (\(servers.map { "\($0.name) :\($0.port)" }.joined(separator: ", "))).
            connect:  psql -h \(first.address) -p \(port) -U postgres
            url:      postgresql://postgres@\(first.address):\(port)/postgres
            status:   \(cli) status --config \(first.configPath)
            \(layout.count > 1 ? "nodes:\n" + lines : "")Press Ctrl-C to stop everything.

            """)
            // Wait for SIGINT/SIGTERM, or for the daemons to exit on their own. With several nodes, one
            // that exits (kill -9 it to see the others carry on) is reported, and the demo goes on while
            // another runs; it can be started again by hand with the command printed.
            var reason = ""
            var reported: Set<Int> = []
            while reason.isEmpty {
                if let r = stopRequest.withLock({ $0 }) {
                    reason = r
                } else if daemons.allSatisfy({ !$0.isRunning }) {
                    let last = daemons.indices.last { !reported.contains($0) } ?? daemons.count - 1
                    reason = layout.count == 1
                        ? "pgchorusd \(layout[last].id) exited with status \(daemons[last].terminationStatus)"
                        : "every pgchorusd node has exited"
                } else if let gone = daemons.indices.first(where: { !daemons[$0].isRunning && !reported.contains($0) }) {
                    reported.insert(gone)
                    say("\npgchorusd \(layout[gone].id) exited with status \(daemons[gone].terminationStatus); the other nodes go on. "
                        + "Start it again with: \(daemonPath) --config \(layout[gone].configPath)")
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

    /// One node of the demo: where it listens and where its files are.
    struct DemoNode {
        var id: String
        var address: String
        var directory: String
        var configPath: String { "\(directory)/pgchorus.toml" }
    }

    static func layout(nodes: Int, directory: String) -> [DemoNode] {
        if nodes == 1 { return [DemoNode(id: "node1", address: "127.0.0.1", directory: directory)] }
        return (1...nodes).map { DemoNode(id: "node\($0)", address: "127.0.0.\($0 + 1)", directory: "\(directory)/node\($0)") }
    }

    static func configuration(node: DemoNode, all: [DemoNode], port: Int, backends: [LocalPostgresServer]) -> String {
        var text = """
        # Generated by `pgchorus demo`. Every key is described in docs/configuration.md.
        [node]
        id = "\(node.id)"
        state_directory = "state"

        [proxy]
        listen_address = "\(node.address)"
        listen_port = \(port)

        [admin]
        socket = "admin.sock"

        [auth]
        # The demo trusts loopback clients, as a fresh PostgreSQL does.
        [[auth.rules]]
        address = "127.0.0.0/8"
        method = "trust"

        """
        if all.count > 1 {
            text += """

            [cluster]
            # The state service of each node listens on UDP port \(port) of its own address.
            port = \(port)
            key_file = "../cluster.key"

            """
            for n in all {
                text += """

                [[cluster.nodes]]
                id = "\(n.id)"
                address = "\(n.address)"

                """
            }
        }
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

    /// Polls until something accepts TCP connections on host:port (at most 30 s).
    static func waitForPort(_ port: Int, host: String = "127.0.0.1", while alive: () -> Bool) -> Bool {
        for _ in 0..<300 {
            guard alive() else { return false }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr(host)
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
