import CPcap
import Glibc

/// Captures ARP frames on an interface with libpcap, to see another machine claim the VIP.
/// Used from one thread.
///
/// The handle is non-blocking and `next()` waits on its descriptor with `poll` itself: on Linux
/// (TPACKET_V3) pcap's read timeout only starts once a packet arrived, so a blocking read on a quiet
/// segment never returns, and the node could not stop.
final class ARPCapture {
    private let handle: OpaquePointer
    private let descriptor: Int32

    init(interface: String) throws(VIPError) {
        var errbuf = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        guard let p = pcap_create(interface, &errbuf) else { throw .announce(interface: interface, message: String(cString: errbuf)) }
        pcap_set_snaplen(p, 64)
        pcap_set_timeout(p, 100)
        pcap_set_immediate_mode(p, 1)
        guard pcap_activate(p) >= 0 else {
            let message = String(cString: pcap_geterr(p))
            pcap_close(p)
            throw .announce(interface: interface, message: message)
        }
        var program = bpf_program()
        if pcap_compile(p, &program, "arp", 1, PCAP_NETMASK_UNKNOWN) == 0 {
            pcap_setfilter(p, &program)
            pcap_freecode(&program)
        }
        pcap_setdirection(p, PCAP_D_IN)
        let fd = pcap_get_selectable_fd(p)
        guard fd >= 0, pcap_setnonblock(p, 1, &errbuf) == 0 else {
            let message = fd < 0 ? "no selectable descriptor" : String(cString: errbuf)
            pcap_close(p)
            throw .announce(interface: interface, message: message)
        }
        handle = p
        descriptor = fd
    }

    deinit { pcap_close(handle) }

    enum Result {
        case claim((mac: [UInt8], ip: [UInt8]))
        case nothing
        case failed
    }

    /// The next ARP claim seen; `.nothing` after `timeoutMilliseconds` without one; `.failed` when the
    /// capture broke.
    func next(timeoutMilliseconds: Int32 = 100) -> Result {
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        var r = pcap_next_ex(handle, &header, &data)
        if r == 0 {
            var pending = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pending, 1, timeoutMilliseconds)
            if ready < 0 && errno != EINTR { return .failed }
            guard ready > 0 else { return .nothing }
            if pending.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 { return .failed }
            r = pcap_next_ex(handle, &header, &data)
        }
        if r < 0 { return .failed }
        guard r == 1, let header, let data else { return .nothing }
        let frame = Array(UnsafeBufferPointer(start: data, count: Int(header.pointee.caplen)))
        return AnnouncementFrames.arpClaim(frame).map { .claim($0) } ?? .nothing
    }
}
