import Testing

/// Suites that must not run beside each other: the backend fault tests load both cores with pgbench
/// for minutes, and the VIP and DNS-mode tests hold sub-second leases between real pgchorusd
/// processes; online recovery and reload run pgbench and pg_dump beside real nodes. Nested here, they run one test at a time (the other suites still run beside them).
@Suite(.serialized) struct TimingSensitive {}
