import LocalCluster
import NIOCore
import Testing
import TestSupport
import Wire

/// Pipelines without Sync or Flush: PostgreSQL runs each message as it arrives and sends an error at
/// once, and clients (psycopg 3's pipeline mode) wait for it before they send the Sync.
@Suite struct PipelineTests {
    /// The next `count` messages (fewer if the connection closes): the answers to a part ended by
    /// Flush, read before the rest of the group is sent.
    func answers(_ client: RawPostgresClient, _ count: Int) throws -> [BackendMessage] {
        var out: [BackendMessage] = []
        for _ in 0..<count { if let m = try client.read() { out.append(m) } }
        return out
    }

    func extended(_ sql: String) -> [FrontendMessage] {
        [.parse(.init(name: "", query: sql, parameterTypes: [])),
         .bind(.init(portal: "", statement: "", parameterFormats: [], parameters: [], resultFormats: [])),
         .execute(portal: "", maxRows: 0)]
    }


    @Test(arguments: [1, 3])
    func anErrorArrivesBeforeTheSyncIsSent(backends: Int) async throws {
        try await withPostgresServers(count: backends) { servers in
            try await withProxy(backends: servers) { proxy in
                let setup = try Clients.psql(proxy.connectionString(), ["-v", "ON_ERROR_STOP=1", "-c", "create table u (id int primary key)", "-c", "insert into u values (1)"])
                #expect(setup.exitCode == 0, "\(setup.report)")
                let client = try RawPostgresClient(port: proxy.port, timeoutSeconds: 20)
                _ = try client.startup()
                // A unique violation, and no Sync: the error must come anyway.
                try client.send(extended("insert into u values (2)") + extended("insert into u values (1)"))
                var seen: [BackendMessage] = []
                for _ in 0..<10 {
                    guard let m = try client.read() else { break }
                    seen.append(m)
                    if case .errorResponse = m { break }
                }
                let error = seen.compactMap { if case let .errorResponse(f) = $0 { f.sqlState } else { nil } }
                #expect(error == ["23505"], "\(seen)")
                try client.send([.sync])
                let rest = try client.readUntilReady()
                #expect(rest.last == .readyForQuery(.idle), "\(rest)")
                // The implicit transaction of the pipeline failed: nothing of it stays, on any backend.
                try client.send(extended("insert into u values (3)") + [.sync])
                let third = try client.readUntilReady()
                #expect(third.contains(.commandComplete("INSERT 0 1")), "\(third)")
                #expect(proxy.server.context.registry.online().count == backends)
                for s in servers { #expect(try s.psql("select string_agg(id::text, ',' order by id) from u") == "1,3") }
            }
        }
    }

    /// A part of a group ended by Flush goes to the followers at once, its cycle (after Sync) only once
    /// the lead has answered it: the followers' answers to the part come before their cycle is owed.
    /// They count with that cycle on every backend alike, whichever arrived first on the lead: no
    /// follower is failed for it, sent in one write or waited for before the Sync (asyncpg's prepare).
    @Test func answersToAPartEndedByFlushCountWithTheCycleThatFollowsOnEveryBackend() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                // The lead's cycle is slow (pg_sleep): a follower has answered the Flush part long before it gets the cycle.
                let groups: [[FrontendMessage]] = [
                    extended("SELECT 1") + [.flush] + extended("SELECT pg_sleep(0.2)") + [.sync],
                    extended("SELECT 1/0") + [.flush] + extended("SELECT 2") + [.sync],
                    [.parse(.init(name: "s", query: "SELECT $1::int + 1", parameterTypes: [])), .describe(.statement, "s"), .flush],
                    [.bind(.init(portal: "", statement: "s", parameterFormats: [], parameters: [ByteBuffer(string: "41")], resultFormats: [])),
                     .execute(portal: "", maxRows: 0), .sync],
                ]
                func conversation(_ port: Int) throws -> [[BackendMessage]] {
                    let client = try RawPostgresClient(port: port, timeoutSeconds: 20)
                    _ = try client.startup()
                    var replies: [[BackendMessage]] = []
                    for round in 0..<3 {
                        for g in groups[0..<2] {
                            try client.send(g)
                            replies.append(try client.readUntilReady())
                        }
                        // Parse and Describe ended by Flush, their answers read before the rest is sent.
                        try client.send(groups[2])
                        let described = try answers(client, 3)
                        try client.send(groups[3])
                        replies.append(described + (try client.readUntilReady()))
                        try client.send([.close(.statement, "s"), .sync])
                        replies.append(try client.readUntilReady())
                        #expect(proxy.server.context.registry.online().count == 2, "round \(round): \(backendReasons(proxy))")
                    }
                    return replies
                }
                let through = try conversation(proxy.port)
                let direct = try conversation(servers[0].port)
                #expect(through == direct)
                #expect(through[1].contains { $0.errorState == "22012" }, "\(through[1])")
                #expect(proxy.server.context.registry.online().count == 2, "\(backendReasons(proxy))")

                // The lead's cycle after the part ends by statement_timeout: the followers get the lead's
                // outcome instead of the cycle, and their answers to the part count with no cycle.
                let client = try RawPostgresClient(port: proxy.port, timeoutSeconds: 20)
                _ = try client.startup()
                #expect(try client.query("SET statement_timeout = '300ms'").compactMap(\.errorState).isEmpty)
                for round in 0..<2 {
                    try client.send(extended("SELECT 1") + [.flush] + extended("SELECT pg_sleep(2)") + [.sync])
                    let timedOut = try client.readUntilReady()
                    #expect(timedOut.contains { $0.errorState == "57014" }, "\(timedOut)")
                    try client.send(extended("SELECT 2") + [.sync])
                    let next = try client.readUntilReady()
                    #expect(next.compactMap(\.errorState).isEmpty, "\(next)")
                    #expect(proxy.server.context.registry.online().count == 2,
                            "round \(round): \(backendReasons(proxy))")
                }
                // A part that writes, then a cycle the lead ends by statement_timeout: the lead's implicit
                // transaction rolls back, the part's row with it, and so on the followers (they ran the part).
                #expect(try client.query("CREATE TABLE tt (id int PRIMARY KEY)").compactMap(\.errorState).isEmpty)
                try client.send(extended("INSERT INTO tt VALUES (5)") + [.flush])
                let part = try answers(client, 3)
                #expect(part.last == .commandComplete("INSERT 0 1"), "\(part)")
                try client.send(extended("SELECT pg_sleep(2)") + [.sync])
                let rolledBack = try client.readUntilReady()
                #expect(rolledBack.contains { $0.errorState == "57014" }, "\(rolledBack)")
                #expect(try client.query("SELECT 1").compactMap(\.errorState).isEmpty)
                // (A follower finishes after the lead: its count is polled.)
                let counts = { try servers.map { try $0.psql("select count(*) from tt") } }
                let rolledBackEverywhere = try await eventually(10) { try counts() == ["0", "0"] }
                let finalCounts = try counts()
                #expect(rolledBackEverywhere, "\(finalCounts)")
                #expect(proxy.server.context.registry.online().count == 2, "\(backendReasons(proxy))")
            }
        }
    }

    /// An autocommit write after a part ended by Flush is not wrapped in the vote: the wrap's BEGIN
    /// would go between the part and its Sync, where PostgreSQL skips it after an error in the part
    /// (the session waited for its answer and the followers were failed by timeout), and its answers
    /// would come between a lagging follower's answers to the part and to the cycle.
    @Test func anAutocommitWriteAfterAFlushEndedPartIsAnsweredAndFailsNoBackend() async throws {
        try await withPostgresServers(count: 2) { servers in
            try await withProxy(backends: servers) { proxy in
                func conversation(_ port: Int) throws -> [[BackendMessage]] {
                    let client = try RawPostgresClient(port: port, timeoutSeconds: 20)
                    _ = try client.startup()
                    var replies = [try client.query("DROP TABLE IF EXISTS wt; CREATE TABLE wt (id int PRIMARY KEY); INSERT INTO wt VALUES (1)")]
                    for round in 0..<2 {
                        // The part fails (unique violation) and its error comes before the Sync is sent.
                        try client.send(extended("INSERT INTO wt VALUES (1)") + [.flush])
                        let part = try answers(client, 3)
                        try client.send(extended("INSERT INTO wt VALUES (\(round + 2))") + [.sync])
                        replies.append(part + (try client.readUntilReady()))
                        // A part that succeeds, then a write in the same cycle.
                        try client.send(extended("SELECT 1") + [.flush] + extended("INSERT INTO wt VALUES (\(round + 10))") + [.sync])
                        replies.append(try client.readUntilReady())
                        replies.append(try client.query("SELECT string_agg(id::text, ',' ORDER BY id) FROM wt"))
                    }
                    return replies
                }
                let through = try conversation(proxy.port)
                let direct = try conversation(servers[0].port)
                // (The first DROP's notice differs: the table existed when the direct run began.)
                #expect(Array(through.dropFirst()) == Array(direct.dropFirst()))
                #expect(through[1].contains { $0.errorState == "23505" }, "\(through[1])")
                #expect(proxy.server.context.registry.online().count == 2, "\(backendReasons(proxy))")
                for s in servers { #expect(try s.psql("select string_agg(id::text, ',' order by id) from wt") == "1,10,11") }
            }
        }
    }

    /// Statements sent back to back: the answer of DDL (held until every backend has it) is not
    /// overtaken by the replies of the statement after it.
    @Test func repliesOfPipelinedStatementsKeepTheirOrder() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port, timeoutSeconds: 20)
                _ = try client.startup()
                try client.send([.query("create table q (i int)"), .query("insert into q values (1)"),
                                  .query("create index on q (i)"), .query("select count(*) from q")])
                var replies: [BackendMessage] = []
                for _ in 0..<4 { replies += try client.readUntilReady() }
                let kinds = replies.compactMap { m -> String? in
                    switch m {
                    case let .commandComplete(tag): return tag
                    case .readyForQuery: return "Z"
                    default: return nil
                    }
                }
                #expect(kinds == ["CREATE TABLE", "Z", "INSERT 0 1", "Z", "CREATE INDEX", "Z", "SELECT 1", "Z"], "\(replies)")
                #expect(proxy.server.context.registry.online().count == 3)
                for s in servers { #expect(try s.psql("select count(*) from q") == "1") }
            }
        }
    }

    /// A pipeline that arrives in pieces (its Sync much later) gives the same rows on every backend.
    @Test func aPipelineInPiecesRunsOnEveryBackend() async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                let setup = try Clients.psql(proxy.connectionString(), ["-v", "ON_ERROR_STOP=1", "-c", "create table p (id int primary key, v text)"])
                #expect(setup.exitCode == 0, "\(setup.report)")
                let client = try RawPostgresClient(port: proxy.port, timeoutSeconds: 20)
                _ = try client.startup()
                try client.send([.query("begin")])
                _ = try client.readUntilReady()
                for i in 1...3 {
                    try client.send(extended("insert into p values (\(i), 'x')"))
                    try await Task.sleep(for: .milliseconds(200))
                }
                try client.send(extended("update p set v = 'y' where id = 2") + [.sync])
                let replies = try client.readUntilReady()
                #expect(replies.filter { $0 == .commandComplete("INSERT 0 1") }.count == 3, "\(replies)")
                #expect(replies.contains(.commandComplete("UPDATE 1")), "\(replies)")
                try client.send([.query("commit")])
                let commit = try client.readUntilReady()
                #expect(commit.contains(.commandComplete("COMMIT")), "\(commit)")
                #expect(proxy.server.context.registry.online().count == 3)
                for s in servers { #expect(try s.psql("select string_agg(id || v, ',' order by id) from p") == "1x,2y,3x") }
            }
        }
    }
}

