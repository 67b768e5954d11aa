import Foundation
import LocalCluster

/// Real network namespaces joined by veth pairs to a bridge in a namespace of their own, with
/// addresses in 198.18.0.0/24 (and 2001:db8::/64) only. Each member namespace sees its link as
/// `eth0`. Everything is deleted afterwards, also when the test fails.
public final class NetworkLab: @unchecked Sendable {
    // @unchecked: used by one test at a time.
    public let tag: String
    public let bridgeNamespace: String
    public private(set) var members: [String: String] = [:]

    init(tag: String) {
        self.tag = tag
        self.bridgeNamespace = "pgc-br-\(tag)"
    }

    public func namespace(_ name: String) -> String { "pgc-\(name)-\(tag)" }

    /// Runs `ip` with arguments; throws with its output on failure.
    @discardableResult
    public static func ip(_ arguments: [String]) throws -> CommandOutput {
        let out = try CommandRunner.run("/usr/sbin/ip", arguments, timeout: .seconds(30))
        guard out.exitCode == 0 else { throw FixtureError("ip \(arguments.joined(separator: " ")) failed: \(out.stderr)") }
        return out
    }

    /// Runs a command inside a member namespace.
    public func run(in name: String, _ executable: String, _ arguments: [String], timeout: Duration = .seconds(60)) throws -> CommandOutput {
        try CommandRunner.run("/usr/sbin/ip", ["netns", "exec", namespace(name), executable] + arguments, timeout: timeout)
    }

    /// Adds a namespace `name` linked to the bridge, with `addresses` (CIDR) on its `eth0`.
    public func addMember(_ name: String, addresses: [String]) throws {
        let ns = namespace(name)
        try Self.ip(["netns", "add", ns])
        members[name] = ns
        order.append(name)
        let index = order.count
        let inside = "pgi\(index)\(tag)", outside = "pgo\(index)\(tag)"
        try Self.ip(["link", "add", inside, "type", "veth", "peer", "name", outside])
        try Self.ip(["link", "set", inside, "netns", ns])
        try Self.ip(["link", "set", outside, "netns", bridgeNamespace])
        try Self.ip(["-n", ns, "link", "set", inside, "name", "eth0"])
        try Self.ip(["-n", ns, "link", "set", "lo", "up"])
        try Self.ip(["-n", ns, "link", "set", "eth0", "up"])
        try Self.ip(["-n", bridgeNamespace, "link", "set", outside, "master", "br0"])
        try Self.ip(["-n", bridgeNamespace, "link", "set", outside, "up"])
        for a in addresses {
            try Self.ip(["-n", ns] + (a.contains(":") ? ["-6"] : []) + ["addr", "add", a, "dev", "eth0"] + (a.contains(":") ? ["nodad"] : []))
        }
    }

    /// Cuts a member off the bridge (its link stays up inside, the bridge drops its frames).
    public func disconnect(_ name: String) throws {
        try Self.ip(["-n", bridgeNamespace, "link", "set", outsideName(name), "nomaster"])
    }

    public func reconnect(_ name: String) throws {
        try Self.ip(["-n", bridgeNamespace, "link", "set", outsideName(name), "master", "br0"])
    }

    /// Drops `percent` % of a member's UDP datagrams to and from `port` at random, in both
    /// directions, with an nftables table inside its namespace (gone with the namespace);
    /// `percent` 0 deletes the table.
    public func loseDatagrams(of name: String, port: Int, percent: Int) throws {
        _ = try? run(in: name, "/usr/sbin/nft", ["delete", "table", "inet", "pgchorus_loss"], timeout: .seconds(30))
        guard percent > 0 else { return }
        let rules = """
        table inet pgchorus_loss {
            chain input {
                type filter hook input priority 0; policy accept;
                udp dport \(port) numgen random mod 100 < \(percent) drop
            }
            chain output {
                type filter hook output priority 0; policy accept;
                udp dport \(port) numgen random mod 100 < \(percent) drop
            }
        }
        """
        let file = NSTemporaryDirectory() + "/pgchorus-loss-\(tag)-\(name).nft"
        try rules.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let out = try run(in: name, "/usr/sbin/nft", ["-f", file], timeout: .seconds(30))
        guard out.exitCode == 0 else { throw FixtureError("nft -f in \(name) failed: \(out.stderr)") }
    }

