import CMnl
import Glibc
import State

/// Why an address could not be claimed, released or listed, worded for the operator.
public enum VIPError: Error, Equatable, CustomStringConvertible {
    case noSuchInterface(String)
    case permissionDenied(operation: String, interface: String)
    case netlink(operation: String, interface: String, errno: Int32)
    case announce(interface: String, message: String)

    public var description: String {
        switch self {
        case let .noSuchInterface(i):
            "no network interface \"\(i)\" (see `ip link`; vip.interface in the configuration)"
        case let .permissionDenied(op, i):
            "\(op) on \(i) was refused: pgchorusd needs the CAP_NET_ADMIN capability (and CAP_NET_RAW to announce); run it as root or grant them (AmbientCapabilities= in the systemd unit)"
        case let .netlink(op, i, e):
            "\(op) on \(i) failed: \(String(cString: strerror(e))) (errno \(e))"
        case let .announce(i, m):
            "cannot announce on \(i): \(m)"
        }
    }
}

/// One address of an interface, as netlink reports it.
public struct InterfaceAddress: Sendable, Equatable {
    public var address: VirtualAddress
    public var interfaceIndex: Int32
    /// The address-protocol tag (`IFA_PROTO`); pgchorus marks its VIPs with `AddressTable.protocolTag`.
    public var protocolTag: UInt8
    public var label: String
}

/// Adds, removes and lists interface addresses with rtnetlink through libmnl.
///
/// Every call opens its own netlink socket and waits for the kernel's ACK, so it is safe from any
/// thread. The VIP is added with the `IFA_PROTO` tag `protocolTag` (and, for IPv4, the label
/// `<interface>:pgc`), so a node finds the VIPs it left behind after a crash.
public enum AddressTable {
    /// `IFA_PROTO` value of addresses pgchorus adds ('p').
    public static let protocolTag: UInt8 = 0x70

    public static func interfaceIndex(_ name: String) throws(VIPError) -> Int32 {
        let index = if_nametoindex(name)
        guard index != 0 else { throw .noSuchInterface(name) }
        return Int32(index)
    }

    /// Adds the address; true when added, false when it was already there (EEXIST is success).
    ///
    /// With a `lifetime` (whole seconds, the kernel's unit) the kernel itself removes the address
    /// that long after it was added or last `renew`ed, whatever happens to this process (valid and
    /// preferred lifetime alike, IPv4 and IPv6). Without one it stays until removed.
    @discardableResult
    public static func add(_ address: VirtualAddress, interface: String, lifetime: UInt32? = nil) throws(VIPError) -> Bool {
        let index = try interfaceIndex(interface)
        let e = request(type: UInt16(RTM_NEWADDR), flags: Int32(NLM_F_CREATE | NLM_F_EXCL), address: address, index: index, interface: interface,
                        lifetime: lifetime)
        switch e {
        case 0: return true
        case EEXIST: return false
        default: throw error(e, "adding \(address)", interface)
        }
    }

    /// Restarts the address's lifetime (`NLM_F_REPLACE`). The kernel re-creates an address that is
    /// gone, so callers renew only while they may hold it.
    public static func renew(_ address: VirtualAddress, interface: String, lifetime: UInt32) throws(VIPError) {
        let index = try interfaceIndex(interface)
        let e = request(type: UInt16(RTM_NEWADDR), flags: Int32(NLM_F_CREATE | NLM_F_REPLACE), address: address, index: index, interface: interface,
                        lifetime: lifetime)
        guard e == 0 else { throw error(e, "renewing \(address)", interface) }
    }

    /// Removes the address; true when removed, false when it was not there (EADDRNOTAVAIL is success).
    @discardableResult
    public static func remove(_ address: VirtualAddress, interface: String) throws(VIPError) -> Bool {
        let index = try interfaceIndex(interface)
        let e = request(type: UInt16(RTM_DELADDR), flags: 0, address: address, index: index, interface: interface)
        switch e {
        case 0: return true
        case EADDRNOTAVAIL, ENOENT: return false
        default: throw error(e, "removing \(address)", interface)
        }
    }

