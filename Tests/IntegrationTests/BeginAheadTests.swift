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

    /// Sends each group of `groups` (creating table t, a transaction that inserts 1 and rolls back, one
    /// that inserts 2 and commits), each without error, then finds exactly the row 2 on every server.
    func rollsBackAndCommitsEverywhere(port: Int, _ servers: [LocalPostgresServer], _ groups: [[FrontendMessage]],
                                       sourceLocation: SourceLocation = #_sourceLocation) throws {
        let client = try RawPostgresClient(port: port)
        _ = try client.startup()
        for g in groups {
            try client.send(g)
            let reply = try client.readUntilReady()
            #expect(reply.compactMap(\.errorState).isEmpty, "\(g): \(reply)", sourceLocation: sourceLocation)
        }
        for s in servers {
            let c = try LibPQConnection(s.connectionString(), target: s.name)
            #expect(try c.query("SELECT coalesce(string_agg(id::text, ','), '') FROM t") == [["2"]], sourceLocation: sourceLocation)
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
                try rollsBackAndCommitsEverywhere(port: proxy.port, servers, [
                    "CREATE TABLE t (id int PRIMARY KEY)", "BEGIN", "INSERT INTO t VALUES (1)", "ROLLBACK",
                    "BEGIN", "INSERT INTO t VALUES (2)", "COMMIT"].map { [.query($0)] })
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
    /// BEGIN — a simple Query, the extended protocol's messages, a named statement's Bind — is answered
    /// all the same, and the transaction goes on once it wakes.
    @Test(arguments: ["simple", "extended", "prepared"]) func aBeginIsAnsweredWithoutWaitingForTheBackend(protocolMode: String) async throws {
        func messages(_ sql: String) -> [FrontendMessage] {
            switch protocolMode {
            case "simple": [.query(sql)]
            case "prepared" where sql == "BEGIN": Self.bound("b")
            default: Self.extended(sql)
            }
        }
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port, timeoutSeconds: 20)
                _ = try client.startup()
                try client.send(.query("CREATE TABLE t (id int)"))
                _ = try client.readUntilReady()
                try client.send(Self.prepare("b"))
                #expect(try client.readUntilReady() == [.parseComplete, .readyForQuery(.idle)])
                TimingSensitive.BackendFaultTests.signalTree(servers[0], SIGSTOP)
                defer { TimingSensitive.BackendFaultTests.signalTree(servers[0], SIGCONT) }
                try client.send(messages("BEGIN"))
                let answer = try client.readUntilReady()
                TimingSensitive.BackendFaultTests.signalTree(servers[0], SIGCONT)
                let acknowledgements: [BackendMessage] = switch protocolMode {
                case "simple": []
                case "prepared": [.bindComplete, .noData]
                default: [.parseComplete, .bindComplete, .noData]
                }
                #expect(answer == acknowledgements + [.commandComplete("BEGIN"), .readyForQuery(.inTransaction)])
                for sql in ["INSERT INTO t VALUES (1)", "COMMIT"] {
                    try client.send(messages(sql))
                    let reply = try client.readUntilReady()
                    #expect(reply.compactMap(\.errorState).isEmpty, "\(sql): \(reply)")
                }
                let c = try LibPQConnection(servers[0].connectionString(), target: servers[0].name)
                #expect(try c.query("SELECT count(*) FROM t") == [["1"]])
            }
        }
    }

    /// `sql` as libpq's `PQexecParams` sends it (pgbench `-M extended`): Parse, Bind, Describe of the portal, Execute, Sync.
    static func extended(_ sql: String, describe: Bool = true, parameters: [ByteBuffer?] = [], portal: String = "",
                         resultFormats: [Int16] = []) -> [FrontendMessage] {
        [.parse(.init(name: "", query: sql, parameterTypes: [])),
         .bind(.init(portal: portal, statement: "", parameterFormats: [], parameters: parameters, resultFormats: resultFormats))]
            + (describe ? [.describe(.portal, portal)] : []) + [.execute(portal: portal, maxRows: 0), .sync]
    }

    /// Parse of `sql` as named statement `name`, and Sync (pgbench `-M prepared`, libpq's `PQprepare`).
    static func prepare(_ name: String, _ sql: String = "BEGIN") -> [FrontendMessage] {
        [.parse(.init(name: name, query: sql, parameterTypes: [])), .sync]
    }

    /// Named statement `name` bound to the unnamed portal and run (libpq's `PQexecPrepared`).
    static func bound(_ name: String, describe: Bool = true) -> [FrontendMessage] {
        [.bind(.init(portal: "", statement: name, parameterFormats: [], parameters: [], resultFormats: [0]))]
            + (describe ? [.describe(.portal, "")] : []) + [.execute(portal: "", maxRows: 0), .sync]
    }

    /// The extended protocol's plain BEGIN (pgbench `-M extended`) is answered ahead too, message for
    /// message as PostgreSQL answers it; what PostgreSQL may answer otherwise (a parameter Bind refuses,
    /// a named portal, a Describe of the statement, a BEGIN inside a transaction) goes to the backends as before.
    @Test func anExtendedProtocolBeginIsAnsweredAsPostgreSQLAnswersIt() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let describeStatement: [FrontendMessage] = [.parse(.init(name: "", query: "BEGIN", parameterTypes: [])),
                    .bind(.init(portal: "", statement: "", parameterFormats: [], parameters: [], resultFormats: [])),
                    .describe(.statement, ""), .execute(portal: "", maxRows: 0), .sync]
                let conversation: [[FrontendMessage]] = [
                    Self.extended("BEGIN"), Self.extended("BEGIN"), Self.extended("ROLLBACK"),
                    Self.extended("start transaction", describe: false, resultFormats: [1]), Self.extended("SHOW transaction_isolation"),
                    Self.extended("COMMIT"),
                    Self.extended("BEGIN", parameters: [ByteBuffer(string: "1")]),
                    Self.extended("BEGIN", portal: "p1"), Self.extended("ROLLBACK"),
                    describeStatement, Self.extended("ROLLBACK"),
                    Self.extended("BEGIN", resultFormats: [0, 1]),
                    Self.extended("BEGIN ISOLATION LEVEL SERIALIZABLE"), Self.extended("SHOW transaction_isolation"), Self.extended("END"),
                    // A named statement (pgbench -M prepared): answered ahead once its Parse was answered; parsed
                    // again under the same name (PostgreSQL refuses), deallocated in SQL, closed: PostgreSQL's again.
                    Self.prepare("b1"), Self.bound("b1"), Self.extended("ROLLBACK"), Self.prepare("b1"), Self.bound("b1", describe: false),
                    Self.extended("COMMIT"), [.query("DEALLOCATE b1")], Self.bound("b1"), Self.prepare("b1"), Self.bound("b1"),
                    [.close(.statement, "b1"), .sync], Self.extended("ROLLBACK"), Self.bound("b1"),
                ]
                let through = try pipelinedReplies(port: proxy.port, conversation)
                let direct = try pipelinedReplies(port: servers[0].port, conversation)
                #expect(through == direct)
                #expect(through[0] == [.parseComplete, .bindComplete, .noData, .commandComplete("BEGIN"), .readyForQuery(.inTransaction)])
                // The second BEGIN was PostgreSQL's to answer (inside a transaction): its warning came through.
                #expect(through[1].contains { if case let .noticeResponse(f) = $0 { f.sqlState == "25001" } else { false } })
                #expect(through[6].contains { $0.errorState == "08P01" }, "\(through[6])")
                #expect(through[16] == [.bindComplete, .noData, .commandComplete("BEGIN"), .readyForQuery(.inTransaction)])
                #expect(through[18].contains { $0.errorState == "42P05" }, "\(through[18])")
                #expect(through[22].contains { $0.errorState == "26000" }, "\(through[22])")

                // The transaction it opened is real on every backend: rolled back, nothing; committed, the row everywhere.
                try rollsBackAndCommitsEverywhere(port: proxy.port, servers, [
                    [.query("CREATE TABLE t (id int PRIMARY KEY)")], Self.extended("BEGIN"), Self.extended("INSERT INTO t VALUES (1)"),
                    Self.extended("ROLLBACK"), Self.extended("BEGIN", describe: false), Self.extended("INSERT INTO t VALUES (2)"),
                    Self.extended("COMMIT")])
                #expect(proxy.server.context.registry.online().count == 2)
            }
        }
    }

    /// The messages a raw client gets for each group of messages (extended protocol or Queries), sent one
    /// group at a time, each read up to as many ReadyForQuery as it has Syncs and Queries.
    func pipelinedReplies(port: Int, _ groups: [[FrontendMessage]]) throws -> [[BackendMessage]] {
        let client = try RawPostgresClient(port: port)
        _ = try client.startup()
        return try groups.map { g in
            try client.send(g)
            let readies = g.filter { if case .sync = $0 { true } else if case .query = $0 { true } else { false } }.count
            return try (0..<readies).flatMap { _ in try client.readUntilReady() }
        }
    }

    /// A named BEGIN dropped before the lead answered its Parse (pipelined in the same write), dropped
    /// by running an earlier-parsed `DEALLOCATE ALL`, or parsed in a pipeline an earlier error skips
    /// (after a part ended by Flush) is not held: the Bind gets PostgreSQL's 26000, message for message
    /// as directly. A function that deallocates is beyond what the node can see: the BEGIN answered
    /// ahead misses on every backend alike, the session ends and no backend is failed.
    @Test func aNamedBeginDroppedWhereTheNodeCannotTellIsNotAnsweredAheadAndFailsNoBackend() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                let conversation: [[FrontendMessage]] = [
                    Self.prepare("b1") + [.query("DEALLOCATE ALL")], Self.bound("b1"),
                    Self.prepare("d", "DEALLOCATE ALL"), Self.prepare("b2"),
                    [.bind(.init(portal: "", statement: "d", parameterFormats: [], parameters: [], resultFormats: [])),
                     .execute(portal: "", maxRows: 0), .sync], Self.bound("b2"),
                    [.parse(.init(name: "q", query: "SELECT 1/0", parameterTypes: [])),
                     .bind(.init(portal: "", statement: "q", parameterFormats: [], parameters: [], resultFormats: [])),
                     .execute(portal: "", maxRows: 0), .flush] + Self.prepare("b3"), Self.bound("b3"),
                    Self.prepare("b4") + [.close(.statement, "b4"), .parse(.init(name: "b4", query: "BEGIN", parameterTypes: [23])), .sync],
                    Self.bound("b4"),
                ]
                let through = try pipelinedReplies(port: proxy.port, conversation)
                let direct = try pipelinedReplies(port: servers[0].port, conversation)
                #expect(through == direct)
                for i in [1, 5, 7] { #expect(through[i].contains { $0.errorState == "26000" }, "\(i): \(through[i])") }
                #expect(through[9].contains { $0.errorState == "08P01" }, "\(through[9])")
                #expect(proxy.server.context.registry.online().count == 2, "\(backendReasons(proxy))")

                let setup = try RawPostgresClient(port: proxy.port)
                _ = try setup.startup()
                #expect(try setup.query("CREATE FUNCTION dealloc() RETURNS void LANGUAGE plpgsql AS $$BEGIN EXECUTE 'DEALLOCATE ALL'; END$$")
                    .compactMap(\.errorState).isEmpty)
                let client = try RawPostgresClient(port: proxy.port)
                _ = try client.startup()
                try client.send(Self.prepare("b5"))
                _ = try client.readUntilReady()
                _ = try client.query("SELECT dealloc()")
                try client.send(Self.bound("b5"))
                // Answered ahead (the node cannot know), then the session ends: the backends all missed alike.
                #expect(try client.readUntilReady() == [.bindComplete, .noData, .commandComplete("BEGIN"), .readyForQuery(.inTransaction)])
                let end = try client.readUntilClosed()
                #expect(end.contains { $0.errorState == "08006" }, "\(end)")
                // Both backends answered before the session ended (the lead's answer ends it; the follower's
                // came first or is ignored once it has ended): neither was failed, and the node still serves.
                try await Task.sleep(for: .milliseconds(500))
                #expect(proxy.server.context.registry.online().count == 2, "\(backendReasons(proxy))")
                #expect(try setup.query("SELECT 1").compactMap(\.errorState).isEmpty)
            }
        }
    }
}
