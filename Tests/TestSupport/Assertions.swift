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
