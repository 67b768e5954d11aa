#if canImport(Glibc)
import Glibc
#endif
import LocalCluster
import NIOCore
import State
import Testing
import TestSupport
import Wire

/// A plain `BEGIN` from idle is answered by the node at once (`answerBeginAhead`) and sent to every
/// backend as the node's own cycle: the client sees exactly PostgreSQL's answer, every backend's
/// transaction is open from that moment, and anything but a plain BEGIN from idle goes as before.
@Suite struct BeginAheadTests {
    /// The messages a raw client gets for each of `queries`, sent one at a time.
    func replies(port: Int, _ queries: [String]) throws -> [[BackendMessage]] {
        let client = try RawPostgresClient(port: port)
        _ = try client.startup()
        return try queries.map { q in
            try client.send(.query(q))
            return try client.readUntilReady()
        }
    }

    @Test func aPlainBeginIsAnsweredAsPostgreSQLAnswersItAndOpensTheTransactionOnEveryBackend() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                // The same conversation through the node and directly: the same messages.
                let conversation = ["BEGIN", "begin work", "START TRANSACTION", "ROLLBACK", "start transaction;", "BEGIN",
                                    "SHOW transaction_isolation", "ROLLBACK", "BEGIN ISOLATION LEVEL SERIALIZABLE",
                                    "SHOW transaction_isolation", "COMMIT", "BEGIN; SELECT 1; COMMIT", "BeGiN TRANSACTION", "END"]
                let through = try replies(port: proxy.port, conversation)
                let direct = try replies(port: servers[0].port, conversation)
                #expect(through == direct)
                // A second BEGIN inside the transaction is PostgreSQL's to answer: its warning comes through.
                #expect(through[1].contains { if case let .noticeResponse(f) = $0 { f.sqlState == "25001" } else { false } })
                #expect(through[0] == [.commandComplete("BEGIN"), .readyForQuery(.inTransaction)])

                // The transaction the early answer opened is real on every backend: rolled back, nothing;
                // committed (through the vote), the row everywhere.
                let client = try RawPostgresClient(port: proxy.port)
                _ = try client.startup()
                for q in ["CREATE TABLE t (id int PRIMARY KEY)", "BEGIN", "INSERT INTO t VALUES (1)", "ROLLBACK",
                          "BEGIN", "INSERT INTO t VALUES (2)", "COMMIT"] {
                    try client.send(.query(q))
                    let reply = try client.readUntilReady()
                    #expect(reply.compactMap(\.errorState).isEmpty, "\(q): \(reply)")
                }
                for s in servers {
                    let c = try LibPQConnection(s.connectionString(), target: s.name)
                    #expect(try c.query("SELECT coalesce(string_agg(id::text, ','), '') FROM t") == [["2"]])
                }
                #expect(proxy.server.context.registry.online().count == 2)
            }
        }
    }

    /// The backend's transaction starts when the client sent BEGIN, not at its first statement: the
    /// BEGIN is sent on at once, only its answer is given ahead.
    @Test func theBackendsTransactionStartsWhenTheClientSentBegin() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                _ = try client.startup()
                try client.send(.query("BEGIN"))
                #expect(try client.readUntilReady() == [.commandComplete("BEGIN"), .readyForQuery(.inTransaction)])
                try await Task.sleep(for: .milliseconds(400))
                try client.send(.query("SELECT statement_timestamp() - now() >= interval '300 ms', xact_start < query_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"))
                let rows = try client.readUntilReady().compactMap { m -> [String?]? in
                    if case let .dataRow(cols) = m { return cols.map { $0.map { String(buffer: $0) } } }
                    return nil
                }
                #expect(rows == [["t", "t"]])
            }
        }
    }

    /// The answer does not wait for the backend: with the backend frozen (SIGSTOP of its processes) a
    /// BEGIN is answered all the same, and the transaction goes on once it wakes.
    @Test func aBeginIsAnsweredWithoutWaitingForTheBackend() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port, timeoutSeconds: 30)
                _ = try client.startup()
                try client.send(.query("CREATE TABLE t (id int)"))
                _ = try client.readUntilReady()
                TimingSensitive.BackendFaultTests.signalTree(servers[0], SIGSTOP)
                defer { TimingSensitive.BackendFaultTests.signalTree(servers[0], SIGCONT) }
                try client.send(.query("BEGIN"))
                let answer = try client.readUntilReady()
                TimingSensitive.BackendFaultTests.signalTree(servers[0], SIGCONT)
                #expect(answer == [.commandComplete("BEGIN"), .readyForQuery(.inTransaction)])
                for q in ["INSERT INTO t VALUES (1)", "COMMIT"] {
                    try client.send(.query(q))
                    let reply = try client.readUntilReady()
                    #expect(reply.compactMap(\.errorState).isEmpty, "\(q): \(reply)")
                }
                let c = try LibPQConnection(servers[0].connectionString(), target: servers[0].name)
                #expect(try c.query("SELECT count(*) FROM t") == [["1"]])
            }
        }
    }
}
