import Foundation
import LocalCluster

/// Runs blocking `work` (a client process such as psql or pgbench) on a thread of its own, so it
/// never holds one of the few threads of Swift's cooperative pool that other tests need meanwhile.
public func runBlocking<Value: Sendable>(_ work: @escaping @Sendable () throws -> Value) async throws -> Value {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try work() }) }
        thread.name = "pgchorus.test-client"
        thread.start()
    }
}

/// Polls `condition` every 100 ms for at most `seconds`; whether it held.
public func eventually(_ seconds: Double, _ condition: () throws -> Bool) async throws -> Bool {
    for _ in 0..<max(1, Int(seconds * 10)) {
        if try condition() { return true }
        try await Task.sleep(for: .milliseconds(100))
    }
    return false
}

/// `eventually` sleeping the calling thread between tries: for steps that run off the pool
/// (`runBlocking`), where a busy run could hold an `await` back for seconds.
@discardableResult
public func eventuallyBlocking(_ seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    for _ in 0..<max(1, Int(seconds * 10)) {
        if try condition() { return true }
        usleep(100_000)
    }
    return false
}

/// Blocking `work` started at once on a thread of its own — unlike `async let … = runBlocking`, whose
/// child task may wait seconds for a thread of the cooperative pool before the work even begins, on a
/// busy run. For a client that must be running while the test does something else (a fault).
public final class BackgroundRun<Value: Sendable>: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var result: Result<Value, Error>?

    public init(_ work: @escaping @Sendable () throws -> Value) {
        let thread = Thread { [self] in
            let outcome = Result { try work() }
            lock.withLock { result = outcome }
            done.signal()
        }
        thread.name = "pgchorus.test-client"
        thread.start()
    }

    /// Waits (off the pool) until the work has ended; call it once.
    public func value() async throws -> Value {
        try await runBlocking { [self] in
            done.wait()
            return try lock.withLock { result! }.get()
        }
    }

    /// Whether the work has ended (without waiting).
    public var isFinished: Bool { lock.withLock { result != nil } }
}

extension CommandOutput {
    /// What a failed expectation prints: the command, its exit code and both outputs.
    public var report: String {
        "\(commandLine)\nexit \(exitCode)\n--- stdout ---\n\(stdout)\n--- stderr ---\n\(stderr)"
    }

    /// stdout as lines, without the empty string after the final newline.
    public var stdoutLines: [String] {
        var lines = stdout.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        return lines
    }
}
