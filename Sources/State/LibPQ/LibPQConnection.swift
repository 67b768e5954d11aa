import CLibPQ
#if canImport(Glibc)
import Glibc
#endif

/// A blocking libpq connection for pgchorus' own housekeeping (in-doubt resolution, health checks).
///
/// Every call blocks: run it on a dedicated thread (an `NIOThreadPool`), never on Swift's
/// cooperative pool. One connection belongs to one thread at a time.
public final class LibPQConnection {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
        public var sqlState: String?

        public init(description: String, sqlState: String? = nil) {
            self.description = description; self.sqlState = sqlState
        }
    }

    private let handle: OpaquePointer
    public let target: String

    /// Connects with a libpq connection string; `target` names the backend in errors.
    public init(_ conninfo: String, target: String) throws {
        self.target = target
        guard let h = PQconnectdb(conninfo) else { throw Failure(description: "\(target): out of memory in libpq") }
        guard PQstatus(h) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(h)).trimmingWhitespace()
            PQfinish(h)
            throw Failure(description: "cannot connect to \(target): \(message)")
        }
        handle = h
        // Notices (`… does not exist, skipping`) are not for the node's stderr.
        PQsetNoticeProcessor(h, { _, _ in }, nil)
    }

    deinit { PQfinish(handle) }

    /// Runs one statement with text parameters and returns the rows as text (NULL as nil).
    @discardableResult
    public func query(_ sql: String, _ parameters: [String] = []) throws -> [[String?]] {
        let cStrings = parameters.map { strdupSafe($0) }
        defer { cStrings.forEach { free($0) } }
        var pointers: [UnsafePointer<CChar>?] = cStrings.map { UnsafePointer($0) }
        guard let result = PQexecParams(handle, sql, Int32(parameters.count), nil, &pointers, nil, nil, 0) else {
            throw connectionFailure()
        }
        defer { PQclear(result) }
        return try rows(of: result)
    }

    /// Runs SQL with the simple query protocol (several statements; the only protocol a replication
    /// connection speaks) and returns the rows of the last result.
    @discardableResult
    public func simpleQuery(_ sql: String) throws -> [[String?]] {
        guard let result = PQexec(handle, sql) else {
            throw connectionFailure()
        }
        defer { PQclear(result) }
        return try rows(of: result)
    }

    /// Like `simpleQuery`, but gives up after `timeout` seconds (the connection is then unusable; drop it).
    @discardableResult
    public func simpleQuery(_ sql: String, timeout: Double) throws -> [[String?]] {
        guard PQsendQuery(handle, sql) == 1 else {
            throw connectionFailure()
        }
        return try results(timeout: timeout)
    }

    /// Like `query`, but gives up after `timeout` seconds (a frozen server answers nothing, and a
    /// blocking call would hang its thread for good): the connection is then unusable; drop it.
    public func query(_ sql: String, _ parameters: [String], timeout: Double) throws -> [[String?]] {
        let cStrings = parameters.map { strdupSafe($0) }
        defer { cStrings.forEach { free($0) } }
        var pointers: [UnsafePointer<CChar>?] = cStrings.map { UnsafePointer($0) }
        guard PQsendQueryParams(handle, sql, Int32(parameters.count), nil, &pointers, nil, nil, 0) == 1 else {
            throw connectionFailure()
        }
        return try results(timeout: timeout)
    }

    /// Statements prepared on this connection (`preparedQuery`), by name.
    private var prepared: Set<String> = []

    /// Like `query(_:_:timeout:)` for a statement run again and again (a probe every fraction of a
    /// millisecond): prepared once on this connection as `name`, then only bound and executed, so the
    /// server parses and plans it once (a view over catalogs costs it several times the run itself).
    public func preparedQuery(_ name: String, _ sql: String, _ parameters: [String], timeout: Double) throws -> [[String?]] {
        try sendPrepared(name, sql, parameters, timeout: timeout)
        return try results(timeout: timeout)
    }

    /// The first half of `preparedQuery`: sends the execution and returns at once (preparing first,
    /// and waiting for that, the first time), so several servers can be asked at the same time;
    /// `results(timeout:)` collects the answer.
    public func sendPrepared(_ name: String, _ sql: String, _ parameters: [String], timeout: Double) throws {
        if !prepared.contains(name) {
            guard PQsendPrepare(handle, name, sql, Int32(parameters.count), nil) == 1 else {
                throw connectionFailure()
            }
            _ = try results(timeout: timeout)
            prepared.insert(name)
        }
        let cStrings = parameters.map { strdupSafe($0) }
        defer { cStrings.forEach { free($0) } }
        var pointers: [UnsafePointer<CChar>?] = cStrings.map { UnsafePointer($0) }
        guard PQsendQueryPrepared(handle, name, Int32(parameters.count), &pointers, nil, nil, 0) == 1 else {
            throw connectionFailure()
        }
    }

    /// Whether the server has closed this idle connection (terminated it, or restarted): reads what
    /// has arrived without waiting. Only for a connection with no statement in flight.
    public func closedByServer() -> Bool {
        var fd = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
        guard poll(&fd, 1, 0) > 0 else { return PQstatus(handle) != CONNECTION_OK }
        // A terminated session sends its FATAL, then end of file: reading both leaves the connection bad.
        for _ in 0..<4 where PQconsumeInput(handle) == 1 && PQstatus(handle) == CONNECTION_OK {
            while PQisBusy(handle) == 0, let result = PQgetResult(handle) { PQclear(result) }
            fd.revents = 0
            guard poll(&fd, 1, 0) > 0 else { return false }
        }
        return true
    }

    /// The connection's last error, naming the backend.
    private func connectionFailure() -> Failure {
        Failure(description: "\(target): \(String(cString: PQerrorMessage(handle)).trimmingWhitespace())")
    }

    /// The rows of the statement sent (`sendPrepared`, or by the calls here that time out), waiting at
    /// most `timeout` seconds (the connection is then unusable; drop it).
    public func results(timeout: Double) throws -> [[String?]] {
        let deadline = Self.monotonicSeconds() + timeout
        var rows: [[String?]]?
        var failure: Failure?
        for _ in 0..<100_000 {
            while PQisBusy(handle) == 0 {
                guard let result = PQgetResult(handle) else {
                    if let failure { throw failure }
                    return rows ?? []
                }
                defer { PQclear(result) }
                do { rows = try self.rows(of: result) } catch let f as Failure { failure = f }
            }
            let left = deadline - Self.monotonicSeconds()
            guard left > 0 else { throw Failure(description: "\(target): no answer within \(timeout) s") }
            var fd = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
            _ = poll(&fd, 1, Int32(max(1, left * 1000)))
            guard PQconsumeInput(handle) == 1 else {
                throw connectionFailure()
            }
        }
        throw Failure(description: "\(target): no answer within \(timeout) s")
    }

    private func rows(of result: OpaquePointer) throws -> [[String?]] {
        let status = PQresultStatus(result)
        guard status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK else {
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            throw Failure(description: "\(target): \(String(cString: PQresultErrorMessage(result)).trimmingWhitespace())", sqlState: state)
        }
        var rows: [[String?]] = []
        for r in 0..<PQntuples(result) {
            var row: [String?] = []
            for c in 0..<PQnfields(result) {
                row.append(PQgetisnull(result, r, c) == 1 ? nil : String(cString: PQgetvalue(result, r, c)))
            }
            rows.append(row)
        }
        return rows
    }

    private static func monotonicSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    /// The connection string of pgchorus' own sessions to a backend; `extra` is appended as is
    /// (keyword=value pairs already quoted).
    public static func conninfo(_ backend: Configuration.Backend, database: String, user: String, password: String?,
                                connectTimeout: Int, application: String, extra: String = "") -> String {
        var s = "host=\(quote(backend.host)) port=\(backend.port) dbname=\(quote(database)) user=\(quote(user)) "
            + "connect_timeout=\(connectTimeout) application_name=\(quote(application))"
        for (keyword, value) in backend.tls.libpqKeywords { s += " \(keyword)=\(quote(value))" }
        if !extra.isEmpty { s += " " + extra }
        if let password { s += " password=\(quote(password))" }
        return s
    }

    /// A SQL string literal of `value` (standard_conforming_strings: only `'` is doubled).
    public static func literal(_ value: String) -> String {
        "'" + value.replacingAll("'", with: "''") + "'"
    }

    /// Quotes a value for a libpq connection string.
    public static func quote(_ value: String) -> String {
        "'" + value.replacingAll("\\", with: "\\\\").replacingAll("'", with: "\\'") + "'"
    }
}

private func strdupSafe(_ s: String) -> UnsafeMutablePointer<CChar> {
    s.withCString { strdup($0)! }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return String(s)
    }

    func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for c in self { if c == target { out += replacement } else { out.append(c) } }
        return out
    }
}
