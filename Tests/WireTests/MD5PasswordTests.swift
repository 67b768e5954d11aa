import NIOCore
import Testing

@testable import Wire

/// PostgreSQL's md5 scheme, checked against values computed with coreutils' md5sum:
/// `printf '%s' penciluser | md5sum`, then `{ printf '%s' <hex>; printf '\x01\x02\x03\x04'; } | md5sum`.
@Suite struct MD5PasswordTests {
    static let pencilUserHex = "20c46e3762c864548e296b33c3406aa9"

    @Test func storedFormIsMD5OfPasswordThenUser() {
        #expect(MD5Password.stored(password: "pencil", user: "user") == "md5" + Self.pencilUserHex)
        #expect(MD5Password.stored(password: "postgres", user: "postgres") == "md53175bce1d3201d16594cebf9d7eb3f9d")
        // Non-ASCII passwords are hashed as their UTF-8 bytes (73 c3 a9 63 ...).
        #expect(MD5Password.stored(password: "sécret", user: "app") == "md559510b0890a9bd4106bc4bdea27b55de")
    }

    @Test func saltedResponse() {
        #expect(MD5Password.response(password: "pencil", user: "user", salt: [0x01, 0x02, 0x03, 0x04])
            == "md54376eb6913b38f9aaff38dc7cf19ca76")
        #expect(MD5Password.response(stored: "md5" + Self.pencilUserHex, salt: [0xde, 0xad, 0xbe, 0xef])
            == "md50f5b636d891e9860623ac8ca91fc9dfc")
        // Salt bytes matter: another salt gives another response.
        #expect(MD5Password.response(password: "pencil", user: "user", salt: [0x01, 0x02, 0x03, 0x05])
            != "md54376eb6913b38f9aaff38dc7cf19ca76")
    }

    @Test func responseTravelsAsAPasswordMessage() throws {
        // The server asks with AuthenticationMD5Password; the client answers with 'p' and a C string.
        let request = try #require(try decodeOneFrame(encoded(BackendMessage.authentication(.md5Password(salt: [1, 2, 3, 4])))))
        guard case let .authentication(.md5Password(salt)) = try BackendMessage(frame: request) else {
            Issue.record("not an AuthenticationMD5Password")
            return
        }
        let response = MD5Password.response(password: "pencil", user: "user", salt: salt)
        let message = FrontendMessage.authenticationResponse(ByteBuffer(bytes: cString(response)))
        #expect(Array(encoded(message).readableBytesView)
            == hexBytes("70 00 00 00 28") + Array("md54376eb6913b38f9aaff38dc7cf19ca76".utf8) + [0])
    }

    @Test func storedFormDetection() {
        #expect(MD5Password.isStoredForm("md5" + Self.pencilUserHex))
        #expect(MD5Password.isStoredForm(MD5Password.stored(password: "x", user: "y")))
        #expect(!MD5Password.isStoredForm("md5" + Self.pencilUserHex.uppercased()))
        #expect(!MD5Password.isStoredForm("md5" + Self.pencilUserHex.dropLast()))
        #expect(!MD5Password.isStoredForm("md5" + Self.pencilUserHex + "0"))
        #expect(!MD5Password.isStoredForm("MD5" + Self.pencilUserHex))
        #expect(!MD5Password.isStoredForm("md5" + Self.pencilUserHex.dropLast() + "g"))
        #expect(!MD5Password.isStoredForm("pencil"))
        #expect(!MD5Password.isStoredForm(""))
        #expect(!MD5Password.isStoredForm("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$a:b"))
        // Only ASCII hex digits, as PostgreSQL checks: fullwidth digits are hex digits to Swift's Character.
        #expect(!MD5Password.isStoredForm("md5" + String(repeating: "\u{FF10}", count: 32)))
        #expect(!MD5Password.isStoredForm("md5" + String(repeating: "\u{FF41}", count: 32)))
    }
}
