import Admin
import ArgumentParser
import Foundation
import State

/// Where to find the daemon: its configuration (for `admin.socket`) or the socket itself.
struct DaemonOptions: ParsableArguments {
    @Option(help: "The node's configuration file (its admin.socket is used).")
    var config: String = "/etc/pgchorus/pgchorus.toml"

    @Option(help: "The admin socket, instead of reading it from the configuration.")
    var socket: String?

    @Option(help: "Ask a node over its TCP admin API (admin.tcp_address) instead, e.g. from a database server: HOST:PORT.")
    var node: String?

    @Option(help: "With --node: the file holding the TCP admin API's token (admin.token_file on the node).")
    var tokenFile: String?

    @Flag(help: "Print JSON instead of tables.")
    var json = false

    func send(_ request: AdminRequest) async throws -> AdminResponse {
        let exchange: @Sendable (AdminRequest) async throws(AdminClient.Failure) -> AdminResponse
        if let node {
            guard let colon = node.lastIndex(of: ":"), let port = Int(node[node.index(after: colon)...]) else {
                throw ValidationError("--node \"\(node)\" is not HOST:PORT")
            }
            let host = String(node[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            guard let tokenFile, let token = try? String(contentsOfFile: tokenFile, encoding: .utf8)
                .split(separator: "\n").first.map({ $0.trimmingCharacters(in: .whitespaces) }), !token.isEmpty else {
                printError("pgchorus: --node needs --token-file FILE with the node's admin token on its first line")
                throw ExitCode(3)
            }
            exchange = { request throws(AdminClient.Failure) in
                var r = request
                r.token = token
                return try await AdminClient.send(r, host: host, port: port)
            }
        } else {
            let path: String
            if let socket {
                path = socket
            } else {
                do {
                    path = try Configuration.load(path: config).admin.socket
                } catch {
                    // A reload is how the daemon learns of the file's errors (log, event log): ask it anyway.
                    guard request.command == .reload, let socket = Configuration.adminSocket(path: config) else {
                        printError("pgchorus: \(error)\n(pass --config FILE or --socket PATH)")
                        throw ExitCode(3)
                    }
                    path = socket
                }
            }
            exchange = { request throws(AdminClient.Failure) in try await AdminClient.send(request, socketPath: path) }
        }
        let response: AdminResponse
        do {
            response = try await exchange(request)
        } catch {
            printError("pgchorus: \(error)")
            throw ExitCode(3)
        }
        guard response.ok else {
            printError("pgchorus: \(response.error ?? "the daemon refused the request")")
            throw ExitCode(1)
        }
        return response
    }

    func printJSON<T: Encodable>(_ value: T) {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        if let data = try? e.encode(value), let s = String(data: data, encoding: .utf8) { print(s) }
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "This node, every node, every backend. Exit 0 healthy, 1 degraded, 2 no quorum or no online backend, 3 daemon unreachable.")

    @OptionGroup var options: DaemonOptions

    func run() async throws {
        let status = try await options.send(AdminRequest(command: .status)).status!
        if options.json { options.printJSON(status) } else { print(StatusRendering.status(status), terminator: "") }
        if status.exitCode != 0 { throw ExitCode(status.exitCode) }
    }
}

struct BackendsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "backends", abstract: "The backends: status, reason, since, lead, latest health check.")

    @OptionGroup var options: DaemonOptions

    func run() async throws {
        let status = try await options.send(AdminRequest(command: .status)).status!
        if options.json { options.printJSON(status.backends) } else { print(StatusRendering.backends(status)) }
    }
}

struct NodesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "nodes", abstract: "The clustering nodes: alive, last seen, quorum.")

    @OptionGroup var options: DaemonOptions

    func run() async throws {
        let status = try await options.send(AdminRequest(command: .status)).status!
        if options.json { options.printJSON(status.nodes) } else { print(StatusRendering.nodes(status)) }
    }
}

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "events", abstract: "The event log of this node: status changes, nodes up and down, refused peer messages.")

    @OptionGroup var options: DaemonOptions

    @Option(help: "Only events since: a duration back (30s, 10m, 2h, 1d), Unix seconds, or an ISO 8601 time (2026-11-27T10:00:00Z).")
    var since: String?

    @Option(help: "At most this many (the newest).")
    var limit: Int = 100

    func run() async throws {
        var sinceTime: Double?
        if let since {
            guard let t = Self.parseSince(since, now: Date().timeIntervalSince1970) else {
                throw ValidationError("--since \"\(since)\" is not a duration (10m), Unix seconds, or an ISO 8601 time")
            }
            sinceTime = t
        }
        let events = try await options.send(AdminRequest(command: .events, since: sinceTime, limit: limit)).events ?? []
        if options.json { options.printJSON(events) } else { print(StatusRendering.events(events)) }
    }

    static func parseSince(_ s: String, now: Double) -> Double? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let u = s.last, let factor = units[u], let n = Double(s.dropLast()) { return now - n * factor }
        if let n = Double(s) { return n }
        return (try? Date(s, strategy: .iso8601))?.timeIntervalSince1970
    }
}

