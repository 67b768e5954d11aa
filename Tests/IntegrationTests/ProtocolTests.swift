import LocalCluster
import NIOCore
import Testing
import TestSupport
import Wire

/// Protocol-level behaviour through the proxy, with exact messages sent and every reply checked.
@Suite struct ProtocolTests {
    func query(_ sql: String) -> FrontendMessage { .query(sql) }

    func extended(_ sql: String, portal: String = "", maxRows: Int32 = 0) -> [FrontendMessage] {
        [.parse(.init(name: "", query: sql, parameterTypes: [])),
         .bind(.init(portal: portal, statement: "", parameterFormats: [], parameters: [], resultFormats: [])),
         .execute(portal: portal, maxRows: maxRows)]
    }


    /// PostgreSQL sends a cycle's replies with its ReadyForQuery. An autocommit write's ReadyForQuery
    /// waits for the vote, which waits for every backend: the lead's `CommandComplete` waits with it,
    /// or a client that reads a reply's results up to the next one — pgbench does, for every session
    /// of its thread — blocks on the missing ReadyForQuery, and the sessions blocked with it may hold
    /// the locks a follower waits for (a deadlock broken only by failing the followers: 2026-12-06).
    /// db3 is held up on purpose by a lock taken there directly; once db2 has done the write (sent
    /// to the followers when the lead's reply was read), the client must have nothing yet.
    /// So for a Query cut at its COMMIT (each part a Query of its own, the COMMIT through the vote):
    /// the first part's replies wait for the last part's ReadyForQuery.
    @Test(arguments: [("insert into held_reply values (1)", ["INSERT 0 1"]),
                      ("update held_reply set v = v + 1", ["UPDATE 1"]),
                      ("begin; update held_reply set v = v + 1; commit", ["BEGIN", "UPDATE 1", "COMMIT"]),
                      ("begin; update held_reply set v = v + 1; commit; select 1", ["BEGIN", "UPDATE 1", "COMMIT", "SELECT 1"]),
                      ("select 1; commit; update held_reply set v = v + 1", ["SELECT 1", "COMMIT", "UPDATE 1"])])
    func aVotedWritesReplyReachesTheClientWithItsReadyForQuery(write: String, tags expected: [String]) async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers, config: "[replication]\nfollower_timeout = 120\n") { proxy in
                let setup = try Clients.psql(proxy.connectionString(), ["-v", "ON_ERROR_STOP=1", "-c",
                    "create table held_reply (v int); insert into held_reply values (0)"])
                #expect(setup.exitCode == 0, "\(setup.report)")
                let blocker = try RawPostgresClient(port: servers[2].port, timeoutSeconds: 30)
                _ = try blocker.startup()
                #expect(try blocker.query("begin; lock table held_reply in exclusive mode").compactMap(\.errorState) == [])

                let client = try RawPostgresClient(port: proxy.port, timeoutSeconds: 60)
                _ = try client.startup()
                try client.send(query(write))
                #expect(try await eventually(30) {
                    try servers[1].psql("select (select count(*) from pg_stat_activity where state = 'idle in transaction' and backend_xid is not null) + (select count(*) from pg_prepared_xacts)") != "0"
                        && servers[2].psql("select count(*) from pg_stat_activity where wait_event_type = 'Lock'") == "1"
                }, "the write did not reach db2, or does not wait on db3")
                #expect(client.bytesWaiting() == 0, "the client has part of the reply before its ReadyForQuery")

                #expect(try blocker.query("rollback").compactMap(\.errorState) == [])
                let reply = try client.readUntilReady()
                let tags = reply.compactMap { if case let .commandComplete(tag) = $0 { tag } else { nil } }
                #expect(tags == expected, "\(reply)")
                #expect(reply.last.map { if case .readyForQuery(.idle) = $0 { true } else { false } } == true, "\(reply)")
                try expectBackendsInStep(proxy, servers)
            }
        }
    }

    /// A `COPY … FROM STDIN` in the extended protocol, as tokio-postgres' `copy_in` sends it: Parse,
    /// Bind, Execute and Sync, then (PostgreSQL ignoring that Sync in copy-in mode) the data, CopyDone
    /// and a second Sync. On three backends, in autocommit and in a transaction: the client gets
    /// `COPY 3000` and one ReadyForQuery, every backend holds the rows, all stay online, and the
    /// autocommit COPY is voted like any write (its commit-log row), so its commit takes its place in
    /// the order of commits.
    @Test(arguments: [false, true]) func anExtendedProtocolCopyLoadsEveryBackendAndIsVoted(inTransaction: Bool) async throws {
        try await withPostgresServers(count: 3) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                _ = try client.startup()
                #expect(try client.query("create table ext_copy (id int, v text)").compactMap(\.errorState) == [])
                let votesBefore = try servers.map { try $0.psql("select count(*) from pgchorus.commit_log") }
                if inTransaction { #expect(try client.query("begin").compactMap(\.errorState) == []) }
                for round in 0..<3 {
                    guard try client.startCopy("copy ext_copy (id, v) from stdin", extended: true) else { Issue.record("no CopyInResponse"); return }
                    var rows: [FrontendMessage] = []
                    for chunk in 0..<10 {
                        let text = (1...100).map { "\(round * 1000 + chunk * 100 + $0)\trow \($0)\n" }.joined()
                        rows.append(.copyData(ByteBuffer(string: text)))
                    }
                    try client.send(rows + [.copyDone, .sync])
                    let answer = try client.readUntilReady()
                    #expect(answer == [.commandComplete("COPY 1000"), .readyForQuery(inTransaction ? .inTransaction : .idle)], "\(answer)")
                }
                if inTransaction { #expect(try client.query("commit").compactMap(\.errorState) == []) }
                let count = try client.query("select count(*) from ext_copy")
                #expect(count.contains(.dataRow([ByteBuffer(string: "3000")])), "\(count)")
                for s in servers { #expect(try s.psql("select count(*), sum(id) from ext_copy") == "3000|4501500") }
                let votes = try servers.map { try $0.psql("select count(*) from pgchorus.commit_log") }
                // Three autocommit COPYs voted, or the one transaction.
                #expect(zip(votesBefore, votes).allSatisfy { (Int($1) ?? 0) - (Int($0) ?? 0) == (inTransaction ? 1 : 3) }, "\(votesBefore) → \(votes)")
                // A row PostgreSQL refuses, and a CopyFail: the client gets the error and one ReadyForQuery,
                // nothing is loaded, nobody is failed, and the session goes on.
                for end: FrontendMessage in [.copyDone, .copyFail("the client gave up")] {
                    guard try client.startCopy("copy ext_copy (id, v) from stdin", extended: true) else { Issue.record("no CopyInResponse"); return }
                    let row = end == .copyDone ? "not a number\tbad\n" : "1\tgood\n"
                    try client.send([.copyData(ByteBuffer(string: row)), end, .sync])
                    let answer = try client.readUntilReady()
                    #expect(answer.compactMap(\.errorState) == [end == .copyDone ? "22P02" : "57014"], "\(answer)")
                    #expect(answer.last == .readyForQuery(.idle), "\(answer)")
                }
                #expect(try client.query("select count(*) from ext_copy").contains(.dataRow([ByteBuffer(string: "3000")])))
                try expectBackendsInStep(proxy, servers)
            }
        }
    }

    @Test func pipelineOfThreeSyncsWithAnErrorInTheMiddleGivesThreeReadyForQuery() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                _ = try client.startup()
                try client.send(extended("select 1") + [.sync] + extended("select 1/0") + [.sync] + extended("select 3") + [.sync])
                var messages: [BackendMessage] = []
                for _ in 0..<3 { messages += try client.readUntilReady() }
                #expect(messages.filter(\.isReadyForQuery).count == 3)
                #expect(messages.compactMap(\.errorState) == ["22012"])
                let rows = messages.compactMap { m -> String? in
                    if case let .dataRow(cols) = m, let c = cols.first, let v = c { return String(buffer: v) }
                    return nil
                }
                #expect(rows == ["1", "3"])
                // Nothing more is pending: a new query answers at once with its own result.
                try client.send(.query("select 4"))
                let next = try client.readUntilReady()
                #expect(next.contains { if case .commandComplete("SELECT 1") = $0 { true } else { false } })
            }
        }
    }

    @Test func flushWithoutSyncDeliversRepliesAndPortalSuspends() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                _ = try client.startup()
                try client.send([.parse(.init(name: "s1", query: "select g from generate_series(1, 5) g", parameterTypes: [])),
                                  .describe(.statement, "s1"), .flush])
                #expect(try client.read() == .parseComplete)
                #expect(try client.read() == .parameterDescription([]))
                guard case let .rowDescription(fields)? = try client.read() else { Issue.record("no RowDescription"); return }
                #expect(fields.map(\.name) == ["g"])
                try client.send([.bind(.init(portal: "p1", statement: "s1", parameterFormats: [], parameters: [], resultFormats: [])),
                                  .execute(portal: "p1", maxRows: 2), .flush])
                #expect(try client.read() == .bindComplete)
                _ = try client.read()
                _ = try client.read()
                #expect(try client.read() == .portalSuspended)
                try client.send([.execute(portal: "p1", maxRows: 0), .close(.statement, "s1"), .sync])
                let rest = try client.readUntilReady()
                #expect(rest.filter { if case .dataRow = $0 { true } else { false } }.count == 3)
                #expect(rest.contains(.commandComplete("SELECT 3")))
                #expect(rest.contains(.closeComplete))
                #expect(rest.last == .readyForQuery(.idle))
            }
        }
    }

    @Test func sessionStartupLooksLikeAPostgresServer() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                let start = try client.startup(extra: [("application_name", "chorus-test"), ("options", "-c search_path=custom_path")])
                #expect(start.first == .authentication(.ok))
                #expect(start.last == .readyForQuery(.idle))
                let params = start.compactMap { m -> String? in if case let .parameterStatus(n, _) = m { n } else { nil } }
                for name in ["server_version", "client_encoding", "DateStyle", "integer_datetimes", "standard_conforming_strings", "application_name"] {
                    #expect(params.contains(name), "missing ParameterStatus \(name)")
                }
                guard case let .backendKeyData(pid, key)? = start.first(where: { if case .backendKeyData = $0 { true } else { false } }) else {
                    Issue.record("no BackendKeyData"); return
                }
                #expect(pid > 0)
                #expect(key.count == 4)
                // Every startup parameter reached the backend, `options` included.
                try client.send(.query("select current_setting('application_name'), current_setting('search_path'), pg_backend_pid()"))
                let reply = try client.readUntilReady()
                guard case let .dataRow(cols)? = reply.first(where: { if case .dataRow = $0 { true } else { false } }) else {
                    Issue.record("no row"); return
                }
                let values = cols.map { $0.map { String(buffer: $0) } ?? "NULL" }
                #expect(values[0] == "chorus-test")
                #expect(values[1] == "custom_path")
                // The client's pid is its lead backend's, as pg_backend_pid() and notifications say.
                #expect(values[2] == "\(pid)")
            }
        }
    }

    @Test func newerMinorProtocolAndExtensionOptionsAreNegotiatedDown() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                let start = try client.startup(extra: [("_pq_.test_option", "on")], protocolMinor: 2)
                #expect(start.first == .negotiateProtocolVersion(newestMinor: 0, unrecognizedOptions: ["_pq_.test_option"]))
                #expect(start.last == .readyForQuery(.idle))
                try client.send(.query("select 1"))
                #expect(try client.readUntilReady().contains(.commandComplete("SELECT 1")))
            }
        }
    }

    @Test func protocolTwoIsRefusedWithAClearError() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                var b = ByteBuffer()
                b.writeInteger(Int32(8)); b.writeInteger(Int32(2 << 16))
                try client.send(b)
                let reply = try client.readUntilClosed()
                #expect(reply.compactMap(\.errorState) == ["0A000"])
                if case let .errorResponse(f)? = reply.first { #expect(f.message?.contains("unsupported frontend protocol 2.0") == true) }
            }
        }
    }

    @Test func malformedMessagesGetAProtocolErrorAndTheBackendIsUntouched() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                // A length shorter than the length field itself.
                let c1 = try RawPostgresClient(port: proxy.port)
                _ = try c1.startup()
                try c1.send([0x51, 0, 0, 0, 2])
                let r1 = try c1.readUntilClosed()
                #expect(r1.compactMap(\.errorState) == ["08P01"])
                // A message larger than the limit: refused from its header alone.
                let c2 = try RawPostgresClient(port: proxy.port)
                _ = try c2.startup()
                try c2.send([0x51, 0x7f, 0, 0, 0])
                let r2 = try c2.readUntilClosed()
                #expect(r2.compactMap(\.errorState) == ["08P01"])
                if case let .errorResponse(f)? = r2.first { #expect(f.message?.contains("larger than the limit") == true) }
                // An unknown message type.
                let c3 = try RawPostgresClient(port: proxy.port)
                _ = try c3.startup()
                try c3.send([0x7a, 0, 0, 0, 4])
                #expect(try c3.readUntilClosed().compactMap(\.errorState) == ["08P01"])
                // A garbage start-up packet.
                let c4 = try RawPostgresClient(port: proxy.port)
                try c4.send([0, 0, 0, 3, 1, 2, 3])
                #expect(try c4.readUntilClosed().compactMap(\.errorState) == ["08P01"])
                // No user name.
                let c5 = try RawPostgresClient(port: proxy.port)
                var b = ByteBuffer()
                StartupMessage(parameters: [("database", "postgres")]).encode(into: &b)
                try c5.send(b)
                #expect(try c5.readUntilClosed().compactMap(\.errorState) == ["28000"])
                // The proxy still serves a well-behaved client.
                let ok = try RawPostgresClient(port: proxy.port)
                _ = try ok.startup()
                try ok.send(.query("select 1"))
                #expect(try ok.readUntilReady().contains(.commandComplete("SELECT 1")))
            }
        }
    }

    /// A client whose session pgchorus ends while more of its data is on the way still reads the
    /// reason: the session's output ends after the FATAL and what the client still sends is read and
    /// dropped until it closes. (Closing at once with data unread resets the connection: the client
    /// may get ECONNRESET instead of the error.)
    @Test func aSessionEndedWhileTheClientStillSendsGivesTheClientItsError() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                for _ in 0..<5 {
                    let c = try RawPostgresClient(port: proxy.port, timeoutSeconds: 30)
                    _ = try c.startup()
                    // An unknown message type, then 1 MiB more in the same write (a pipeline the session
                    // will not read); the send may fail once the session ends, which is not the point.
                    var bytes: [UInt8] = [0x7a, 0, 0, 0, 4]
                    var query = ByteBuffer()
                    FrontendMessage.query("select '" + String(repeating: "x", count: 1 << 20) + "'").encode(into: &query)
                    bytes += Array(query.readableBytesView)
                    try? c.send(bytes)
                    let answer = try c.readUntilClosed()
                    #expect(answer.compactMap(\.errorState) == ["08P01"], "\(answer)")
                }
            }
        }
    }

    @Test func sslAndGSSRequestsAreAnsweredWithOneByte() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                var b = ByteBuffer()
                StartupPhaseMessage.gssEncryptionRequest(trailingBytes: false).encode(into: &b)
                StartupPhaseMessage.sslRequest(trailingBytes: false).encode(into: &b)
                try client.send(Array(b.readableBytesView.prefix(8)))
                #expect(try client.readBytes(1) == [UInt8(ascii: "N")])
                try client.send(Array(b.readableBytesView.dropFirst(8)))
                #expect(try client.readBytes(1) == [UInt8(ascii: "N")])
                #expect(try client.startup().last == .readyForQuery(.idle))

                // Bytes pipelined after the SSLRequest, before any handshake: refused (CVE-2021-23222).
                let sneaky = try RawPostgresClient(port: proxy.port)
                var s = ByteBuffer()
                StartupPhaseMessage.sslRequest(trailingBytes: false).encode(into: &s)
                StartupMessage(parameters: [("user", "postgres")]).encode(into: &s)
                try sneaky.send(s)
                let reply = try sneaky.readUntilClosed()
                #expect(reply.compactMap(\.errorState) == ["08P01"])
            }
        }
    }

    /// Start-up hands the channel to the session: what the client sent behind its StartupMessage, in
    /// the same packet, is the session's first message.
    @Test func aQuerySentInTheSamePacketAsTheStartupIsAnswered() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                var b = ByteBuffer()
                StartupMessage(parameters: [("user", "postgres"), ("database", "postgres")]).encode(into: &b)
                FrontendMessage.query("select 40 + 2").encode(into: &b)
                try client.send(b)
                let start = try client.readUntilReady()
                #expect(start.first == .authentication(.ok))
                let reply = try client.readUntilReady()
                #expect(reply.contains(.commandComplete("SELECT 1")), "\(reply)")
                #expect(reply.contains { if case let .dataRow(cols) = $0 { cols.first??.getString(at: 0, length: 2) == "42" } else { false } })
            }
        }
    }

    /// `proxy.max_clients` counts connections from their first byte; every way a connection can end
    /// (a session, a refused start-up, a cancel request, a client gone mid-negotiation) gives its
    /// place back, once.
    @Test func maxClientsCountsEveryConnectionAndEveryEndGivesItsPlaceBack() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers, config: "max_clients = 2") { proxy in
                func settle(_ count: Int) async throws {
                    for _ in 0..<200 where proxy.server.context.sessionCount != count { try await Task.sleep(for: .milliseconds(50)) }
                    #expect(proxy.server.context.sessionCount == count)
                }
                func refusedStart(_ parameters: [(String, String)]) throws -> [String] {
                    let c = try RawPostgresClient(port: proxy.port)
                    var b = ByteBuffer()
                    StartupMessage(parameters: parameters.map { (name: $0.0, value: $0.1) }).encode(into: &b)
                    try c.send(b)
                    return try c.readUntilClosed().compactMap(\.errorState)
                }
                let first = try RawPostgresClient(port: proxy.port)
                let firstStart = try first.startup()
                #expect(firstStart.last == .readyForQuery(.idle))
                let second = try RawPostgresClient(port: proxy.port)
                #expect(try second.startup().last == .readyForQuery(.idle))
                #expect(try refusedStart([("user", "postgres")]) == ["53300"], "a third client is one too many")
                // Full, a cancel request still gets through (as with PostgreSQL's max_connections).
                guard case let .backendKeyData(pid, key)? = firstStart.first(where: { if case .backendKeyData = $0 { true } else { false } }) else {
                    Issue.record("no BackendKeyData"); return
                }
                try first.send(.query("select pg_sleep(20)"))
                for _ in 0..<100 {
                    let running = try servers[0].psql("select count(*) from pg_stat_activity where query = 'select pg_sleep(20)' and state = 'active'")
                    if running.trimmingCharacters(in: .whitespacesAndNewlines) == "1" { break }
                    try await Task.sleep(for: .milliseconds(50))
                }
                let fullCanceller = try RawPostgresClient(port: proxy.port)
                var fullCancel = ByteBuffer()
                CancelRequest(processID: pid, secretKey: key).encode(into: &fullCancel)
                try fullCanceller.send(fullCancel)
                #expect(try fullCanceller.readUntilClosed().isEmpty)
                #expect(try first.readUntilReady().compactMap(\.errorState) == ["57014"])
                second.disconnect()
                try await settle(1)

                #expect(try refusedStart([("database", "postgres")]) == ["28000"], "no user name")
                let canceller = try RawPostgresClient(port: proxy.port)
                var cancel = ByteBuffer()
                CancelRequest(processID: 1, secretKey: [0, 0, 0, 1]).encode(into: &cancel)
                try canceller.send(cancel)
                #expect(try canceller.readUntilClosed().isEmpty)
                let leaver = try RawPostgresClient(port: proxy.port)
                var ssl = ByteBuffer()
                StartupPhaseMessage.sslRequest(trailingBytes: false).encode(into: &ssl)
                try leaver.send(ssl)
                #expect(try leaver.readBytes(1) == [UInt8(ascii: "N")])
                leaver.disconnect()
                try await settle(1)

                let third = try RawPostgresClient(port: proxy.port)
                #expect(try third.startup().last == .readyForQuery(.idle))
                #expect(try refusedStart([("user", "postgres")]) == ["53300"])
                first.disconnect()
                try await settle(1)
                let fourth = try RawPostgresClient(port: proxy.port)
                #expect(try fourth.startup().last == .readyForQuery(.idle))
                #expect(try fourth.query("select 1").contains(.commandComplete("SELECT 1")))
            }
        }
    }

    @Test func errorAndNoticeFieldsAreForwardedByteExact() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let sql = "do $$ begin raise notice 'hello %', 42 using detail = 'd', hint = 'h'; raise exception 'boom' using errcode = '22023', detail = 'det', hint = 'hin', schema = 'sch', table = 'tbl', column = 'col', constraint = 'con', datatype = 'typ'; end $$"
                let viaProxy = try RawPostgresClient(port: proxy.port)
                _ = try viaProxy.startup()
                try viaProxy.send(.query(sql))
                let a = try viaProxy.readUntilReady()
                let direct = try RawPostgresClient(port: servers[0].port)
                _ = try direct.startup()
                try direct.send(.query(sql))
                let b = try direct.readUntilReady()
                #expect(a.count == 3)
                #expect(a == b, "the same notice and error fields, in the same order")
                #expect(a.compactMap(\.errorState) == ["22023"])
            }
        }
    }

    @Test func aBackendThatDiesMidSessionGivesAnErrorNotAHang() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port, timeoutSeconds: 20)
                _ = try client.startup()
                try servers[0].stop(mode: .immediate)
                // The node tells the idle client at once (sending now could race with its close).
                let reply = try client.readUntilClosed()
                let states = reply.compactMap(\.errorState)
                #expect(states.count == 1)
                #expect(["08006", "57P01", "57P02", "57P03"].contains(states.first ?? ""))

                // And a new session while the backend is down: a clear error naming the backend.
                let late = try RawPostgresClient(port: proxy.port, timeoutSeconds: 20)
                var b = ByteBuffer()
                StartupMessage(parameters: [("user", "postgres")]).encode(into: &b)
                try late.send(b)
                let refused = try late.readUntilClosed()
                #expect(refused.compactMap(\.errorState) == ["08001"])
                if case let .errorResponse(f)? = refused.last { #expect(f.message?.contains("db1") == true) }
            }
        }
    }

    @Test func notificationsCarryTheProcessIDTheClientWasGiven() async throws {
        try await withPostgresServers(count: 1) { servers in
            try await withProxy(backends: servers) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                let start = try client.startup()
                guard case let .backendKeyData(pid, _)? = start.first(where: { if case .backendKeyData = $0 { true } else { false } }) else {
                    Issue.record("no BackendKeyData"); return
                }
                try client.send(.query("listen ch; notify ch, 'payload'"))
                let reply = try client.readUntilReady()
                #expect(reply.contains(.notificationResponse(processID: pid, channel: "ch", payload: "payload")))
            }
        }
    }
}
