import Admin
import Foundation
import LocalCluster
import State

/// Several real `pgchorusd` processes on 127.0.0.2, 127.0.0.3, … (one port for every node: the
/// proxy on TCP, the state service on UDP), in front of the same real backends. Each node has its
/// directory with configuration, state database, admin socket and log.
public final class NodeCluster: @unchecked Sendable {
    // @unchecked: used by one test at a time; `processes` is only touched from that test's task.
    public let directory: String
    public let port: Int
    public let count: Int
    public let binaryDirectory: String
    var processes: [Int: BackgroundProcess] = [:]
    /// With a network lab: node i runs in the lab's namespace "node<i>" at 198.18.0.(10+i).
    public let lab: NetworkLab?

    init(directory: String, port: Int, count: Int, binaryDirectory: String, lab: NetworkLab?) {
        self.directory = directory; self.port = port; self.count = count; self.binaryDirectory = binaryDirectory; self.lab = lab
    }

    public func address(_ node: Int) -> String { lab == nil ? "127.0.0.\(node + 1)" : "198.18.0.\(10 + node)" }

    /// The process id of node `node`'s daemon (0 when not running).
    public func pid(_ node: Int) -> Int32 { processes[node].flatMap { $0.isRunning ? $0.pid : nil } ?? 0 }
    public func nodeDirectory(_ node: Int) -> String { "\(directory)/node\(node)" }
    public func configPath(_ node: Int) -> String { "\(nodeDirectory(node))/pgchorus.toml" }
    public func socketPath(_ node: Int) -> String { "\(nodeDirectory(node))/admin.sock" }
    public func logPath(_ node: Int) -> String { "\(nodeDirectory(node))/pgchorusd.log" }
    public var keyPath: String { "\(directory)/cluster.key" }

    /// A libpq connection string to node `node`'s proxy.
    public func connectionString(_ node: Int) -> String {
        "host=\(address(node)) port=\(port) user=postgres dbname=postgres sslmode=disable connect_timeout=10"
    }

    public func log(_ node: Int) -> String { (try? String(contentsOfFile: logPath(node), encoding: .utf8)) ?? "" }
    /// The last `last` warning and error lines of node `node`'s log, one per line: what a failed
    /// expectation should print about a node (quorum lost, a backend failed, a commit refused).
    public func problems(_ node: Int, last: Int = 30) -> String {
        log(node).split(separator: "\n").filter { $0.contains(" error ") || $0.contains(" warning ") || $0.contains(" critical ") }
            .suffix(last).joined(separator: "\n")
    }

