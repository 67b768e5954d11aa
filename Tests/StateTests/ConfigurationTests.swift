import State
import Testing

/// The configuration file: defaults, validation, and errors that name file, line and key.
@Suite struct ConfigurationTests {
    let minimal = """
    [[backends]]
    id = "db1"
    host = "127.0.0.1"
    port = 5433
    """

    func parseError(_ text: String) -> ConfigurationError? {
        do {
            _ = try Configuration.parse(text: text, file: "/etc/pgchorus/pgchorus.toml")
            return nil
        } catch {
            return error
        }
    }

    @Test func defaultsAreDocumentedValues() throws {
        let c = try Configuration.parse(text: minimal, file: "/x/pgchorus.toml")
        #expect(c.node.id == "node1")
        #expect(c.proxy.listenAddress == "0.0.0.0")
        #expect(c.proxy.listenPort == 5432)
        #expect(c.proxy.maxMessageSize == 256 << 20)
        #expect(c.proxy.maxClients == 10_000)
        #expect(c.proxy.messageMemory == 1 << 30)
        #expect(c.replication.followerTimeout == 3)
        #expect(c.proxy.tls == nil)
        #expect(c.log.level == "info")
        #expect(c.backends == [Configuration.Backend(id: "db1", host: "127.0.0.1", port: 5433)])
        // Without rules: trust on loopback only, nothing else.
        #expect(c.auth.rules.map(\.method) == [.trust, .trust])
        #expect(c.auth.rules.contains { $0.matches(database: "x", user: "y", address: IPAddressBytes("127.0.0.1")) })
        #expect(!c.auth.rules.contains { $0.matches(database: "x", user: "y", address: IPAddressBytes("10.1.2.3")) })
    }

    @Test func aTypoNamesFileLineAndKey() throws {
        let text = """
        [node]
        id = "n1"

        [proxy]
        listen_prot = 6432
        """ + "\n" + minimal
        let e = try #require(parseError(text))
        #expect(e.file == "/etc/pgchorus/pgchorus.toml")
        #expect(e.line == 5)
        #expect(e.key == "proxy.listen_prot")
        #expect(e.description == "/etc/pgchorus/pgchorus.toml:5: key \"proxy.listen_prot\": unknown key (see docs/configuration.md for the valid keys)")
    }

    @Test func aWrongTypeSaysWhatWasExpected() throws {
        let text = minimal + "\n\n[[backends]]\nid = \"db2\"\nhost = \"127.0.0.1\"\nport = \"5434\"\n"
        let e = try #require(parseError(text))
        #expect(e.line == 9)
        #expect(e.key == "backends[2].port")
        #expect(e.message == "expected an integer, found a string")
    }

    @Test func outOfRangeAndBadChoicesAreRefused() throws {
        let e1 = try #require(parseError("[proxy]\nlisten_port = 70000\n" + minimal))
        #expect(e1.key == "proxy.listen_port" && e1.line == 2)
        #expect(e1.message.contains("out of range"))
        let e2 = try #require(parseError("[log]\nlevel = \"loud\"\n" + minimal))
        #expect(e2.key == "log.level" && e2.line == 2)
        let e3 = try #require(parseError("[proxy]\nlisten_address = \"localhost:1\"\n" + minimal))
        #expect(e3.key == "proxy.listen_address")
        let e4 = try #require(parseError("[auth]\n[[auth.rules]]\naddress = \"10.0.0.0/33\"\nmethod = \"trust\"\n" + minimal))
        #expect(e4.key == "auth.rules[1].address" && e4.line == 3)
        let e5 = try #require(parseError("[auth]\n[[auth.rules]]\nmethod = \"md5\"\n" + minimal))
        #expect(e5.key == "auth.users_file")
    }

    @Test func aMessageBudgetBelowTheLargestMessageIsRefused() throws {
        let e = try #require(parseError("[proxy]\nmax_message_size = 4194304\nmessage_memory = 2097152\n" + minimal))
        #expect(e.key == "proxy.message_memory")
        #expect(e.message.contains("less than max_message_size"), "\(e.message)")
        let f = try #require(parseError("[replication]\nfollower_timeout = 0\n" + minimal))
        #expect(f.key == "replication.follower_timeout")
    }

    @Test func syntaxErrorsNameTheLine() throws {
        let e = try #require(parseError("[proxy]\nlisten_port = = 3\n" + minimal))
        #expect(e.line == 2)
        #expect(e.message.hasPrefix("TOML syntax error"))
    }