/// The node's budget for large client messages (`proxy.message_memory`).
@Suite struct MessageMemoryTests {
    func query(_ sql: String) -> ByteBuffer {
        var b = ByteBuffer()
        FrontendMessage.query(sql).encode(into: &b)
        return b
    }

    @Test func aMessageThatDoesNotFitIsRefusedWith53200AndTheBudgetIsReturned() async throws {
        try await withPostgresServers(count: 2) { servers in
            // `withProxy` puts these right under its own [proxy] table.
            try await withProxy(backends: servers, config: "max_message_size = 3145728\nmessage_memory = 4194304\n") { proxy in
                let big = query("select length('" + String(repeating: "x", count: 3 << 20 - 100) + "')")
                let medium = query("select length('" + String(repeating: "y", count: 2 << 20) + "')")
                let a = try RawPostgresClient(port: proxy.port, timeoutSeconds: 30)
                _ = try a.startup()
                let b = try RawPostgresClient(port: proxy.port, timeoutSeconds: 30)
                _ = try b.startup()
                // A's message is on its way (its length is known, half of its body has come).
                try a.send(Array(big.readableBytesView.prefix(big.readableBytes / 2)))
                // (Polled: on a busy run the node's event loop may read it a while later.)
                #expect(try await eventually(30) { proxy.server.context.largeMessageBytesInUse >= 3 << 20 - 100 }, "\(proxy.server.context.largeMessageBytesInUse) bytes counted")
                // B's does not fit beside it: a clear error, B's session ends, nothing else happens.
                try b.send(medium)
                let refused = try b.readUntilClosed()
                let codes = refused.compactMap { if case let .errorResponse(f) = $0 { f.sqlState } else { nil } }
                #expect(codes == ["53200"], "\(refused)")
                // A's message completes and runs on both backends.
                try a.send(Array(big.readableBytesView.dropFirst(big.readableBytes / 2)))
                let answer = try a.readUntilReady()
                #expect(answer.contains(.commandComplete("SELECT 1")), "\(answer)")
                #expect(try await eventuallyZero(proxy))
                // Now the same message of B's fits.
                let c = try RawPostgresClient(port: proxy.port, timeoutSeconds: 30)
                _ = try c.startup()
                try c.send(medium)
                #expect(try c.readUntilReady().contains(.commandComplete("SELECT 1")))
                #expect(proxy.server.context.registry.online().count == 2)
            }
        }
    }

    /// Whether the node's count of large-message bytes is back to 0 within 30 s.
    func eventuallyZero(_ proxy: RunningProxy) async throws -> Bool { try await eventually(30) { proxy.server.context.largeMessageBytesInUse == 0 } }
}
