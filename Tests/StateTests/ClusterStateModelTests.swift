import Crypto
import Foundation
import Logging
@testable import State
import Synchronization
import Dispatch
import GRDB
import Testing

/// The backend status model, the state database, peer messages, membership and health decisions:
/// pure logic and a real SQLite file, no sockets.
@Suite struct ClusterStateModelTests {
    let backends = [
        Configuration.Backend(id: "db1", host: "127.0.0.1", port: 5433),
        Configuration.Backend(id: "db2", host: "127.0.0.1", port: 5434),
        Configuration.Backend(id: "db3", host: "127.0.0.1", port: 5435),
    ]

    func scratch() throws -> String {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("pgchorus-state-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    func state(_ status: BackendState.Status, generation: Int, origin: String = "n1") -> BackendState {
        BackendState(id: "db2", status: status, reason: "r", since: 1, generation: generation, origin: origin)
    }

    @Test func newerGenerationsWinAndTiesGoToTheMoreCautiousStatus() {
        #expect(state(.online, generation: 3).supersedes(state(.failed, generation: 2)))
        #expect(!state(.failed, generation: 2).supersedes(state(.online, generation: 3)))
        #expect(state(.failed, generation: 2).supersedes(state(.online, generation: 2)))
        #expect(!state(.online, generation: 2).supersedes(state(.failed, generation: 2)))
        #expect(state(.down, generation: 2).supersedes(state(.failed, generation: 2)))
        // Same change twice: a duplicate, dropped. Same generation and status from two nodes: one stable winner.
        #expect(!state(.failed, generation: 2).supersedes(state(.failed, generation: 2)))
        #expect(state(.failed, generation: 2, origin: "n2").supersedes(state(.failed, generation: 2, origin: "n1")))
        #expect(!state(.failed, generation: 2, origin: "n1").supersedes(state(.failed, generation: 2, origin: "n2")))
        // Everyone's starting point is not a change.
        #expect(!state(.online, generation: 0, origin: "n9").supersedes(state(.online, generation: 0, origin: "n1")))
    }

    @Test func aFailedBackendStaysFailedAcrossRestartsAndEveryChangeIsAnEvent() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try StateStore(directory: dir)
        let registry = BackendRegistry(backends: backends, nodeID: "n1", store: store, logger: Logger(label: "t"), now: 100)
        let seen = LockedChanges()
        registry.addListener { change, local in seen.append(change, local) }
        #expect(registry.fail("db2", reason: "vote lost\non two lines", now: 200))
        #expect(!registry.fail("db2", reason: "again", now: 201), "a duplicate failure changes nothing")
        #expect(registry.online().map(\.id) == ["db1", "db3"])
        #expect(seen.all().map(\.0.generation) == [1])
        #expect(seen.all().map(\.1) == [true])

        // A "restart": pgchorusd waits for the store's writes when it stops, then a new registry over the same file.
        store.waitForWrites()
        let reopened = BackendRegistry(backends: backends, nodeID: "n1", store: try StateStore(directory: dir), logger: Logger(label: "t"), now: 300)
        let e = try #require(reopened.entry("db2"))
        #expect(e.status == .failed)
        #expect(e.reason == "vote lost on two lines")
        #expect(e.state.generation == 1)
        #expect(e.since == 200)
        let events = try store.events(since: nil, limit: 100)
        #expect(events.count == 1)
        #expect(events[0].kind == "backend-status")
        #expect(events[0].subject == "db2")
        #expect(events[0].detail == "online → failed: vote lost on two lines (generation 1)")
        #expect(try store.events(since: 250, limit: 100).isEmpty)
    }