    @Test func backendsAreRequiredAndUnique() throws {
        let e1 = try #require(parseError("[node]\nid = \"a\"\n"))
        #expect(e1.key == "backends")
        let e2 = try #require(parseError(minimal + "\n[[backends]]\nid = \"db1\"\nhost = \"h\"\n"))
        #expect(e2.key == "backends[2].id" && e2.message.contains("duplicate"))
        let e3 = try #require(parseError("[[backends]]\nid = \"db 1\"\nhost = \"h\"\n"))
        #expect(e3.key == "backends[1].id")
        let e4 = try #require(parseError("[[backends]]\nid = \"db1\"\n"))
        #expect(e4.key == "backends[1].host" && e4.message == "missing required key")
    }

    @Test func tlsNeedsBothFilesAndResolvesRelativePaths() throws {
        let c = try Configuration.parse(text: "[proxy.tls]\ncertificate_file = \"a.crt\"\nprivate_key_file = \"/k/a.key\"\n" + minimal, file: "/etc/pgchorus/pgchorus.toml")
        #expect(c.proxy.tls == Configuration.TLS(certificateFile: "/etc/pgchorus/a.crt", privateKeyFile: "/k/a.key"))
        let e = try #require(parseError("[proxy.tls]\ncertificate_file = \"a.crt\"\n" + minimal))
        #expect(e.key == "proxy.tls.private_key_file")
    }

    @Test func backendTLSDefaultsToPreferAndEachBackendMayOverrideIt() throws {
        #expect(try Configuration.parse(text: minimal, file: "/x/p.toml").backends[0].tls == Configuration.BackendTLS(mode: .prefer))
        let text = """
        [backend_tls]
        sslmode = "verify-full"
        sslrootcert = "ca.crt"

        [[backends]]
        id = "db1"
        host = "db1.example"

        [[backends]]
        id = "db2"
        host = "127.0.0.1"
        sslmode = "disable"

        [[backends]]
        id = "db3"
        host = "db3.example"
        sslcert = "/k/node.crt"
        sslkey = "node.key"
        """
        let c = try Configuration.parse(text: text, file: "/etc/pgchorus/pgchorus.toml")
        #expect(c.backends.map(\.tls.mode) == [.verifyFull, .disable, .verifyFull])
        #expect(c.backends[0].tls.rootCertificateFile == "/etc/pgchorus/ca.crt")
        #expect(c.backends[2].tls == Configuration.BackendTLS(mode: .verifyFull, rootCertificateFile: "/etc/pgchorus/ca.crt",
                                                               certificateFile: "/k/node.crt", privateKeyFile: "/etc/pgchorus/node.key"))
        #expect(c.backends[0].tls.libpqKeywords.map(\.0) == ["sslmode", "sslrootcert"])
    }

    @Test func backendTLSMistakesNameTheKey() throws {
        let noRoot = try #require(parseError("[backend_tls]\nsslmode = \"verify-ca\"\n" + minimal))
        #expect(noRoot.key == "backend_tls.sslmode" && noRoot.message.contains("sslrootcert"))
        #expect(noRoot.line == 2)
        let badMode = try #require(parseError(minimal + "\nsslmode = \"allow-ish\"\n"))
        #expect(badMode.key == "backends[1].sslmode")
        let lonelyCert = try #require(parseError(minimal + "\nsslcert = \"a.crt\"\n"))
        #expect(lonelyCert.key == "backends[1].sslkey")
        let typo = try #require(parseError("[backend_tls]\nsslmod = \"require\"\n" + minimal))
        #expect(typo.key == "backend_tls.sslmod")
    }

    @Test func cidrMatching() throws {
        let net = try #require(CIDR("192.0.2.0/24"))
        #expect(net.contains(try #require(IPAddressBytes("192.0.2.77"))))
        #expect(!net.contains(try #require(IPAddressBytes("192.0.3.1"))))
        let v6 = try #require(CIDR("2001:db8::/32"))
        #expect(v6.contains(try #require(IPAddressBytes("2001:db8:1::5"))))
        #expect(!v6.contains(try #require(IPAddressBytes("2001:db9::1"))))
        #expect(try #require(IPAddressBytes("::ffff:127.0.0.1")) == IPAddressBytes("127.0.0.1"))
        #expect(IPAddressBytes("1.2.3") == nil)
        #expect(IPAddressBytes("1::2::3") == nil)
        #expect(CIDR("all")?.isAll == true)
    }
}
