import Foundation
import Glibc
import LocalCluster
import Testing
import TestSupport

/// `pgchorus reload` and SIGHUP against a real node under pgbench: what applies live applies, an
/// invalid file changes nothing, backends leave and join without a session dropped.
extension TimingSensitive {
@Suite(.serialized) struct ReloadTests {
    static let trustAll = "[[auth.rules]]\nuser = \"all\"\naddress = \"127.0.0.0/8\"\nmethod = \"trust\"\n"
    static let health = "[health_check]\ninterval = 0.5\ntimeout = 5\nfailures = 3\n"

    /// pgbench through the node for `seconds`.
    static func load(seconds: Int) -> [String] { ["-h", "127.0.0.2", "-n", "-M", "extended", "-c", "8", "-j", "2", "-T", "\(seconds)"] }

    /// Starts node 1 and makes pgbench's tables through it; returns its port.
    func startUnderLoad(_ cluster: NodeCluster) async throws -> Int {
        try await cluster.start(1)
        let port = cluster.port
        let initialise = try await runBlocking { try Clients.pgbench(port: port, ["-h", "127.0.0.2", "-i", "-s", "1", "-q"]) }
        #expect(initialise.exitCode == 0, "\(initialise.report)")
        return port
    }

    func rewrite(_ cluster: NodeCluster, _ change: (String) -> String) throws {
        let path = cluster.configPath(1)
        try change(try String(contentsOfFile: path, encoding: .utf8)).write(toFile: path, atomically: true, encoding: .utf8)
    }

    @Test func aReloadUnderLoadAppliesAuthRulesAndHealthChecksWithoutDroppingASession() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withNodeCluster(count: 1, backends: servers, extra: { _ in Self.trustAll + Self.health }) { cluster in
                let port = try await startUnderLoad(cluster)
                async let load = runBlocking { try Clients.pgbench(port: port, Self.load(seconds: 10)) }
                try await Task.sleep(for: .seconds(3))
                try rewrite(cluster) { text in
                    text.replacingOccurrences(of: Self.trustAll, with: "[[auth.rules]]\nuser = \"intruder\"\nmethod = \"reject\"\n\n" + Self.trustAll)
                        .replacingOccurrences(of: "interval = 0.5", with: "interval = 0.7") + "\n[log]\nlevel = \"debug\"\n"
                }
                let reload = try cluster.cli(1, ["reload"])
                #expect(reload.exitCode == 0, "\(reload.report)")
                for key in ["auth.rules", "health_check", "log.level"] { #expect(reload.stdout.contains(key), "\(reload.report)") }
                let intruder = try Clients.psql("host=127.0.0.2 port=\(port) user=intruder dbname=postgres", ["-c", "select 1"])
                #expect(intruder.exitCode != 0)
                #expect(intruder.stderr.contains("rejects connection for user \"intruder\""), "\(intruder.report)")

                // A typo: refused as a whole, with the file, line and key; the running rules stay.
                try rewrite(cluster) { $0.replacingOccurrences(of: "interval = 0.7", with: "intervall = 0.7") }
                let invalid = try cluster.cli(1, ["reload"])
                #expect(invalid.exitCode == 1, "\(invalid.report)")
                #expect(invalid.stderr.contains(cluster.configPath(1)) && invalid.stderr.contains("intervall"), "\(invalid.report)")
                #expect(try Clients.psql("host=127.0.0.2 port=\(port) user=intruder dbname=postgres", ["-c", "select 1"]).exitCode != 0)
                #expect(try Clients.psql(cluster.connectionString(1), ["-c", "select 1"]).exitCode == 0)

                let run = try await load
                #expect(run.exitCode == 0, "\(run.report)")
                #expect(run.stdout.contains("number of failed transactions: 0"), "\(run.report)")
                let kinds = try await cluster.events(1).map(\.kind)
                #expect(kinds.contains("reload") && kinds.contains("reload-refused"), "\(kinds)")
                let status = try await cluster.status(1)
                #expect(status.backends.allSatisfy { $0.status == "online" })
            }
        }
    }

