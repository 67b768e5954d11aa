import CPcap
import FoundationEssentials
import Glibc
import Synchronization

/// Sends announcement frames on an interface with libpcap (`pcap_inject`), and reads the
/// interface's MAC address. Needs CAP_NET_RAW.
public final class PacketInjector: Sendable {
    // The pcap handle is used under the lock only.
    private let handle: Mutex<OpaquePointerBox>
    public let interface: String
    public let mac: [UInt8]

    struct OpaquePointerBox: @unchecked Sendable {
        // @unchecked: the pointer is only dereferenced by libpcap under the owning Mutex.
        var pointer: OpaquePointer?
    }

    public init(interface: String) throws(VIPError) {
        self.interface = interface
        self.mac = try Self.macAddress(of: interface)
        var errbuf = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        guard let p = pcap_create(interface, &errbuf) else {
            throw .announce(interface: interface, message: String(cString: errbuf))
        }
        pcap_set_immediate_mode(p, 1)
        pcap_set_snaplen(p, 128)
        let status = pcap_activate(p)
        if status < 0 {
            let message = String(cString: pcap_geterr(p))
            pcap_close(p)
            if status == PCAP_ERROR_PERM_DENIED {
                throw .announce(interface: interface, message: "\(message): pgchorusd needs the CAP_NET_RAW capability")
            }
            if status == PCAP_ERROR_NO_SUCH_DEVICE { throw .noSuchInterface(interface) }
            throw .announce(interface: interface, message: message)
        }
        handle = Mutex(OpaquePointerBox(pointer: p))
    }

    deinit {
        handle.withLock { box in
            if let p = box.pointer { pcap_close(p) }
            box.pointer = nil
        }
    }

    /// Sends one frame; throws with libpcap's message when the interface refuses it.
    public func inject(_ frame: [UInt8]) throws(VIPError) {
        let error: String? = handle.withLock { box in
            guard let p = box.pointer else { return "closed" }
            let n = frame.withUnsafeBytes { pcap_inject(p, $0.baseAddress, $0.count) }
            return n == frame.count ? nil : String(cString: pcap_geterr(p))
        }
        if let error { throw .announce(interface: interface, message: error) }
    }

    /// The announcement of `address` from this interface.
    public func announcement(for address: VirtualAddress) -> [UInt8] {
        address.isIPv6 ? AnnouncementFrames.unsolicitedNeighborAdvertisement(mac: mac, ip: address.ip.bytes)
            : AnnouncementFrames.gratuitousARP(mac: mac, ip: address.ip.bytes)
    }

    /// The interface's hardware address, from sysfs.
    public static func macAddress(of interface: String) throws(VIPError) -> [UInt8] {
        guard !interface.contains("/"), let data = FileManager.default.contents(atPath: "/sys/class/net/\(interface)/address"),
              let text = String(data: data, encoding: .utf8) else {
            throw .noSuchInterface(interface)
        }
        let bytes = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":").compactMap { UInt8($0, radix: 16) }
        guard bytes.count == 6 else { throw .announce(interface: interface, message: "it has no Ethernet address (\(text.trimmingCharacters(in: .whitespacesAndNewlines)))") }
        return bytes
    }
}
