import Foundation
import LocalCluster
import NIOCore
import State
import Testing
import TestSupport
import Wire

/// TLS between the node and its backends: real servers with `ssl = on` and certificates of a test CA.
@Suite struct BackendTLSTests {
    /// A test CA, a server certificate it signed for `names` (by default the address 127.0.0.1 and no
    /// host name), and a second CA that signed nothing of ours; the server's key is the postgres
    /// user's, as PostgreSQL demands.
    struct Certificates {
        var directory: String
        var ca: String { "\(directory)/ca.crt" }
        var otherCA: String { "\(directory)/other-ca.crt" }
        var serverCert: String { "\(directory)/server.crt" }
        var serverKey: String { "\(directory)/server.key" }

        init(names: String = "IP:127.0.0.1") throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("pgchorus-backend-tls-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try "subjectAltName = \(names)\n".write(toFile: "\(directory)/ext.cnf", atomically: true, encoding: .utf8)
            let d = directory
            try Self.openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pgchorus test CA", "-keyout", "\(d)/ca.key", "-out", "\(d)/ca.crt"])
            try Self.openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=another CA", "-keyout", "\(d)/other-ca.key", "-out", "\(d)/other-ca.crt"])
            try Self.openssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "\(d)/server.key", "-out", "\(d)/server.csr"])
            try Self.openssl(["x509", "-req", "-in", "\(d)/server.csr", "-CA", "\(d)/ca.crt", "-CAkey", "\(d)/ca.key", "-CAcreateserial",
                              "-days", "2", "-extfile", "\(d)/ext.cnf", "-out", "\(d)/server.crt"])
            // A client certificate for the postgres user (PostgreSQL's `cert` method maps its CN to the user).
            try Self.openssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=postgres", "-keyout", "\(d)/client.key", "-out", "\(d)/client.csr"])
            try Self.openssl(["x509", "-req", "-in", "\(d)/client.csr", "-CA", "\(d)/ca.crt", "-CAkey", "\(d)/ca.key", "-CAcreateserial",
                              "-days", "2", "-out", "\(d)/client.crt"])
            chmod("\(d)/client.key", 0o600)
            if getuid() == 0 {
                let chown = try CommandRunner.run("/bin/chown", ["postgres", "\(d)/server.key", "\(d)/server.crt"], timeout: .seconds(10))
                guard chown.succeeded else { throw Failure(description: chown.stderr) }
            }
            chmod("\(d)/server.key", 0o600)
        }

        static func openssl(_ arguments: [String]) throws {
            let out = try CommandRunner.run("/usr/bin/openssl", arguments, timeout: .seconds(60))
            guard out.succeeded else { throw Failure(description: "openssl \(arguments.joined(separator: " ")): \(out.stderr)") }
        }

        var serverSettings: [String: String] {
            ["ssl": "on", "ssl_cert_file": serverCert, "ssl_key_file": serverKey, "ssl_ca_file": ca]
        }

        func remove() { try? FileManager.default.removeItem(atPath: directory) }
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    func backendTLS(_ mode: String, root: String? = nil) -> String {
        "[backend_tls]\nsslmode = \"\(mode)\"\n" + (root.map { "sslrootcert = \"\($0)\"\n" } ?? "")
    }

    /// Every client backend process on `server` (but the asking one) and how many of them use TLS.
    func tlsSessions(_ server: LocalPostgresServer) throws -> (all: Int, encrypted: Int) {
        let out = try server.psql("""
            select count(*), count(*) filter (where s.ssl) from pg_stat_activity a join pg_stat_ssl s using (pid)
            where a.backend_type = 'client backend' and a.pid <> pg_backend_pid()
            """)
        let parts = out.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "|").compactMap { Int($0) }
        return (parts.first ?? -1, parts.last ?? -1)
    }

    @Test func verifyFullEncryptsEverySessionToEveryBackend() async throws {
        let certs = try Certificates()
        defer { certs.remove() }
        try await withPostgresServers(count: 2, options: PostgresServerOptions(extraSettings: certs.serverSettings)) { servers in
            try await withProxy(backends: servers, config: backendTLS("verify-full", root: certs.ca)) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                #expect(try client.startup().last == .readyForQuery(.idle))
                let reply = try client.query("select ssl, version from pg_stat_ssl where pid = pg_backend_pid()")
                #expect(reply.contains(.commandComplete("SELECT 1")), "\(reply)")
                #expect(reply.contains { if case let .dataRow(cols) = $0 { cols.first??.getString(at: 0, length: 1) == "t" } else { false } })
                // Writes go through the vote over those TLS sessions too.
                _ = try client.query("create table tls_t (x int)")
                _ = try client.query("insert into tls_t values (1)")
                for server in servers {
                    let seen = try tlsSessions(server)
                    #expect(seen.all >= 1 && seen.encrypted == seen.all, "\(server.name): \(seen.encrypted) of \(seen.all) sessions use TLS")
                    #expect(try server.psql("select count(*) from tls_t").trimmingCharacters(in: .whitespacesAndNewlines) == "1")
                }
                #expect(proxy.server.context.registry.online().count == 2)
            }
        }
    }

    /// pgchorus' own connections (health checks, resolver, recovery, attach) go through libpq with the
    /// same settings.
    @Test func pgchorusOwnConnectionsUseTheSameSettings() async throws {
        let certs = try Certificates()
        defer { certs.remove() }
        try await withPostgresServers(count: 1, options: PostgresServerOptions(extraSettings: certs.serverSettings)) { servers in
            func connect(_ tls: Configuration.BackendTLS, host: String = "127.0.0.1") throws -> String {
                let backend = Configuration.Backend(id: "db1", host: host, port: servers[0].port, tls: tls)
                let c = try LibPQConnection(LibPQConnection.conninfo(backend, database: "postgres", user: "postgres", password: nil,
                                                                     connectTimeout: 5, application: "tls-test"), target: backend.description)
                return try c.query("select ssl::text from pg_stat_ssl where pid = pg_backend_pid()", []).first?.first?.flatMap { $0 } ?? "none"
            }
            let verified = try connect(.init(mode: .verifyFull, rootCertificateFile: certs.ca))
            #expect(verified == "true")
            #expect(throws: (any Error).self, "a certificate from another CA") { try connect(.init(mode: .verifyCA, rootCertificateFile: certs.otherCA)) }
            #expect(throws: (any Error).self, "a host name the certificate does not carry") {
                try connect(.init(mode: .verifyFull, rootCertificateFile: certs.ca), host: "localhost")
            }
            let verifiedCA = try connect(.init(mode: .verifyCA, rootCertificateFile: certs.ca), host: "localhost")
            #expect(verifiedCA == "true", "verify-ca does not check the name")
            let plain = try connect(.init(mode: .disable))
            #expect(plain == "false")
        }
    }

    /// Backends that accept only a client certificate (`hostssl … cert`): the node logs in with
    /// `sslcert`/`sslkey`; without them every backend refuses and the client gets PostgreSQL's error.
    @Test func aClientCertificateLogsInWhereTheBackendsDemandOne() async throws {
        let certs = try Certificates()
        defer { certs.remove() }
        try await withPostgresServers(count: 2, options: PostgresServerOptions(extraSettings: certs.serverSettings)) { servers in
            for server in servers {
                try "local all all trust\nhostssl all all 127.0.0.1/32 cert\n".write(toFile: server.dataDirectory + "/pg_hba.conf", atomically: true, encoding: .utf8)
                _ = try server.psql("select pg_reload_conf()")
            }
            let withCert = backendTLS("verify-full", root: certs.ca) + "sslcert = \"\(certs.directory)/client.crt\"\nsslkey = \"\(certs.directory)/client.key\"\n"
            try await withProxy(backends: servers, config: withCert) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                #expect(try client.startup().last == .readyForQuery(.idle))
                #expect(try client.query("select 1").contains(.commandComplete("SELECT 1")))
                #expect(proxy.server.context.registry.online().count == 2)
            }
            try await withProxy(backends: servers, config: backendTLS("verify-full", root: certs.ca)) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                var b = ByteBuffer()
                StartupMessage(parameters: [("user", "postgres"), ("database", "postgres")]).encode(into: &b)
                try client.send(b)
                let reply = try client.readUntilClosed()
                #expect(reply.compactMap(\.errorState) == ["28000"], "\(reply)")
                #expect(proxy.server.context.registry.online().count == 2, "a refusal every backend gives is the client's")
            }
        }
    }

    /// Certificates are read again at a reload: a root certificate replaced in place takes effect
    /// for new sessions without a restart.
    @Test func aRootCertificateReplacedInPlaceTakesEffectAtReload() async throws {
        let certs = try Certificates()
        defer { certs.remove() }
        let root = "\(certs.directory)/trusted.crt"
        try FileManager.default.copyItem(atPath: certs.otherCA, toPath: root)
        try await withPostgresServers(count: 1, options: PostgresServerOptions(extraSettings: certs.serverSettings)) { servers in
            // A TLS login in a debug build, beside the whole suite, may take more than the default 10 s.
            try await withProxy(backends: servers, config: backendTLS("verify-ca", root: root),
                                   proxy: "backend_connect_timeout = 60") { proxy in
                func login() throws -> [String] {
                    let client = try RawPostgresClient(port: proxy.port, timeoutSeconds: 90)
                    var b = ByteBuffer()
                    StartupMessage(parameters: [("user", "postgres"), ("database", "postgres")]).encode(into: &b)
                    try client.send(b)
                    var states: [String] = []
                    for _ in 0..<50 {
                        guard let m = try client.read() else { break }
                        if let e = m.errorState { states.append(e) }
                        if m.isReadyForQuery { return states + ["ready"] }
                    }
                    return states
                }
                #expect(try login() == ["08006"], "the wrong CA is trusted")
                try FileManager.default.removeItem(atPath: root)
                try FileManager.default.copyItem(atPath: certs.ca, toPath: root)
                try proxy.server.context.reload(try Configuration.load(path: proxy.configuration.file))
                #expect(try login() == ["ready"], "the right CA after the reload")
            }
        }
    }

    /// A certificate that does not verify refuses the client, names the backend and the reason, and
    /// fails no backend (the node's settings or the certificate are at fault, not the backend's data).
    @Test(arguments: ["wrong CA", "wrong host name", "server without TLS"])
    func aBackendThatCannotBeReachedAsConfiguredIsRefusedNotFailed(_ case: String) async throws {
        // For the wrong name: a certificate for a host name only, reached at 127.0.0.1.
        let certs = try Certificates(names: `case` == "wrong host name" ? "DNS:elsewhere.test" : "IP:127.0.0.1")
        defer { certs.remove() }
        let settings = `case` == "server without TLS" ? [:] : certs.serverSettings
        try await withPostgresServers(count: 2, options: PostgresServerOptions(extraSettings: settings)) { servers in
            let config: String
            switch `case` {
            case "wrong CA": config = backendTLS("verify-ca", root: certs.otherCA)
            case "wrong host name": config = backendTLS("verify-full", root: certs.ca)
            default: config = backendTLS("require")
            }
            try await withProxy(backends: servers, config: config) { proxy in
                let client = try RawPostgresClient(port: proxy.port)
                var b = ByteBuffer()
                StartupMessage(parameters: [("user", "postgres"), ("database", "postgres")]).encode(into: &b)
                try client.send(b)
                let reply = try client.readUntilClosed()
                let error = reply.firstError
                #expect(error?.sqlState == "08006", "\(reply)")
                #expect(error?.message?.contains("over TLS") == true, "\(error?.message ?? "")")
                #expect(error?.message?.contains("db") == true, "the backend is named: \(error?.message ?? "")")
                #expect(proxy.server.context.registry.online().count == 2, "no backend failed")
            }
        }
    }
}