    /// The addresses of one interface.
    public static func list(interface: String) throws(VIPError) -> [InterfaceAddress] {
        let index = try interfaceIndex(interface)
        guard let nl = mnl_socket_open(NETLINK_ROUTE) else { throw error(cmnl_errno(), "opening a netlink socket", interface) }
        defer { mnl_socket_close(nl) }
        guard mnl_socket_bind(nl, 0, pid_t(bitPattern: cmnl_socket_autopid())) >= 0 else { throw error(cmnl_errno(), "binding a netlink socket", interface) }
        let portID = mnl_socket_get_portid(nl)
        var buffer = [UInt8](repeating: 0, count: Int(cmnl_socket_buffer_size()))
        let seq = UInt32(truncatingIfNeeded: time(nil))
        let sent = buffer.withUnsafeMutableBytes { raw -> Int in
            let nlh = mnl_nlmsg_put_header(raw.baseAddress)!
            nlh.pointee.nlmsg_type = UInt16(RTM_GETADDR)
            nlh.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_DUMP)
            nlh.pointee.nlmsg_seq = seq
            let ifa = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<ifaddrmsg>.size)!.assumingMemoryBound(to: ifaddrmsg.self)
            ifa.pointee.ifa_family = UInt8(AF_UNSPEC)
            return mnl_socket_sendto(nl, nlh, Int(nlh.pointee.nlmsg_len))
        }
        guard sent >= 0 else { throw error(cmnl_errno(), "listing addresses", interface) }
        var out: [InterfaceAddress] = []
        for _ in 0..<10_000 {
            let n = buffer.withUnsafeMutableBytes { mnl_socket_recvfrom(nl, $0.baseAddress, $0.count) }
            guard n > 0 else { throw error(cmnl_errno(), "listing addresses", interface) }
            let (addresses, done, failure) = parse(buffer, count: n, seq: seq, portID: portID)
            if let failure { throw error(failure, "listing addresses", interface) }
            out += addresses.filter { $0.interfaceIndex == index }
            if done { break }
        }
        return out
    }

    /// The VIPs pgchorus left on the interface (tagged with `protocolTag`).
    public static func leftovers(interface: String) throws(VIPError) -> [VirtualAddress] {
        try list(interface: interface).filter { $0.protocolTag == protocolTag }.map(\.address)
    }

    // MARK: netlink plumbing

    /// Walks the messages of one receive: addresses found, whether the dump ended, an error code.
    static func parse(_ buffer: [UInt8], count: Int, seq: UInt32?, portID: UInt32?) -> ([InterfaceAddress], Bool, Int32?) {
        var out: [InterfaceAddress] = []
        var done = false
        var failure: Int32?
        buffer.withUnsafeBytes { raw in
            var offset = 0
            while offset + MemoryLayout<nlmsghdr>.size <= count {
                let nlh = (raw.baseAddress! + offset).assumingMemoryBound(to: nlmsghdr.self)
                let length = Int(nlh.pointee.nlmsg_len)
                guard length >= MemoryLayout<nlmsghdr>.size, offset + length <= count else { break }
                switch Int32(nlh.pointee.nlmsg_type) {
                case NLMSG_DONE:
                    done = true
                case NLMSG_ERROR:
                    let e = mnl_nlmsg_get_payload(nlh)!.assumingMemoryBound(to: nlmsgerr.self).pointee.error
                    if e != 0 { failure = -e }
                    done = true
                default:
                    var a = cmnl_address()
                    if cmnl_parse_address(nlh, &a) == 1, a.has_address == 1, let converted = convert(a) { out.append(converted) }
                }
                offset += (length + 3) & ~3
            }
        }
        return (out, done, failure)
    }

    static func convert(_ a: cmnl_address) -> InterfaceAddress? {
        let size = a.family == AF_INET6 ? 16 : (a.family == AF_INET ? 4 : 0)
        guard size > 0 else { return nil }
        let bytes = withUnsafeBytes(of: a.address) { Array($0.prefix(size)) }
        let label = withUnsafeBytes(of: a.label) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
        return InterfaceAddress(address: VirtualAddress(ip: IPAddressBytes(bytes: bytes), prefixLength: Int(a.prefix_length)),
                                interfaceIndex: a.index, protocolTag: a.protocol, label: label)
    }

    /// Sends one RTM_NEWADDR/RTM_DELADDR with ACK; returns 0 or the kernel's errno.
    private static func request(type: UInt16, flags: Int32, address: VirtualAddress, index: Int32, interface: String,
                                lifetime: UInt32? = nil) -> Int32 {
        guard let nl = mnl_socket_open(NETLINK_ROUTE) else { return cmnl_errno() }
        defer { mnl_socket_close(nl) }
        guard mnl_socket_bind(nl, 0, pid_t(bitPattern: cmnl_socket_autopid())) >= 0 else { return cmnl_errno() }
        let portID = mnl_socket_get_portid(nl)
        var buffer = [UInt8](repeating: 0, count: Int(cmnl_socket_buffer_size()))
        let seq = UInt32(truncatingIfNeeded: time(nil))
        let sent = buffer.withUnsafeMutableBytes { raw -> Int in
            let nlh = mnl_nlmsg_put_header(raw.baseAddress)!
            nlh.pointee.nlmsg_type = type
            nlh.pointee.nlmsg_flags = UInt16(Int32(NLM_F_REQUEST | NLM_F_ACK) | flags)
            nlh.pointee.nlmsg_seq = seq
            let ifa = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<ifaddrmsg>.size)!.assumingMemoryBound(to: ifaddrmsg.self)
            ifa.pointee.ifa_family = UInt8(address.isIPv6 ? AF_INET6 : AF_INET)
            ifa.pointee.ifa_prefixlen = UInt8(address.prefixLength)
            ifa.pointee.ifa_scope = UInt8(RT_SCOPE_UNIVERSE.rawValue)
            ifa.pointee.ifa_index = UInt32(index)
            address.ip.bytes.withUnsafeBytes { ip in
                mnl_attr_put(nlh, UInt16(IFA_LOCAL), ip.count, ip.baseAddress)
                mnl_attr_put(nlh, UInt16(IFA_ADDRESS), ip.count, ip.baseAddress)
            }
            if type == UInt16(RTM_NEWADDR) {
                mnl_attr_put_u8(nlh, UInt16(IFA_PROTO), protocolTag)
                if let lifetime {
                    var info = ifa_cacheinfo(ifa_prefered: lifetime, ifa_valid: lifetime, cstamp: 0, tstamp: 0)
                    withUnsafeBytes(of: &info) { mnl_attr_put(nlh, UInt16(IFA_CACHEINFO), $0.count, $0.baseAddress) }
                }
                if address.isIPv6 {
                    // No duplicate address detection: the VIP must answer at once.
                    ifa.pointee.ifa_flags = UInt8(IFA_F_NODAD)
                    mnl_attr_put_u32(nlh, UInt16(IFA_FLAGS), UInt32(IFA_F_NODAD))
                } else {
                    let label = String("\(interface):pgc".suffix(Int(IFNAMSIZ) - 1))
                    if label.hasPrefix(interface) { mnl_attr_put_strz(nlh, UInt16(IFA_LABEL), label) }
                }
            }
            return mnl_socket_sendto(nl, nlh, Int(nlh.pointee.nlmsg_len))
        }
        guard sent >= 0 else { return cmnl_errno() }
        let n = buffer.withUnsafeMutableBytes { mnl_socket_recvfrom(nl, $0.baseAddress, $0.count) }
        guard n > 0 else { return cmnl_errno() }
        let (_, _, failure) = parse(buffer, count: n, seq: seq, portID: portID)
        return failure ?? 0
    }

    private static func error(_ e: Int32, _ operation: String, _ interface: String) -> VIPError {
        switch e {
        case EPERM, EACCES: .permissionDenied(operation: operation, interface: interface)
        case ENODEV: .noSuchInterface(interface)
        default: .netlink(operation: operation, interface: interface, errno: e)
        }
    }
}
