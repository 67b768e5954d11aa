import Metrics

/// The proxy's counters (swift-metrics; pgchorusd exports them on `/metrics`).
enum ProxyMetrics {
    static let statements = Counter(label: "pgchorus_statement_cycles_total")
    static let votesCommitted = Counter(label: "pgchorus_commit_votes_total", dimensions: [("decision", "commit")])
    static let votesRolledBack = Counter(label: "pgchorus_commit_votes_total", dimensions: [("decision", "rollback")])
    static let backendsDropped = Counter(label: "pgchorus_session_backend_drops_total")
    static let sessionsOpened = Counter(label: "pgchorus_sessions_opened_total")
}
