import Foundation
import LocalCluster

/// Real PostgreSQL clients run as child processes against a proxy or a backend.
public enum Clients {
    public static let python = "/usr/bin/python3"

    /// The folder of the Python client scripts of the integration tests.
    public static func scriptsDirectory(file: StaticString = #filePath) -> String {
        URL(fileURLWithPath: "\(file)").deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("IntegrationTests/Scripts").path
    }

    /// Runs psql with `arguments` against `connection` (a libpq connection string); never prompts.
    public static func psql(_ connection: String, _ arguments: [String], input: String? = nil, password: String? = nil,
                            environment: [String: String] = [:], timeout: Duration = .seconds(120)) throws -> CommandOutput {
        var env = environment
        env["PGPASSFILE"] = "/nonexistent"
        if let password { env["PGPASSWORD"] = password }
        return try CommandRunner.run(try PostgresBinaries.path(of: "psql"),
                                     ["-X", "-w", "-d", connection] + arguments,
                                     environment: env, standardInput: input, timeout: timeout)
    }

    /// Runs pgbench with `arguments` against host/port (user postgres, database postgres).
    public static func pgbench(port: Int, _ arguments: [String], environment: [String: String] = [:],
                               timeout: Duration = .seconds(300)) throws -> CommandOutput {
        try CommandRunner.run(try PostgresBinaries.path(of: "pgbench"),
                              ["-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres"] + arguments + ["postgres"],
                              environment: environment.merging(["PGPASSFILE": "/nonexistent"]) { a, _ in a }, timeout: timeout)
    }

    /// Runs one of the Python (psycopg2) client scripts with the connection string as its first argument.
    public static func pythonScript(_ name: String, _ arguments: [String], timeout: Duration = .seconds(120)) throws -> CommandOutput {
        try CommandRunner.run(python, ["\(scriptsDirectory())/\(name)"] + arguments, timeout: timeout)
    }
}
