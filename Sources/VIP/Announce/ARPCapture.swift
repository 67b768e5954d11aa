import CPcap
import Glibc

/// Captures ARP frames on an interface with libpcap (100 ms read timeout), to see another machine
/// claim the VIP. Used from one thread.
final class ARPCapture {
    private let handle: OpaquePointer

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
        handle = p
    }

    deinit { pcap_close(handle) }

    enum Result {
        case claim((mac: [UInt8], ip: [UInt8]))
        case nothing
        case failed
    }

    /// The next ARP claim seen; `.nothing` after the read timeout; `.failed` when the capture broke.
    func next() -> Result {
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        let r = pcap_next_ex(handle, &header, &data)
        if r < 0 { return .failed }
        guard r == 1, let header, let data else { return .nothing }
        let frame = Array(UnsafeBufferPointer(start: data, count: Int(header.pointee.caplen)))
        return AnnouncementFrames.arpClaim(frame).map { .claim($0) } ?? .nothing
    }
}
