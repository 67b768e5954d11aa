import Foundation
import State
import Testing
@testable import VIP

/// The DNS mode's files: what each format looks like, serials that only grow, and a zone that
/// BIND's own checker accepts.
@Suite struct DNSPublisherTests {
    func dns(_ format: String) -> Configuration.DNS {
        Configuration.DNS(format: format, file: "/tmp/x", name: "db.example.test", ttl: 10, zone: "example.test", nameServer: "ns1.example.net",
                          mailbox: nil, server: "198.18.0.53", reloadCommand: nil, addresses: [:])
    }

    let day = Date(timeIntervalSince1970: 1_795_737_600) // 2026-11-27

    @Test func serialsFollowTheDateAndAlwaysGrow() {
        #expect(DNSPublisher.nextSerial(previous: nil, now: day) == 2026112700)
        #expect(DNSPublisher.nextSerial(previous: 2026112700, now: day) == 2026112701)
        #expect(DNSPublisher.nextSerial(previous: 2025010105, now: day) == 2026112700)
        #expect(DNSPublisher.nextSerial(previous: 2030010100, now: day) == 2030010101)
    }

    @Test func aBindZoneListsEveryHealthyNodeAndPassesNamedCheckzone() throws {
        let text = try DNSPublisher.render(dns: dns("bind"), addresses: ["198.18.0.11", "198.18.0.12", "2001:db8::13"], previous: nil, now: day)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains("db.example.test. IN A 198.18.0.11"))
        #expect(lines.contains("db.example.test. IN A 198.18.0.12"))
        #expect(lines.contains("db.example.test. IN AAAA 2001:db8::13"))
        #expect(lines.contains("$TTL 10"))
        #expect(lines.contains("@ IN SOA ns1.example.net. hostmaster.example.test. ( 2026112700 60 30 604800 10 )"))
        let next = try DNSPublisher.render(dns: dns("bind"), addresses: ["198.18.0.11"], previous: text, now: day)
        #expect(DNSPublisher.serial(in: next) == 2026112701)

        let checker = "/usr/bin/named-checkzone"
        try #require(FileManager.default.isExecutableFile(atPath: checker), "install bind9-utils")
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pgchorus-zone-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try next.write(toFile: path, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: checker)
        p.arguments = ["example.test", path]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        p.waitUntilExit()
        let said = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus == 0, "\(said)")
        #expect(said.contains("serial 2026112701"), "\(said)")
    }

    @Test func dnsmasqAndNsupdateForms() throws {
        let hosts = try DNSPublisher.render(dns: dns("dnsmasq"), addresses: ["198.18.0.11", "198.18.0.12"], previous: nil, now: day)
        #expect(hosts.split(separator: "\n").dropFirst() == ["198.18.0.11 db.example.test", "198.18.0.12 db.example.test"])
        let update = try DNSPublisher.render(dns: dns("nsupdate"), addresses: ["198.18.0.11", "2001:db8::1"], previous: nil, now: day)
        #expect(update.split(separator: "\n").dropFirst().map(String.init) == [
            "server 198.18.0.53", "zone example.test", "update delete db.example.test. A", "update delete db.example.test. AAAA",
            "update add db.example.test. 10 A 198.18.0.11", "update add db.example.test. 10 AAAA 2001:db8::1", "send",
        ])
    }

    @Test func filesAreReplacedAtomically() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pgchorus-dns-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/watched", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/state", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try DNSPublisher.writeAtomically("one\n", to: dir + "/watched/hosts", scratchDirectory: dir + "/state")
        try DNSPublisher.writeAtomically("two\n", to: dir + "/watched/hosts", scratchDirectory: dir + "/state")
        #expect(try String(contentsOfFile: dir + "/watched/hosts", encoding: .utf8) == "two\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/watched") == ["hosts"], "no temporary file in the watched directory")
    }
}
