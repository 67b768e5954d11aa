import Foundation
import Logging
import Synchronization

/// How `pg_ctl stop` ends the server's sessions (PostgreSQL's `-m` shutdown modes).
public enum PostgresStopMode: String, Sendable, CaseIterable {
    /// Wait for every client to disconnect.
    case smart
    /// Roll back open transactions, disconnect clients, checkpoint.
    case fast
    /// Kill everything at once without a checkpoint, like a crash; recovery runs on the next start.
    case immediate
}

/// One real PostgreSQL server on 127.0.0.1 with its own data directory, for the demo and tests.
///
/// Start it with `start(options:in:)`, query it with `psql`, stop and restart it at will, and call
/// `remove()` when done (or use `withPostgresServers`, which does that for you). The lifecycle
/// methods block while `pg_ctl`/`initdb` run: call them from a thread that may block, not from
/// Swift's cooperative pool in production code.
public final class LocalPostgresServer: Sendable {
    /// Lifecycle of the server process and its directory.
    enum Phase: Sendable {
        case running, stopped, removed
    }

    /// Name given in the options, e.g. `db1`; used in logs and error messages.
    public let name: String
    /// Always 127.0.0.1: the server listens nowhere else.
    public let host: String = "127.0.0.1"
    /// TCP port the server listens on; it keeps it across `stop()`/`restart()`.
    public let port: Int
    /// Holds `data/`, `postgres.log` and the Unix socket; a temp dir unless the caller chose it.
    public let directory: String
    /// The PostgreSQL data directory (`PGDATA`).
    public let dataDirectory: String
    /// Where `pg_ctl -l` writes the server's log.
    public let logFile: String
    /// `unix_socket_directories` of the server (the same as `directory`).
    public let socketDirectory: String
    /// The options the server was started with.
    public let options: PostgresServerOptions
    /// Whether `remove()` deletes `directory` (true when `start` created it as a temp dir).
    public let removesDirectoryOnRemove: Bool

    let binDirectory: String
    let logger: Logger
    // Serialises start/stop/remove of this server; held while pg_ctl runs so the phase
    // always matches what the process is doing.
    private let phase: Mutex<Phase>

    init(
        options: PostgresServerOptions, port: Int, directory: String, binDirectory: String,
        removesDirectoryOnRemove: Bool, logger: Logger
    ) {
        self.name = options.name
        self.options = options
        self.port = port
        self.directory = directory
        self.dataDirectory = Self.dataDirectory(in: directory)
        self.logFile = Self.logFile(in: directory)
        self.socketDirectory = directory
        self.binDirectory = binDirectory
        self.removesDirectoryOnRemove = removesDirectoryOnRemove
        var logger = logger
        logger[metadataKey: "backend"] = "\(options.name)"
        logger[metadataKey: "port"] = "\(port)"
        self.logger = logger
        self.phase = Mutex(.running)
    }

    static func dataDirectory(in directory: String) -> String { directory + "/data" }
    static func logFile(in directory: String) -> String { directory + "/postgres.log" }

    /// "db1 (127.0.0.1:5433)", the way errors name this server.
    var label: String { "PostgreSQL server \(name) (\(host):\(port))" }

    /// Stops the server with `pg_ctl stop -w`. Does nothing if it is already stopped or removed.
    public func stop(mode: PostgresStopMode = .fast) throws {
        try phase.withLock { phase in
            guard phase == .running else { return }
            try Self.stopServer(binDirectory: binDirectory, dataDirectory: dataDirectory, mode: mode, label: label)
            phase = .stopped
            logger.info("PostgreSQL server stopped", metadata: ["mode": "\(mode.rawValue)"])
        }
    }

    /// Starts the server again after `stop()`/`kill()`, on the same port and data directory.
    /// Does nothing if it is running; throws if it was removed or the port is now taken.
    public func restart() throws {
        try phase.withLock { phase in
            switch phase {
            case .running:
                return
            case .removed:
                throw LocalClusterError(.serverRemoved, "\(label) was removed; start a new one instead of restarting it")
            case .stopped:
                let failure = try Self.launch(binDirectory: binDirectory, dataDirectory: dataDirectory, logFile: logFile, label: label)
                if let failure { throw failure.error }
                phase = .running
                logger.info("PostgreSQL server restarted")
            }
        }
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), as a crash would. Never throws;
    /// a failure is logged.
    public func kill() {
        do {
            try stop(mode: .immediate)
        } catch {
            logger.error("could not kill PostgreSQL server", metadata: ["error": "\(error)"])
        }
    }

