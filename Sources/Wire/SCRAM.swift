import Crypto
import FoundationEssentials

/// A stored SCRAM-SHA-256 verifier in PostgreSQL's `pg_authid.rolpassword` form:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 fields).
public struct SCRAMSecret: Sendable, Equatable {
    public var iterations: Int
    public var salt: [UInt8]
    public var storedKey: [UInt8]
    public var serverKey: [UInt8]

    public init(iterations: Int, salt: [UInt8], storedKey: [UInt8], serverKey: [UInt8]) {
        self.iterations = iterations; self.salt = salt; self.storedKey = storedKey; self.serverKey = serverKey
    }

    /// Parses the `pg_authid` form; nil when `text` is not a well-formed SCRAM-SHA-256 secret.
    public init?(parsing text: String) {
        guard text.hasPrefix("SCRAM-SHA-256$") else { return nil }
        let parts = text.dropFirst("SCRAM-SHA-256$".count).split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        let a = parts[0].split(separator: ":", omittingEmptySubsequences: false)
        let b = parts[1].split(separator: ":", omittingEmptySubsequences: false)
        guard a.count == 2, b.count == 2, let iterations = Int(a[0]), iterations > 0,
              let salt = Base64.decode(String(a[1])), let stored = Base64.decode(String(b[0])),
              let server = Base64.decode(String(b[1])), stored.count == 32, server.count == 32
        else { return nil }
        self.init(iterations: iterations, salt: salt, storedKey: stored, serverKey: server)
    }

    /// Derives a secret from a password, as PostgreSQL does for `password_encryption = scram-sha-256`.
    public init(password: String, salt: [UInt8], iterations: Int = 4096) {
        let keys = SCRAMKeys(password: password, salt: salt, iterations: iterations)
        self.init(iterations: iterations, salt: salt, storedKey: keys.storedKey, serverKey: keys.serverKey)
    }

    public var text: String {
        "SCRAM-SHA-256$\(iterations):\(Base64.encode(salt))$\(Base64.encode(storedKey)):\(Base64.encode(serverKey))"
    }
}

/// The keys SCRAM derives from a password (RFC 5802 section 3).
public struct SCRAMKeys: Sendable, Equatable {
    public var clientKey: [UInt8]
    public var storedKey: [UInt8]
    public var serverKey: [UInt8]

    public init(clientKey: [UInt8], serverKey: [UInt8]) {
        self.clientKey = clientKey
        self.storedKey = Array(SHA256.hash(data: clientKey))
        self.serverKey = serverKey
    }

    public init(password: String, salt: [UInt8], iterations: Int) {
        // SASLprep is the identity for ASCII passwords; PostgreSQL also falls back to the raw bytes.
        let salted = SCRAM.hi(password: Array(password.utf8), salt: salt, iterations: iterations)
        self.init(clientKey: SCRAM.hmac(key: salted, Array("Client Key".utf8)), serverKey: SCRAM.hmac(key: salted, Array("Server Key".utf8)))
    }
}

/// Why a SCRAM exchange failed.
public enum SCRAMError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformedMessage(String)
    case channelBindingUnsupported
    case nonceMismatch
    case wrongProof
    case wrongServerSignature
    case parametersDiffer

    public var description: String {
        switch self {
        case let .malformedMessage(m): "malformed SCRAM message: \(m)"
        case .channelBindingUnsupported: "SCRAM channel binding is not supported by pgchorus"
        case .nonceMismatch: "SCRAM nonce does not match"
        case .wrongProof: "password authentication failed"
        case .wrongServerSignature: "the server's SCRAM signature is invalid"
        case .parametersDiffer: "the backend's SCRAM salt or iteration count differs from the users file secret"
        }
    }
}

/// SCRAM primitives shared by both sides.
public enum SCRAM {
    public static let mechanism = "SCRAM-SHA-256"
    /// The most PBKDF2 iterations pgchorus computes for a backend's login (PostgreSQL's default is
    /// 4096; a larger `scram_iterations` on a backend up to this still works).
    public static let maximumIterations = 100_000

