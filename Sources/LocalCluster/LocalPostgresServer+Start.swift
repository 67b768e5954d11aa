import Foundation
import Logging
import Glibc

extension LocalPostgresServer {
    /// How often `start` tries another free port when the chosen one was taken meanwhile.
    static let portAttempts = 5

    /// Creates (with `initdb`, unless `directory` already holds a data directory), configures and
    /// starts a server, and returns once it accepts connections.
    ///
    /// - Parameter directory: where to keep `data/`, `postgres.log` and the socket. `nil` makes a
    ///   fresh temp dir that `remove()` deletes; a given directory is created if needed, reused if it
    ///   already holds a cluster, and kept by `remove()`.
    public static func start(
        options: PostgresServerOptions,
        in directory: String? = nil,
        logger: Logger = Logger(label: "pgchorus.localcluster")
    ) throws -> LocalPostgresServer {
        try options.validate()
        let binDirectory = try PostgresBinaries.directory()
        if CommandRunner.runningAsRoot { _ = try ServerUser.ids() }

        let base: String
        let ownsDirectory: Bool
        if let directory {
            base = try prepareGivenDirectory(directory, name: options.name)
            ownsDirectory = false
        } else {
            base = try makeTemporaryDirectory(name: options.name)
            ownsDirectory = true
        }
        do {
            return try startServer(options: options, directory: base, binDirectory: binDirectory, ownsDirectory: ownsDirectory, logger: logger)
        } catch {
            if ownsDirectory { try? FileManager.default.removeItem(atPath: base) }
            throw error
        }
    }

    private static func startServer(
        options: PostgresServerOptions, directory: String, binDirectory: String, ownsDirectory: Bool, logger: Logger
    ) throws -> LocalPostgresServer {
        let data = dataDirectory(in: directory)
        let log = logFile(in: directory)
        try ServerUser.giveOwnership(of: directory, recursive: false)
        if FileManager.default.fileExists(atPath: data) {
            try ServerUser.giveOwnership(of: data, recursive: true)
        }
        if FileManager.default.fileExists(atPath: data + "/PG_VERSION") {
            logger.info("reusing existing PostgreSQL data directory", metadata: ["backend": "\(options.name)", "data": "\(data)"])
        } else {
            try initdb(options: options, directory: directory, binDirectory: binDirectory, logger: logger)
        }

        let attempts = options.port == 0 ? portAttempts : 1
        for attempt in 1...attempts {
            let port = options.port == 0 ? try FreePort.pick() : options.port
            let label = "PostgreSQL server \(options.name) (127.0.0.1:\(port))"
            try configure(dataDirectory: data, options: options, port: port, socketDirectory: directory)
            guard let failure = try launch(binDirectory: binDirectory, dataDirectory: data, logFile: log, label: label) else {
                let server = LocalPostgresServer(
                    options: options, port: port, directory: directory, binDirectory: binDirectory,
                    removesDirectoryOnRemove: ownsDirectory, logger: logger)
                server.logger.info("PostgreSQL server started", metadata: ["directory": "\(directory)"])
                return server
            }
            if failure.portTaken && attempt < attempts {
                logger.notice("port was taken before the server bound it; trying another", metadata: ["backend": "\(options.name)", "port": "\(port)", "attempt": "\(attempt)"])
                continue
            }
            throw failure.error
        }
        // The loop returns or throws on its last attempt.
        throw LocalClusterError(.startFailed, "PostgreSQL server \(options.name) did not start after \(attempts) attempts")
    }

    /// Why a `pg_ctl start` failed, and whether another port would help.
    struct LaunchFailure {
        var error: LocalClusterError
        var portTaken: Bool
    }

    /// Runs `pg_ctl start -w`; on failure makes sure no half-started server is left and returns
    /// the error with the new lines of the server log.
    static func launch(binDirectory: String, dataDirectory: String, logFile: String, label: String) throws -> LaunchFailure? {
        let logOffset = ServerLog.size(of: logFile)
        let pgCtl = binDirectory + "/pg_ctl"
        let output: CommandOutput
        do {
            output = try CommandRunner.run(
                pgCtl, ["-D", dataDirectory, "-l", logFile, "-w", "-t", "30", "start"],
                asServerUser: true, timeout: .seconds(60))
        } catch {
            _ = try? stopServer(binDirectory: binDirectory, dataDirectory: dataDirectory, mode: .immediate, label: label)
            throw error
        }
        if output.succeeded { return nil }
        _ = try? stopServer(binDirectory: binDirectory, dataDirectory: dataDirectory, mode: .immediate, label: label)
        let tail = ServerLog.tail(of: logFile, from: logOffset)
        let error = LocalClusterError(.startFailed, """
            \(label) did not start: \(output.diagnostics)
            last lines of \(logFile):
            \(tail)
            """)
        return LaunchFailure(error: error, portTaken: ServerLog.reportsPortTaken(tail))
    }

    /// `pg_ctl stop -w -m <mode>`; a server that is not running counts as stopped.
    static func stopServer(binDirectory: String, dataDirectory: String, mode: PostgresStopMode, label: String) throws {
        guard FileManager.default.fileExists(atPath: dataDirectory + "/postmaster.pid") else { return }
        let output = try CommandRunner.run(
            binDirectory + "/pg_ctl", ["-D", dataDirectory, "-m", mode.rawValue, "-w", "-t", "30", "stop"],
            asServerUser: true, timeout: .seconds(60))
        if output.succeeded || output.stderr.contains("Is server running?") { return }
        throw LocalClusterError(.stopFailed, "pg_ctl could not stop \(label) in \(mode.rawValue) mode (data directory \(dataDirectory)): \(output.diagnostics)")
    }

