import Admin
import ArgumentParser
import Foundation
import State
import VIP

/// `pgchorus dns render`: what the DNS mode would write now, from the node's view.
struct DNSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dns",
        abstract: "DNS mode tools.",
        subcommands: [Render.self])

    struct Render: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the records the DNS mode would write now (the nodes this node sees alive), without writing anything.")

        @OptionGroup var options: DaemonOptions

        func run() async throws {
            let configuration: Configuration
            do {
                configuration = try Configuration.load(path: options.config)
            } catch {
                printError("pgchorus: \(error)")
                throw ExitCode(3)
            }
            guard configuration.vip.mode == "dns" else {
                printError("pgchorus: \(options.config) does not set vip.mode = \"dns\"")
                throw ExitCode(1)
            }
            let status = try await options.send(AdminRequest(command: .status)).status!
            let dns = configuration.vip.dns
            let chosen = status.vip.eligible.map(Set.init)
            let addresses = status.nodes.filter { chosen?.contains($0.id) ?? $0.alive }.map { dns.addresses[$0.id] ?? $0.address }.sorted()
            guard !addresses.isEmpty else {
                printError("pgchorus: no node is alive; the DNS mode keeps the last records")
                throw ExitCode(1)
            }
            let previous = dns.file.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) }
            print(try DNSPublisher.render(dns: dns, addresses: addresses, previous: previous, now: Date()), terminator: "")
        }
    }
}
