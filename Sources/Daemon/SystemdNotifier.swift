#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Tells systemd (a `Type=notify` unit) that the node is ready or stopping: one datagram to
/// `$NOTIFY_SOCKET`. Outside systemd (no variable) it does nothing.
///
/// The protocol is a single `KEY=VALUE` datagram on a Unix socket (a path, or an abstract name
/// written with a leading `@`); libsystemd's `sd_notify` does the same.
struct SystemdNotifier: Sendable {
    let socketPath: String?

    init(environment socketPath: String? = getenv("NOTIFY_SOCKET").map { String(cString: $0) }) {
        self.socketPath = socketPath.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Sends `state` (e.g. `READY=1\nSTATUS=…`). Returns an error text when systemd asked for a
    /// notification and it could not be sent; nil when sent or not under systemd.
    @discardableResult
    func notify(_ state: String) -> String? {
        guard let socketPath else { return nil }
        var path = Array(socketPath.utf8)
        if path.first == UInt8(ascii: "@") { path[0] = 0 }  // abstract namespace
        var address = sockaddr_un()
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else { return "NOTIFY_SOCKET is too long (\(path.count) bytes)" }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return "cannot open a socket for NOTIFY_SOCKET: errno \(errno)" }
        defer { close(fd) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
        let bytes = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sa, length) }
            }
        }
        return sent == bytes.count ? nil : "cannot notify systemd at \(socketPath): errno \(errno)"
    }
}
