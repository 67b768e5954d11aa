import CMnl
import Glibc

/// Listens to the kernel's address notifications (RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR) for
/// one interface. Blocking, with a 200 ms receive timeout so its thread can stop.
final class AddressWatcher {
    private let socket: OpaquePointer
    private let index: Int32
    private var buffer = [UInt8](repeating: 0, count: Int(cmnl_socket_buffer_size()))

    init(interface: String) throws(VIPError) {
        index = try AddressTable.interfaceIndex(interface)
        guard let nl = mnl_socket_open(NETLINK_ROUTE) else { throw .netlink(operation: "opening a netlink socket", interface: interface, errno: cmnl_errno()) }
        let groups = UInt32(RTMGRP_IPV4_IFADDR) | UInt32(RTMGRP_IPV6_IFADDR)
        guard mnl_socket_bind(nl, groups, pid_t(bitPattern: cmnl_socket_autopid())) >= 0 else {
            let e = cmnl_errno()
            mnl_socket_close(nl)
            throw .netlink(operation: "subscribing to address changes", interface: interface, errno: e)
        }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        socket = nl
    }

    deinit { mnl_socket_close(socket) }

    /// Addresses removed from the interface since the last call (empty after the timeout).
    func nextRemovals() -> [VirtualAddress] {
        let n = buffer.withUnsafeMutableBytes { mnl_socket_recvfrom(socket, $0.baseAddress, $0.count) }
        guard n > 0 else { return [] }
        var out: [VirtualAddress] = []
        buffer.withUnsafeBytes { raw in
            var offset = 0
            while offset + MemoryLayout<nlmsghdr>.size <= n {
                let nlh = (raw.baseAddress! + offset).assumingMemoryBound(to: nlmsghdr.self)
                let length = Int(nlh.pointee.nlmsg_len)
                guard length >= MemoryLayout<nlmsghdr>.size, offset + length <= n else { break }
                var a = cmnl_address()
                if cmnl_parse_address(nlh, &a) == 1, a.type == Int32(RTM_DELADDR), a.index == index, a.has_address == 1,
                   let converted = AddressTable.convert(a) {
                    out.append(converted.address)
                }
                offset += (length + 3) & ~3
            }
        }
        return out
    }
}