    public static func hmac(key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: key)))
    }

    /// Hi() of RFC 5802: PBKDF2 with HMAC-SHA-256 and one output block.
    public static func hi(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        let key = SymmetricKey(data: password)
        var u = Array(HMAC<SHA256>.authenticationCode(for: salt + [0, 0, 0, 1], using: key))
        var result = u
        if iterations > 1 {
            for _ in 2...iterations {
                u = Array(HMAC<SHA256>.authenticationCode(for: u, using: key))
                for i in 0..<result.count { result[i] ^= u[i] }
            }
        }
        return result
    }

    static func xor(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
        zip(a, b).map { $0 ^ $1 }
    }

    /// Splits `a=x,b=y` into ordered attributes.
    static func attributes(_ message: String) throws(SCRAMError) -> [(Character, String)] {
        var out: [(Character, String)] = []
        for part in message.split(separator: ",", omittingEmptySubsequences: false) {
            guard part.count >= 2, let name = part.first, part.dropFirst().first == "=" else {
                throw .malformedMessage("attribute \(part.prefix(20))")
            }
            out.append((name, String(part.dropFirst(2))))
        }
        return out
    }

    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var d: UInt8 = 0
        for i in 0..<a.count { d |= a[i] ^ b[i] }
        return d == 0
    }
}

/// The server side of SCRAM-SHA-256 (what pgchorus does toward its clients), as a value-type state machine.
public struct SCRAMServer: Sendable {
    public let secret: SCRAMSecret
    let serverNonce: String
    var clientFirstBare = ""
    var serverFirst = ""
    var combinedNonce = ""

    /// `serverNonce` is an input so tests can replay RFC vectors; production passes random printable bytes.
    public init(secret: SCRAMSecret, serverNonce: String) {
        self.secret = secret
        self.serverNonce = serverNonce
    }

    /// Handles the client-first-message; returns the server-first-message.
    public mutating func receiveClientFirst(_ message: String) throws(SCRAMError) -> String {
        // gs2-header: "n,," (no binding) or "y,," (client could bind, server did not offer); "p=" demands binding.
        if message.hasPrefix("p=") { throw .channelBindingUnsupported }
        guard message.hasPrefix("n,") || message.hasPrefix("y,") else { throw .malformedMessage("gs2 header") }
        let afterFlag = message.dropFirst(2)
        guard let comma = afterFlag.firstIndex(of: ",") else { throw .malformedMessage("gs2 header") }
        clientFirstBare = String(afterFlag[afterFlag.index(after: comma)...])
        let attrs = try SCRAM.attributes(clientFirstBare)
        guard let nonce = attrs.first(where: { $0.0 == "r" })?.1, !nonce.isEmpty else { throw .malformedMessage("missing nonce") }
        combinedNonce = nonce + serverNonce
        serverFirst = "r=\(combinedNonce),s=\(Base64.encode(secret.salt)),i=\(secret.iterations)"
        return serverFirst
    }

    /// Handles the client-final-message; returns the server-final-message and the client's
    /// ClientKey (recovered from the proof, usable to log in to backends holding the same secret).
    public mutating func receiveClientFinal(_ message: String) throws(SCRAMError) -> (serverFinal: String, clientKey: [UInt8]) {
        guard let proofRange = message.range(of: ",p=") else { throw .malformedMessage("missing proof") }
        let withoutProof = String(message[..<proofRange.lowerBound])
        let attrs = try SCRAM.attributes(message)
        guard let nonce = attrs.first(where: { $0.0 == "r" })?.1 else { throw .malformedMessage("missing nonce") }
        guard nonce == combinedNonce else { throw .nonceMismatch }
        guard let proofText = attrs.first(where: { $0.0 == "p" })?.1, let proof = Base64.decode(proofText), proof.count == 32 else {
            throw .malformedMessage("bad proof")
        }
        let authMessage = Array("\(clientFirstBare),\(serverFirst),\(withoutProof)".utf8)
        let clientSignature = SCRAM.hmac(key: secret.storedKey, authMessage)
        let clientKey = SCRAM.xor(proof, clientSignature)
        guard SCRAM.constantTimeEqual(Array(SHA256.hash(data: clientKey)), secret.storedKey) else { throw .wrongProof }
        let serverSignature = SCRAM.hmac(key: secret.serverKey, authMessage)
        return ("v=\(Base64.encode(serverSignature))", clientKey)
    }
}

