import Foundation
import Logging

/// Starts `count` local PostgreSQL servers named `db1`…`dbN` (each with `options`, on its own free
/// port, or on `options.port + i` when a port is given), runs `body` with them, and always stops
/// and removes them afterwards, also when `body` throws or the task is cancelled.
///
/// The servers start in parallel (a few per core at a time, across the process), on dedicated threads rather than Swift's cooperative pool,
/// because `initdb` and `pg_ctl` block for seconds. If one fails to start, the others are removed
/// and its error is thrown.
public func withPostgresServers<T>(
    count: Int,
    options: PostgresServerOptions = PostgresServerOptions(),
    logger: Logger = Logger(label: "pgchorus.localcluster"),
    isolation: isolated (any Actor)? = #isolation,
    _ body: ([LocalPostgresServer]) async throws -> T
) async throws -> T {
    guard count >= 0 else {
        throw LocalClusterError(.invalidOptions, "withPostgresServers needs a server count of 0 or more, got \(count)")
    }
    var perServer: [PostgresServerOptions] = []
    for index in 0..<count {
        var serverOptions = options
        serverOptions.name = "db\(index + 1)"
        if options.port != 0 { serverOptions.port = options.port + index }
        perServer.append(serverOptions)
    }
    let servers = try await startServers(perServer, logger: logger)
    do {
        let result = try await body(servers)
        await removeServers(servers)
        return result
    } catch {
        await removeServers(servers)
        throw error
    }
}

/// How many servers of this process may be in `initdb`/`pg_ctl start` at once: two per core. A test
/// suite starting a hundred servers at the same moment would otherwise starve the servers already
/// running (a login could take longer than a client's connect timeout) without starting any sooner.
private let startSlots = DispatchSemaphore(value: max(4, 2 * ProcessInfo.processInfo.activeProcessorCount))

/// The process-wide queue of server starts (`withPostgresServers`).
public enum ServerStarts {
    /// Within `ServerStarts.$skipQueue.withValue(true) { … }` servers start without waiting for a
    /// slot: for work on a run's critical path that starts a few servers at a time anyway (a test
    /// suite run one test at a time beside suites whose tests all start at once).
    @TaskLocal public static var skipQueue = false
}

/// Starts every server in parallel (at most `startSlots` at a time unless `ServerStarts.skipQueue`); on any failure removes the ones that started and throws the
/// first failure (in server order).
private func startServers(_ options: [PostgresServerOptions], logger: Logger) async throws -> [LocalPostgresServer] {
    let queued = !ServerStarts.skipQueue
    let results = await withTaskGroup(of: (Int, Result<LocalPostgresServer, any Error>).self) { group in
        for (index, serverOptions) in options.enumerated() {
            group.addTask {
                let result = await runOnDedicatedThread {
                    if queued { startSlots.wait() }
                    defer { if queued { startSlots.signal() } }
                    return Result { try LocalPostgresServer.start(options: serverOptions, logger: logger) }
                }
                return (index, result)
            }
        }
        var results: [(Int, Result<LocalPostgresServer, any Error>)] = []
        for await result in group { results.append(result) }
        return results.sorted { $0.0 < $1.0 }.map(\.1)
    }
    let started = results.compactMap { try? $0.get() }
    if let failure = results.first(where: { (try? $0.get()) == nil }), case .failure(let error) = failure {
        await removeServers(started)
        throw error
    }
    return started
}

/// Removes every server in parallel, each on its own thread.
private func removeServers(_ servers: [LocalPostgresServer]) async {
    await withTaskGroup(of: Void.self) { group in
        for server in servers {
            group.addTask { await runOnDedicatedThread { server.remove() } }
        }
    }
}

/// Runs blocking `work` on a new thread so it does not hold one of the cooperative pool's threads.
func runOnDedicatedThread<Value: Sendable>(_ work: @escaping @Sendable () -> Value) async -> Value {
    await withCheckedContinuation { continuation in
        let thread = Thread { continuation.resume(returning: work()) }
        thread.name = "pgchorus.localcluster"
        thread.start()
    }
}
