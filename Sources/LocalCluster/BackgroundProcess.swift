import Foundation
import Glibc
import Synchronization

/// A long-running child (a daemon under test, tcpdump, dnsmasq) started with posix_spawn in its own
/// process group and reaped here with `waitpid`, so its exit is always seen (Foundation's Process
/// was seen to miss an exit when several children end close together).
public final class BackgroundProcess: Sendable {
    public let pid: pid_t
    public let commandLine: String
    private let exitStatus = Mutex<Int32?>(nil)

    /// Starts `path` with `arguments`; standard output and error go to `outputFile` (appended), or nowhere.
    public init(_ path: String, _ arguments: [String], outputFile: String? = nil, environment: [String: String] = [:]) throws {
        commandLine = ([path] + arguments).joined(separator: " ")
        let input = open("/dev/null", O_RDONLY)
        let output = outputFile.map { open($0, O_WRONLY | O_CREAT | O_APPEND, 0o644) } ?? open("/dev/null", O_WRONLY)
        defer { close(input); close(output) }
        guard input >= 0, output >= 0 else {
            throw LocalClusterError(.commandFailed, "could not open the output of \(commandLine): \(String(cString: strerror(errno)))")
        }
        pid = try CommandRunner.spawn(path, arguments: arguments, environment: ProcessInfo.processInfo.environment.merging(environment) { $1 },
                                      standardInput: input, standardOutput: output, standardError: output, commandLine: commandLine)
    }

    /// False once the child has exited (and was reaped).
    public var isRunning: Bool {
        exitStatus.withLock { status in
            if status != nil { return false }
            var s: Int32 = 0
            let r = waitpid(pid, &s, WNOHANG)
            if r == pid || (r == -1 && errno == ECHILD) { status = s; return false }
            return true
        }
    }

    public func signal(_ number: Int32) {
        if isRunning { Glibc.kill(pid, number) }
    }

    /// Waits up to `seconds` for the exit; true if it exited.
    @discardableResult
    public func wait(seconds: Double) -> Bool {
        for _ in 0..<max(1, Int(seconds * 20)) {
            if !isRunning { return true }
            usleep(50_000)
        }
        return !isRunning
    }

    /// SIGTERM, then SIGKILL after `grace` seconds; waits for the exit.
    public func stop(grace: Double = 10) {
        signal(SIGTERM)
        if !wait(seconds: grace) {
            signal(SIGKILL)
            wait(seconds: 10)
        }
    }
}