/// The client side of SCRAM-SHA-256 (what pgchorus does toward a backend).
public struct SCRAMClient: Sendable {
    /// What the client proves with: a password, or keys recovered from a client's own SCRAM login.
    public enum Credential: Sendable {
        case password(String)
        case keys(SCRAMKeys, expectedSalt: [UInt8], expectedIterations: Int)
    }

    let credential: Credential
    let clientNonce: String
    var clientFirstBare = ""
    var authMessage: [UInt8] = []
    var serverKey: [UInt8] = []

    public init(credential: Credential, clientNonce: String) {
        self.credential = credential
        self.clientNonce = clientNonce
    }

    /// The client-first-message (PostgreSQL takes the user from the startup packet, so `n=` stays empty).
    public mutating func clientFirst(user: String = "") -> String {
        clientFirstBare = "n=\(user),r=\(clientNonce)"
        return "n,,\(clientFirstBare)"
    }

    /// Handles the server-first-message; returns the client-final-message.
    public mutating func receiveServerFirst(_ message: String) throws(SCRAMError) -> String {
        let attrs = try SCRAM.attributes(message)
        guard let nonce = attrs.first(where: { $0.0 == "r" })?.1, nonce.hasPrefix(clientNonce), nonce.count > clientNonce.count else {
            throw .nonceMismatch
        }
        guard let saltText = attrs.first(where: { $0.0 == "s" })?.1, let salt = Base64.decode(saltText),
              let iterText = attrs.first(where: { $0.0 == "i" })?.1, let iterations = Int(iterText), iterations > 0
        else { throw .malformedMessage("server-first-message") }
        // The iteration count is the server's to choose, and each costs two HMACs on this thread: a
        // hostile or impersonated server must not be able to stall the node for minutes.
        guard iterations <= SCRAM.maximumIterations else {
            throw .malformedMessage("server-first-message asks for \(iterations) iterations, more than the \(SCRAM.maximumIterations) pgchorus computes")
        }
        let keys: SCRAMKeys
        switch credential {
        case let .password(p):
            keys = SCRAMKeys(password: p, salt: salt, iterations: iterations)
        case let .keys(k, expectedSalt, expectedIterations):
            guard salt == expectedSalt, iterations == expectedIterations else { throw .parametersDiffer }
            keys = k
        }
        let withoutProof = "c=biws,r=\(nonce)"
        authMessage = Array("\(clientFirstBare),\(message),\(withoutProof)".utf8)
        let proof = SCRAM.xor(keys.clientKey, SCRAM.hmac(key: keys.storedKey, authMessage))
        serverKey = keys.serverKey
        return "\(withoutProof),p=\(Base64.encode(proof))"
    }

    /// Checks the server-final-message.
    public func receiveServerFinal(_ message: String) throws(SCRAMError) {
        let attrs = try SCRAM.attributes(message)
        if let e = attrs.first(where: { $0.0 == "e" })?.1 { throw .malformedMessage("server error \(e)") }
        guard let v = attrs.first(where: { $0.0 == "v" })?.1, let sig = Base64.decode(v) else { throw .malformedMessage("server-final-message") }
        guard SCRAM.constantTimeEqual(sig, SCRAM.hmac(key: serverKey, authMessage)) else { throw .wrongServerSignature }
    }
}

/// Base64 through FoundationEssentials' `Data`.
public enum Base64 {
    public static func encode(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }
    public static func decode(_ text: String) -> [UInt8]? { Data(base64Encoded: text).map { Array($0) } }
}
