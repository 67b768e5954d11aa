import FoundationEssentials
import Glibc
import Logging
import NIOPosix
import State
import Synchronization

/// DNS mode: publishes the healthy nodes' addresses as round-robin records for one name — a BIND
/// zone file, a dnsmasq hosts file or an nsupdate script — written atomically, then runs the
/// configured reload command. Only the election's winner publishes, so writers never race. An
/// empty set is never published: the last good one stays.
public final class DNSPublisher: Sendable {
    let configuration: Configuration
    let logger: Logger
    let lastPublished = Mutex<[String]?>(nil)

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Writes the records for `nodes` when they differ from what was last written.
    func publish(nodes: [StateService.NodeView]) {
        let dns = configuration.vip.dns
        let addresses = nodes.map { dns.addresses[$0.id] ?? $0.address }.sorted()
        guard !addresses.isEmpty else {
            logger.warning("no healthy node to publish in DNS; keeping the last records")
            return
        }
        let changed = lastPublished.withLock { last -> Bool in
            guard last != addresses else { return false }
            last = addresses
            return true
        }
        guard changed, let file = dns.file else { return }
        do {
            let text = try Self.render(dns: dns, addresses: addresses, previous: try? String(contentsOfFile: file, encoding: .utf8), now: Date())
            try Self.writeAtomically(text, to: file, scratchDirectory: configuration.node.stateDirectory)
            logger.notice("DNS records published", metadata: ["file": "\(file)", "addresses": "\(addresses.joined(separator: ", "))"])
            if let command = dns.reloadCommand {
                let log = logger
                NIOThreadPool.singleton.submit { _ in
                    let status = Self.run(command)
                    if status != 0 { log.error("the DNS reload command failed with status \(status): \(command)") }
                }
            }
        } catch {
            lastPublished.withLock { $0 = nil }
            logger.error("cannot publish the DNS records: \(error)")
        }
    }

    /// The file's text for `addresses`. `previous` (the file as it is) gives the last serial.
    public static func render(dns: Configuration.DNS, addresses: [String], previous: String?, now: Date) throws -> String {
        let name = dns.name ?? ""
        let fqdn = name.hasSuffix(".") ? name : name + "."
        let v4 = addresses.filter { !$0.contains(":") }, v6 = addresses.filter { $0.contains(":") }
        switch dns.format {
        case "dnsmasq":
            let host = String(fqdn.dropLast())
            return "# Written by pgchorus (DNS mode): the healthy clustering nodes.\n" + addresses.map { "\($0) \(host)\n" }.joined()
        case "nsupdate":
            var s = "; Written by pgchorus (DNS mode). Run with: nsupdate <this file>\n"
            if let server = dns.server { s += "server \(server)\n" }
            if let zone = dns.zone { s += "zone \(zone)\n" }
            s += "update delete \(fqdn) A\nupdate delete \(fqdn) AAAA\n"
            for a in v4 { s += "update add \(fqdn) \(dns.ttl) A \(a)\n" }
            for a in v6 { s += "update add \(fqdn) \(dns.ttl) AAAA \(a)\n" }
            return s + "send\n"
        default:
            let zone = dns.zone.map { $0.hasSuffix(".") ? $0 : $0 + "." } ?? ""
            let serial = nextSerial(previous: previous.flatMap(serial(in:)), now: now)
            let ns = dns.nameServer.map { $0.hasSuffix(".") ? $0 : $0 + "." } ?? "localhost."
            let mailbox = dns.mailbox.map { $0.hasSuffix(".") ? $0 : $0 + "." } ?? "hostmaster.\(zone)"
            var s = """
            ; Written by pgchorus (DNS mode): the healthy clustering nodes. serial \(serial)
            $ORIGIN \(zone)
            $TTL \(dns.ttl)
            @ IN SOA \(ns) \(mailbox) ( \(serial) 60 30 604800 \(dns.ttl) )
            @ IN NS \(ns)

            """
            for a in v4 { s += "\(fqdn) IN A \(a)\n" }
            for a in v6 { s += "\(fqdn) IN AAAA \(a)\n" }
            return s
        }
    }

    /// `YYYYMMDDnn`: today's first serial, or one more than the previous if that is not lower.
    public static func nextSerial(previous: UInt64?, now: Date) -> UInt64 {
        let c = Calendar(identifier: .gregorian).dateComponents(in: TimeZone(identifier: "UTC")!, from: now)
        let today = UInt64((c.year ?? 1970) * 10000 + (c.month ?? 1) * 100 + (c.day ?? 1)) * 100
        guard let previous else { return today }
        return max(today, previous + 1)
    }

    static func serial(in text: String) -> UInt64? {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("; Written by pgchorus") }),
              let range = line.range(of: "serial ") else { return nil }
        return UInt64(line[range.upperBound...].prefix { $0.isNumber })
    }

    /// Temp file (outside the target's directory when possible, so a directory watcher never sees
    /// it half-written), fsync, rename.
    static func writeAtomically(_ text: String, to path: String, scratchDirectory: String) throws {
        let name = String(path.split(separator: "/").last ?? "records")
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : ""
        try? FileManager.default.createDirectory(atPath: scratchDirectory, withIntermediateDirectories: true)
        let candidates = ["\(scratchDirectory)/.\(name).pgchorus-tmp", "\(directory.isEmpty ? "." : directory)/.\(name).pgchorus-tmp"]
        var lastError = "no place for the temporary file"
        for temp in candidates {
            let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard fd >= 0 else { lastError = "\(temp): \(String(cString: strerror(errno)))"; continue }
            let bytes = Array(text.utf8)
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            let synced = fsync(fd)
            close(fd)
            guard written == bytes.count, synced == 0 else { unlink(temp); lastError = "writing \(temp) failed"; continue }
            if rename(temp, path) == 0 { return }
            lastError = "renaming to \(path): \(String(cString: strerror(errno)))"
            unlink(temp)
        }
        throw VIPError.announce(interface: "dns", message: lastError)
    }

    /// Runs a shell command and waits for it; returns its exit status.
    static func run(_ command: String) -> Int32 {
        var pid: pid_t = 0
        let args = ["/bin/sh", "-c", command]
        var cArgs = args.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        guard posix_spawn(&pid, "/bin/sh", nil, nil, &cArgs, environ) == 0 else { return -1 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status >> 8) & 0xff
    }
}
