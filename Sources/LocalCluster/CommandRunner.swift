import Foundation
import Glibc

/// What a finished helper program printed and how it ended.
public struct CommandOutput: Sendable {
    public var commandLine: String
    public var exitCode: Int32
    public var stdout: String
    public var stderr: String

    public var succeeded: Bool { exitCode == 0 }

    /// stderr, or stdout when stderr is empty, trimmed for use in an error message.
    public var diagnostics: String {
        let text = stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? stdout.trimmingCharacters(in: .whitespacesAndNewlines) : text
    }
}

/// Runs PostgreSQL's programs as child processes with captured output and a hard time limit.
///
/// It spawns with `posix_spawn` rather than `Foundation.Process`: `pg_ctl start` leaves the
/// postmaster running with every descriptor it inherited, and Foundation's Process learns that a
/// child exited from a socket the child inherits, so it would wait for the postmaster to exit.
/// Here the child gets only stdin/stdout/stderr (everything from fd 3 up is closed), output goes to
/// files (a daemon holding a pipe would keep it from ever reaching end-of-file), and exit is
/// observed with `waitpid`.
public enum CommandRunner {
    /// Whether this process runs as root, in which case the server programs run as `postgres`.
    static var runningAsRoot: Bool { getuid() == 0 }

    static let runuserCandidates = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]

    /// Runs `executable` with `arguments`. With `asServerUser` and root, it runs through
    /// `runuser -u postgres --`, because PostgreSQL refuses to run as root.
    public static func run(
        _ executable: String,
        _ arguments: [String],
        asServerUser: Bool = false,
        environment: [String: String] = [:],
        standardInput: String? = nil,
        timeout: Duration
    ) throws -> CommandOutput {
        var launchPath = executable
        var launchArguments = arguments
        if asServerUser && runningAsRoot {
            guard let runuser = runuserCandidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
                throw LocalClusterError(.binariesNotFound, "running as root, PostgreSQL must run as the postgres user, but runuser was not found (looked in \(runuserCandidates.joined(separator: ", "))); install util-linux")
            }
            launchPath = runuser
            launchArguments = ["-u", ServerUser.name, "--", executable] + arguments
        }
        let commandLine = ([launchPath] + launchArguments).joined(separator: " ")

        let scratch = FileManager.default.temporaryDirectory.path + "/pgchorus-cmd-" + UUID().uuidString
        let outPath = scratch + ".out", errPath = scratch + ".err", inPath = scratch + ".in"
        var descriptors: [Int32] = []
        defer {
            for fd in descriptors { close(fd) }
            for path in [outPath, errPath, inPath] { unlink(path) }
        }
        func openFile(_ path: String, _ flags: Int32) throws -> Int32 {
            let fd = open(path, flags | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw LocalClusterError(.directoryFailed, "could not open \(path) to run \(executable): \(String(cString: strerror(errno)))")
            }
            descriptors.append(fd)
            return fd
        }
        let outFD = try openFile(outPath, O_WRONLY | O_CREAT | O_TRUNC)
        let errFD = try openFile(errPath, O_WRONLY | O_CREAT | O_TRUNC)
        let inFD: Int32
        if let standardInput {
            guard FileManager.default.createFile(atPath: inPath, contents: Data(standardInput.utf8), attributes: [.posixPermissions: 0o600]) else {
                throw LocalClusterError(.directoryFailed, "could not write the input file \(inPath) for \(executable)")
            }
            inFD = try openFile(inPath, O_RDONLY)
        } else {
            inFD = try openFile("/dev/null", O_RDONLY)
        }

        let pid = try spawn(
            launchPath, arguments: launchArguments, environment: childEnvironment(adding: environment),
            standardInput: inFD, standardOutput: outFD, standardError: errFD, commandLine: commandLine)
        func read(_ path: String) -> String {
            String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self)
        }
        guard let status = waitForExit(pid, within: timeout) else {
            // Its own process group: this reaches runuser and the program it runs.
            _ = kill(-pid, SIGTERM)
            if waitForExit(pid, within: .seconds(5)) == nil {
                _ = kill(-pid, SIGKILL)
                _ = waitForExit(pid, within: .seconds(5))
            }
            throw LocalClusterError(.commandTimedOut, "\(commandLine) did not finish within \(timeout) and was stopped; its error output: \(read(errPath).trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return CommandOutput(commandLine: commandLine, exitCode: status, stdout: read(outPath), stderr: read(errPath))
    }

    /// Starts the child in its own process group with default signal handling, the three given
    /// descriptors as 0, 1, 2 and none of ours beyond them, in `/`.
    static func spawn(
        _ path: String, arguments: [String], environment: [String: String],
        standardInput: Int32, standardOutput: Int32, standardError: Int32, commandLine: String
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, standardInput, 0)
        posix_spawn_file_actions_adddup2(&actions, standardOutput, 1)
        posix_spawn_file_actions_adddup2(&actions, standardError, 2)
        if let closeFrom = SpawnExtensions.addCloseFrom {
            _ = closeFrom(&actions, 3)
        } else {
            for fd in openDescriptors() where fd > 2 {
                posix_spawn_file_actions_addclose(&actions, fd)
            }
        }
        // The postgres user may not be able to enter our working directory.
        if let chdir = SpawnExtensions.addChdir {
            _ = chdir(&actions, "/")
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t(), allSignals = sigset_t()
        sigemptyset(&noSignals)
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))

        let argv = ([path] + arguments).map { strdup($0) }
        let envp = environment.map { strdup("\($0.key)=\($0.value)") }
        defer { for pointer in argv + envp { free(pointer) } }
        var pid: pid_t = 0
        let result = (argv + [nil]).withUnsafeBufferPointer { argvBuffer in
            (envp + [nil]).withUnsafeBufferPointer { envpBuffer in
                posix_spawn(&pid, path, &actions, &attributes, argvBuffer.baseAddress!, envpBuffer.baseAddress!)
            }
        }
        guard result == 0 else {
            throw LocalClusterError(.commandFailed, "could not run \(commandLine): \(String(cString: strerror(result)))")
        }
        return pid
    }

    /// Polls `waitpid` until the child exits (returning its exit code, or 128 + signal) or the
    /// time is up (returning nil). Polling keeps the wait bounded without signal handlers.
    private static func waitForExit(_ pid: pid_t, within timeout: Duration) -> Int32? {
        let deadline = ContinuousClock.now + timeout
        var delay: UInt32 = 1_000
        while true {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid {
                let signal = status & 0x7F
                return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
            }
            if result == -1 && errno != EINTR {
                // Someone else reaped it; it has exited, with an unknown status.
                return 255
            }
            if ContinuousClock.now >= deadline { return nil }
            usleep(delay)
            delay = min(delay * 2, 20_000)
        }
    }

    /// Descriptors open in this process, for when `posix_spawn_file_actions_addclosefrom_np` is missing.
    private static func openDescriptors() -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return entries.compactMap { Int32($0) }
    }

    /// Our environment without `PG*` variables (a stray `PGDATA`, `PGPORT` or `PGPASSWORD` must not
    /// steer the child), with English messages because callers recognise a few of them.
    static func childEnvironment(adding extra: [String: String]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }
        environment["LC_ALL"] = nil
        environment["LANG"] = "C.UTF-8"
        environment["LC_MESSAGES"] = "C"
        environment.merge(extra) { _, new in new }
        return environment
    }
}

/// glibc's `_np` spawn actions, which Swift's Glibc module does not import (they need `_GNU_SOURCE`).
enum SpawnExtensions {
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32
    typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32

    /// `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34+).
    static var addCloseFrom: AddCloseFrom? {
        dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map { unsafeBitCast($0, to: AddCloseFrom.self) }
    }

    /// `posix_spawn_file_actions_addchdir_np` (glibc 2.29+).
    static var addChdir: AddChdir? {
        dlsym(nil, "posix_spawn_file_actions_addchdir_np").map { unsafeBitCast($0, to: AddChdir.self) }
    }
}