    @Test func backendsLeaveAndJoinLiveAndSIGHUPReloads() async throws {
        try await withPostgresServers(count: 3) { servers in
            let extraServer = try LocalPostgresServer.start(options: PostgresServerOptions(name: "db4"))
            defer { extraServer.remove() }
            try await withNodeCluster(count: 1, backends: servers, extra: { _ in Self.trustAll + Self.health }) { cluster in
                let port = try await startUnderLoad(cluster)
                // (Bounded well below the default: a client left hanging is reported with what the backends were doing.)
                let load = BackgroundRun { try Clients.pgbench(port: port, Self.load(seconds: 12), timeout: .seconds(90)) }
                try await Task.sleep(for: .seconds(3))
                // db3 leaves the file, and the listen port changes (that one waits for a restart).
                try rewrite(cluster) { text in
                    text.replacingOccurrences(of: backendsTOML(servers), with: backendsTOML(Array(servers.prefix(2))))
                        .replacingOccurrences(of: "listen_port = \(port)", with: "listen_port = \(port + 1)")
                }
                let removed = try cluster.cli(1, ["reload"])
                #expect(removed.exitCode == 0, "\(removed.report)")
                #expect(removed.stdout.contains("backends removed: db3"), "\(removed.report)")
                #expect(removed.stdout.contains("needs a restart (running values kept): proxy.listen_port"), "\(removed.report)")
                #expect(try await cluster.status(1).backends.map(\.id) == ["db1", "db2"])
                // Every open session leaves db3 at once (none keeps sending it statements until a timeout):
                // while pgbench still runs, db3 soon has none of its sessions.
                let db3 = servers[2]
                let (left, conclusive) = try await runBlocking { () throws -> (String, Bool) in
                    var count = "?"
                    try eventuallyBlocking(5) {
                        count = try db3.psql("select count(*) from pg_stat_activity where application_name = 'pgbench'")
                        return count == "0"
                    }
                    return (count, !load.isFinished)
                }
                if conclusive { #expect(left == "0", "pgbench sessions still on db3 5 s after the reload removed it:\n\(cluster.problems(1))") }
                let run: CommandOutput
                do { run = try await load.value() } catch {
                    Issue.record("\(error)\n\(Consistency.activity(servers))\nnode1:\n\(cluster.log(1).suffix(6000))")
                    return
                }
                #expect(run.exitCode == 0, "\(run.report)")
                #expect(run.stdout.contains("number of failed transactions: 0"), "\(run.report)")
                let sums = try Consistency.checksums(Array(servers.prefix(2)))
                #expect(Set(sums).count == 1, "\(sums)")
                // Still serving on the running port.
                #expect(try Clients.psql(cluster.connectionString(1), ["-c", "insert into pgbench_history (tid, bid, aid, delta) values (1, 1, 1, 1)"]).exitCode == 0)

                // db4 joins through SIGHUP: down, waiting to be recovered.
                try rewrite(cluster) { $0.replacingOccurrences(of: backendsTOML(Array(servers.prefix(2))), with: backendsTOML(Array(servers.prefix(2)) + [extraServer])) }
                let reloadsBefore = try await cluster.events(1).filter { $0.kind == "reload" }.count
                kill(cluster.pid(1), SIGHUP)
                let joined = try await cluster.waitUntil(seconds: 10) { try await cluster.status(1).backends.map(\.id) == ["db1", "db2", "db4"] }
                let status = try await cluster.status(1)
                #expect(joined, "\(status.backends.map(\.id))")
                let db4 = status.backends.first { $0.id == "db4" }
                #expect(db4?.status == "down")
                #expect(db4?.reason.contains("pgchorus recover db4") == true, "\(db4?.reason ?? "")")
                #expect(try await cluster.events(1).filter { $0.kind == "reload" }.count == reloadsBefore + 1)
                // New sessions use the online backends only.
                #expect(try Clients.psql(cluster.connectionString(1), ["-c", "select count(*) from pgbench_branches"]).exitCode == 0)
            }
        }
    }

    /// A backend a reload added, once recovered, is in the order of commits and statements like the
    /// others: the order's probe sees a statement waiting there on a lock. (It used to know only the
    /// backends of the start: a commit deferred on the new backend for such a statement waited while
    /// the statement waited on the commit's locks there, and after `replication.follower_timeout` the
    /// new backend was failed.)
    @Test func aBackendAddedByAReloadAndRecoveredIsProbedLikeTheOthers() async throws {
        try await withPostgresServers(count: 3, options: OnlineRecoveryTests.logical) { servers in
            let start = Array(servers.prefix(2))
            try await withNodeCluster(count: 1, backends: start, extra: { _ in Self.trustAll }) { cluster in
                try await cluster.start(1)
                let setup = try Clients.psql(cluster.connectionString(1), ["-v", "ON_ERROR_STOP=1", "-c",
                    "create table r (id int primary key, v int); insert into r values (1, 0); create table u (id serial primary key, v int)"])
                #expect(setup.exitCode == 0, "\(setup.report)")
                try rewrite(cluster) { $0.replacingOccurrences(of: backendsTOML(start), with: backendsTOML(servers)) }
                let reload = try cluster.cli(1, ["reload"])
                #expect(reload.stdout.contains("backends added (down until recovered): db3"), "\(reload.report)")
                let recover = try await runBlocking { try cluster.cli(1, ["recover", "db3", "--wait"]) }
                #expect(recover.exitCode == 0 && recover.stdout.contains("backend db3 is online"), "\(recover.report)")

                // C holds r's row; B's INSERT … SELECT … FOR UPDATE reads r and writes u, so it waits on the
                // lead, is parked when C commits there, and C's COMMIT PREPARED on each follower waits until
                // B waits on the same row there — on db3 too.
                let port = cluster.port
                let (b, c) = (try RawPostgresClient(port: port, host: "127.0.0.2"), try RawPostgresClient(port: port, host: "127.0.0.2"))
                _ = try b.startup()
                _ = try c.startup()
                try await waitBehindHeldRow(holder: c, waiter: b, statement: "INSERT INTO u (v) SELECT v FROM r WHERE id = 1 FOR UPDATE",
                                            seenAs: "INSERT INTO u", on: servers[0])
                let cCommit = try await runBlocking { try c.query("COMMIT") }
                #expect(cCommit.allSatisfy { $0.errorState == nil }, "\(cCommit)")
                let bDone = try b.readUntilReady()
                #expect(bDone.allSatisfy { $0.errorState == nil }, "\(bDone)")
                let bCommit = try b.query("COMMIT")
                #expect(bCommit.allSatisfy { $0.errorState == nil }, "B's COMMIT: \(bCommit)\n\(cluster.problems(1))")
                for server in servers {
                    let rows = try server.psql("select string_agg(v::text, ',') from u")
                    #expect(rows == "1", "\(server.name): \(rows)")
                }
                #expect(Set(try Consistency.checksums(servers)).count == 1)
                let backends = try await cluster.status(1).backends
                #expect(backends.allSatisfy { $0.status == "online" }, "\(backends.map { "\($0.id) \($0.status) \($0.reason)" })\n\(cluster.problems(1))")

                // The probe asked db3; once db3 leaves service its connection there is closed.
                let db3 = servers[2]
                let probeSessions = "select count(*) from pg_stat_activity where application_name = 'pgchorus-epochs'"
                #expect(try db3.psql(probeSessions) == "1")
                let detach = try cluster.cli(1, ["detach", "db3"])
                #expect(detach.exitCode == 0, "\(detach.report)")
                let closed = try await cluster.waitUntil(seconds: 10) { try db3.psql(probeSessions) == "0" }
                #expect(closed, "the order's probe still has a session on the detached db3")
            }
        }
    }

    /// `health_check.user` and `password` reach the node's own connections at a reload: once they
    /// connect again, the order's lock probe (`pgchorus-epochs`) and the cluster-wide order lock
    /// (`pgchorus-order`) log in as the reloaded role, as the health checks do (password-protected backends).
    @Test func theNodesOwnConnectionsLogInAsTheReloadedHealthCheckUser() async throws {
        let options = PostgresServerOptions(authMethod: "scram-sha-256", superuserPassword: "pw")
        try await withPostgresServers(count: 2, options: options) { servers in
            for server in servers { _ = try server.psql("create role ops superuser login password 'ops-pw'", password: "pw") }
            let login = "[auth]\nusers_file = \"../users.txt\"\n\n" + Self.trustAll
                + "\n[health_check]\nuser = \"postgres\"\npassword = \"pw\"\n"
            try await withNodeCluster(count: 2, backends: servers, extra: { _ in login }, files: ["users.txt": "\"postgres\" \"pw\"\n"]) { cluster in
                try await cluster.start(1)
                try await cluster.start(2)
                let setup = try Clients.psql(cluster.connectionString(1), ["-v", "ON_ERROR_STOP=1", "-c",
                    "create table r (id int primary key, v int); insert into r values (1, 0); create table u (id serial primary key, v int)"])
                #expect(setup.exitCode == 0, "\(setup.report)")
                let own = "select coalesce(string_agg(distinct usename, ','), '') from pg_stat_activity where application_name in ('pgchorus-epochs', 'pgchorus-order node1')"
                let before = try await cluster.waitUntil(seconds: 10) { try servers[0].psql(own, password: "pw") == "postgres" }
                let seenBefore = try servers[0].psql(own, password: "pw")
                #expect(before, "node1's order connection on db1: \(seenBefore)")

                try rewrite(cluster) { $0.replacingOccurrences(of: "user = \"postgres\"\npassword = \"pw\"", with: "user = \"ops\"\npassword = \"ops-pw\"") }
                let reload = try cluster.cli(1, ["reload"])
                #expect(reload.exitCode == 0 && reload.stdout.contains("health_check"), "\(reload.report)")
                // The connections open now stay as they are; these end, and the next ones are the reload's.
                for server in servers {
                    _ = try server.psql("select pg_terminate_backend(pid) from pg_stat_activity where application_name in ('pgchorus-epochs', 'pgchorus-order node1')", password: "pw")
                }

                // C holds r's row; B's statement waits for it on the lead: C's commit needs the probe to see
                // B waiting (a connection of its own), and the cluster-wide lock taken exclusive.
                let port = cluster.port
                let (b, c) = (try RawPostgresClient(port: port, host: "127.0.0.2"), try RawPostgresClient(port: port, host: "127.0.0.2"))
                _ = try b.startup()
                _ = try c.startup()
                try await waitBehindHeldRow(holder: c, waiter: b, statement: "INSERT INTO u (v) SELECT v FROM r WHERE id = 1 FOR UPDATE",
                                            seenAs: "INSERT INTO u", on: servers[0], password: "pw")
                let cCommit = try await runBlocking { try c.query("COMMIT") }
                #expect(cCommit.allSatisfy { $0.errorState == nil }, "\(cCommit)")
                // With a second node, B's statement may be the one the order cancels (40001, docs/replication.md).
                let bDone = try b.readUntilReady()
                let bState = bDone.compactMap(\.errorState).first
                #expect(bState == nil || bState == "40001", "\(bDone)")
                #expect(try b.query(bState == nil ? "COMMIT" : "ROLLBACK").allSatisfy { $0.errorState == nil })
                let after = try await cluster.waitUntil(seconds: 10) { try servers[0].psql(own, password: "pw") == "ops" }
                let seenAfter = try servers[0].psql(own, password: "pw")
                #expect(after, "node1's own connections on db1 log in as: \(seenAfter)\n\(cluster.problems(1))")
                let probe = try servers[0].psql("select count(*) from pg_stat_activity where application_name = 'pgchorus-epochs' and usename = 'ops'", password: "pw")
                #expect(probe == "1", "the order's probe on db1 as ops: \(probe)")
                #expect(Set(try Consistency.checksums(servers, password: "pw")).count == 1)
            }
        }
    }

    /// A backend added on one node only: each node's status warns about the other's list; once both
    /// have it, it is `down` on both and the warnings are gone.
    @Test func backendListsThatDifferBetweenNodesAreShownOnEveryNode() async throws {
        try await withPostgresServers(count: 2) { servers in
            let extraServer = try LocalPostgresServer.start(options: PostgresServerOptions(name: "db3"))
            defer { extraServer.remove() }
            try await withNodeCluster(count: 2, backends: servers, extra: { _ in Self.trustAll }) { cluster in
                try await cluster.start(1)
                try await cluster.start(2)
                #expect(try await cluster.nodesWithoutQuorum(1...2) == [], "nodes without quorum")
                func add(_ node: Int) throws {
                    let path = cluster.configPath(node)
                    let text = try String(contentsOfFile: path, encoding: .utf8)
                    try text.replacingOccurrences(of: backendsTOML(servers), with: backendsTOML(servers + [extraServer]))
                        .write(toFile: path, atomically: true, encoding: .utf8)
                    let r = try cluster.cli(node, ["reload"])
                    #expect(r.exitCode == 0, "\(r.report)")
                }
                try add(1)
                let warned = try await cluster.waitUntil(seconds: 10) {
                    let one = try await cluster.status(1).warnings ?? [], two = try await cluster.status(2).warnings ?? []
                    return one.contains("node node2 does not know backend(s) db3 of this node's configuration")
                        && two.contains("node node1 has backend(s) db3 that this node's configuration lacks")
                }
                let w1 = try await cluster.status(1).warnings, w2 = try await cluster.status(2).warnings
                #expect(warned, "\(w1 ?? []) / \(w2 ?? [])")
                let shown = try cluster.cli(2, ["status"])
                #expect(shown.stdout.contains("warning:  node node1 has backend(s) db3"), "\(shown.report)")
                try add(2)
                let settled = try await cluster.waitUntil(seconds: 10) {
                    let a = try await cluster.status(1), b = try await cluster.status(2)
                    return (a.warnings ?? []).isEmpty && (b.warnings ?? []).isEmpty
                        && a.backends.first { $0.id == "db3" }?.status == "down" && b.backends.first { $0.id == "db3" }?.status == "down"
                }
                #expect(settled)
            }
        }
    }
}
}
