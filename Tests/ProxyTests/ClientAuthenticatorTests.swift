import NIOCore
@testable import Proxy
import State
import Testing
import Wire

/// The node's client authentication state machine, driven without sockets.
@Suite struct ClientAuthenticatorTests {
    let random: [UInt8] = Array(0..<24)

    func rule(_ method: Configuration.AuthRule.Method) -> Configuration.AuthRule {
        .init(database: "all", user: "all", address: CIDR("all")!, method: method, line: 3)
    }

    func cString(_ s: String) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeCString(s)
        return b
    }

    @Test func aClearTextPasswordIsTakenOnlyOverTLS() {
        var plain = ClientAuthenticator(user: "u", rule: rule(.password), stored: .plain("pw"), randomBytes: random, encrypted: false)
        guard case let .fail(f) = plain.start() else { Issue.record("password asked for in clear"); return }
        #expect(f.sqlState == "28000")
        #expect(f.message?.contains("only over TLS") == true)
        var tls = ClientAuthenticator(user: "u", rule: rule(.password), stored: .plain("pw"), randomBytes: random, encrypted: true)
        #expect(tls.start() == .send(.authentication(.cleartextPassword)))
        // SCRAM and md5 never send the password itself: allowed without TLS.
        var scram = ClientAuthenticator(user: "u", rule: rule(.scramSHA256), stored: .plain("pw"), randomBytes: random, encrypted: false)
        guard case .send = scram.start() else { Issue.record("scram refused without TLS"); return }
    }

    @Test func trustAndReject() {
        var trust = ClientAuthenticator(user: "u", rule: rule(.trust), stored: nil, randomBytes: random, encrypted: true)
        #expect(trust.start() == .authenticated(final: nil))
        var reject = ClientAuthenticator(user: "u", rule: rule(.reject), stored: .plain("x"), randomBytes: random, encrypted: true)
        guard case let .fail(f) = reject.start() else { Issue.record("not refused"); return }
        #expect(f.sqlState == "28000")
    }

    @Test func md5ChallengeWithStoredHash() {
        let stored = StoredSecret(parsing: MD5Password.stored(password: "pw", user: "u"))
        var auth = ClientAuthenticator(user: "u", rule: rule(.md5), stored: stored, randomBytes: random, encrypted: true)
        #expect(auth.start() == .send(.authentication(.md5Password(salt: [0, 1, 2, 3]))))
        #expect(auth.receive(cString(MD5Password.response(password: "pw", user: "u", salt: [0, 1, 2, 3]))) == .authenticated(final: nil))
        guard case .md5Stored = auth.credential else { Issue.record("credential not kept"); return }

        var bad = ClientAuthenticator(user: "u", rule: rule(.md5), stored: stored, randomBytes: random, encrypted: true)
        _ = bad.start()
        guard case let .fail(f) = bad.receive(cString(MD5Password.response(password: "no", user: "u", salt: [0, 1, 2, 3]))) else {
            Issue.record("wrong password accepted"); return
        }
        #expect(f.sqlState == "28P01")
        #expect(f.message == "password authentication failed for user \"u\"")
    }

    @Test func md5RuleWithScramSecretUsesScramAsPostgresDoes() {
        let secret = SCRAMSecret(password: "pw", salt: Array(repeating: 7, count: 16))
        var auth = ClientAuthenticator(user: "u", rule: rule(.md5), stored: .scram(secret), randomBytes: random, encrypted: true)
        #expect(auth.start() == .send(.authentication(.sasl(mechanisms: ["SCRAM-SHA-256"]))))
    }

    @Test func scramFullExchangeRecoversTheClientKey() throws {
        let salt = Array(repeating: UInt8(9), count: 16)
        let secret = SCRAMSecret(password: "pencil", salt: salt)
        var auth = ClientAuthenticator(user: "u", rule: rule(.scramSHA256), stored: .scram(secret), randomBytes: random, encrypted: true)
        _ = auth.start()
        var client = SCRAMClient(credential: .password("pencil"), clientNonce: "abcdefghijkl")
        let first = client.clientFirst()
        var initial = ByteBuffer()
        initial.writeCString("SCRAM-SHA-256")
        initial.writeInteger(Int32(first.utf8.count))
        initial.writeString(first)
        guard case let .send(.authentication(.saslContinue(serverFirst))) = auth.receive(initial) else {
            Issue.record("no server-first"); return
        }
        let final = try client.receiveServerFirst(String(buffer: serverFirst))
        guard case let .authenticated(.authentication(.saslFinal(serverFinal)))? = Optional(auth.receive(ByteBuffer(string: final))) else {
            Issue.record("not authenticated"); return
        }
        try client.receiveServerFinal(String(buffer: serverFinal))
        guard case let .scramKeys(keys, s, i) = auth.credential else { Issue.record("no keys"); return }
        #expect(keys == SCRAMKeys(password: "pencil", salt: salt, iterations: 4096))
        #expect(s == salt && i == 4096)
    }

    @Test func unknownUserWithScramLooksLikeAWrongPassword() throws {
        var auth = ClientAuthenticator(user: "ghost", rule: rule(.scramSHA256), stored: nil, randomBytes: random, encrypted: true)
        #expect(auth.start() == .send(.authentication(.sasl(mechanisms: ["SCRAM-SHA-256"]))))
        var client = SCRAMClient(credential: .password("anything"), clientNonce: "nonce123")
        let first = client.clientFirst()
        var initial = ByteBuffer()
        initial.writeCString("SCRAM-SHA-256")
        initial.writeInteger(Int32(first.utf8.count))
        initial.writeString(first)
        guard case let .send(.authentication(.saslContinue(serverFirst))) = auth.receive(initial) else {
            Issue.record("no server-first"); return
        }
        let final = try client.receiveServerFirst(String(buffer: serverFirst))
        guard case let .fail(f) = auth.receive(ByteBuffer(string: final)) else { Issue.record("ghost accepted"); return }
        #expect(f.sqlState == "28P01")
    }

    @Test func cleartextPasswordAgainstEveryStoredForm() {
        let salt = Array(repeating: UInt8(1), count: 16)
        for stored in [StoredSecret.plain("pw"), StoredSecret(parsing: MD5Password.stored(password: "pw", user: "u")), .scram(SCRAMSecret(password: "pw", salt: salt))] {
            var ok = ClientAuthenticator(user: "u", rule: rule(.password), stored: stored, randomBytes: random, encrypted: true)
            #expect(ok.start() == .send(.authentication(.cleartextPassword)))
            #expect(ok.receive(cString("pw")) == .authenticated(final: nil))
            var bad = ClientAuthenticator(user: "u", rule: rule(.password), stored: stored, randomBytes: random, encrypted: true)
            _ = bad.start()
            if case .fail = bad.receive(cString("wrong")) {} else { Issue.record("wrong password accepted for \(stored)") }
        }
    }

    @Test func usersFileParsesAllFormsAndNamesBadLines() throws {
        let secret = SCRAMSecret(password: "x", salt: [1, 2, 3, 4]).text
        let dir = try UserDirectory.parse(text: """
        # comment
        "alice" "\(secret)"
        "bob" "md5\(String(repeating: "a", count: 32))"
          "car""ol" "plain pw"  # trailing comment
        """, file: "users.txt")
        #expect(dir.secrets["alice"] == .scram(SCRAMSecret(parsing: secret)!))
        #expect(dir.secrets["bob"] == .md5("md5" + String(repeating: "a", count: 32)))
        #expect(dir.secrets["car\"ol"] == .plain("plain pw"))
        do {
            _ = try UserDirectory.parse(text: "\"ok\" \"x\"\nalice secret\n", file: "users.txt")
            Issue.record("bad line accepted")
        } catch {
            #expect(error.line == 2)
            #expect(error.file == "users.txt")
        }
    }
}
