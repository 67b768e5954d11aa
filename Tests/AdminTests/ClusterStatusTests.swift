import Admin
import Foundation
import State
import Testing

/// The status answer: exit codes for monitoring, the JSON shape, and the tables the CLI prints.
@Suite struct ClusterStatusTests {
    func status(backends: [String], nodesAlive: [Bool], quorum: Bool) -> ClusterStatus {
        var s = ClusterStatus(
            node: .init(id: "node1", address: "127.0.0.2", version: "0.1.0", startedAt: 0, sessions: 3, stateDatabase: nil),
            nodes: nodesAlive.enumerated().map { i, alive in
                StateService.NodeView(id: "node\(i + 1)", address: "127.0.0.\(i + 2)", port: 7433, priority: 100, alive: alive, isSelf: i == 0,
                                      lastSeen: 1_800_000_000, reachableBackends: nil, quorum: nil)
            },
            backends: backends.enumerated().map { i, status in
                ClusterStatus.Backend(id: "db\(i + 1)", host: "127.0.0.1", port: 5433 + i, status: status, reason: status == "online" ? "configured" : "vote lost",
                                      since: 1_800_000_000, generation: 1, origin: "node1", lead: i == 0, check: nil, lag: nil)
            },
            quorum: quorum, vip: .init(mode: "none", address: nil, owner: nil), recovery: nil, health: "")
        s.health = ClusterStatus.health(for: s.exitCode)
        return s
    }

    @Test func exitCodesTellHealthyDegradedAndCritical() {
        #expect(status(backends: ["online", "online"], nodesAlive: [true, true, true], quorum: true).exitCode == 0)
        #expect(status(backends: ["online", "failed"], nodesAlive: [true, true, true], quorum: true).exitCode == 1)
        #expect(status(backends: ["online", "down"], nodesAlive: [true, true, true], quorum: true).exitCode == 1)
        #expect(status(backends: ["online", "online"], nodesAlive: [true, true, false], quorum: true).exitCode == 1)
        #expect(status(backends: ["online", "online"], nodesAlive: [true, false, false], quorum: false).exitCode == 2)
        #expect(status(backends: ["failed", "down"], nodesAlive: [true, true, true], quorum: true).exitCode == 2)
        #expect(ClusterStatus.health(for: 0) == "healthy")
        #expect(ClusterStatus.health(for: 1) == "degraded")
        #expect(ClusterStatus.health(for: 2) == "critical")
    }

    @Test func theJSONHasTheDocumentedFields() throws {
        let s = status(backends: ["online", "failed"], nodesAlive: [true, false], quorum: true)
        let data = try JSONEncoder().encode(s)
        let o = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(Set(o.keys).isSuperset(of: ["node", "nodes", "backends", "quorum", "vip", "health"]))
        let b = try #require((o["backends"] as? [[String: Any]])?.last)
        #expect(b["id"] as? String == "db2")
        #expect(b["host"] as? String == "127.0.0.1")
        #expect(b["port"] as? Int == 5434)
        #expect(b["status"] as? String == "failed")
        #expect(b["reason"] as? String == "vote lost")
        #expect(b["since"] as? Double == 1_800_000_000)
        let n = try #require((o["nodes"] as? [[String: Any]])?.last)
        #expect(n["id"] as? String == "node2")
        #expect(n["address"] as? String == "127.0.0.3")
        #expect(n["alive"] as? Bool == false)
        #expect(try JSONDecoder().decode(ClusterStatus.self, from: data) == s)
    }

    @Test func tablesShowEveryBackendAndNode() {
        let s = status(backends: ["online", "failed"], nodesAlive: [true, false], quorum: true)
        let text = StatusRendering.status(s)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains("health:   degraded"))
        #expect(lines.contains("quorum:   yes (1 of 2 node(s) alive)"))
        #expect(lines.contains("backends: 1 of 2 online"))
        let db2 = lines.first { $0.hasPrefix("db2 ") }
        #expect(db2?.split(separator: " ", omittingEmptySubsequences: true).prefix(3) == ["db2", "127.0.0.1:5434", "failed"])
        #expect(db2?.hasSuffix("vote lost") == true)
        let node2 = lines.first { $0.hasPrefix("node2 ") }
        #expect(node2?.split(separator: " ", omittingEmptySubsequences: true).prefix(3) == ["node2", "127.0.0.3:7433", "NO"])
        #expect(StatusRendering.time(1_800_000_000) == "2027-01-15T08:00:00Z")
    }

    @Test func requestsRoundTripAsOneJSONLine() throws {
        let r = AdminRequest(command: .attach, backend: "db2", token: "t")
        let line = r.encodedLine()
        #expect(line.last == UInt8(ascii: "\n"))
        #expect(line.dropLast().contains(UInt8(ascii: "\n")) == false)
        #expect(try JSONDecoder().decode(AdminRequest.self, from: Data(line.dropLast())) == r)
    }
}
