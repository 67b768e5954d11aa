import Glibc
import NIOCore
import Wire

/// A blocking protocol-level client for tests that must send exact bytes (pipelines, malformed
/// input, protocol negotiation) and see every message the proxy answers with.
public final class RawPostgresClient: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }

    let fd: Int32
    var inbound = ByteBuffer()
    var decoder = PostgresFrameDecoder(maximumMessageSize: 1 << 26)

    /// Connects to host:port (127.0.0.1 unless told); every read, and every send the server does not
    /// take, waits at most `timeoutSeconds` (a bound for a hang, not a timing: in-process proxies share
    /// two event loops with every test of a busy run, and an answer can take seconds).
    public init(port: Int, host: String = "127.0.0.1", timeoutSeconds: Int = 60) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket() failed") }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr(host)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw Failure("connect to \(host):\(port) failed: errno \(errno)")
        }
    }

    deinit { close(fd) }

    /// Ends the connection at once, without a Terminate, as a client that dies would.
    public func disconnect() { shutdown(fd, Int32(SHUT_RDWR)) }

    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure("send failed or timed out: errno \(errno)") }
            offset += n
        }
    }

    public func send(_ buffer: ByteBuffer) throws { try send(Array(buffer.readableBytesView)) }

    public func send(_ messages: FrontendMessage...) throws { try send(messages) }

    public func send(_ messages: [FrontendMessage]) throws {
        var b = ByteBuffer()
        for m in messages { m.encode(into: &b) }
        try send(b)
    }

    /// Reads raw bytes (for the one-byte SSL answer); nil at end of stream.
    public func readBytes(_ count: Int) throws -> [UInt8]? {
        while inbound.readableBytes < count {
            guard try fill() else { return nil }
        }
        return inbound.readBytes(length: count)
    }

    /// Bytes the server has sent that were not read yet (buffered here or in the socket), without waiting.
    public func bytesWaiting() -> Int {
        var pending: Int32 = 0
        _ = ioctl(fd, UInt(FIONREAD), &pending)
        return inbound.readableBytes + Int(pending)
    }

    /// Fills the buffer from the socket; false at end of stream.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
        if n == 0 { return false }
        guard n > 0 else { throw Failure("recv failed or timed out: errno \(errno)") }
        inbound.writeBytes(chunk[0..<n])
        return true
    }

    /// The next message; nil when the server closed the connection.
    public func read() throws -> BackendMessage? {
        while true {
            if let frame = try decoder.decode(buffer: &inbound) {
                return try BackendMessage(frame: frame)
            }
            guard try fill() else { return nil }
        }
    }

    /// Messages up to and including the next ReadyForQuery (or until the connection closes).
    public func readUntilReady() throws -> [BackendMessage] {
        var out: [BackendMessage] = []
        for _ in 0..<100_000 {
            guard let m = try read() else { return out }
            out.append(m)
            if case .readyForQuery = m { return out }
        }
        throw Failure("no ReadyForQuery within 100000 messages")
    }

    /// Every message until the server closes the connection.
    public func readUntilClosed() throws -> [BackendMessage] {
        var out: [BackendMessage] = []
        for _ in 0..<100_000 {
            guard let m = try read() else { return out }
            out.append(m)
        }
        throw Failure("connection still open after 100000 messages")
    }

    /// Sends one simple Query and reads up to its ReadyForQuery.
    public func query(_ sql: String) throws -> [BackendMessage] {
        try send(.query(sql))
        return try readUntilReady()
    }

    /// Starts `COPY … FROM STDIN` — a simple Query, or (`extended`) Parse/Bind/Execute/Sync as
    /// tokio-postgres and libpq's `PQexecParams` send it — and reads up to its CopyInResponse; false
    /// when another message came first. (An extended COPY ends with CopyDone and a second Sync.)
    public func startCopy(_ sql: String, extended: Bool) throws -> Bool {
        if extended {
            try send([.parse(.init(name: "", query: sql, parameterTypes: [])),
                      .bind(.init(portal: "", statement: "", parameterFormats: [], parameters: [], resultFormats: [])),
                      .execute(portal: "", maxRows: 0), .sync])
            guard try read() == .parseComplete, try read() == .bindComplete else { return false }
        } else {
            try send(.query(sql))
        }
        if case .copyInResponse? = try read() { return true }
        return false
    }

    /// Sends a StartupMessage for a trust login and reads up to the first ReadyForQuery.
    public func startup(user: String = "postgres", database: String = "postgres", extra: [(String, String)] = [],
                        protocolMinor: Int = 0) throws -> [BackendMessage] {
        var b = ByteBuffer()
        StartupMessage(protocolMajor: 3, protocolMinor: protocolMinor,
                       parameters: [("user", user), ("database", database)] + extra.map { (name: $0.0, value: $0.1) }).encode(into: &b)
        try send(b)
        let reply = try readUntilReady()
        for case let .backendKeyData(pid, key) in reply { keyData = (pid, key) }
        return reply
    }

    /// The process id and secret key the server gave at `startup` (for a CancelRequest).
    public private(set) var keyData: (processID: Int32, secretKey: [UInt8])?

    /// Sends a CancelRequest for this client's session on a connection of its own to `port`, and waits
    /// for the server to close it.
    public func cancel(port: Int, host: String = "127.0.0.1") throws {
        guard let keyData else { return }
        let canceller = try RawPostgresClient(port: port, host: host)
        var b = ByteBuffer()
        CancelRequest(processID: keyData.processID, secretKey: keyData.secretKey).encode(into: &b)
        try canceller.send(b)
        _ = try canceller.readUntilClosed()
    }
}

extension BackendMessage {
    /// The SQLSTATE of an ErrorResponse, nil otherwise.
    public var errorState: String? {
        if case let .errorResponse(f) = self { return f.sqlState }
        return nil
    }

    public var isReadyForQuery: Bool {
        if case .readyForQuery = self { return true }
        return false
    }
}

extension Array where Element == BackendMessage {
    /// The first column of the first DataRow, as text (nil: no row, or NULL).
    public var firstValue: String? {
        for case let .dataRow(columns) in self { return columns.first.flatMap { $0.map { String(buffer: $0) } } }
        return nil
    }

    /// The fields of the first ErrorResponse, if any.
    public var firstError: ErrorFields? {
        for case let .errorResponse(fields) in self { return fields }
        return nil
    }
}
