#if canImport(Glibc)
import Glibc
#endif
import Foundation
import LocalCluster
import Testing
import TestSupport

extension TimingSensitive {
/// Real faults of one backend under pgbench load on three backends: SIGKILL of the postmaster,
/// an immediate stop, and a freeze (SIGSTOP of the postmaster and all its children), of a follower
/// and of the lead. The clients must notice nothing; the survivors must be identical with nothing
/// left prepared.
// One case at a time (see `TimingSensitive`).
@Suite(.serialized) struct BackendFaultTests {
    enum Fault: String, CaseIterable, Sendable {
        case kill, immediateStop, freeze
    }

    /// The postmaster's pid (first line of postmaster.pid).
    static func postmasterPID(_ server: LocalPostgresServer) -> pid_t? {
        guard let text = try? String(contentsOfFile: server.dataDirectory + "/postmaster.pid", encoding: .utf8),
              let first = text.split(separator: "\n").first else { return nil }
        return pid_t(first.trimmingCharacters(in: .whitespaces))
    }

    /// `pid` and its children (PostgreSQL's backends are direct children of the postmaster).
    static func processTree(_ pid: pid_t) -> [pid_t] {
        var out = [pid]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for e in entries {
            guard let child = pid_t(e), let stat = try? String(contentsOfFile: "/proc/\(e)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, pid_t(fields[1]) == pid { out.append(child) }
        }
        return out
    }

    static func signalTree(_ server: LocalPostgresServer, _ signal: Int32) {
        guard let pid = postmasterPID(server) else { return }
        // The postmaster first, so it forks nothing new while the children are stopped.
        for p in processTree(pid) { kill(p, signal) }
    }

    func online(_ proxy: RunningProxy) -> [String] { proxy.server.context.registry.online().map(\.id) }

    static let cases: [(Fault, Int)] = Fault.allCases.flatMap { f in [(f, 2), (f, 0)] }

    /// `victim` is the index of the backend hit (0 is the lead). pgbench runs 10 s; the fault comes
    /// at 3 s; a frozen backend stays frozen until pgbench has finished.
    @Test(arguments: cases)
    func aBackendFaultUnderLoadCostsTheClientsNothing(fault: Fault, victim: Int) async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers, config: "[replication]\nin_doubt_grace = 1\n") { proxy in
                let port = proxy.port
                let initialise = try await runBlocking { try Clients.pgbench(port: port, ["-i", "-s", "1", "-q"]) }
                #expect(initialise.exitCode == 0, "\(initialise.report)")

                // pgbench and the fault on threads of their own: the cooperative pool has 2 threads here.
                async let load = runBlocking { try Clients.pgbench(port: port, ["-n", "-M", "extended", "-c", "8", "-j", "2", "-T", "10"], timeout: .seconds(240)) }
                try await Task.sleep(for: .seconds(3))
                let target = servers[victim]
                try await runBlocking {
                    switch fault {
                    case .kill: Self.signalTree(target, SIGKILL)
                    case .immediateStop: target.kill()
                    case .freeze: Self.signalTree(target, SIGSTOP)
                    }
                }
                let run = try await load
                if fault == .freeze { Self.signalTree(target, SIGCONT) }

                #expect(run.exitCode == 0, "\(fault) of \(target.name): \(run.report)")
                #expect(run.stdout.contains("number of failed transactions: 0"), "\(fault) of \(target.name): \(run.report)")
                #expect(!run.stderr.contains("aborted"), "\(fault) of \(target.name): \(run.report)")
                let survivors = servers.indices.filter { $0 != victim }.map { servers[$0] }
                #expect(online(proxy) == survivors.map(\.name), "\(backendReasons(proxy)); pgbench: \(run.report)")
                #expect(Set(try Consistency.checksums(survivors)).count == 1)
                // pgbench's own invariant on every survivor.
                for s in survivors {
                    #expect(try s.psql("select (select sum(abalance) from pgbench_accounts) = (select sum(delta) from pgbench_history)") == "t")
                    #expect(try Consistency.preparedCount(s) == 0, "\(s.name) holds prepared transactions")
                }
            }
        }
    }
}
}