    /// Stops the server if it runs and deletes its directory if `start` created it (a directory
    /// the caller passed is kept, with its data). Idempotent; failures are logged, not thrown.
    public func remove() {
        phase.withLock { phase in
            guard phase != .removed else { return }
            if phase == .running {
                do {
                    try Self.stopServer(binDirectory: binDirectory, dataDirectory: dataDirectory, mode: .fast, label: label)
                } catch {
                    logger.warning("fast stop failed, stopping immediately", metadata: ["error": "\(error)"])
                    do {
                        try Self.stopServer(binDirectory: binDirectory, dataDirectory: dataDirectory, mode: .immediate, label: label)
                    } catch {
                        // Deleting the data directory anyway makes the postmaster shut itself down
                        // once it notices its lock file is gone (PostgreSQL checks every minute).
                        logger.error("could not stop PostgreSQL server", metadata: ["error": "\(error)"])
                    }
                }
            }
            phase = .removed
            guard removesDirectoryOnRemove else { return }
            do {
                try FileManager.default.removeItem(atPath: directory)
            } catch {
                logger.error("could not delete the server directory", metadata: ["directory": "\(directory)", "error": "\(error)"])
            }
        }
    }

    /// Asks `pg_ctl status` whether a server process runs on the data directory right now
    /// (independently of what this object believes).
    public func isServerRunning() -> Bool {
        guard FileManager.default.fileExists(atPath: dataDirectory) else { return false }
        let output = try? CommandRunner.run(
            binDirectory + "/pg_ctl", ["-D", dataDirectory, "status"], asServerUser: true, timeout: .seconds(30))
        return output?.succeeded ?? false
    }

    /// Runs `sql` through `psql -X -A -t -q -v ON_ERROR_STOP=1` over TCP and returns what it
    /// printed, trimmed (unaligned, tuples only: `SHOW port` gives `"5433"`). Several statements
    /// are fine; psql reads them as a script. `password` goes into `PGPASSWORD` for this call only;
    /// psql never prompts. Throws `.queryFailed` with psql's error output.
    public func psql(
        _ sql: String,
        database: String = "postgres",
        user: String = "postgres",
        password: String? = nil,
        timeout: Duration = .seconds(60)
    ) throws -> String {
        var environment = [
            // Neither a ~/.pgpass nor an inherited PGPASSWORD may log us in by accident.
            "PGPASSFILE": directory + "/.pgchorus-no-pgpass",
            "PGCONNECT_TIMEOUT": "10",
            "PGSSLMODE": "disable",
            "PGCLIENTENCODING": "UTF8",
        ]
        if let password { environment["PGPASSWORD"] = password }
        let output = try CommandRunner.run(
            binDirectory + "/psql",
            ["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1",
             "-h", host, "-p", String(port), "-U", user, "-d", database, "-f", "-"],
            environment: environment,
            standardInput: sql,
            timeout: timeout
        )
        guard output.succeeded else {
            throw LocalClusterError(.queryFailed, "psql against \(label) as \(user) on database \(database) failed (exit \(output.exitCode)): \(output.diagnostics)")
        }
        return output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A libpq keyword/value connection string for this server over TCP.
    public func connectionString(database: String = "postgres", user: String = "postgres", password: String? = nil) -> String {
        func quoted(_ value: String) -> String {
            "'" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
        }
        var parts = ["host=\(host)", "port=\(port)", "user=\(quoted(user))", "dbname=\(quoted(database))"]
        if let password { parts.append("password=\(quoted(password))") }
        return parts.joined(separator: " ")
    }

    /// The last `lines` lines of the server log, for diagnostics.
    public func logTail(lines: Int = 20) -> String {
        ServerLog.tail(of: logFile, lines: lines)
    }
}

extension LocalPostgresServer: CustomStringConvertible {
    public var description: String { "\(label) in \(directory)" }
}
