import Admin
import Foundation
import Glibc
import LocalCluster
import State
import Testing
import TestSupport
import VIP

extension TimingSensitive {
/// The virtual IP on real network namespaces: netlink claims read back with `ip -j`, frames
/// captured by an observer namespace, and three pgchorusd nodes electing one owner.
@Suite(.serialized) struct VirtualIPTests {
    static var cli: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".build/debug/pgchorus").path
    }

    func mac(_ lab: NetworkLab, _ member: String) throws -> [UInt8] {
        let out = try NetworkLab.ip(["-n", lab.namespace(member), "-j", "link", "show", "eth0"])
        let list = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]])
        let text = try #require(list.first?["address"] as? String)
        return text.split(separator: ":").compactMap { UInt8($0, radix: 16) }
    }

    @Test func claimAnnounceAndReleaseAnIPv4AndAnIPv6AddressOnARealInterface() async throws {
        try await withNetworkLab { lab in
            try lab.addMember("node", addresses: ["198.18.0.11/24"])
            try lab.addMember("observer", addresses: ["198.18.0.2/24"])
            let capture = try FrameCapture(lab: lab, member: "observer", filter: "arp or icmp6")
            let claim = try lab.run(in: "node", Self.cli, ["vip", "claim", "--interface", "eth0", "--address", "198.18.0.100/24"])
            #expect(claim.exitCode == 0, "\(claim.report)")
            #expect(try lab.addresses(of: "node").contains("198.18.0.100/24"))
            let again = try lab.run(in: "node", Self.cli, ["vip", "claim", "--interface", "eth0", "--address", "198.18.0.100/24"])
            #expect(again.exitCode == 0, "\(again.report)")
            #expect(again.stdout.contains("was already on eth0"), "\(again.report)")
            let listed = try lab.run(in: "node", Self.cli, ["vip", "list", "--interface", "eth0"])
            #expect(listed.stdoutLines.contains("198.18.0.100/24  (pgchorus)"), "\(listed.report)")
            #expect(listed.stdoutLines.contains("198.18.0.11/24"), "\(listed.report)")

            let six = try lab.run(in: "node", Self.cli, ["vip", "claim", "--interface", "eth0", "--address", "2001:db8::100/64"])
            #expect(six.exitCode == 0, "\(six.report)")
            #expect(try lab.addresses(of: "node").contains("2001:db8::100/64"))

            let release = try lab.run(in: "node", Self.cli, ["vip", "release", "--interface", "eth0", "--address", "198.18.0.100/24"])
            #expect(release.exitCode == 0, "\(release.report)")
            #expect(!(try lab.addresses(of: "node").contains("198.18.0.100/24")))
            let twice = try lab.run(in: "node", Self.cli, ["vip", "release", "--interface", "eth0", "--address", "198.18.0.100/24"])
            #expect(twice.exitCode == 0 && twice.stdout.contains("was not on eth0"), "\(twice.report)")

            try await Task.sleep(for: .milliseconds(300))
            let frames = capture.stop().map(\.bytes)
            let nodeMAC = try mac(lab, "node")
            let garp = AnnouncementFrames.gratuitousARP(mac: nodeMAC, ip: [198, 18, 0, 100])
            // Byte for byte: broadcast, the node's MAC, ARP request, sender = target = the VIP.
            #expect(garp == [0xff, 0xff, 0xff, 0xff, 0xff, 0xff] + nodeMAC + [0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01]
                + nodeMAC + [198, 18, 0, 100] + [0, 0, 0, 0, 0, 0] + [198, 18, 0, 100])
            #expect(frames.filter { $0.prefix(42) == garp[...] }.count == 2, "two claims, two announcements")
            let na = try #require(frames.first { $0.count >= 86 && $0[12] == 0x86 && $0[13] == 0xdd && $0[54] == 136 })
            #expect(Array(na[0..<6]) == [0x33, 0x33, 0, 0, 0, 1])
            #expect(Array(na[6..<12]) == nodeMAC)
            #expect(na[21] == 255, "hop limit")
            #expect(na[58] == 0x20, "override set, solicited and router clear")
            #expect(Array(na[62..<78]) == [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 10) + [0x01, 0x00])
            #expect(Array(na[78..<80]) == [2, 1], "target link-layer address option")
            #expect(Array(na[80..<86]) == nodeMAC)
            #expect(na == AnnouncementFrames.unsolicitedNeighborAdvertisement(mac: nodeMAC, ip: Array(na[62..<78])), "checksum included")

            // With a lifetime the kernel removes the address by itself (IPv4 and IPv6 alike).
            for a in ["198.18.0.101/24", "2001:db8::101/64"] {
                let timed = try lab.run(in: "node", Self.cli, ["vip", "claim", "--interface", "eth0", "--address", a, "--lifetime", "1"])
                #expect(timed.exitCode == 0 && timed.stdout.contains("removed by the kernel in 1 s"), "\(timed.report)")
                #expect(try lab.addresses(of: "node").contains(a))
            }
            var expired = false
            for _ in 0..<100 where !expired {
                let now = try lab.addresses(of: "node")
                expired = !now.contains("198.18.0.101/24") && !now.contains("2001:db8::101/64")
                if !expired { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(expired, "an address claimed with a 1 s lifetime was still there: \((try? lab.addresses(of: "node")) ?? [])")

            let missing = try lab.run(in: "node", Self.cli, ["vip", "claim", "--interface", "eth9", "--address", "198.18.0.100/24"])
            #expect(missing.exitCode == 1)
            #expect(missing.stderr.contains("no network interface \"eth9\""), "\(missing.report)")
        }
    }

    /// A node whose link goes down for 0.3 s (its peer messages fail to send, which closes a datagram
    /// socket) is back in the cluster within seconds: it hears its peers and they hear it, quorum
    /// everywhere. Before, one failed send cut it off for good while it kept running.
    @Test func aNodeWhoseSendsFailForAMomentRejoinsTheCluster() async throws {
        try await withThreeNodes { lab, cluster in
            @Sendable func everyoneHearsEveryone() async throws -> Bool {
                for i in 1...3 {
                    let s = try await cluster.status(i)
                    guard s.quorum, s.nodes.allSatisfy(\.alive) else { return false }
                }
                return true
            }
            #expect(try await cluster.waitUntil(seconds: 10) { try await everyoneHearsEveryone() }, "\(cluster.log(1).suffix(1500))")
            let ns = lab.namespace("node1")
            _ = try NetworkLab.ip(["-n", ns, "link", "set", "eth0", "down"])
            try await Task.sleep(for: .milliseconds(300))
            _ = try NetworkLab.ip(["-n", ns, "link", "set", "eth0", "up"])
            // Its peers declare it dead meanwhile (peer timeout): then it must come back.
            try await Task.sleep(for: .seconds(3))
            #expect(try await cluster.waitUntil(seconds: 15) { try await everyoneHearsEveryone() },
                    "node1 did not rejoin:\n\(cluster.log(1).suffix(2500))")
            #expect(cluster.isRunning(1))
        }
    }

    /// A node that hears no peer for twice the peer timeout (both peers frozen here) opens its peer
    /// sockets afresh — the way out of a socket wedged without any error — and, the peers back, is
    /// heard and hears again.
    @Test func aNodeThatHearsNoPeerOpensItsSocketsAfreshAndRejoins() async throws {
        try await withThreeNodes { lab, cluster in
            #expect(try await cluster.waitUntil(seconds: 10) { try await cluster.status(1).nodes.allSatisfy(\.alive) })
            cluster.freeze(2, true)
            cluster.freeze(3, true)
            let reopened = try await cluster.waitUntil(seconds: 15) { cluster.log(1).contains("opening the peer sockets afresh") }
            cluster.freeze(2, false)
            cluster.freeze(3, false)
            #expect(reopened, "\(cluster.log(1).suffix(1500))")
            #expect(try await cluster.waitUntil(seconds: 15) {
                for i in 1...3 where !(try await cluster.status(i).quorum) { return false }
                return try await cluster.status(1).nodes.allSatisfy(\.alive)
            }, "node1 did not rejoin:\n\(cluster.log(1).suffix(2000))")
            #expect(try await cluster.events(1).contains { $0.kind == "peer-socket" })
        }
    }

    /// Samples the holders every 10 ms for `seconds`: every moment with two, and each change. On a
    /// thread of its own: on a busy run the cooperative pool can hold an `await` back for seconds, and
    /// the window would pass unsampled.
    func watchHolders(_ lab: NetworkLab, _ cluster: NodeCluster, seconds: Double) async throws -> (overlaps: [String], changes: [[Int]]) {
        try await runBlocking {
            var overlaps: [String] = []
            var changes: [[Int]] = []
            let start = ContinuousClock.now
            for _ in 0..<100_000 where ContinuousClock.now - start < .seconds(seconds) {
                let h = try holders(lab, cluster)
                let elapsed = (ContinuousClock.now - start).components
                if h.count > 1 { overlaps.append(String(format: "%.2f s: ", Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18) + "\(h)") }
                if changes.last != h { changes.append(h) }
                usleep(10_000)
            }
            return (overlaps, changes)
        }
    }

    func waitForOneHolder(_ lab: NetworkLab, _ cluster: NodeCluster) async throws -> Int? {
        for _ in 0..<400 {
            let h = try holders(lab, cluster)
            if h.count == 1 { return h[0] }
            try await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    /// SIGSTOP of the owner for 3 s: it runs no code, yet the kernel removes its address when the
    /// lifetime it stopped renewing runs out, before another node claims the VIP; after SIGCONT it
    /// does not take it back. Before the address had a lifetime, both held it for over 2 s.
    @Test func aFrozenOwnerLosesTheAddressBeforeAnotherNodeClaimsIt() async throws {
        try await withThreeNodes { lab, cluster in
            let owner = try #require(try await waitForOneHolder(lab, cluster), "no owner:\n\(cluster.log(1).suffix(2000))")
            try await Task.sleep(for: .seconds(1))
            cluster.freeze(owner, true)
            let frozen = try await watchHolders(lab, cluster, seconds: 3)
            cluster.freeze(owner, false)
            let after = try await watchHolders(lab, cluster, seconds: 2)
            #expect(frozen.overlaps.isEmpty && after.overlaps.isEmpty, "two holders at once: \(frozen.overlaps + after.overlaps)")
            #expect(frozen.changes.contains { $0.count == 1 && $0[0] != owner }, "nobody took over from the frozen node\(owner): \(frozen.changes)")
            let now = try holders(lab, cluster)
            #expect(now.count == 1 && now != [owner], "after the freeze: \(now)\n\(cluster.log(owner).suffix(1500))")
            #expect(cluster.log(owner).contains("released the virtual IP"), "\(cluster.log(owner).suffix(1500))")
        }
    }

    /// 30 % of the owner's peer datagrams lost at random, both ways, for 30 s: never two holders,
    /// one owner at the end, and the owner keeps it; the owner changes are printed
    /// (bench/vip-failover.sh measures them at 10 % and 30 %).
    @Test func underThirtyPercentLossTheVIPNeverHasTwoHolders() async throws {
        try await withThreeNodes { lab, cluster in
            let owner = try #require(try await waitForOneHolder(lab, cluster), "no owner:\n\(cluster.log(1).suffix(2000))")
            try lab.loseDatagrams(of: "node\(owner)", port: cluster.port, percent: 30)
            let lossy = try await watchHolders(lab, cluster, seconds: 30)
            try lab.loseDatagrams(of: "node\(owner)", port: cluster.port, percent: 0)
            let healed = try await watchHolders(lab, cluster, seconds: 3)
            print("30 % loss on node\(owner) for 30 s: holders went \(lossy.changes)")
            #expect(lossy.overlaps.isEmpty && healed.overlaps.isEmpty, "two holders at once: \(lossy.overlaps + healed.overlaps)")
            #expect(try holders(lab, cluster).count == 1, "no single owner after the loss ended: \(healed.changes)")
            // The owner keeps renewing through the loss (before a grantless beacon revoked the
            // grant, it dropped and re-took the VIP 14–19 times in 30 s); two drops are tolerated
            // (a clean-clone CI run of 2026-12-06 on a loaded host saw [[1], [], [1], [], [1]]).
            #expect(lossy.changes.count <= 5, "the owner kept losing the VIP: \(lossy.changes)\n\(cluster.log(owner).suffix(2000))")
            for i in 1...3 { #expect(cluster.isRunning(i)) }
        }
    }

    /// Three pgchorusd nodes in namespaces of a lab of their own (198.18.0.11–13; with `observer`, an
    /// observer at 198.18.0.2 that accepts gratuitous ARP), all started, configured by `vipConfig`.
    func withThreeNodes(observer: Bool = false, _ body: (NetworkLab, NodeCluster) async throws -> Void) async throws {
        try await withNetworkLab { lab in
            for i in 1...3 { try lab.addMember("node\(i)", addresses: ["198.18.0.\(10 + i)/24"]) }
            if observer {
                try lab.addMember("observer", addresses: ["198.18.0.2/24"])
                _ = try lab.run(in: "observer", "/bin/sh", ["-c", "echo 1 > /proc/sys/net/ipv4/conf/eth0/arp_accept"])
            }
            try await withNodeCluster(count: 3, backends: [], extra: Self.vipConfig, lab: lab) { cluster in
                for i in 1...3 { try await cluster.start(i) }
                try await body(lab, cluster)
            }
        }
    }

    static func vipConfig(_ i: Int) -> String {
        """
        [health_check]
        enabled = false

        [vip]
        mode = "address"
        interface = "eth0"
        address = "198.18.0.100/24"

        # No backend is reachable from the namespaces: the VIP election is tested on its own.
        [[backends]]
        id = "db1"
        host = "127.0.0.1"
        port = 9
        """
    }

    /// Which running nodes hold the VIP right now, read from their interfaces (a node killed with
    /// -9 cannot remove its address: that is left for its next start, checked separately).
    func holders(_ lab: NetworkLab, _ cluster: NodeCluster) throws -> [Int] {
        try (1...cluster.count).filter { i in try cluster.isRunning(i) && lab.addresses(of: "node\(i)").contains("198.18.0.100/24") }
    }

    @Test func threeNodesElectOneOwnerWhichMovesOnCrashShutdownAndPartitionWithoutOverlap() async throws {
        try await withThreeNodes(observer: true) { lab, cluster in
            var overlap: [String] = []
            func sample(_ label: String) throws -> [Int] {
                let h = try holders(lab, cluster)
                if h.count > 1 { overlap.append("\(label): \(h)") }
                return h
            }
            func waitForOwner(excluding gone: Int?, _ label: String) async throws -> Int? {
                for _ in 0..<200 {
                    let h = try sample(label)
                    if h.count == 1, h[0] != gone { return h[0] }
                    try await Task.sleep(for: .milliseconds(50))
                }
                return nil
            }
            let first = try #require(try await waitForOwner(excluding: nil, "start"), "no owner after start:\n\(cluster.log(1).suffix(2000))")
            // Every node agrees who owns it.
            #expect(try await cluster.waitUntil(seconds: 5) {
                var owners: [String?] = []
                for i in 1...3 { owners.append(try await cluster.status(i).vip.owner) }
                return owners.allSatisfy { $0 == "node\(first)" }
            })
            #expect(try await cluster.status(first).vip.mode == "address")

            // Removed by hand: back at once.
            try NetworkLab.ip(["-n", lab.namespace("node\(first)"), "addr", "del", "198.18.0.100/24", "dev", "eth0"])
            #expect(try await cluster.waitUntil(seconds: 5) { try lab.addresses(of: "node\(first)").contains("198.18.0.100/24") })

            // Another machine claims the VIP: the owner announces again at once.
            let conflictCapture = try FrameCapture(lab: lab, member: "observer", filter: "arp")
            let rogue = try lab.run(in: "observer", VirtualIPTests.cli, ["vip", "announce", "--interface", "eth0", "--address", "198.18.0.100/24", "--count", "1"])
            #expect(rogue.exitCode == 0, "\(rogue.report)")
            try await Task.sleep(for: .seconds(1.5))
            let ownerMAC = try mac(lab, "node\(first)")
            let observerMAC = try mac(lab, "observer")
            let seen = conflictCapture.stop()
            let rogueAt = try #require(seen.first { Array($0.bytes[6..<12]) == observerMAC }?.time)
            #expect(seen.contains { $0.time > rogueAt && $0.time < rogueAt + 0.5 && $0.bytes.prefix(42) == AnnouncementFrames.gratuitousARP(mac: ownerMAC, ip: [198, 18, 0, 100])[...] },
                    "no announcement from the owner right after the conflicting one")

            // The observer talks to the VIP: its neighbour entry points at the owner.
            let ping = try lab.run(in: "observer", Clients.python, ["-c", "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('198.18.0.100', 9)); time.sleep(0.3)"])
            #expect(ping.exitCode == 0, "\(ping.report)")
            func observerSeesMAC() throws -> [UInt8]? {
                let out = try NetworkLab.ip(["-n", lab.namespace("observer"), "-j", "neigh", "show", "198.18.0.100"])
                let list = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]]
                return (list?.first?["lladdr"] as? String)?.split(separator: ":").compactMap { UInt8($0, radix: 16) }
            }
            #expect(try observerSeesMAC() == (try mac(lab, "node\(first)")))

            // kill -9 the owner: another takes over, and the observer's entry follows.
            cluster.kill9(first)
            let second = try #require(try await waitForOwner(excluding: first, "after kill -9"),
                                      "no new owner:\n\((1...3).filter { $0 != first }.map { cluster.log($0).suffix(3000) }.joined(separator: "\n---\n"))")
            // The dead node could not remove its address: the kernel did, when the lifetime its
            // daemon kept renewing ran out — before the new owner claimed it.
            #expect(!(try lab.addresses(of: "node\(first)").contains("198.18.0.100/24")), "the killed owner still has the VIP beside node\(second)")
            #expect(try await cluster.waitUntil(seconds: 5) { try observerSeesMAC() == (try mac(lab, "node\(second)")) })
            try await cluster.start(first)
            // No preemption by default: the returning node, though preferred (same priority,
            // lower id), leaves the VIP where it is.
            try await Task.sleep(for: .seconds(3))
            #expect(try sample("no preemption") == [second], "the VIP moved back to the returning node")

            // SIGTERM: immediate handover.
            await cluster.stop(second)
            let third = try #require(try await waitForOwner(excluding: second, "after SIGTERM"))
            #expect(!(try lab.addresses(of: "node\(second)").contains("198.18.0.100/24")))
            try await cluster.start(second)

            // Partition: the owner is cut off; it releases, the majority elects another.
            try await Task.sleep(for: .seconds(1))
            let owner = try #require(try holders(lab, cluster).first)
            try lab.disconnect("node\(owner)")
            var released = false
            for _ in 0..<200 {
                let h = try sample("partition")
                if !h.contains(owner) && h.count == 1 { released = true; break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(released, "the cut-off owner node\(owner) did not give way:\n\(cluster.log(owner).suffix(2000))")
            try lab.reconnect("node\(owner)")
            try await Task.sleep(for: .seconds(1))
            #expect(try sample("healed").count == 1)
            #expect(overlap.isEmpty, "two holders at once: \(overlap)")
            let events = try await cluster.events(third)
            #expect(events.contains { $0.kind == "vip-claimed" })
        }
    }
}

