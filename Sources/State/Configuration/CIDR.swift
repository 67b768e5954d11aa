/// An IPv4 (4 bytes) or IPv6 (16 bytes) address in network order.
public struct IPAddressBytes: Sendable, Equatable, Hashable {
    public var bytes: [UInt8]

    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// Parses dotted IPv4 or RFC 4291 IPv6 text (with `::` and an embedded IPv4 tail);
    /// an IPv4-mapped IPv6 address is reduced to its IPv4 form.
    public init?(_ text: String) {
        if let v4 = Self.parseIPv4(Substring(text)) {
            bytes = v4
        } else if let v6 = Self.parseIPv6(text) {
            if v6[0..<10].allSatisfy({ $0 == 0 }) && v6[10] == 0xff && v6[11] == 0xff {
                bytes = Array(v6[12...])
            } else {
                bytes = v6
            }
        } else {
            return nil
        }
    }

    static func parseIPv4(_ s: Substring) -> [UInt8]? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy(\.isNumber), let v = UInt8(p) else { return nil }
            out.append(v)
        }
        return out
    }

    static func parseIPv6(_ text: String) -> [UInt8]? {
        var s = Substring(text)
        if let pct = s.firstIndex(of: "%") { s = s[..<pct] } // zone id
        let halves = s.splitOnce("::")
        func groups(_ h: Substring) -> [UInt8]? {
            if h.isEmpty { return [] }
            var out: [UInt8] = []
            let parts = h.split(separator: ":", omittingEmptySubsequences: false)
            for (i, p) in parts.enumerated() {
                if i == parts.count - 1, p.contains("."), let v4 = parseIPv4(p) { out += v4; continue }
                guard !p.isEmpty, p.count <= 4, let v = UInt16(p, radix: 16) else { return nil }
                out += [UInt8(v >> 8), UInt8(v & 0xff)]
            }
            return out
        }
        guard let (head, tail) = halves else {
            guard let g = groups(s), g.count == 16 else { return nil }
            return g
        }
        guard !tail.contains("::"), let a = groups(head), let b = groups(tail), a.count + b.count <= 14 else { return nil }
        return a + Array(repeating: 0, count: 16 - a.count - b.count) + b
    }
}

extension Substring {
    /// Splits at the first occurrence of `sep`; nil when absent.
    func splitOnce(_ sep: String) -> (Substring, Substring)? {
        guard let r = self.range(of: sep) else { return nil }
        return (self[..<r.lowerBound], self[r.upperBound...])
    }
}

/// An address range such as `10.0.0.0/8`, `::1/128`, or `all`.
public struct CIDR: Sendable, Equatable {
    public var network: IPAddressBytes?
    public var prefixLength: Int
    public let text: String

    public var isAll: Bool { network == nil }

    public init?(_ text: String) {
        self.text = text
        if text == "all" {
            network = nil; prefixLength = 0
            return
        }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let addr = IPAddressBytes(String(parts[0])) else { return nil }
        let maxLen = addr.bytes.count * 8
        if parts.count == 2 {
            guard let p = Int(parts[1]), (0...maxLen).contains(p) else { return nil }
            prefixLength = p
        } else {
            prefixLength = maxLen
        }
        network = addr
    }

    public func contains(_ a: IPAddressBytes) -> Bool {
        guard let network else { return true }
        guard network.bytes.count == a.bytes.count else { return false }
        var bits = prefixLength
        for i in 0..<a.bytes.count where bits > 0 {
            let mask: UInt8 = bits >= 8 ? 0xff : ~(0xff >> UInt8(bits))
            if (a.bytes[i] & mask) != (network.bytes[i] & mask) { return false }
            bits -= 8
        }
        return true
    }
}
