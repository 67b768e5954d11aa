import Foundation
import LocalCluster
import Logging
import Proxy
import State

/// An in-process pgchorus proxy in front of real backends, on a free port of 127.0.0.1.
public struct RunningProxy: Sendable {
    public let server: ProxyServer
    public let port: Int
    public let directory: String
    public let configuration: Configuration
    public var host: String { "127.0.0.1" }

    /// A libpq connection string for this proxy.
    public func connectionString(user: String = "postgres", database: String = "postgres", extra: String = "") -> String {
        "host=127.0.0.1 port=\(port) user=\(user) dbname=\(database) sslmode=disable connect_timeout=30 \(extra)"
    }
}

/// The `[[backends]]` tables for `servers`.
public func backendsTOML(_ servers: [LocalPostgresServer]) -> String {
    servers.map { "[[backends]]\nid = \"\($0.name)\"\nhost = \"127.0.0.1\"\nport = \($0.port)\n" }.joined(separator: "\n")
}

/// Starts a proxy with a configuration made of `[proxy]` on port 0 (and `proxy`, more keys of that
/// table), `extra` TOML (auth rules, TLS…) and the backends; `files` are written next to the configuration first (users file, certificates).
/// The proxy is closed afterwards, also when `body` throws.
public func withProxy<T>(
    backends: [LocalPostgresServer],
    config extra: String = "",
    proxy proxyKeys: String = "",
    files: [String: String] = [:],
    isolation: isolated (any Actor)? = #isolation,
    _ body: (RunningProxy) async throws -> T
) async throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pgchorus-proxy-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    for (name, content) in files {
        try content.write(toFile: "\(directory)/\(name)", atomically: true, encoding: .utf8)
    }
    let text = """
    [node]
    id = "test"

    [proxy]
    listen_address = "127.0.0.1"
    listen_port = 0
    \(proxyKeys)

    \(extra)

    \(backendsTOML(backends))
    """
    let path = "\(directory)/pgchorus.toml"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    let configuration = try Configuration.load(path: path)
    var logger = Logger(label: "pgchorus.test")
    logger.logLevel = ProcessInfo.processInfo.environment["PGCHORUS_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    let context = try ProxyContext(configuration: configuration, logger: logger)
    let server = try await ProxyServer(context: context)
    let running = RunningProxy(server: server, port: server.port, directory: directory, configuration: configuration)
    do {
        let result = try await body(running)
        await server.close()
        return result
    } catch {
        await server.close()
        throw error
    }
}