    /// Starts node `node` and waits until its admin socket answers (at most 30 s).
    public func start(_ node: Int, environment: [String: String] = [:]) async throws {
        precondition(!isRunning(node))
        let daemon = "\(binaryDirectory)/pgchorusd"
        let arguments = ["--config", configPath(node), "--log-level", "info"]
        // `ip netns exec` execs the daemon: the process id is the daemon's.
        let p = try lab.map { try BackgroundProcess("/usr/sbin/ip", ["netns", "exec", $0.namespace("node\(node)"), daemon] + arguments, outputFile: logPath(node), environment: environment) }
            ?? BackgroundProcess(daemon, arguments, outputFile: logPath(node), environment: environment)
        processes[node] = p
        for _ in 0..<300 {
            if !p.isRunning { throw FixtureError("pgchorusd node\(node) exited:\n\(log(node).suffix(3000))") }
            if (try? await AdminClient.send(AdminRequest(command: .status), socketPath: socketPath(node), timeout: 5)) != nil { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw FixtureError("pgchorusd node\(node) did not answer on its admin socket within 30 s:\n\(log(node).suffix(3000))")
    }

    /// SIGKILL, as a crash.
    public func kill9(_ node: Int) {
        guard let p = processes[node] else { return }
        p.signal(SIGKILL)
        p.wait(seconds: 10)
        processes[node] = nil
    }

    /// SIGSTOP (`frozen: true`) or SIGCONT: a node that stops answering without dying.
    public func freeze(_ node: Int, _ frozen: Bool) {
        processes[node]?.signal(frozen ? SIGSTOP : SIGCONT)
    }

    /// SIGTERM, and waits for the process to end (SIGKILL after 10 s).
    public func stop(_ node: Int) async {
        guard let p = processes[node] else { return }
        p.signal(SIGTERM)
        for _ in 0..<100 where p.isRunning { try? await Task.sleep(for: .milliseconds(100)) }
        if p.isRunning { p.stop(grace: 0) }
        processes[node] = nil
    }

    public func isRunning(_ node: Int) -> Bool { processes[node]?.isRunning == true }

    public func status(_ node: Int) async throws -> ClusterStatus {
        let r = try await AdminClient.send(AdminRequest(command: .status), socketPath: socketPath(node), timeout: 30)
        guard let s = r.status else { throw FixtureError("node\(node) answered without a status: \(r.error ?? "")") }
        return s
    }

    public func events(_ node: Int) async throws -> [ClusterEvent] {
        try await AdminClient.send(AdminRequest(command: .events, limit: 10_000), socketPath: socketPath(node), timeout: 30).events ?? []
    }

    /// Runs the `pgchorus` CLI against node `node`.
    public func cli(_ node: Int, _ arguments: [String]) throws -> CommandOutput {
        try CommandRunner.run("\(binaryDirectory)/pgchorus", arguments + ["--config", configPath(node)], timeout: .seconds(120))
    }

    /// Waits (up to 10 s each) until every node of `nodes` holds quorum; returns those that do not.
    public func nodesWithoutQuorum(_ nodes: ClosedRange<Int>) async throws -> [Int] {
        var missing: [Int] = []
        for i in nodes where try await !waitUntil(seconds: 10, { try await status(i).quorum }) { missing.append(i) }
        return missing
    }

    /// Polls `condition` every 100 ms until it holds or `seconds` pass; returns whether it held.
    public func waitUntil(seconds: Double, _ condition: () async throws -> Bool) async throws -> Bool {
        let attempts = max(1, Int(seconds * 10))
        for _ in 0..<attempts {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return try await condition()
    }
}

public struct FixtureError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Writes the configurations of `count` nodes in front of `backends` (node i on 127.0.0.(i+1)),
/// runs `body`, and stops every node and removes the directory afterwards, also on failure.
/// `extra(i)` is TOML added to node i's configuration (health-check settings…); nodes are not started.
/// `peerTimeout` is short so that failover tests run fast; a test that only needs quorum to hold
/// through a busy run (the whole suite at once on two cores) gives it more.
public func withNodeCluster<T>(
    count: Int,
    backends: [LocalPostgresServer],
    peerTimeout: Double = 1,
    extra: (Int) -> String = { _ in "" },
    files: [String: String] = [:],
    clusterKeys: String = "",
    lab: NetworkLab? = nil,
    file: StaticString = #filePath,
    isolation: isolated (any Actor)? = #isolation,
    _ body: (NodeCluster) async throws -> T
) async throws -> T {
    let root = URL(fileURLWithPath: "\(file)").deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pgchorus-nodes-\(UUID().uuidString)").path
    let cluster = NodeCluster(directory: directory, port: try FreePort.pick(), count: count, binaryDirectory: root.appendingPathComponent(".build/debug").path,
                              lab: lab)
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    try "test-cluster-key-\(UUID().uuidString)\n".write(toFile: cluster.keyPath, atomically: true, encoding: .utf8)
    for (name, content) in files { try content.write(toFile: "\(directory)/\(name)", atomically: true, encoding: .utf8) }
    let members = (1...count).map { "[[cluster.nodes]]\nid = \"node\($0)\"\naddress = \"\(cluster.address($0))\"\n" }.joined(separator: "\n")
    for i in 1...count {
        try FileManager.default.createDirectory(atPath: cluster.nodeDirectory(i), withIntermediateDirectories: true)
        let text = """
        [node]
        id = "node\(i)"
        state_directory = "state"

        [proxy]
        listen_address = "\(cluster.address(i))"
        listen_port = \(cluster.port)

        [cluster]
        port = \(cluster.port)
        key_file = "../cluster.key"
        heartbeat_interval = 0.1
        peer_timeout = \(peerTimeout)
        \(clusterKeys)

        \(members)

        \(extra(i).contains("[admin]") ? "" : "[admin]\nsocket = \"admin.sock\"\n")
        \(extra(i))

        \(backendsTOML(backends))
        """
        try text.write(toFile: cluster.configPath(i), atomically: true, encoding: .utf8)
    }
    do {
        let result = try await body(cluster)
        for i in 1...count { await cluster.stop(i) }
        return result
    } catch {
        for i in 1...count { await cluster.stop(i) }
        throw error
    }
}