    /// A status change is decided on a session's event loop: it must not wait for the disk. Another
    /// connection holds the database's write lock (as a slow fsync or a backup would) while a backend
    /// is failed: the failure takes effect at once, and is on disk once the lock is let go.
    @Test func aStatusChangeDoesNotWaitForTheStateDatabase() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try StateStore(directory: dir)
        let registry = BackendRegistry(backends: backends, nodeID: "n1", store: store, logger: Logger(label: "t"), now: 100)
        let other = try DatabaseQueue(path: store.path), reader = try DatabaseQueue(path: store.path)
        let locked = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0), failed = DispatchSemaphore(value: 0)
        let holder = Thread {
            try? other.inDatabase { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                locked.signal()
                _ = release.wait(timeout: .now() + 30)
                try db.execute(sql: "COMMIT")
            }
        }
        holder.start()
        #expect(locked.wait(timeout: .now() + 10) == .success, "the other connection took the write lock")
        let caller = Thread {
            registry.fail("db2", reason: "lost", now: 200)
            failed.signal()
        }
        caller.start()
        // The caller comes back while the lock is still held (a write on its thread would wait for it).
        let returned = failed.wait(timeout: .now() + 4) == .success
        let onDiskMeanwhile = try reader.read { db in try String.fetchOne(db, sql: "SELECT status FROM backends WHERE id = 'db2'") }
        release.signal()
        #expect(returned, "fail() returned while the state database was locked")
        #expect(registry.status(of: "db2") == .failed)
        #expect(onDiskMeanwhile == nil, "nothing was written while the lock was held")
        if !returned { _ = failed.wait(timeout: .now() + 30) }
        // Reads wait for the writes before them: the change and its event are there once the lock is gone.
        #expect(try store.backends().first { $0.id == "db2" }?.status == .failed)
        #expect(try store.events(since: nil, limit: 10).map(\.subject) == ["db2"])
    }

    @Test func peerChangesAreAppliedOnceAndStaleOnesAreDropped() throws {
        let registry = BackendRegistry(backends: backends, nodeID: "n1", logger: Logger(label: "t"), now: 0)
        let seen = LockedChanges()
        registry.addListener { change, local in seen.append(change, local) }
        #expect(registry.apply(BackendState(id: "db3", status: .failed, reason: "peer saw it", since: 5, generation: 4, origin: "n2")))
        #expect(!registry.apply(BackendState(id: "db3", status: .failed, reason: "peer saw it", since: 5, generation: 4, origin: "n2")))
        #expect(!registry.apply(BackendState(id: "db3", status: .online, reason: "old news", since: 1, generation: 3, origin: "n3")))
        #expect(!registry.apply(BackendState(id: "db9", status: .failed, reason: "unknown", since: 1, generation: 9, origin: "n3")))
        #expect(registry.status(of: "db3") == .failed)
        #expect(seen.all().map(\.1) == [false], "peer changes are not sent back out as local ones")
        // The next local change builds on the peer's generation.
        #expect(registry.setStatus("db3", .online, reason: "attached", now: 9))
        #expect(registry.entry("db3")?.state.generation == 5)
        #expect(registry.entry("db3")?.state.origin == "n1")
    }

    /// A reload that removes a backend sets it `down`, then forgets it. Sessions compare the view's
    /// generation with the one they saw: it must never come back to an earlier value, or a session
    /// that looks only after the removal keeps the removed backend (CI once hung that way: its
    /// sessions went on sending to a backend that had left the configuration).
    @Test(arguments: [false, true])
    func theViewGenerationNeverGoesBackWhenAReloadRemovesABackend(failedFirst: Bool) {
        let registry = BackendRegistry(backends: backends, nodeID: "n1", logger: Logger(label: "t"), now: 0)
        if failedFirst { #expect(registry.fail("db3", reason: "x", now: 1)) }
        var seen = [registry.viewGeneration]
        let recorded = LockedChanges()
        registry.addListener { change, local in recorded.append(change, local) }
        registry.reconfigure(added: [], removed: [backends[2]], order: ["db1", "db2"], now: 2)
        seen.append(registry.viewGeneration)
        #expect(registry.online().map(\.id) == ["db1", "db2"])
        #expect(registry.entry("db3") == nil)
        #expect(recorded.all().map(\.0.status) == [.down], "it leaves service like a detach, then is forgotten")
        // Brought back by a later reload (it joins `down`), then removed again.
        registry.reconfigure(added: [backends[2]], removed: [], order: ["db1", "db2", "db3"], now: 3)
        seen.append(registry.viewGeneration)
        registry.reconfigure(added: [], removed: [backends[2]], order: ["db1", "db2"], now: 4)
        seen.append(registry.viewGeneration)
        #expect(zip(seen, seen.dropFirst()).allSatisfy { $0 < $1 }, "generations seen: \(seen)")
    }

    @Test func theLastOnlineBackendIsNeverFailed() {
        let registry = BackendRegistry(backends: Array(backends.prefix(2)), nodeID: "n1", logger: Logger(label: "t"), now: 0)
        #expect(registry.fail("db1", reason: "x", now: 1))
        #expect(!registry.fail("db2", reason: "x", now: 2))
        #expect(registry.online().map(\.id) == ["db2"])
    }

    @Test func peerMessagesAreSignedAndAnythingElseIsRefused() throws {
        let key = SymmetricKey(data: Array("0123456789abcdef0123456789abcdef".utf8))
        let m = PeerMessage(kind: .notice, from: "n2", sentAt: 1000, nonce: PeerMessage.makeNonce(), backends: [state(.failed, generation: 2)])
        let sealed = PeerEnvelope.seal(m, key: key)
        #expect(try PeerEnvelope.open(sealed, key: key) == m)
        #expect(throws: PeerMessageError.badSignature) { try PeerEnvelope.open(sealed, key: SymmetricKey(data: Array("another key of 32 bytes........!".utf8))) }
        var tampered = sealed
        tampered[tampered.count - 3] ^= 0x01
        #expect(throws: PeerMessageError.badSignature) { try PeerEnvelope.open(tampered, key: key) }
        #expect(throws: PeerMessageError.notPgchorus) { try PeerEnvelope.open(Array("hello".utf8), key: key) }
        #expect(throws: PeerMessageError.notPgchorus) { try PeerEnvelope.open([], key: key) }
        #expect(m.nonce.count == 32)
        #expect(m.nonce != PeerMessage.makeNonce())
    }

    @Test func replaysAndStaleTimestampsAreRefused() throws {
        var guardian = ReplayGuard(maxClockSkew: 30)
        let m = PeerMessage(kind: .heartbeat, from: "n2", sentAt: 1000, nonce: "abc", backends: [])
        try guardian.admit(m, now: 1001)
        #expect(throws: PeerMessageError.replayed(nonce: "abc")) { try guardian.admit(m, now: 1002) }
        var old = m
        old.nonce = "def"
        #expect(throws: PeerMessageError.clockSkew(seconds: 100)) { try guardian.admit(old, now: 1100) }
        var future = m
        future.nonce = "ghi"
        future.sentAt = 2000
        #expect(throws: PeerMessageError.clockSkew(seconds: -1000)) { try guardian.admit(future, now: 1000) }
    }

    @Test func quorumIsAStrictMajorityAndTwoNodesNeedTheWitness() {
        let three = (1...3).map { Configuration.ClusterNode(id: "n\($0)", address: "127.0.0.\($0 + 1)", port: 7433, priority: 100) }
        var m = Membership(nodes: three, selfID: "n1", peerTimeout: 2, witness: false)
        #expect(m.aliveCount(now: 10) == 1)
        #expect(!m.hasQuorum(now: 10, holdsWitness: true))
        let known = m.heard(from: "n2", at: 10, reachableBackends: 3, quorum: true)
        let stranger = m.heard(from: "n9", at: 10, reachableBackends: nil, quorum: nil)
        #expect(known)
        #expect(!stranger)
        #expect(m.hasQuorum(now: 11, holdsWitness: false))
        let first = m.transitions(now: 11)
        let second = m.transitions(now: 11)
        #expect(first.map { $0.0.node.id } == ["n2"])
        #expect(second.isEmpty)
        #expect(!m.hasQuorum(now: 12.5, holdsWitness: false), "n2 silent for longer than the timeout")
        let gone = m.transitions(now: 12.5)
        #expect(gone.map(\.1) == [false])

        let two = Array(three.prefix(2))
        let plain = Membership(nodes: two, selfID: "n1", peerTimeout: 2, witness: false)
        #expect(!plain.hasQuorum(now: 0, holdsWitness: true))
        let witnessed = Membership(nodes: two, selfID: "n1", peerTimeout: 2, witness: true)
        #expect(witnessed.hasQuorum(now: 0, holdsWitness: true))
        #expect(!witnessed.hasQuorum(now: 0, holdsWitness: false))
        let single = Membership(nodes: [three[0]], selfID: "n1", peerTimeout: 2, witness: false)
        #expect(single.hasQuorum(now: 0, holdsWitness: false))
    }

    @Test func aBackendWhoseSettingsDifferFromTheMajorityOrCannotPrepareIsFailed() {
        func report(_ id: String, timeZone: String = "UTC", prepared: String = "10", ok: Bool = true) -> HealthChecker.Report {
            HealthChecker.Report(backend: id, ok: ok, latency: 0.001, error: nil, checkedAt: 0, consecutiveFailures: 0, settings: [
                "server_encoding": "UTF8", "DateStyle": "ISO, MDY", "IntervalStyle": "postgres", "TimeZone": timeZone,
                "standard_conforming_strings": "on", "server_version_num": "15", "max_prepared_transactions": prepared,
            ])
        }
        let odd = HealthChecker.settingsDisagreements(online: ["db1", "db2", "db3"], reports: [
            "db1": report("db1"), "db2": report("db2", timeZone: "Europe/Paris"), "db3": report("db3"),
        ], twoPhaseCommit: true)
        #expect(odd.map(\.0) == ["db2"])
        #expect(odd.first?.1 == "settings differ from the other backends: TimeZone is 'Europe/Paris' here but 'UTC' on the others")
        // Two backends that disagree: the lead's side wins.
        let tie = HealthChecker.settingsDisagreements(online: ["db1", "db2"], reports: [
            "db1": report("db1", timeZone: "Asia/Tokyo"), "db2": report("db2"),
        ], twoPhaseCommit: true)
        #expect(tie.map(\.0) == ["db2"])
        let noPrepare = HealthChecker.settingsDisagreements(online: ["db1", "db2"], reports: [
            "db1": report("db1"), "db2": report("db2", prepared: "0"),
        ], twoPhaseCommit: true)
        #expect(noPrepare.map(\.0) == ["db2"])
        #expect(noPrepare.first?.1.contains("max_prepared_transactions is 0") == true)
        #expect(HealthChecker.settingsDisagreements(online: ["db1", "db2"], reports: [
            "db1": report("db1"), "db2": report("db2", prepared: "0"),
        ], twoPhaseCommit: false).isEmpty)
        // An unreachable backend is judged by its failure count, not by stale settings.
        #expect(HealthChecker.settingsDisagreements(online: ["db1", "db2", "db3"], reports: [
            "db1": report("db1"), "db2": report("db2", timeZone: "X", ok: false), "db3": report("db3"),
        ], twoPhaseCommit: true).isEmpty)
    }

    @Test func clusterConfigurationErrorsNameTheKey() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "short\n".write(toFile: "\(dir)/short.key", atomically: true, encoding: .utf8)
        try "a-long-enough-cluster-key-1234567890\n".write(toFile: "\(dir)/good.key", atomically: true, encoding: .utf8)
        let backend = "[[backends]]\nid = \"db1\"\nhost = \"127.0.0.1\"\n"
        let nodes = "[[cluster.nodes]]\nid = \"a\"\naddress = \"127.0.0.2\"\n[[cluster.nodes]]\nid = \"b\"\naddress = \"127.0.0.3\"\n"
        func error(_ text: String) -> ConfigurationError? {
            do { _ = try Configuration.parse(text: text, file: "\(dir)/pgchorus.toml"); return nil } catch { return error }
        }
        #expect(error("[node]\nid = \"a\"\n[cluster]\n" + nodes + backend)?.key == "cluster.key_file")
        #expect(error("[node]\nid = \"a\"\n[cluster]\nkey_file = \"short.key\"\n" + nodes + backend)?.message.contains("shorter than 16 bytes") == true)
        #expect(error("[node]\nid = \"c\"\n[cluster]\nkey_file = \"good.key\"\n" + nodes + backend)?.message.contains("is not one of the [[cluster.nodes]]") == true)
        #expect(error("[node]\nid = \"a\"\n[cluster]\nkey_file = \"missing.key\"\n" + nodes + backend)?.message.contains("cannot read") == true)
        let bad = try #require(error("[node]\nid = \"a\"\n[cluster]\nkey_file = \"good.key\"\n[[cluster.nodes]]\nid = \"a\"\naddress = \"localhost\"\n" + backend))
        #expect(bad.key == "cluster.nodes[1].address")
        #expect(bad.line == 7)
        #expect(error("[node]\nid = \"a\"\n[admin]\ntcp_address = \"127.0.0.1\"\n" + backend)?.key == "admin.token_file")
        // A VIP election needs a third voter.
        let twoNodeVIP = try #require(error("[node]\nid = \"a\"\n[cluster]\nkey_file = \"good.key\"\n" + nodes + "[vip]\nmode = \"dns\"\n[vip.dns]\nfile = \"x\"\nname = \"db\"\nformat = \"dnsmasq\"\n" + backend))
        #expect(twoNodeVIP.key == "vip.mode")
        #expect(twoNodeVIP.message.contains("at least three clustering nodes"))
        let c = try Configuration.parse(text: "[node]\nid = \"a\"\n[cluster]\nkey_file = \"good.key\"\nwitness = \"backends\"\n" + nodes + backend, file: "\(dir)/pgchorus.toml")
        #expect(c.cluster.nodes.map(\.id) == ["a", "b"])
        #expect(c.cluster.nodes.map(\.port) == [7433, 7433])
        #expect(c.cluster.key == Array("a-long-enough-cluster-key-1234567890".utf8))
        #expect(c.thisNode.address == "127.0.0.2")
        #expect(c.healthCheck.enabled && c.healthCheck.interval == 1 && c.healthCheck.failures == 3)
        #expect(c.admin.socket == "/run/pgchorus/admin.sock")
        #expect(c.node.stateDirectory == "/var/lib/pgchorus")

        // The VIP's lease: the kernel's lifetime of the address, and a takeover that outwaits it.
        let three = nodes + "[[cluster.nodes]]\nid = \"c\"\naddress = \"127.0.0.4\"\n"
        let head = "[node]\nid = \"a\"\n[cluster]\nkey_file = \"good.key\"\n" + three
        func vip(_ extra: String) -> String { head + "[vip]\nmode = \"address\"\ninterface = \"eth0\"\naddress = \"198.18.0.100/24\"\n" + extra + backend }
        let v = try Configuration.parse(text: vip(""), file: "\(dir)/pgchorus.toml").vip
        #expect(v.lease == 1 && v.addressLifetime == 1 && v.takeover == 2.3 && v.nopreempt, "\(v)")
        let off = try Configuration.parse(text: vip("address_lifetime = 0\nlease = 0.5\n"), file: "\(dir)/pgchorus.toml").vip
        #expect(off.addressLifetime == 0 && off.takeover == 0.65, "\(off)")
        let short = try #require(error(vip("takeover = 1.5\n")))
        #expect(short.key == "vip.takeover" && short.message.contains("lease + address_lifetime + 0.3 s"), "\(short)")
        let lapse = try #require(error(vip("lease = 2.5\naddress_lifetime = 2\ntakeover = 5\n")))
        #expect(lapse.key == "vip.address_lifetime", "\(lapse)")
        // DNS mode has no address: only takeover > lease.
        let dns = try Configuration.parse(text: head + "[vip]\nmode = \"dns\"\n[vip.dns]\nfile = \"x\"\nname = \"db\"\nformat = \"dnsmasq\"\n" + backend,
                                          file: "\(dir)/pgchorus.toml").vip
        #expect(dns.takeover == 1.15, "\(dns)")
    }
}

/// Collects registry notifications across threads.
final class LockedChanges: Sendable {
    private let items = Mutex<[(BackendState, Bool)]>([])
    func append(_ s: BackendState, _ local: Bool) { items.withLock { $0.append((s, local)) } }
    func all() -> [(BackendState, Bool)] { items.withLock { $0 } }
}
