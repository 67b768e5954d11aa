/// The frames that tell a network segment where the VIP now lives. Pure: bytes in, bytes out.
public enum AnnouncementFrames {
    public static let broadcast: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]

    /// IPv4 gratuitous ARP in the RFC 5227 announcement form: an ARP request with sender IP =
    /// target IP = the VIP, target MAC zero, to the broadcast address (42 bytes; the NIC pads).
    public static func gratuitousARP(mac: [UInt8], ip: [UInt8]) -> [UInt8] {
        precondition(mac.count == 6 && ip.count == 4)
        var f = broadcast + mac + [0x08, 0x06]
        f += [0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01] // Ethernet, IPv4, sizes 6/4, request
        f += mac + ip + [UInt8](repeating: 0, count: 6) + ip
        return f
    }

    /// IPv6 unsolicited neighbour advertisement (RFC 4861 7.2.6): to ff02::1 from the VIP, hop
    /// limit 255, override set and solicited clear, with the target link-layer address option.
    public static func unsolicitedNeighborAdvertisement(mac: [UInt8], ip: [UInt8]) -> [UInt8] {
        precondition(mac.count == 6 && ip.count == 16)
        let allNodes: [UInt8] = [0xff, 0x02] + [UInt8](repeating: 0, count: 13) + [0x01]
        var icmp: [UInt8] = [136, 0, 0, 0, 0x20, 0, 0, 0] // NA, code 0, checksum, flags R=0 S=0 O=1
        icmp += ip
        icmp += [2, 1] + mac // option 2: target link-layer address, 8 bytes
        let sum = checksum(pseudoSource: ip, destination: allNodes, nextHeader: 58, payload: icmp)
        icmp[2] = UInt8(sum >> 8)
        icmp[3] = UInt8(sum & 0xff)
        var f: [UInt8] = [0x33, 0x33, 0, 0, 0, 1] + mac + [0x86, 0xdd]
        f += [0x60, 0, 0, 0, UInt8(icmp.count >> 8), UInt8(icmp.count & 0xff), 58, 255]
        f += ip + allNodes + icmp
        return f
    }

    /// The ICMPv6 checksum over the IPv6 pseudo-header and the message.
    static func checksum(pseudoSource: [UInt8], destination: [UInt8], nextHeader: UInt8, payload: [UInt8]) -> UInt16 {
        var data = pseudoSource + destination
        let length = UInt32(payload.count)
        data += [UInt8(length >> 24), UInt8((length >> 16) & 0xff), UInt8((length >> 8) & 0xff), UInt8(length & 0xff), 0, 0, 0, nextHeader]
        data += payload
        if data.count % 2 == 1 { data.append(0) }
        var sum: UInt32 = 0
        for i in stride(from: 0, to: data.count, by: 2) { sum += UInt32(data[i]) << 8 | UInt32(data[i + 1]) }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }

    /// The sender MAC and IP of an ARP frame claiming an IPv4 address (request or reply), if it is one.
    public static func arpClaim(_ frame: [UInt8]) -> (mac: [UInt8], ip: [UInt8])? {
        guard frame.count >= 42, frame[12] == 0x08, frame[13] == 0x06, frame[14...21].elementsEqual([0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, frame[21]]),
              frame[21] == 1 || frame[21] == 2 else { return nil }
        return (Array(frame[22..<28]), Array(frame[28..<32]))
    }
}

/// When announcements go out after a claim: a burst in the first second, two more later, then a
/// periodic refresh. Offsets in seconds from the claim's ACK.
public struct AnnouncementSchedule: Sendable, Equatable {
    public var initial: [Double]
    public var refresh: Double

    public static let standard = AnnouncementSchedule(initial: [0, 0.3, 0.7, 2, 5], refresh: 60)

    public init(initial: [Double], refresh: Double) {
        self.initial = initial; self.refresh = refresh
    }

    /// The next announcement strictly after `elapsed` seconds since the claim.
    public func next(after elapsed: Double) -> Double {
        if let t = initial.first(where: { $0 > elapsed }) { return t }
        let last = initial.last ?? 0
        let periods = ((elapsed - last) / refresh).rounded(.down) + 1
        return last + periods * refresh
    }
}
