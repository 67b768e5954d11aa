import Testing

@testable import Wire

/// SCRAM-SHA-256 on both sides, checked against RFC 7677 and against secrets computed outside Swift.
@Suite struct SCRAMTests {
    // RFC 7677 section 3.
    static let clientNonce = "rOprNGfwEbeRWgbNEkqO"
    static let serverNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    static let saltText = "W22ZaJ0SNY7soEsUEjb6gQ=="
    static let clientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    static let serverFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    static let clientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    static let serverFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

    // Computed with Python's hashlib.pbkdf2_hmac / hmac / sha256, as PostgreSQL stores them in pg_authid.
    static let storedKeyText = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
    static let serverKeyText = "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
    static let pencilSecretText = "SCRAM-SHA-256$4096:\(saltText)$\(storedKeyText):\(serverKeyText)"
    static let pencilClientKeyHex = "a60fc923d67e8644a92d16b96eda5ef4656b0c725c484374be25535576996e8b"
    /// "correct horse", salt 00 01 .. 0f, 1000 iterations.
    static let horseSecretText =
        "SCRAM-SHA-256$1000:AAECAwQFBgcICQoLDA0ODw==$+DiigcmD8bqjtPIn7DmDh4/H3yat8wHxLqJG3XmLHXU=:psnfLdCVHtV+hGQoxV3bscc2K2g4WXut5ZIH7OBcIxE="

    static var salt: [UInt8] { Base64.decode(saltText)! }
    static var pencilSecret: SCRAMSecret { SCRAMSecret(password: "pencil", salt: salt, iterations: 4096) }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    /// Runs a whole exchange; returns the ClientKey the server recovered.
    static func login(_ client: inout SCRAMClient, _ server: inout SCRAMServer, user: String = "") throws(SCRAMError) -> [UInt8] {
        let serverFirst = try server.receiveClientFirst(client.clientFirst(user: user))
        let clientFinal = try client.receiveServerFirst(serverFirst)
        let (serverFinal, clientKey) = try server.receiveClientFinal(clientFinal)
        try client.receiveServerFinal(serverFinal)
        return clientKey
    }

    // MARK: RFC 7677 vector

    @Test func clientAndServerReproduceTheRFCVector() throws {
        var client = SCRAMClient(credential: .password("pencil"), clientNonce: Self.clientNonce)
        var server = SCRAMServer(secret: Self.pencilSecret, serverNonce: Self.serverNonce)
        let first = client.clientFirst(user: "user")
        #expect(first == Self.clientFirst)
        let serverFirst = try server.receiveClientFirst(first)
        #expect(serverFirst == Self.serverFirst)
        let clientFinal = try client.receiveServerFirst(serverFirst)
        #expect(clientFinal == Self.clientFinal)
        let (serverFinal, clientKey) = try server.receiveClientFinal(clientFinal)
        #expect(serverFinal == Self.serverFinal)
        try client.receiveServerFinal(serverFinal)
        #expect(Self.hex(clientKey) == Self.pencilClientKeyHex)
    }

    @Test func clientAloneAgainstTheRFCVector() throws {
        var client = SCRAMClient(credential: .password("pencil"), clientNonce: Self.clientNonce)
        #expect(client.clientFirst(user: "user") == Self.clientFirst)
        #expect(try client.receiveServerFirst(Self.serverFirst) == Self.clientFinal)
        try client.receiveServerFinal(Self.serverFinal)
    }

    @Test func serverAloneAgainstTheRFCVector() throws {
        var server = SCRAMServer(secret: Self.pencilSecret, serverNonce: Self.serverNonce)
        #expect(try server.receiveClientFirst(Self.clientFirst) == Self.serverFirst)
        let (serverFinal, clientKey) = try server.receiveClientFinal(Self.clientFinal)
        #expect(serverFinal == Self.serverFinal)
        #expect(clientKey == SCRAMKeys(password: "pencil", salt: Self.salt, iterations: 4096).clientKey)
    }

    // MARK: Failures

