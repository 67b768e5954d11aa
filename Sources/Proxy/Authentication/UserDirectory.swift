import FoundationEssentials
import State
import Wire

/// One user's stored secret, in the forms PostgreSQL's `pg_authid.rolpassword` uses, or plain text.
public enum StoredSecret: Sendable, Equatable {
    case scram(SCRAMSecret)
    case md5(String)
    case plain(String)

    public init(parsing text: String) {
        if let s = SCRAMSecret(parsing: text) {
            self = .scram(s)
        } else if MD5Password.isStoredForm(text) {
            self = .md5(text)
        } else {
            self = .plain(text)
        }
    }
}

/// The users file: one `"name" "secret"` pair per line (pgbouncer's auth_file format),
/// `#` comments and blank lines allowed.
public struct UserDirectory: Sendable, Equatable {
    public var secrets: [String: StoredSecret]

    public init(secrets: [String: StoredSecret] = [:]) { self.secrets = secrets }

    public static func load(path: String) throws(ConfigurationError) -> UserDirectory {
        let text: String
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            text = String(decoding: data, as: UTF8.self)
        } catch {
            throw ConfigurationError(file: path, line: nil, key: nil, message: "cannot read the users file: \(error.localizedDescription)")
        }
        return try parse(text: text, file: path)
    }

    public static func parse(text: String, file: String) throws(ConfigurationError) -> UserDirectory {
        var secrets: [String: StoredSecret] = [:]
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var rest = Substring(raw)
            func skipSpace() { while let c = rest.first, c == " " || c == "\t" || c == "\r" { rest = rest.dropFirst() } }
            func quoted() -> String? {
                guard rest.first == "\"" else { return nil }
                rest = rest.dropFirst()
                var out = ""
                while let c = rest.first {
                    rest = rest.dropFirst()
                    if c == "\"" {
                        if rest.first == "\"" { out.append("\""); rest = rest.dropFirst(); continue } // "" escapes a quote
                        return out
                    }
                    out.append(c)
                }
                return nil
            }
            skipSpace()
            if rest.isEmpty || rest.first == "#" { continue }
            guard let name = quoted() else {
                throw ConfigurationError(file: file, line: n + 1, key: nil, message: "expected a quoted user name: \"name\" \"secret\"")
            }
            skipSpace()
            guard let secret = quoted() else {
                throw ConfigurationError(file: file, line: n + 1, key: name, message: "expected a quoted secret after the user name")
            }
            skipSpace()
            guard rest.isEmpty || rest.first == "#" else {
                throw ConfigurationError(file: file, line: n + 1, key: name, message: "unexpected text after the secret")
            }
            secrets[name] = StoredSecret(parsing: secret)
        }
        return UserDirectory(secrets: secrets)
    }
}
