import State

/// An address with its prefix length, as the VIP is configured: `198.18.0.100/24`, `2001:db8::100/64`.
public struct VirtualAddress: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var ip: IPAddressBytes
    public var prefixLength: Int
    public var isIPv6: Bool { ip.bytes.count == 16 }

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1)
        guard let ip = IPAddressBytes(String(parts[0])) else { return nil }
        let maximum = ip.bytes.count == 4 ? 32 : 128
        let prefix = parts.count == 2 ? Int(parts[1]) : maximum
        guard let prefix, (1...maximum).contains(prefix) else { return nil }
        self.ip = ip
        self.prefixLength = prefix
    }

    public init(ip: IPAddressBytes, prefixLength: Int) {
        self.ip = ip; self.prefixLength = prefixLength
    }

    /// The address without prefix, in the usual text form.
    public var addressText: String {
        if !isIPv6 { return ip.bytes.map(String.init).joined(separator: ".") }
        var groups: [String] = []
        for i in stride(from: 0, to: 16, by: 2) { groups.append(String(UInt16(ip.bytes[i]) << 8 | UInt16(ip.bytes[i + 1]), radix: 16)) }
        // Compress the longest run of zero groups (RFC 5952).
        var best = (start: -1, length: 0), run = (start: -1, length: 0)
        for (i, g) in groups.enumerated() {
            if g == "0" { run = run.start < 0 ? (i, 1) : (run.start, run.length + 1) } else { run = (-1, 0) }
            if run.length > best.length && run.length > 1 { best = run }
        }
        guard best.start >= 0 else { return groups.joined(separator: ":") }
        let head = groups[..<best.start].joined(separator: ":"), tail = groups[(best.start + best.length)...].joined(separator: ":")
        return head + "::" + tail
    }

    public var description: String { "\(addressText)/\(prefixLength)" }
}