    /// Runs initdb as the server user, with `--locale=C.UTF-8`, or `--no-locale` where that locale is missing.
    private static func initdb(options: PostgresServerOptions, directory: String, binDirectory: String, logger: Logger) throws {
        let data = dataDirectory(in: directory)
        let dataExisted = FileManager.default.fileExists(atPath: data)
        var arguments = ["-D", data, "-A", options.authMethod, "-U", "postgres", "--encoding=UTF8", "--no-sync"]
        var passwordFile: String?
        if let password = options.superuserPassword {
            let path = directory + "/.pgchorus-pwfile-" + UUID().uuidString
            try writePrivateFile(path, contents: password + "\n")
            passwordFile = path
            arguments.append("--pwfile=" + path)
        }
        defer { if let passwordFile { try? FileManager.default.removeItem(atPath: passwordFile) } }

        let initdb = binDirectory + "/initdb"
        let first = try CommandRunner.run(initdb, arguments + ["--locale=C.UTF-8"], asServerUser: true, timeout: .seconds(180))
        if first.succeeded { return }
        // initdb removes what it created on failure; clear leftovers only if we know they are its.
        if !dataExisted { try? FileManager.default.removeItem(atPath: data) }
        logger.notice("initdb with --locale=C.UTF-8 failed; retrying with --no-locale", metadata: ["backend": "\(options.name)", "error": "\(first.diagnostics)"])
        let second = try CommandRunner.run(initdb, arguments + ["--no-locale"], asServerUser: true, timeout: .seconds(180))
        if second.succeeded { return }
        if !dataExisted { try? FileManager.default.removeItem(atPath: data) }
        var message = "initdb for PostgreSQL server \(options.name) in \(data) failed: \(second.diagnostics) (with --locale=C.UTF-8 it said: \(first.diagnostics))"
        if CommandRunner.runningAsRoot {
            message += "; it ran as the \(ServerUser.name) user, who must be able to enter every directory above \(directory) and write to it"
        }
        throw LocalClusterError(.initFailed, message)
    }

    /// Rewrites LocalCluster's block at the end of `postgresql.conf` and the whole `pg_hba.conf`.
    private static func configure(dataDirectory: String, options: PostgresServerOptions, port: Int, socketDirectory: String) throws {
        let confPath = dataDirectory + "/postgresql.conf"
        let hbaPath = dataDirectory + "/pg_hba.conf"
        do {
            let original = try String(contentsOfFile: confPath, encoding: .utf8)
            let settings = ServerConfiguration.settings(options: options, port: port, socketDirectory: socketDirectory)
            // Not atomically: writing in place keeps the files owned by the server user.
            try ServerConfiguration.postgresqlConf(original: original, settings: settings)
                .write(toFile: confPath, atomically: false, encoding: .utf8)
            try ServerConfiguration.hbaConf(authMethod: options.authMethod)
                .write(toFile: hbaPath, atomically: false, encoding: .utf8)
        } catch {
            throw LocalClusterError(.directoryFailed, "could not write the configuration of PostgreSQL server \(options.name) in \(dataDirectory): \(error)")
        }
        try ServerUser.giveOwnership(of: confPath, recursive: false)
        try ServerUser.giveOwnership(of: hbaPath, recursive: false)
    }

    /// Creates `path` with mode 0600 from the start (never readable by others, even briefly) and
    /// gives it to the server user.
    private static func writePrivateFile(_ path: String, contents: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            throw LocalClusterError(.directoryFailed, "could not create \(path): \(String(cString: strerror(errno)))")
        }
        let bytes = Array(contents.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count else {
            try? FileManager.default.removeItem(atPath: path)
            throw LocalClusterError(.directoryFailed, "could not write \(path)")
        }
        try ServerUser.giveOwnership(of: path, recursive: false)
    }

    /// Longest directory whose socket path (`<dir>/.s.PGSQL.65535`) fits in `sun_path`.
    static let maxSocketDirectoryLength = 107 - "/.s.PGSQL.65535".utf8.count

    /// A new `pgchorus-<name>-XXXXXX` directory under `$TMPDIR` (or /tmp when that path would be
    /// too long for a Unix socket), owned by the server user.
    private static func makeTemporaryDirectory(name: String) throws -> String {
        let safeName = String(name.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") ? $0 : "_" }.prefix(24))
        var root = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        while root.count > 1 && root.hasSuffix("/") { root.removeLast() }
        if (root + "/pgchorus-\(safeName)-XXXXXX").utf8.count > maxSocketDirectoryLength { root = "/tmp" }
        var template = Array((root + "/pgchorus-\(safeName)-XXXXXX").utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard created != nil else {
            throw LocalClusterError(.directoryFailed, "could not create a temp directory under \(root) for PostgreSQL server \(name): \(String(cString: strerror(errno)))")
        }
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        do {
            try ServerUser.giveOwnership(of: path, recursive: false)
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw error
        }
        return path
    }

    /// The caller's directory made absolute and created if missing.
    private static func prepareGivenDirectory(_ directory: String, name: String) throws -> String {
        var path = directory.hasPrefix("/") ? directory : FileManager.default.currentDirectoryPath + "/" + directory
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        guard path.utf8.count <= maxSocketDirectoryLength else {
            throw LocalClusterError(.invalidOptions, "directory \(path) for PostgreSQL server \(name) is too long (\(path.utf8.count) bytes) to hold its Unix socket; use one of at most \(maxSocketDirectoryLength) bytes")
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw LocalClusterError(.directoryFailed, "could not create directory \(path) for PostgreSQL server \(name): \(error)")
        }
        return path
    }
}
