import LocalCluster
import Testing

/// A suite trait: its tests start their PostgreSQL servers without waiting in the process's queue of
/// starts (`ServerStarts`). For the suite that runs one test at a time: it is the run's critical path,
/// while the tests of the other suites, which all start at once, can wait their turn.
public struct StartsServersFirst: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        try await ServerStarts.$skipQueue.withValue(true) { try await function() }
    }
}

extension Trait where Self == StartsServersFirst {
    /// See `StartsServersFirst`.
    public static var startsServersFirst: Self { Self() }
}