/// DNS mode on loopback: three nodes, the election's winner writes a dnsmasq hosts file that a
/// real dnsmasq serves; a node that stops disappears from the answers.
@Suite struct DNSModeTests {
    @Test func dnsmasqServesTheHealthyNodesAndADeadOneDisappears() async throws {
        let dnsPort = try FreePort.pick()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pgchorus-dnsmode-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/hosts.d", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        chmod(dir, 0o755)
        chmod(dir + "/hosts.d", 0o755)
        let dnsmasq = try BackgroundProcess("/usr/sbin/dnsmasq", [
            "--keep-in-foreground", "--no-resolv", "--no-hosts", "--user=root", "--bind-interfaces",
            "--listen-address=127.0.0.1", "--port=\(dnsPort)", "--hostsdir=\(dir)/hosts.d", "--log-facility=-",
        ])
        defer { dnsmasq.stop(grace: 5) }
        func resolve() throws -> [String] {
            let out = try CommandRunner.run("/usr/bin/dig", ["@127.0.0.1", "-p", "\(dnsPort)", "+short", "+time=2", "+tries=1", "db.example.test"], timeout: .seconds(20))
            return out.stdoutLines.filter { !$0.isEmpty }.sorted()
        }
        let config = { (_: Int) in
            """
            [health_check]
            enabled = false

            [vip]
            mode = "dns"

            [vip.dns]
            format = "dnsmasq"
            file = "\(dir)/hosts.d/pgchorus"
            name = "db.example.test"

            [[backends]]
            id = "db1"
            host = "127.0.0.1"
            port = 9
            """
        }
        try await withNodeCluster(count: 3, backends: [], extra: config) { cluster in
            for i in 1...3 { try await cluster.start(i) }
            let published = try await cluster.waitUntil(seconds: 15) { try resolve() == ["127.0.0.2", "127.0.0.3", "127.0.0.4"] }
            #expect(published, "\((try? resolve()) ?? []) / \(cluster.log(1).suffix(1500))")
            // Node 1's view of the writer can lag the records by a heartbeat on a loaded machine.
            var owner: String?
            _ = try await cluster.waitUntil(seconds: 10) {
                owner = try await cluster.status(1).vip.owner
                return owner != nil
            }
            let writer = try #require(owner, "\(cluster.log(1).suffix(1500))")
            #expect(try await cluster.status(2).vip.mode == "dns")
            #expect(try await cluster.status(2).vip.address == "db.example.test")
            // Stop a node that is not the writer: it disappears from the records.
            let victim = [1, 2, 3].first { "node\($0)" != writer }!
            await cluster.stop(victim)
            let remaining = [2, 3, 4].filter { $0 != victim + 1 }.map { "127.0.0.\($0)" }
            let updated = try await cluster.waitUntil(seconds: 15) { try resolve() == remaining }
            #expect(updated, "\((try? resolve()) ?? [])")
            let hosts = try String(contentsOfFile: "\(dir)/hosts.d/pgchorus", encoding: .utf8)
            #expect(hosts.split(separator: "\n").filter { !$0.hasPrefix("#") }.count == 2, "\(hosts)")
            // `pgchorus dns render` prints the same records from a node's view, writing nothing.
            let alive = [1, 2, 3].first { $0 != victim }!
            let rendered = try cluster.cli(alive, ["dns", "render"])
            #expect(rendered.exitCode == 0, "\(rendered.report)")
            #expect(rendered.stdoutLines.filter { !$0.hasPrefix("#") } == remaining.map { "\($0) db.example.test" }, "\(rendered.report)")
        }
    }
}
}
