import Foundation
import LocalCluster

/// A real nftables table of the test's own, on the host, that drops the state service's datagrams
/// of one node (to and from its address on the cluster's port): the node is cut off from its peers
/// while it still reaches the backends. Dropped in the output hook, a send fails with EPERM, as a
/// firewall rule makes it fail. `remove` (or `withNodeCutOff`'s end) deletes the table.
public final class StateServiceFirewall: Sendable {
    public let table: String

    public init(address: String, port: Int) throws {
        table = "pgchorus_test_\(getpid())_\(UInt32.random(in: 0...UInt32.max))"
        let rules = """
        table inet \(table) {
            chain output {
                type filter hook output priority 0; policy accept;
                ip saddr \(address) udp dport \(port) drop
                ip daddr \(address) udp dport \(port) drop
            }
        }
        """
        let file = NSTemporaryDirectory() + "/\(table).nft"
        try rules.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let out = try CommandRunner.run("/usr/sbin/nft", ["-f", file], timeout: .seconds(30))
        guard out.exitCode == 0 else { throw FixtureError("nft -f failed: \(out.stderr)") }
    }

    public func remove() {
        _ = try? CommandRunner.run("/usr/sbin/nft", ["delete", "table", "inet", table], timeout: .seconds(30))
    }

    deinit { remove() }
}
