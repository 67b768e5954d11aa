import NIOCore
import State
import Wire

/// What pgchorus learned about the client's password while authenticating it,
/// and can reuse to log in to the backends as the same user.
public enum BackendCredential: Sendable {
    case none
    case plain(String)
    case md5Stored(String)
    case scramKeys(SCRAMKeys, salt: [UInt8], iterations: Int)
}

/// Authenticates one client against the auth rules and the users file.
/// A pure state machine: nonces and salts come in as inputs, messages go out as actions.
public struct ClientAuthenticator: Sendable {
    public enum Action: Sendable, Equatable {
        case send(BackendMessage)
        /// Authenticated; `final` (the SCRAM server-final message) goes out before AuthenticationOk.
        case authenticated(final: BackendMessage?)
        case fail(ErrorFields)
    }

    enum State: Sendable {
        case start
        case awaitingPassword(expected: StoredSecret?)
        case awaitingMD5(expected: StoredSecret?, salt: [UInt8])
        case awaitingSASLInitial(secret: SCRAMSecret, real: Bool)
        case awaitingSASLFinal(SCRAMServer, real: Bool)
        case done
    }

    let user: String
    let rule: Configuration.AuthRule
    let stored: StoredSecret?
    let randomBytes: [UInt8]
    var state: State = .start
    public private(set) var credential: BackendCredential = .none

    /// `randomBytes` (at least 24) supplies the MD5 salt and the SCRAM server nonce.
    /// Whether the client's connection is encrypted (TLS): `password` sends the password as it is.
    let encrypted: Bool

    public init(user: String, rule: Configuration.AuthRule, stored: StoredSecret?, randomBytes: [UInt8], encrypted: Bool) {
        self.user = user; self.rule = rule; self.stored = stored; self.randomBytes = randomBytes; self.encrypted = encrypted
        if case let .plain(p)? = stored { credential = .plain(p) }
        if case let .md5(m)? = stored { credential = .md5Stored(m) }
    }

    func failed() -> Action {
        .fail(ErrorFields(severity: "FATAL", sqlState: "28P01", message: "password authentication failed for user \"\(user)\""))
    }

    /// Starts the exchange the rule asks for.
    public mutating func start() -> Action {
        switch rule.method {
        case .trust:
            state = .done
            return .authenticated(final: nil)
        case .reject:
            state = .done
            return .fail(ErrorFields(severity: "FATAL", sqlState: "28000", message: "pgchorus auth rule at line \(rule.line.map(String.init) ?? "?") rejects connection for user \"\(user)\""))
        case .password where !encrypted:
            state = .done
            return .fail(ErrorFields(severity: "FATAL", sqlState: "28000",
                                     message: "pgchorus auth rule at line \(rule.line.map(String.init) ?? "?") asks for a clear-text password, which pgchorus takes only over TLS",
                                     hint: "Connect with sslmode=require (the node needs [proxy.tls]), or use scram-sha-256."))
        case .password:
            state = .awaitingPassword(expected: stored)
            return .send(.authentication(.cleartextPassword))
        case .md5:
            if case let .scram(secret)? = stored { return startSCRAM(secret, real: true) } // as PostgreSQL does
            let salt = Array(randomBytes[0..<4])
            state = .awaitingMD5(expected: stored, salt: salt)
            return .send(.authentication(.md5Password(salt: salt)))
        case .scramSHA256:
            switch stored {
            case let .scram(secret)?: return startSCRAM(secret, real: true)
            case let .plain(p)?: return startSCRAM(SCRAMSecret(password: p, salt: Array(randomBytes[4..<20])), real: true)
            case .md5?, nil:
                // Go through the motions with a made-up secret so an unknown user looks like a wrong password.
                return startSCRAM(SCRAMSecret(password: "", salt: Array(randomBytes[4..<20]), iterations: 4096), real: false)
            }
        }
    }

    private mutating func startSCRAM(_ secret: SCRAMSecret, real: Bool) -> Action {
        state = .awaitingSASLInitial(secret: secret, real: real)
        return .send(.authentication(.sasl(mechanisms: [SCRAM.mechanism])))
    }

    /// Handles a 'p' message body from the client.
    public mutating func receive(_ body: ByteBuffer) -> Action {
        var r = MessageReader(body, message: "authentication response")
        switch state {
        case let .awaitingPassword(expected):
            state = .done
            guard let password = try? r.cString("password"), let expected else { return failed() }
            let ok: Bool
            switch expected {
            case let .plain(p): ok = SCRAM.constantTimeEqual(Array(p.utf8), Array(password.utf8))
            case let .md5(m): ok = MD5Password.stored(password: password, user: user) == m
            case let .scram(s): ok = SCRAMSecret(password: password, salt: s.salt, iterations: s.iterations) == s
            }
            guard ok else { return failed() }
            credential = .plain(password)
            return .authenticated(final: nil)
        case let .awaitingMD5(expected, salt):
            state = .done
            guard let response = try? r.cString("password") else { return failed() }
            let ok: Bool
            switch expected {
            case let .plain(p)?: ok = MD5Password.response(password: p, user: user, salt: salt) == response
            case let .md5(m)?: ok = MD5Password.response(stored: m, salt: salt) == response
            default: ok = false
            }
            return ok ? .authenticated(final: nil) : failed()
        case let .awaitingSASLInitial(secret, real):
            guard let mechanism = try? r.cString("mechanism"), let length = try? r.int32("length") else {
                state = .done
                return .fail(ErrorFields(severity: "FATAL", sqlState: "08P01", message: "malformed SASLInitialResponse message"))
            }
            guard mechanism == SCRAM.mechanism else {
                state = .done
                return .fail(ErrorFields(severity: "FATAL", sqlState: "28000", message: "client selected an invalid SASL authentication mechanism \"\(mechanism)\""))
            }
            let data = length >= 0 ? r.rest() : ByteBuffer()
            var server = SCRAMServer(secret: secret, serverNonce: Base64.encode(Array(randomBytes[0..<18])))
            do {
                let first = try server.receiveClientFirst(String(buffer: data))
                state = .awaitingSASLFinal(server, real: real)
                return .send(.authentication(.saslContinue(ByteBuffer(string: first))))
            } catch {
                state = .done
                return .fail(ErrorFields(severity: "FATAL", sqlState: "08P01", message: "\(error)"))
            }
        case .awaitingSASLFinal(var server, let real):
            state = .done
            do {
                let (final, clientKey) = try server.receiveClientFinal(String(buffer: r.rest()))
                guard real else { return failed() }
                credential = .scramKeys(SCRAMKeys(clientKey: clientKey, serverKey: server.secret.serverKey),
                                        salt: server.secret.salt, iterations: server.secret.iterations)
                if case let .plain(p)? = stored { credential = .plain(p) }
                return .authenticated(final: .authentication(.saslFinal(ByteBuffer(string: final))))
            } catch SCRAMError.wrongProof {
                return failed()
            } catch {
                return .fail(ErrorFields(severity: "FATAL", sqlState: "08P01", message: "\(error)"))
            }
        case .start, .done:
            state = .done
            return .fail(ErrorFields(severity: "FATAL", sqlState: "08P01", message: "unexpected authentication response message"))
        }
    }
}
