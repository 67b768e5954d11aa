import Foundation
import LocalCluster
import Testing
import TestSupport
import Wire

/// Client authentication by the node, and the node's own login to password-protected backends.
@Suite struct AuthenticationTests {
    static let salt: [UInt8] = Array("pgchorus-salt-16".utf8)

    func rules(_ method: String) -> String {
        """
        [auth]
        users_file = "users.txt"
        [[auth.rules]]
        user = "nobody"
        method = "reject"
        [[auth.rules]]
        address = "127.0.0.1/32"
        method = "\(method)"
        """
    }

    func scramLine(_ user: String, _ password: String) -> String {
        "\"\(user)\" \"\(SCRAMSecret(password: password, salt: Self.salt).text)\""
    }

    func psqlSelect(_ proxy: RunningProxy, user: String = "postgres", password: String?, tls: Bool = false) throws -> CommandOutput {
        try Clients.psql(proxy.connectionString(user: user, extra: tls ? "sslmode=require" : ""), ["-A", "-t", "-c", "select current_user"], password: password)
    }

    @Test(arguments: ["scram-sha-256", "md5", "password"])
    func rightPasswordLogsInAndWrongPasswordIsRefusedWith28P01(method: String) async throws {
        // A clear-text password is taken only over TLS.
        let tls = method == "password"
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("pgchorus-auth-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let pem = try TLSTests.makeCertificate(in: scratch)
        try await withPostgresServers(count: 1) { servers in
            let users = [scramLine("postgres", "s3cret"), "\"md5user\" \"\(MD5Password.stored(password: "m5", user: "md5user"))\""].joined(separator: "\n")
            try servers[0].psql("create role md5user login")
            let config = rules(method) + (tls ? "\n[proxy.tls]\ncertificate_file = \"server.crt\"\nprivate_key_file = \"server.key\"\n" : "")
            try await withProxy(backends: servers, config: config, files: ["users.txt": users, "server.crt": pem.cert, "server.key": pem.key]) { proxy in
                let ok = try psqlSelect(proxy, password: "s3cret", tls: tls)
                #expect(ok.exitCode == 0, "\(ok.stderr)")
                #expect(ok.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "postgres")

                let wrong = try Clients.psql(proxy.connectionString(extra: tls ? "sslmode=require" : ""), ["-v", "VERBOSITY=verbose", "-c", "\\set VERBOSITY verbose", "-c", "select 1"], password: "nope")
                #expect(wrong.exitCode != 0)
                #expect(wrong.stderr.contains("password authentication failed for user \"postgres\""), "\(wrong.stderr)")

                let unknown = try psqlSelect(proxy, user: "ghost", password: "s3cret", tls: tls)
                #expect(unknown.exitCode != 0)
                #expect(unknown.stderr.contains("password authentication failed for user \"ghost\""), "\(unknown.stderr)")

                if method != "scram-sha-256" {
                    // An md5 stored secret works with md5 and password methods (SCRAM cannot use it, as in PostgreSQL).
                    let m = try psqlSelect(proxy, user: "md5user", password: "m5", tls: tls)
                    #expect(m.exitCode == 0, "\(m.stderr)")
                }
                if tls {
                    // The same login without TLS: refused before any password is sent.
                    let clear = try psqlSelect(proxy, password: "s3cret")
                    #expect(clear.exitCode != 0)
                    #expect(clear.stderr.contains("only over TLS"), "\(clear.stderr)")
                }
            }
        }
    }

    @Test func rulesDecideByUserAndAddress() async throws {
        try await withPostgresServers(count: 1) { servers in
            let config = """
            [auth]
            [[auth.rules]]
            user = "nobody"
            method = "reject"
            [[auth.rules]]
            address = "10.0.0.0/8"
            method = "trust"
            """
            try servers[0].psql("create role nobody login")
            try await withProxy(backends: servers, config: config) { proxy in
                let rejected = try psqlSelect(proxy, user: "nobody", password: nil)
                #expect(rejected.exitCode != 0)
                #expect(rejected.stderr.contains("rejects connection for user \"nobody\""), "\(rejected.stderr)")
                let noRule = try psqlSelect(proxy, password: nil)
                #expect(noRule.exitCode != 0)
                #expect(noRule.stderr.contains("no pgchorus auth rule for host \"127.0.0.1\", user \"postgres\", database \"postgres\""), "\(noRule.stderr)")
            }
        }
    }

    @Test func backendWithScramIsReachedWithThePlainPasswordFromTheUsersFile() async throws {
        let options = PostgresServerOptions(authMethod: "scram-sha-256", superuserPassword: "backend-pw")
        try await withPostgresServers(count: 1, options: options) { servers in
            try await withProxy(backends: servers, config: rules("scram-sha-256"), proxy: "backend_connect_timeout = 60",
                                files: ["users.txt": "\"postgres\" \"backend-pw\""]) { proxy in
                let ok = try psqlSelect(proxy, password: "backend-pw")
                #expect(ok.exitCode == 0, "\(ok.stderr)")
            }
        }
    }

    @Test func backendWithScramIsReachedByPassThroughOfTheSameSecret() async throws {
        let options = PostgresServerOptions(authMethod: "scram-sha-256", superuserPassword: "backend-pw")
        try await withPostgresServers(count: 1, options: options) { servers in
            // The operator copies pg_authid.rolpassword into the users file: pgchorus never sees the password.
            let secret = try servers[0].psql("select rolpassword from pg_authid where rolname = 'postgres'", password: "backend-pw")
            #expect(secret.hasPrefix("SCRAM-SHA-256$"))
            // (A SCRAM login in a debug build, at the suite's busiest start, took more than the default
            // 10 s to the backend once: the connect timeout is not what these logins test.)
            try await withProxy(backends: servers, config: rules("scram-sha-256"), proxy: "backend_connect_timeout = 60",
                                files: ["users.txt": "\"postgres\" \"\(secret)\""]) { proxy in
                let ok = try psqlSelect(proxy, password: "backend-pw")
                #expect(ok.exitCode == 0, "\(ok.stderr)")
            }
            // A secret of the same password with another salt cannot be passed through: a clear error says why.
            try await withProxy(backends: servers, config: rules("scram-sha-256"), proxy: "backend_connect_timeout = 60",
                                files: ["users.txt": scramLine("postgres", "backend-pw")]) { proxy in
                let failed = try psqlSelect(proxy, password: "backend-pw")
                #expect(failed.exitCode != 0)
                #expect(failed.stderr.contains("could not log in to backend db1"), "\(failed.stderr)")
                #expect(failed.stderr.contains("salt or iteration count differs"), "\(failed.stderr)")
            }
        }
    }

    @Test func backendWithMD5AndTrustedClientUsesTheStoredHash() async throws {
        let options = PostgresServerOptions(authMethod: "md5", superuserPassword: "initial")
        try await withPostgresServers(count: 1, options: options) { servers in
            try servers[0].psql("set password_encryption = 'md5'; alter role postgres password 'md5-pw'", password: "initial")
            let stored = MD5Password.stored(password: "md5-pw", user: "postgres")
            // Clients are trusted on loopback; the node logs in to the backend with the md5 hash alone.
            let config = """
            [auth]
            users_file = "users.txt"
            [[auth.rules]]
            method = "trust"
            """
            try await withProxy(backends: servers, config: config, files: ["users.txt": "\"postgres\" \"\(stored)\""]) { proxy in
                let ok = try psqlSelect(proxy, password: nil)
                #expect(ok.exitCode == 0, "\(ok.stderr)")
            }
            // Without any usable secret the error says what to do.
            try await withProxy(backends: servers, config: config, files: ["users.txt": ""]) { proxy in
                let failed = try psqlSelect(proxy, password: nil)
                #expect(failed.exitCode != 0)
                #expect(failed.stderr.contains("holds no usable password"), "\(failed.stderr)")
            }
        }
    }
}
