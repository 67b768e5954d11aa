import Metrics

/// The proxy's counters (swift-metrics; pgchorusd exports them on `/metrics`).
enum ProxyMetrics {
    static let statements = Counter(label: "pgchorus_statement_cycles_total")
    static let votesCommitted = Counter(label: "pgchorus_commit_votes_total", dimensions: [("decision", "commit")])
    static let votesRolledBack = Counter(label: "pgchorus_commit_votes_total", dimensions: [("decision", "rollback")])
    static let backendsDropped = Counter(label: "pgchorus_session_backend_drops_total")
    /// Backends brought (back) into service taken into open sessions at a transaction boundary.
    static let backendsTakenIn = Counter(label: "pgchorus_session_backend_take_ins_total")
    static let sessionsOpened = Counter(label: "pgchorus_sessions_opened_total")
    /// Statements cancelled on the lead (client got 40001) because the followers could not run them with
    /// the lead's snapshot (`CommitEpochs`).
    static let epochCancels = Counter(label: "pgchorus_snapshot_order_cancels_total")
    /// Transactions rolled back at their vote (client got 40001) because the order had to go on before
    /// one of their statements reached every backend (`CommitEpochs`, `doomForEpochs`).
    static let epochDooms = Counter(label: "pgchorus_snapshot_order_dooms_total")
    /// Sequence-drawing statements that ended differently on the backends, after which the followers'
    /// sequences were set to the lead's (`SequenceResync`), and those where that failed.
    static let sequenceResyncs = Counter(label: "pgchorus_sequence_resyncs_total")
    static let sequenceResyncFailures = Counter(label: "pgchorus_sequence_resync_failures_total")
    /// Statements answered with 40P01 (or sessions ended, when a statement cannot be answered alone)
    /// because the statement holding the sequence turn waited on the lead for a lock of their
    /// transaction while they waited for the turn (`checkOrderCycle`).
    static let sequenceTurnCycles = Counter(label: "pgchorus_sequence_turn_deadlocks_total")
    /// Statements answered with the lead's error when it refused the cluster-wide sequence lock (the
    /// session's lock or statement timeout, a deadlock PostgreSQL found; `clusterOrderRefused`).
    static let sequenceTurnRefusals = Counter(label: "pgchorus_sequence_turn_refusals_total")
    /// Rounds of the order's probe that asked the backends which running statements wait on a lock
    /// (`CommitEpochs`: only while a turn waits on statements that have run one probe interval).
    static let epochProbes = Counter(label: "pgchorus_snapshot_order_probes_total")
    /// Turns that stopped waiting on running statements after `replication.follower_timeout`.
    static let epochForced = Counter(label: "pgchorus_snapshot_order_forced_total")
    /// The node went on without the cluster-wide order lock (`ClusterOrder`): not granted even after
    /// its holders were disconnected.
    static let clusterOrderForced = Counter(label: "pgchorus_cluster_order_forced_total")
    /// Other nodes' order connections disconnected on the lead for holding the lock too long.
    static let clusterOrderTerminations = Counter(label: "pgchorus_cluster_order_terminations_total")
    /// Liveness probes of a silent lead (`BackendProber`), by what they found: an answer of any kind,
    /// silence (no answer within the timeout), or a refused connection.
    static let probesAnswered = Counter(label: "pgchorus_liveness_probes_total", dimensions: [("result", "answered")])
    static let probesSilent = Counter(label: "pgchorus_liveness_probes_total", dimensions: [("result", "silent")])
    static let probesRefused = Counter(label: "pgchorus_liveness_probes_total", dimensions: [("result", "refused")])
}
