import Testing
import LocalCluster
import TestSupport

/// Suites that must not run beside each other: the backend fault tests load both cores with pgbench
/// for minutes, and the VIP and DNS-mode tests hold sub-second leases between real pgchorusd
/// processes; online recovery and reload run pgbench and pg_dump beside real nodes. Nested here, they run one test at a time (the other suites still run beside them); being the run's critical path, they start their servers without waiting in the queue of starts.
@Suite(.serialized, .startsServersFirst) struct TimingSensitive {}

extension TimingSensitive {
    /// The trait reaches the nested suites' tests (they are declared in extensions, in other files).
    @Suite struct StartsServersFirstTests {
        @Test func theSuitesTestsSkipTheQueueOfStarts() {
            #expect(ServerStarts.skipQueue)
        }
    }
}