struct DetachCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detach",
        abstract: "Take a backend out of service (status down) on every node, e.g. for maintenance.")

    @OptionGroup var options: DaemonOptions
    @Argument(help: "The backend id.") var backend: String

    func run() async throws {
        let r = try await options.send(AdminRequest(command: .detach, backend: backend))
        if options.json { options.printJSON(r) } else { print(r.message ?? "done") }
    }
}

struct AttachCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attach",
        abstract: "Bring a detached or failed backend back online, only if its data is identical to an online backend's.")

    @OptionGroup var options: DaemonOptions
    @Argument(help: "The backend id.") var backend: String

    func run() async throws {
        let r = try await options.send(AdminRequest(command: .attach, backend: backend))
        if options.json { options.printJSON(r) } else { print(r.message ?? "done") }
    }
}

struct RecoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recover",
        abstract: "Rebuild a failed or detached backend online from a healthy one and bring it back into service.",
        discussion: """
            The node copies every database from an online backend (the donor) at one exact snapshot, replays \
            what was committed meanwhile, then closes the write gate for a moment on every node and takes the \
            backend into every session. The donor needs wal_level = logical; docs/recovery.md has the details.

            Exit status with --wait: 0 when the backend is online, 1 when the recovery failed or was refused.
            """)

    @OptionGroup var options: DaemonOptions
    @Argument(help: "The backend id.") var backend: String

    @Flag(help: "Follow the recovery until it ends (progress on a terminal, plain lines otherwise).")
    var wait = false

    @Flag(help: "Stop the recovery of this backend running on this node (it is cleaned up and stays failed).")
    var cancel = false

    @Option(help: "With --wait, give up waiting after this many seconds (the recovery goes on).")
    var timeout: Double = 86400

    func run() async throws {
        let r = try await options.send(AdminRequest(command: .recover, backend: backend, cancel: cancel ? true : nil))
        if options.json && !wait { options.printJSON(r); return }
        print(r.message ?? "done")
        guard wait, !cancel, let id = r.status?.recovery?.id else { return }
        let terminal = isatty(STDOUT_FILENO) == 1
        var last = ""
        let started = Date()
        for _ in 0..<10_000_000 {
            let status = try await options.send(AdminRequest(command: .status)).status!
            guard let p = status.recovery, p.id == id else {
                printError("pgchorus: the recovery is no longer reported by this node")
                throw ExitCode(1)
            }
            let line = StatusRendering.recovery(p)
            if terminal {
                print("\r\u{1B}[K" + String(line.prefix(200)), terminator: "")
                fflush(nil)
            } else if line.split(separator: ",").prefix(2) != last.split(separator: ",").prefix(2) {
                print(line)
            }
            last = line
            // Online is the end for the operator (the replication objects are dropped in the background).
            if p.finished || p.phase == "online" {
                if terminal { print("") }
                if options.json { options.printJSON(p) }
                if p.phase == "online" {
                    print("backend \(p.backend) is online")
                    return
                }
                printError("pgchorus: recovery of \(p.backend) failed: \(p.error ?? "unknown error")")
                throw ExitCode(1)
            }
            guard Date().timeIntervalSince(started) < timeout else {
                printError("pgchorus: still running after \(Int(timeout)) s; follow it with `pgchorus status`")
                throw ExitCode(1)
            }
            try await Task.sleep(for: .milliseconds(terminal ? 250 : 1000))
        }
    }
}

struct ReloadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Make the node re-read its configuration file, users file and TLS material (as SIGHUP and `systemctl reload pgchorusd` do).",
        discussion: """
            The whole file is validated first; an invalid one is refused and nothing changes. What applies at \
            once and what needs a restart is listed per key in docs/configuration.md; the answer names both. \
            Sessions already open keep the settings they started with. Exit status: 0 reloaded, 1 refused.
            """)

    @OptionGroup var options: DaemonOptions

    func run() async throws {
        let r = try await options.send(AdminRequest(command: .reload))
        if options.json { options.printJSON(r) } else { print(r.message ?? "reloaded") }
    }
}
