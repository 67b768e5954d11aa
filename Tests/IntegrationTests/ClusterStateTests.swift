import Admin
import Crypto
import Foundation
import LocalCluster
import NIOCore
import NIOPosix
import State
import Synchronization
import Testing
import TestSupport

/// Three real pgchorusd nodes on 127.0.0.2–4 in front of three real backends: a backend failure
/// seen by one node reaches every node, survives restarts, and only an identical backend may be
/// attached again. Peer messages are authenticated.
@Suite(.serialized) struct ClusterStateTests {
    /// Only node 1 runs health checks, so the others can learn of a failure only from the state service.
    static func healthOnNodeOne(_ i: Int) -> String {
        i == 1 ? "[health_check]\ninterval = 0.2\ntimeout = 1\nfailures = 2\n" : "[health_check]\nenabled = false\n"
    }

    @Test func aStoppedBackendIsFailedOnEveryNodeSurvivesRestartsAndADivergedOneCannotBeAttached() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withNodeCluster(count: 3, backends: servers, extra: Self.healthOnNodeOne) { cluster in
                try await cluster.start(1)
                try await cluster.start(2)
                #expect(try await cluster.waitUntil(seconds: 10) { try await cluster.status(2).nodes.first { $0.id == "node1" }?.alive == true })

                try servers[2].stop()
                // Node 1 detects it (health checks), node 2 hears of it.
                #expect(try await cluster.waitUntil(seconds: 15) { try await cluster.status(1).backends[2].status == "failed" })
                let propagated = try await cluster.waitUntil(seconds: 2) { try await cluster.status(2).backends[2].status == "failed" }
                #expect(propagated, "node2 did not learn within 2 s that db3 failed:\n\(cluster.log(2).suffix(2000))")
                let seen = try await cluster.status(2).backends[2]
                #expect(seen.origin == "node1")
                #expect(seen.reason.contains("health check failed"), "\(seen.reason)")

                // A node started afterwards learns it from its peers (its own checks are off).
                try await cluster.start(3)
                #expect(try await cluster.waitUntil(seconds: 5) { try await cluster.status(3).backends[2].status == "failed" })

                // Writes go on through any node without db3.
                let write = try Clients.psql(cluster.connectionString(3), ["-c", "create table kept (v int); insert into kept values (1), (2)"])
                #expect(write.exitCode == 0, "\(write.report)")

                // db3 comes back, every node restarts: db3 stays failed everywhere (persisted state).
                try servers[2].restart()
                for i in 1...3 { await cluster.stop(i) }
                for i in 1...3 { try await cluster.start(i) }
                for i in 1...3 {
                    let b = try await cluster.status(i).backends[2]
                    #expect(b.status == "failed", "node\(i) forgot that db3 failed: \(b)")
                }

                // db3 missed the writes: attach is refused, and it stays failed on every node.
                let attach = try cluster.cli(2, ["attach", "db3"])
                #expect(attach.exitCode == 1, "\(attach.report)")
                #expect(attach.stderr.contains("differs from db1"), "\(attach.report)")
                #expect(attach.stderr.contains("table public.kept"), "\(attach.report)")
                #expect(attach.stderr.contains("must be recovered"), "\(attach.report)")
                for i in 1...3 { #expect(try await cluster.status(i).backends[2].status == "failed") }
                #expect(try servers[2].psql("select count(*) from pg_tables where tablename = 'kept'") == "0")

                // The event log tells the story, with the origin of the change.
                let events = try await cluster.events(3)
                #expect(events.contains { $0.kind == "backend-status" && $0.subject == "db3" && $0.origin == "node1" && $0.detail.contains("online → failed") })
                #expect(events.contains { $0.kind == "node-up" && $0.subject == "node1" })
            }
        }
    }

    @Test func detachAndAttachOfAnIdenticalBackendRoundTripOnEveryNode() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withNodeCluster(count: 3, backends: servers, extra: Self.healthOnNodeOne) { cluster in
                for i in 1...3 { try await cluster.start(i) }
                #expect(try await cluster.waitUntil(seconds: 10) { try await cluster.status(1).quorum })
                let create = try Clients.psql(cluster.connectionString(1), ["-c", "create table r (v int); insert into r values (1)"])
                #expect(create.exitCode == 0, "\(create.report)")

                let detach = try cluster.cli(2, ["detach", "db2"])
                #expect(detach.exitCode == 0, "\(detach.report)")
                #expect(detach.stdout.contains("db2 detached (down)"), "\(detach.report)")
                for i in 1...3 {
                    #expect(try await cluster.waitUntil(seconds: 5) { try await cluster.status(i).backends[1].status == "down" }, "node\(i)")
                }
                #expect(try await cluster.status(3).backends[1].origin == "node2")
                let read = try Clients.psql(cluster.connectionString(3), ["-A", "-t", "-c", "select count(*) from r"])
                #expect(read.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "\(read.report)")
                // Degraded while db2 is down.
                #expect(try cluster.cli(1, ["status"]).exitCode == 1)

                let attach = try cluster.cli(3, ["attach", "db2"])
                #expect(attach.exitCode == 0, "\(attach.report)")
                #expect(attach.stdout.contains("verified identical to db1"), "\(attach.report)")
                for i in 1...3 {
                    #expect(try await cluster.waitUntil(seconds: 5) { try await cluster.status(i).backends[1].status == "online" }, "node\(i)")
                }
                // db2 takes writes again, through any node.
                let write = try Clients.psql(cluster.connectionString(2), ["-c", "insert into r values (2)"])
                #expect(write.exitCode == 0, "\(write.report)")
                for s in servers { #expect(try s.psql("select string_agg(v::text, ',' order by v) from r") == "1,2", "\(s.name)") }
                #expect(try cluster.cli(1, ["status"]).exitCode == 0)

                // Unknown backends and the last online one are refused with a reason.
                let unknown = try cluster.cli(1, ["detach", "db9"])
                #expect(unknown.exitCode == 1)
                #expect(unknown.stderr.contains("no backend \"db9\""), "\(unknown.report)")
            }
        }
    }

    @Test func statusTableJSONAndExitCodes() async throws {
        let adminPort = try FreePort.pick(), metricsPort = try FreePort.pick()
        try await withPostgresServers(count: 2) { servers in
            try await withNodeCluster(count: 3, backends: servers, extra: { i in
                Self.healthOnNodeOne(i) + (i == 1 ? """
                [admin]
                socket = "admin.sock"
                tcp_address = "127.0.0.2"
                tcp_port = \(adminPort)
                token_file = "../token"
                metrics_address = "127.0.0.2"
                metrics_port = \(metricsPort)
                """ : "")
            }, files: ["token": "s3cret-token\n"]) { cluster in
                try await cluster.start(1)
                // One node of three: no quorum → 2.
                #expect(try await cluster.waitUntil(seconds: 5) { try cluster.cli(1, ["status"]).exitCode == 2 })
                try await cluster.start(2)
                try await cluster.start(3)
                #expect(try await cluster.waitUntil(seconds: 10) { try cluster.cli(1, ["status"]).exitCode == 0 })
                #expect(try await cluster.waitUntil(seconds: 5) { try await cluster.status(1).backends.allSatisfy { $0.check?.ok == true } })

                let table = try cluster.cli(1, ["status"])
                #expect(table.exitCode == 0, "\(table.report)")
                let lines = table.stdoutLines
                #expect(lines.contains { $0.hasPrefix("node:     node1 (127.0.0.2)") }, "\(table.stdout)")
                #expect(lines.contains("health:   healthy"), "\(table.stdout)")
                #expect(lines.contains("quorum:   yes (3 of 3 node(s) alive)"), "\(table.stdout)")
                #expect(lines.contains("backends: 2 of 2 online"), "\(table.stdout)")
                let nodeRow = try #require(lines.first { $0.hasPrefix("node2 ") })
                #expect(nodeRow.split(separator: " ", omittingEmptySubsequences: true).prefix(3) == ["node2", "127.0.0.3:\(cluster.port)", "yes"], "\(nodeRow)")
                let backendRow = try #require(lines.first { $0.hasPrefix("db1 ") })
                let cells = backendRow.split(separator: " ", omittingEmptySubsequences: true)
                #expect(cells.prefix(4) == ["db1", "127.0.0.1:\(servers[0].port)", "online", "yes"], "\(backendRow)")
                #expect(backendRow.contains(" ok "), "\(backendRow)")

                let json = try cluster.cli(1, ["status", "--json"])
                #expect(json.exitCode == 0, "\(json.report)")
                let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
                #expect((object["node"] as? [String: Any])?["id"] as? String == "node1")
                #expect(object["quorum"] as? Bool == true)
                #expect((object["vip"] as? [String: Any])?["mode"] as? String == "none")
                #expect(object["health"] as? String == "healthy")
                let nodes = try #require(object["nodes"] as? [[String: Any]])
                #expect(nodes.map { $0["id"] as? String } == ["node1", "node2", "node3"])
                #expect(nodes.map { $0["address"] as? String } == ["127.0.0.2", "127.0.0.3", "127.0.0.4"])
                #expect(nodes.allSatisfy { $0["alive"] as? Bool == true })
                let backends = try #require(object["backends"] as? [[String: Any]])
                #expect(backends.map { $0["id"] as? String } == ["db1", "db2"])
                #expect(backends.map { $0["host"] as? String } == ["127.0.0.1", "127.0.0.1"])
                #expect(backends.map { $0["port"] as? Int } == servers.map(\.port))
                #expect(backends.map { $0["status"] as? String } == ["online", "online"])
                #expect(backends.allSatisfy { $0["reason"] is String && $0["since"] is Double })

                // The TCP admin API wants the token.
                let noToken = try await AdminClient.send(AdminRequest(command: .status), host: "127.0.0.2", port: adminPort)
                #expect(!noToken.ok)
                #expect(noToken.error == "wrong or missing token")
                #expect(noToken.status == nil)
                let withToken = try await AdminClient.send(AdminRequest(command: .status, token: "s3cret-token"), host: "127.0.0.2", port: adminPort)
                #expect(withToken.ok)
                #expect(withToken.status?.node.id == "node1")

                // A failed backend: degraded → 1, and the table names the reason.
                try servers[1].stop()
                #expect(try await cluster.waitUntil(seconds: 15) { try cluster.cli(3, ["status"]).exitCode == 1 })
                let degraded = try cluster.cli(3, ["backends"])
                let row = try #require(degraded.stdoutLines.first { $0.hasPrefix("db2 ") })
                #expect(row.contains(" failed "), "\(row)")
                #expect(row.contains("health check failed"), "\(row)")

                // Prometheus metrics show the same.
                let scrape = try CommandRunner.run(Clients.python, ["-c", "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.2:\(metricsPort)/metrics', timeout=10).read().decode())"], timeout: .seconds(30))
                #expect(scrape.exitCode == 0, "\(scrape.report)")
                let metrics = scrape.stdoutLines
                #expect(metrics.contains(#"pgchorus_backend_status{backend="db2",status="failed"} 1.0"#), "\(scrape.stdout)")
                #expect(metrics.contains(#"pgchorus_backend_status{backend="db1",status="online"} 1.0"#), "\(scrape.stdout)")
                #expect(metrics.contains(#"pgchorus_peer_alive{node="node3"} 1.0"#), "\(scrape.stdout)")
                #expect(metrics.contains("pgchorus_quorum 1.0"), "\(scrape.stdout)")
                #expect(metrics.contains { $0.hasPrefix(#"pgchorus_health_check_latency_seconds{backend="db1"} "#) }, "\(scrape.stdout)")
                #expect(metrics.contains { $0.hasPrefix("pgchorus_sessions ") }, "\(scrape.stdout)")

                // The daemon not running: a clear error and exit 3.
                await cluster.stop(2)
                let gone = try cluster.cli(2, ["status"])
                #expect(gone.exitCode == 3, "\(gone.report)")
                #expect(gone.stderr.contains("is pgchorusd running"), "\(gone.report)")
                try servers[1].restart()
            }
        }
    }

    @Test func aLoneNodeOfTwoKeepsQuorumOnlyWhileItHoldsTheBackendWitness() async throws {
        try await withPostgresServers(count: 3) { servers in
            let health = { (_: Int) in "[health_check]\ninterval = 0.2\ntimeout = 1\n" }
            try await withNodeCluster(count: 2, backends: servers, extra: health, clusterKeys: "witness = \"backends\"") { cluster in
                // Alone, node 1 takes the advisory lock on every backend: quorum.
                try await cluster.start(1)
                #expect(try await cluster.waitUntil(seconds: 10) { try await cluster.status(1).quorum })
                let locks = try servers.map { try $0.psql("select count(*) from pg_locks where locktype = 'advisory'") }
                #expect(locks == ["1", "1", "1"], "\(locks)")
                // Both up: quorum by majority; node 2 cannot take the lock node 1 holds.
                try await cluster.start(2)
                #expect(try await cluster.waitUntil(seconds: 10) { try await cluster.status(2).nodes.allSatisfy(\.alive) })
                #expect(try await cluster.status(2).quorum)
                // Node 1 gone: its sessions end, node 2 takes the witness and keeps quorum alone.
                await cluster.stop(1)
                #expect(try await cluster.waitUntil(seconds: 10) {
                    let s = try await cluster.status(2)
                    return s.nodes.first { $0.id == "node1" }?.alive == false && s.quorum
                })
                // A rival takes the witness from under node 2 (its sessions are ended): no quorum.
                let other = try LibPQConnectionHolder(servers)
                #expect(try await cluster.waitUntil(seconds: 10) { try await cluster.status(2).quorum == false })
                other.release()
            }
        }
    }

    @Test func aDeadNodesPreparedTransactionIsResolvedByThePeersAfterTheGracePeriod() async throws {
        try await withPostgresServers(count: 2) { servers in
            // A grace of 8 s: the prepared transaction must still be there when the test, perhaps
            // resumed late on a busy run, looks for it after node 1's exit.
            let extra = { (_: Int) in "[replication]\nresolve_interval = 1\nin_doubt_grace = 8\n" }
            try await withNodeCluster(count: 3, backends: servers, extra: extra) { cluster in
                try await cluster.start(1, environment: ["PGCHORUS_TEST_HOOK": "exit-after-prepare"])
                try await cluster.start(2)
                try await cluster.start(3)
                #expect(try await cluster.nodesWithoutQuorum(1...3) == [], "nodes without quorum")
                let create = try Clients.psql(cluster.connectionString(2), ["-c", "create table doubt (v int)"])
                #expect(create.exitCode == 0, "\(create.report)")
                // Node 1 dies between PREPARE TRANSACTION and COMMIT PREPARED; its locks stay on every backend.
                let write = try Clients.psql(cluster.connectionString(1), ["-c", "insert into doubt values (1)"])
                #expect(write.exitCode != 0)
                #expect(try await cluster.waitUntil(seconds: 10) { !cluster.isRunning(1) })
                for s in servers { #expect(try s.psql("select count(*) from pg_prepared_xacts where gid like 'pgchorus:node1:%'") == "1") }
                // Node 1 stays down: its peers resolve its transaction (presumed abort: nothing committed anywhere).
                let resolved = try await cluster.waitUntil(seconds: 20) {
                    try servers.allSatisfy { try $0.psql("select count(*) from pg_prepared_xacts") == "0" }
                }
                #expect(resolved, "\(cluster.log(2).suffix(1500))")
                for s in servers { #expect(try s.psql("select count(*) from doubt") == "0") }
                #expect(cluster.log(2).contains("resolved in-doubt transaction") || cluster.log(3).contains("resolved in-doubt transaction"))
                // The table is writable again through the survivors (no lock left behind).
                let after = try Clients.psql(cluster.connectionString(3), ["-c", "insert into doubt values (2)"])
                #expect(after.exitCode == 0, "\(after.report)")
            }
        }
    }

    @Test func forgedReplayedStaleAndWrongKeyPeerMessagesAreRefusedAndLogged() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withNodeCluster(count: 3, backends: servers, extra: { _ in "[health_check]\nenabled = false\n" }) { cluster in
                try await cluster.start(1)
                let key = Array(try String(contentsOfFile: cluster.keyPath, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines).utf8)
                let target = try SocketAddress(ipAddress: cluster.address(1), port: cluster.port)
                // Messages claim to come from node2; the test listens where node2 would, to see the acks.
                let listener = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .channelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(DatagramCollector()) } }
                    .bind(host: cluster.address(2), port: cluster.port).get()
                defer { listener.close(promise: nil) }
                func send(_ bytes: [UInt8]) async throws {
                    try await listener.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: listener.allocator.buffer(bytes: bytes)))
                }
                func claimFailed(generation: Int, sentAt: Double = Date().timeIntervalSince1970) -> PeerMessage {
                    PeerMessage(kind: .notice, from: "node2", sentAt: sentAt, nonce: PeerMessage.makeNonce(),
                                backends: [BackendState(id: "db2", status: .failed, reason: "forged", since: sentAt, generation: generation, origin: "node2")])
                }
                let wrongKey = SymmetricKey(data: Array("another-cluster-key-0123456789".utf8))
                let rightKey = SymmetricKey(data: key)

                // A valid heartbeat that changes nothing, then the same bytes again: the replay is refused.
                let harmless = PeerEnvelope.seal(PeerMessage(kind: .heartbeat, from: "node2", sentAt: Date().timeIntervalSince1970,
                                                             nonce: PeerMessage.makeNonce(), backends: []), key: rightKey)
                // Sent again (at most 5 times) until refused: a lone node (its peers are not started) opens its
                // sockets afresh every 2 s, and a datagram arriving in that moment is lost, as UDP may be.
                var seen = false
                for _ in 0..<5 where !seen {
                    try await send(PeerEnvelope.seal(claimFailed(generation: 50), key: wrongKey))
                    try await send(Array("PGCH1".utf8) + [UInt8](repeating: 0, count: 32) + Array(#"{"kind":"notice"}"#.utf8))
                    try await send(PeerEnvelope.seal(claimFailed(generation: 51, sentAt: Date().timeIntervalSince1970 - 3600), key: rightKey))
                    try await send(harmless)
                    try await send(harmless)
                    seen = try await cluster.waitUntil(seconds: 3) {
                        Set(try await cluster.events(1).filter { $0.kind == "peer-refused" }.map { String($0.detail.prefix(20)) }).count >= 3
                    }
                }
                #expect(seen)
                let refused = try await cluster.events(1).filter { $0.kind == "peer-refused" }.map(\.detail)
                #expect(refused.contains { $0.contains("HMAC does not match") }, "\(refused)")
                #expect(refused.contains { $0.contains("timestamp is") }, "\(refused)")
                #expect(refused.contains { $0.contains("replayed message") }, "\(refused)")
                #expect(refused.allSatisfy { !$0.isEmpty })
                let log = cluster.log(1)
                #expect(log.contains("peer message refused: the HMAC does not match"), "\(log.suffix(3000))")
                #expect(log.contains("peer message refused: replayed message"), "\(log.suffix(3000))")
                // The state did not move.
                let db2 = try await cluster.status(1).backends[1]
                #expect(db2.status == "online")
                #expect(db2.generation == 0)

                // The same notice, correctly signed and fresh, is applied and acknowledged: the refusals above were the checks, not the path.
                // Sent again (at most 5 times, each fresh: its own nonce and time) until applied, for the same
                // reason as above: a datagram that arrives while the lone node re-opens its sockets is lost.
                var applied = false
                for _ in 0..<5 where !applied {
                    try await send(PeerEnvelope.seal(claimFailed(generation: 52), key: rightKey))
                    applied = try await cluster.waitUntil(seconds: 3) { try await cluster.status(1).backends[1].status == "failed" }
                }
                #expect(applied)
                let collector = try await listener.pipeline.handler(type: DatagramCollector.self).get()
                #expect(try await cluster.waitUntil(seconds: 5) {
                    collector.received().contains { (try? PeerEnvelope.open($0, key: SymmetricKey(data: key)))?.kind == .ack }
                })
            }
        }
    }
}

/// Holds the witness advisory lock on every backend from the test, as a rival node would.
final class LibPQConnectionHolder: @unchecked Sendable {
    // @unchecked: used from the test's task only.
    var connections: [LibPQConnection] = []
    init(_ servers: [LocalPostgresServer]) throws {
        for s in servers {
            let c = try LibPQConnection(s.connectionString(), target: s.name)
            var held = false
            for _ in 0..<100 where !held {
                _ = try c.query("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'pgchorus-health'")
                held = try c.query("select pg_try_advisory_lock(8099551755046647155)").first?.first == "t"
                if !held { usleep(20_000) }
            }
            guard held else { throw FixtureError("could not take the witness lock on \(s.name)") }
            connections.append(c)
        }
    }
    func release() { connections = [] }
}

/// Keeps every datagram received.
final class DatagramCollector: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let datagrams = Mutex<[[UInt8]]>([])

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = Array(unwrapInboundIn(data).data.readableBytesView)
        datagrams.withLock { $0.append(bytes) }
    }

    func received() -> [[UInt8]] { datagrams.withLock { $0 } }
}
