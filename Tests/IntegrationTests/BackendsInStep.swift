import LocalCluster
import Testing
import TestSupport

/// Each backend's status and reason as the proxy's registry has it, for failure messages.
func backendReasons(_ proxy: RunningProxy) -> String {
    proxy.server.context.registry.snapshot().map { "\($0.backend.id) \($0.status.rawValue): \($0.reason)" }.joined(separator: "; ")
}

/// What every replication test ends on: all backends online, identical, and no pgchorus prepared
/// transaction left on any of them.
func expectBackendsInStep(_ proxy: RunningProxy, _ servers: [LocalPostgresServer],
                          sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(proxy.server.context.registry.online().map(\.id) == servers.indices.map { "db\($0 + 1)" }, "\(backendReasons(proxy))",
            sourceLocation: sourceLocation)
    let sums = try Consistency.checksums(servers)
    #expect(Set(sums).count == 1, "backends differ: \(sums)", sourceLocation: sourceLocation)
    for s in servers { #expect(try Consistency.preparedCount(s) == 0, sourceLocation: sourceLocation) }
}

/// Runs check `check` of the psycopg2 client script `script` through three backends: it passes
/// (`PASSED <check>`), and the backends end in step.
func runClientCheck(_ script: String, _ check: String, config: String = "", timeout: Duration = .seconds(120),
                    sourceLocation: SourceLocation = #_sourceLocation) async throws {
    try await withPostgresServers(count: 3) { servers in
        try await withProxy(backends: servers, config: config) { proxy in
            let out = try await runBlocking { try Clients.pythonScript(script, [proxy.connectionString(), check], timeout: timeout) }
            #expect(out.exitCode == 0, "\(out.report)", sourceLocation: sourceLocation)
            #expect(out.stdoutLines.last == "PASSED \(check)", "\(out.report)", sourceLocation: sourceLocation)
            try expectBackendsInStep(proxy, servers, sourceLocation: sourceLocation)
        }
    }
}
