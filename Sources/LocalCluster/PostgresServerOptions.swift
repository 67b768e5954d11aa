/// How to set up one local PostgreSQL server started by `LocalPostgresServer.start`.
public struct PostgresServerOptions: Sendable, Hashable {
    /// Name used in logs, errors and the scratch directory name, e.g. `db1`.
    public var name: String
    /// TCP port on 127.0.0.1; 0 picks a free one (and retries on another if it is taken meanwhile).
    public var port: Int
    /// `max_prepared_transactions`; pgchorus' commit vote needs it above 0.
    public var maxPreparedTransactions: Int
    /// `max_connections`.
    public var maxConnections: Int
    /// Further `postgresql.conf` settings, written last (so they win) and always single-quoted.
    /// `port`, `listen_addresses` and `unix_socket_directories` are managed here and refused.
    public var extraSettings: [String: String]
    /// pg_hba method for TCP connections from 127.0.0.1/32 and ::1/128: `trust`, `scram-sha-256`,
    /// `md5`, `password` or `reject`. Unix-socket connections always use `trust`, so the harness
    /// can reach the server as superuser whatever the TCP rules say.
    public var authMethod: String
    /// Password of the `postgres` superuser, set through `initdb --pwfile`; required when
    /// `authMethod` asks for a password.
    public var superuserPassword: String?

    public init(
        name: String = "db",
        port: Int = 0,
        maxPreparedTransactions: Int = 10,
        maxConnections: Int = 100,
        extraSettings: [String: String] = [:],
        authMethod: String = "trust",
        superuserPassword: String? = nil
    ) {
        self.name = name
        self.port = port
        self.maxPreparedTransactions = maxPreparedTransactions
        self.maxConnections = maxConnections
        self.extraSettings = extraSettings
        self.authMethod = authMethod
        self.superuserPassword = superuserPassword
    }

    /// The pg_hba methods that make sense for a TCP rule on a local test or demo server.
    static let supportedAuthMethods: Set<String> = ["trust", "reject", "md5", "password", "scram-sha-256"]

    /// Methods for which initdb demands a superuser password.
    static let passwordAuthMethods: Set<String> = ["md5", "password", "scram-sha-256"]

    /// Settings the server manages itself; overriding them would break how it is reached.
    static let managedSettings: Set<String> = ["port", "listen_addresses", "unix_socket_directories"]

    private static func isSettingNameCharacter(_ c: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c) || c == "_" || c == "."
    }

    /// Throws an `.invalidOptions` error naming the server and the offending value.
    func validate() throws {
        func invalid(_ text: String) -> LocalClusterError {
            LocalClusterError(.invalidOptions, "PostgreSQL server \"\(name)\": \(text)")
        }
        if name.isEmpty { throw LocalClusterError(.invalidOptions, "PostgreSQL server options: name must not be empty") }
        if !(0...65535).contains(port) { throw invalid("port \(port) is outside 0...65535 (0 picks a free port)") }
        if maxConnections < 1 { throw invalid("maxConnections must be at least 1, got \(maxConnections)") }
        if maxPreparedTransactions < 0 { throw invalid("maxPreparedTransactions must be 0 or more, got \(maxPreparedTransactions)") }
        if !Self.supportedAuthMethods.contains(authMethod) {
            throw invalid("authMethod \"\(authMethod)\" is not one of \(Self.supportedAuthMethods.sorted().joined(separator: ", "))")
        }
        if Self.passwordAuthMethods.contains(authMethod), superuserPassword == nil {
            throw invalid("authMethod \"\(authMethod)\" needs a superuserPassword, or the postgres user could not log in over TCP")
        }
        if let password = superuserPassword, password.isEmpty || password.contains("\n") || password.contains("\r") {
            throw invalid("superuserPassword must be non-empty and on one line")
        }
        for key in extraSettings.keys.sorted() {
            if Self.managedSettings.contains(key.lowercased()) {
                throw invalid("extraSettings may not set \"\(key)\"; it is managed by LocalCluster (use options.port for the port)")
            }
            if key.isEmpty || !key.unicodeScalars.allSatisfy(Self.isSettingNameCharacter) {
                throw invalid("extraSettings key \"\(key)\" is not a valid setting name (letters, digits, _ and . only)")
            }
        }
    }
}

extension PostgresServerOptions: CustomStringConvertible {
    /// Like the synthesized form, but never shows the password.
    public var description: String {
        "PostgresServerOptions(name: \(name), port: \(port), maxPreparedTransactions: \(maxPreparedTransactions), "
            + "maxConnections: \(maxConnections), authMethod: \(authMethod), "
            + "superuserPassword: \(superuserPassword == nil ? "none" : "<redacted>"), extraSettings: \(extraSettings.sorted { $0.key < $1.key }))"
    }
}
