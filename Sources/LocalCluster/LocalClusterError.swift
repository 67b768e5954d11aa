/// A failure to find, start, stop or query a local PostgreSQL server, worded so a person can act on it.
public struct LocalClusterError: Error, CustomStringConvertible, Sendable {
    /// What kind of step failed, so callers can react without parsing the message.
    public enum Kind: Sendable, Hashable {
        /// The PostgreSQL programs (or `runuser`, or the `postgres` user) are missing.
        case binariesNotFound
        /// `PostgresServerOptions` hold a value the server cannot use.
        case invalidOptions
        /// A scratch or data directory could not be created, owned or removed.
        case directoryFailed
        /// A helper program could not be run or exited with an error.
        case commandFailed
        /// A helper program did not finish within its time limit and was killed.
        case commandTimedOut
        /// `initdb` failed.
        case initFailed
        /// `pg_ctl start` failed; the message holds the tail of the server log.
        case startFailed
        /// `pg_ctl stop` failed.
        case stopFailed
        /// `psql` reported an error (connection refused, authentication, SQL error).
        case queryFailed
        /// The server was already removed with `remove()`.
        case serverRemoved
    }

    /// What kind of step failed.
    public let kind: Kind
    /// The full explanation, including program output or log lines where they help.
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
