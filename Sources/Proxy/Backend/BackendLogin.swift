import NIOCore
import State
import Wire

/// The login of one backend session: answers the backend's authentication requests with the
/// credential pgchorus holds for the user, and collects ParameterStatus and BackendKeyData until
/// the first ReadyForQuery. A pure state machine; the nonce comes in as an input.
public struct BackendLogin: Sendable {
    public enum Action: Sendable {
        case send(FrontendMessage)
        case none
        case ready(BackendMessage.TransactionStatus)
        /// The backend refused the session; `fields` is its own ErrorResponse (forwarded byte-exact by the caller).
        case backendError(ErrorFields)
        /// pgchorus cannot continue the login (no usable password, protocol violation, bad server signature).
        case fail(String)
    }

    public let user: String
    let credential: BackendCredential
    let nonce: String
    var scram: SCRAMClient?
    public private(set) var parameters: [(name: String, value: String)] = []
    public private(set) var processID: Int32 = 0
    public private(set) var secretKey: [UInt8] = []
    public private(set) var authenticated = false

    public init(user: String, credential: BackendCredential, nonce: String) {
        self.user = user; self.credential = credential; self.nonce = nonce
    }

    /// The StartupMessage to send: every parameter of the client, in its order, as protocol 3.0
    /// (protocol extension requests `_pq_.*` are the node's business with its client, not the backend's).
    public static func startupMessage(for client: StartupMessage) -> StartupMessage {
        StartupMessage(protocolMajor: 3, protocolMinor: 0, parameters: client.parameters.filter { !$0.name.hasPrefix("_pq_.") })
    }

    private func noPassword(_ method: String) -> Action {
        .fail("the backend asks for \(method) authentication of user \"\(user)\", but pgchorus holds no usable password for that user (put the plain password in the users file, or the same SCRAM secret as the backend's pg_authid)")
    }

    public mutating func receive(_ message: BackendMessage) -> Action {
        switch message {
        case let .authentication(request):
            switch request {
            case .ok:
                authenticated = true
                return .none
            case .cleartextPassword:
                guard case let .plain(p) = credential else { return noPassword("password") }
                return .send(.authenticationResponse(Self.cString(p)))
            case let .md5Password(salt):
                switch credential {
                case let .plain(p): return .send(.authenticationResponse(Self.cString(MD5Password.response(password: p, user: user, salt: salt))))
                case let .md5Stored(m): return .send(.authenticationResponse(Self.cString(MD5Password.response(stored: m, salt: salt))))
                default: return noPassword("md5")
                }
            case let .sasl(mechanisms):
                guard mechanisms.contains(SCRAM.mechanism) else {
                    return .fail("the backend offers only SASL mechanisms \(mechanisms.joined(separator: ", ")); pgchorus speaks SCRAM-SHA-256")
                }
                var client: SCRAMClient
                switch credential {
                case let .plain(p): client = SCRAMClient(credential: .password(p), clientNonce: nonce)
                case let .scramKeys(keys, salt, iterations):
                    client = SCRAMClient(credential: .keys(keys, expectedSalt: salt, expectedIterations: iterations), clientNonce: nonce)
                default: return noPassword("scram-sha-256")
                }
                let first = client.clientFirst()
                scram = client
                var body = ByteBuffer()
                body.writeCString(SCRAM.mechanism)
                body.writeInteger(Int32(first.utf8.count))
                body.writeString(first)
                return .send(.authenticationResponse(body))
            case let .saslContinue(data):
                guard var client = scram else { return .fail("unexpected SASLContinue from the backend") }
                do {
                    let final = try client.receiveServerFirst(String(buffer: data))
                    scram = client
                    return .send(.authenticationResponse(ByteBuffer(string: final)))
                } catch {
                    return .fail("SCRAM login to the backend failed: \(error)")
                }
            case let .saslFinal(data):
                guard let client = scram else { return .fail("unexpected SASLFinal from the backend") }
                do {
                    try client.receiveServerFinal(String(buffer: data))
                    return .none
                } catch {
                    return .fail("SCRAM login to the backend failed: \(error)")
                }
            case .kerberosV5, .gss, .gssContinue, .sspi:
                return .fail("the backend asks for GSSAPI/SSPI/Kerberos authentication, which pgchorus does not support toward backends")
            }
        case let .parameterStatus(name, value):
            if let i = parameters.firstIndex(where: { $0.name == name }) {
                parameters[i].value = value
            } else {
                parameters.append((name, value))
            }
            return .none
        case let .backendKeyData(pid, key):
            processID = pid
            secretKey = key
            return .none
        case let .readyForQuery(status):
            guard authenticated else { return .fail("the backend sent ReadyForQuery before AuthenticationOk") }
            return .ready(status)
        case let .errorResponse(fields):
            return .backendError(fields)
        case .noticeResponse, .negotiateProtocolVersion:
            return .none
        default:
            return .fail("unexpected message \(message.kind) from the backend during login")
        }
    }

    static func cString(_ s: String) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeCString(s)
        return b
    }
}
