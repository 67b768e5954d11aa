import Crypto

/// PostgreSQL's MD5 password scheme: the stored form is `md5` + hex(md5(password + user)),
/// the wire form is `md5` + hex(md5(hex(md5(password + user)) + salt)).
public enum MD5Password {
    /// The stored form (`pg_authid.rolpassword` with `password_encryption = md5`).
    public static func stored(password: String, user: String) -> String {
        "md5" + hex(Array(Insecure.MD5.hash(data: Array((password + user).utf8))))
    }

    /// The response a client sends to AuthenticationMD5Password, computed from the stored form.
    public static func response(stored: String, salt: [UInt8]) -> String {
        let inner = Array(stored.dropFirst(3).utf8)
        return "md5" + hex(Array(Insecure.MD5.hash(data: inner + salt)))
    }

    /// The response a client sends, computed from the password.
    public static func response(password: String, user: String, salt: [UInt8]) -> String {
        response(stored: stored(password: password, user: user), salt: salt)
    }

    /// True when `text` has the stored form (`md5` and 32 lowercase hex digits).
    public static func isStoredForm(_ text: String) -> Bool {
        // ASCII only: Character.isHexDigit also accepts fullwidth digits, which PostgreSQL does not.
        text.utf8.count == 35 && text.hasPrefix("md5")
            && text.utf8.dropFirst(3).allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef")
        var s = ""
        s.reserveCapacity(bytes.count * 2)
        for b in bytes {
            s.append(digits[Int(b >> 4)])
            s.append(digits[Int(b & 0xf)])
        }
        return s
    }
}