    @Test func wrongPasswordIsRefused() throws {
        var client = SCRAMClient(credential: .password("pencil2"), clientNonce: Self.clientNonce)
        var server = SCRAMServer(secret: Self.pencilSecret, serverNonce: Self.serverNonce)
        let serverFirst = try server.receiveClientFirst(client.clientFirst(user: "user"))
        let clientFinal = try client.receiveServerFirst(serverFirst)
        #expect(throws: SCRAMError.wrongProof) { try server.receiveClientFinal(clientFinal) }
        #expect(SCRAMError.wrongProof.description == "password authentication failed")
    }

    @Test func tamperedServerSignatureIsRefused() throws {
        var client = SCRAMClient(credential: .password("pencil"), clientNonce: Self.clientNonce)
        _ = client.clientFirst(user: "user")
        _ = try client.receiveServerFirst(Self.serverFirst)
        // One base64 character changed: still 32 bytes, wrong signature.
        let tampered = "v=7" + Self.serverFinal.dropFirst(3)
        #expect(throws: SCRAMError.wrongServerSignature) { try client.receiveServerFinal(tampered) }
        #expect(throws: SCRAMError.wrongServerSignature) {
            try client.receiveServerFinal("v=" + Base64.encode([UInt8](repeating: 0, count: 32)))
        }
        #expect(throws: SCRAMError.malformedMessage("server error invalid-proof")) {
            try client.receiveServerFinal("e=invalid-proof")
        }
        #expect(throws: SCRAMError.malformedMessage("server-final-message")) { try client.receiveServerFinal("v=***") }
        // A server that does not know the password cannot sign: a different secret's signature fails.
        var impostor = SCRAMServer(secret: SCRAMSecret(password: "other", salt: Self.salt), serverNonce: Self.serverNonce)
        _ = try impostor.receiveClientFirst(Self.clientFirst)
        #expect(throws: SCRAMError.wrongProof) { try impostor.receiveClientFinal(Self.clientFinal) }
    }

    @Test func nonceMismatchOnBothSides() throws {
        // Server: the client-final must repeat the combined nonce.
        var server = SCRAMServer(secret: Self.pencilSecret, serverNonce: Self.serverNonce)
        _ = try server.receiveClientFirst(Self.clientFirst)
        let otherNonce = Self.clientFinal.replacing("hNlF$k0", with: "hNlF$k1")
        #expect(throws: SCRAMError.nonceMismatch) { try server.receiveClientFinal(otherNonce) }

        // Client: the server nonce must extend the client nonce.
        for serverFirst in [
            "r=XXprNGfwEbeRWgbNEkqOabc,s=\(Self.saltText),i=4096",
            "r=\(Self.clientNonce),s=\(Self.saltText),i=4096",
            "s=\(Self.saltText),i=4096",
        ] {
            var client = SCRAMClient(credential: .password("pencil"), clientNonce: Self.clientNonce)
            _ = client.clientFirst(user: "user")
            #expect(throws: SCRAMError.nonceMismatch) { try client.receiveServerFirst(serverFirst) }
        }
    }

    @Test func channelBindingIsRefused() {
        var server = SCRAMServer(secret: Self.pencilSecret, serverNonce: Self.serverNonce)
        #expect(throws: SCRAMError.channelBindingUnsupported) {
            try server.receiveClientFirst("p=tls-server-end-point,,n=,r=\(Self.clientNonce)")
        }
    }

    @Test func clientThatCouldBindIsAccepted() throws {
        // "y": the client supports binding but believes the server does not; no binding is used.
        var server = SCRAMServer(secret: Self.pencilSecret, serverNonce: "S")
        #expect(try server.receiveClientFirst("y,,n=,r=abc") == "r=abcS,s=\(Self.saltText),i=4096")
    }

    @Test func malformedClientMessages() throws {
        var server = SCRAMServer(secret: Self.pencilSecret, serverNonce: "S")
        #expect(throws: SCRAMError.malformedMessage("gs2 header")) { try server.receiveClientFirst("x,,n=,r=abc") }
        #expect(throws: SCRAMError.malformedMessage("gs2 header")) { try server.receiveClientFirst("n,") }
        #expect(throws: SCRAMError.malformedMessage("gs2 header")) { try server.receiveClientFirst("") }
        #expect(throws: SCRAMError.malformedMessage("missing nonce")) { try server.receiveClientFirst("n,,n=user") }
        #expect(throws: SCRAMError.malformedMessage("missing nonce")) { try server.receiveClientFirst("n,,n=user,r=") }
        #expect(throws: SCRAMError.self) { try server.receiveClientFirst("n,,garbage") }

        _ = try server.receiveClientFirst("n,,n=,r=abc")
        #expect(throws: SCRAMError.malformedMessage("missing proof")) { try server.receiveClientFinal("c=biws,r=abcS") }
        #expect(throws: SCRAMError.malformedMessage("bad proof")) { try server.receiveClientFinal("c=biws,r=abcS,p=!!!") }
        #expect(throws: SCRAMError.malformedMessage("bad proof")) {
            try server.receiveClientFinal("c=biws,r=abcS,p=" + Base64.encode([UInt8](repeating: 1, count: 31)))
        }
    }

    @Test func malformedServerFirst() {
        for message in [
            "r=\(Self.clientNonce)S,i=4096",
            "r=\(Self.clientNonce)S,s=\(Self.saltText)",
            "r=\(Self.clientNonce)S,s=\(Self.saltText),i=0",
            "r=\(Self.clientNonce)S,s=\(Self.saltText),i=many",
            "r=\(Self.clientNonce)S,s=***,i=4096",
        ] {
            var client = SCRAMClient(credential: .password("pencil"), clientNonce: Self.clientNonce)
            _ = client.clientFirst()
            #expect(throws: SCRAMError.malformedMessage("server-first-message")) { try client.receiveServerFirst(message) }
        }
    }

    /// A server (or whoever answers in its place) cannot make the node run PBKDF2 for minutes.
    @Test func aServerAskingForTooManyIterationsIsRefused() throws {
        var client = SCRAMClient(credential: .password("pencil"), clientNonce: Self.clientNonce)
        _ = client.clientFirst()
        for iterations in [SCRAM.maximumIterations + 1, 2_000_000_000] {
            #expect(throws: SCRAMError.self) { try client.receiveServerFirst("r=\(Self.clientNonce)S,s=\(Self.saltText),i=\(iterations)") }
        }
        // PostgreSQL's default is far below the bound (the bound itself would take long in a debug build).
        var fine = SCRAMClient(credential: .password("pencil"), clientNonce: Self.clientNonce)
        _ = fine.clientFirst()
        _ = try fine.receiveServerFirst("r=\(Self.clientNonce)S,s=\(Self.saltText),i=4096")
    }

    // MARK: Keys instead of a password

    @Test func recoveredClientKeyEqualsTheDerivedOne() throws {
        let derived = SCRAMKeys(password: "pencil", salt: Self.salt, iterations: 4096)
        #expect(Self.hex(derived.clientKey) == Self.pencilClientKeyHex)
        #expect(Base64.encode(derived.storedKey) == Self.storedKeyText)
        #expect(Base64.encode(derived.serverKey) == Self.serverKeyText)

        var client = SCRAMClient(credential: .password("pencil"), clientNonce: "client-nonce-1")
        var server = SCRAMServer(secret: Self.pencilSecret, serverNonce: "server-nonce-1")
        #expect(try Self.login(&client, &server) == derived.clientKey)
    }

    @Test func keysCredentialLogsInToABackendWithTheSameSecret() throws {
        // The proxy authenticates the client, then logs in to a backend with the recovered ClientKey.
        let secret = Self.pencilSecret
        var client = SCRAMClient(credential: .password("pencil"), clientNonce: "from-the-app")
        var proxySide = SCRAMServer(secret: secret, serverNonce: "proxy")
        let clientKey = try Self.login(&client, &proxySide, user: "user")

        let keys = SCRAMKeys(clientKey: clientKey, serverKey: secret.serverKey)
        #expect(keys.storedKey == secret.storedKey)
        var backendSide = SCRAMClient(
            credential: .keys(keys, expectedSalt: secret.salt, expectedIterations: secret.iterations), clientNonce: "to-the-backend")
        var backend = SCRAMServer(secret: secret, serverNonce: "backend")
        #expect(try Self.login(&backendSide, &backend) == clientKey)
    }

    @Test func keysCredentialRefusesDifferentSaltOrIterations() throws {
        let keys = SCRAMKeys(password: "pencil", salt: Self.salt, iterations: 4096)
        let credential = SCRAMClient.Credential.keys(keys, expectedSalt: Self.salt, expectedIterations: 4096)
        let otherSalt = Array(Self.salt.reversed())
        for backendSecret in [
            SCRAMSecret(password: "pencil", salt: otherSalt, iterations: 4096),
            SCRAMSecret(password: "pencil", salt: Self.salt, iterations: 4097),
        ] {
            var client = SCRAMClient(credential: credential, clientNonce: "c")
            var backend = SCRAMServer(secret: backendSecret, serverNonce: "b")
            let serverFirst = try backend.receiveClientFirst(client.clientFirst())
            #expect(throws: SCRAMError.parametersDiffer) { try client.receiveServerFirst(serverFirst) }
        }
    }

    // MARK: Stored secrets

    @Test func secretFromPasswordMatchesTheIndependentlyComputedOne() throws {
        #expect(Self.pencilSecret.text == Self.pencilSecretText)
        let parsed = try #require(SCRAMSecret(parsing: Self.pencilSecretText))
        #expect(parsed == Self.pencilSecret)
        #expect(SCRAMSecret(parsing: parsed.text) == parsed)
    }

    @Test func secretParsedFromTextAuthenticatesItsPassword() throws {
        let secret = try #require(SCRAMSecret(parsing: Self.horseSecretText))
        #expect(secret.iterations == 1000)
        #expect(secret.salt == Array(0..<16))
        #expect(secret.text == Self.horseSecretText)
        #expect(SCRAMSecret(password: "correct horse", salt: Array(0..<16), iterations: 1000) == secret)

        var good = SCRAMClient(credential: .password("correct horse"), clientNonce: "n1")
        var server = SCRAMServer(secret: secret, serverNonce: "s1")
        _ = try Self.login(&good, &server)

        var bad = SCRAMClient(credential: .password("correct horse battery"), clientNonce: "n2")
        var server2 = SCRAMServer(secret: secret, serverNonce: "s2")
        #expect(throws: SCRAMError.wrongProof) { try Self.login(&bad, &server2) }
    }

    static let malformedSecrets: [String] = [
        "",
        "md520c46e3762c864548e296b33c3406aa9",
        "SCRAM-SHA-256$",
        "scram-sha-256$4096:\(saltText)$\(storedKeyText):\(serverKeyText)",
        "SCRAM-SHA-1$4096:\(saltText)$\(storedKeyText):\(serverKeyText)",
        "SCRAM-SHA-256$4096:\(saltText)",
        "SCRAM-SHA-256$4096:\(saltText)$\(storedKeyText)",
        "SCRAM-SHA-256$4096:\(saltText)$\(storedKeyText):\(serverKeyText)$extra",
        "SCRAM-SHA-256$4096:\(saltText)$\(storedKeyText):\(serverKeyText):extra",
        "SCRAM-SHA-256$4096:\(saltText):x$\(storedKeyText):\(serverKeyText)",
        "SCRAM-SHA-256$0:\(saltText)$\(storedKeyText):\(serverKeyText)",
        "SCRAM-SHA-256$-1:\(saltText)$\(storedKeyText):\(serverKeyText)",
        "SCRAM-SHA-256$many:\(saltText)$\(storedKeyText):\(serverKeyText)",
        "SCRAM-SHA-256$:\(saltText)$\(storedKeyText):\(serverKeyText)",
        "SCRAM-SHA-256$4096:!!notbase64!!$\(storedKeyText):\(serverKeyText)",
        "SCRAM-SHA-256$4096:\(saltText)$\(Base64.encode([UInt8](repeating: 1, count: 31))):\(serverKeyText)",
        "SCRAM-SHA-256$4096:\(saltText)$\(storedKeyText):\(Base64.encode([UInt8](repeating: 1, count: 33)))",
        "SCRAM-SHA-256$4096:\(saltText)$\(storedKeyText):",
    ]

    @Test(arguments: SCRAMTests.malformedSecrets)
    func malformedSecretsAreRejected(_ text: String) {
        #expect(SCRAMSecret(parsing: text) == nil)
    }
}