    var order: [String] = []

    func outsideName(_ name: String) -> String {
        "pgo\((order.firstIndex(of: name) ?? 0) + 1)\(tag)"
    }

    /// The addresses on a member's `eth0`, read back with `ip -j`.
    public func addresses(of name: String) throws -> [String] {
        let out = try Self.ip(["-n", namespace(name), "-j", "addr", "show", "dev", "eth0"])
        guard let list = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]],
              let info = list.first?["addr_info"] as? [[String: Any]] else { return [] }
        return info.compactMap { i in (i["local"] as? String).map { "\($0)/\(i["prefixlen"] as? Int ?? 0)" } }
    }

    func destroy() {
        for ns in members.values { _ = try? Self.ip(["netns", "del", ns]) }
        _ = try? Self.ip(["netns", "del", bridgeNamespace])
    }
}

/// Builds a lab, runs `body`, deletes every namespace and link afterwards.
public func withNetworkLab<T>(
    isolation: isolated (any Actor)? = #isolation,
    _ body: (NetworkLab) async throws -> T
) async throws -> T {
    let tag = String(UUID().uuidString.prefix(6)).lowercased()
    let lab = NetworkLab(tag: tag)
    defer { lab.destroy() }
    try NetworkLab.ip(["netns", "add", lab.bridgeNamespace])
    try NetworkLab.ip(["-n", lab.bridgeNamespace, "link", "add", "br0", "type", "bridge"])
    try NetworkLab.ip(["-n", lab.bridgeNamespace, "link", "set", "br0", "up"])
    return try await body(lab)
}

/// A tcpdump capture in a lab namespace, written to a file and read back as frames.
public final class FrameCapture: @unchecked Sendable {
    // @unchecked: used by one test at a time.
    let process: BackgroundProcess
    public let file: String

    public init(lab: NetworkLab, member: String, filter: String) throws {
        file = FileManager.default.temporaryDirectory.appendingPathComponent("pgchorus-capture-\(UUID().uuidString).pcap").path
        process = try BackgroundProcess("/usr/sbin/ip", ["netns", "exec", lab.namespace(member), "tcpdump", "-i", "eth0", "--immediate-mode", "-U", "-n", "-w", file]
            + filter.split(separator: " ").map(String.init))
        // tcpdump is listening once the file exists.
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: file) { usleep(50_000) }
        usleep(200_000)
    }

    // --immediate-mode: without it, frames wait in the kernel's capture block (TPACKET_V3) until the
    // block times out, and frames of the last second are lost when the capture is stopped.
    /// Stops the capture and returns the frames with their times (seconds since the epoch).
    public func stop() -> [(time: Double, bytes: [UInt8])] {
        process.signal(SIGINT)
        if !process.wait(seconds: 5) { process.stop(grace: 0) }
        defer { try? FileManager.default.removeItem(atPath: file) }
        return Self.read(file)
    }

    /// The frames captured so far (the capture goes on).
    public func frames() -> [(time: Double, bytes: [UInt8])] { Self.read(file) }

    /// Reads a classic pcap file (little-endian, microseconds).
    static func read(_ path: String) -> [(time: Double, bytes: [UInt8])] {
        guard let data = FileManager.default.contents(atPath: path), data.count >= 24 else { return [] }
        let b = [UInt8](data)
        func u32(_ o: Int) -> UInt32 { UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24 }
        var out: [(Double, [UInt8])] = []
        var o = 24
        while o + 16 <= b.count {
            let seconds = Double(u32(o)), micros = Double(u32(o + 4)), length = Int(u32(o + 8))
            guard o + 16 + length <= b.count else { break }
            out.append((seconds + micros / 1e6, Array(b[(o + 16)..<(o + 16 + length)])))
            o += 16 + length
        }
        return out
    }
}
