import ArgumentParser
import State
import VIP

/// `pgchorus vip claim|release|announce|list`: the daemon's own address code, for operators.
struct VIPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vip",
        abstract: "Claim, release or announce a virtual IP by hand (maintenance, manual moves). Needs CAP_NET_ADMIN and CAP_NET_RAW.",
        subcommands: [Claim.self, Release.self, Announce.self, List.self])

    struct Target: ParsableArguments {
        @Option(help: "The network interface, e.g. eth0.") var interface: String
        @Option(help: "The address with prefix, e.g. 10.0.0.100/24 or 2001:db8::100/64.") var address: String

        func parsed() throws -> VirtualAddress {
            guard let a = VirtualAddress(address) else { throw ValidationError("--address \"\(address)\" is not an IPv4 or IPv6 address with an optional /prefix") }
            return a
        }
    }

    struct Claim: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add the address to the interface (tagged as pgchorus') and announce it once.")
        @OptionGroup var target: Target
        @Option(help: "Seconds after which the kernel removes the address by itself (claim again to renew; default: none).")
        var lifetime: UInt32?

        func run() async throws {
            let address = try target.parsed()
            if let lifetime, lifetime == 0 || lifetime > 86_400 { throw ValidationError("--lifetime must be 1–86400 seconds") }
            do {
                let added = try AddressTable.add(address, interface: target.interface, lifetime: lifetime)
                if !added, let lifetime { try AddressTable.renew(address, interface: target.interface, lifetime: lifetime) }
                let injector = try PacketInjector(interface: target.interface)
                try injector.inject(injector.announcement(for: address))
                let life = lifetime.map { ", removed by the kernel in \($0) s unless claimed again" } ?? ""
                print("\(address) \(added ? "added to" : "was already on") \(target.interface) and announced\(life)")
            } catch {
                printError("pgchorus: \(error)")
                throw ExitCode(1)
            }
        }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove the address from the interface.")
        @OptionGroup var target: Target

        func run() async throws {
            let address = try target.parsed()
            do {
                let removed = try AddressTable.remove(address, interface: target.interface)
                print("\(address) \(removed ? "removed from" : "was not on") \(target.interface)")
            } catch {
                printError("pgchorus: \(error)")
                throw ExitCode(1)
            }
        }
    }

    struct Announce: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send the announcement burst (gratuitous ARP or unsolicited neighbour advertisement) without touching the address.")
        @OptionGroup var target: Target
        @Option(help: "Frames to send, 300 ms apart.") var count: Int = 3

        func run() async throws {
            let address = try target.parsed()
            do {
                let injector = try PacketInjector(interface: target.interface)
                for i in 0..<max(1, min(count, 100)) {
                    if i > 0 { try await Task.sleep(for: .milliseconds(300)) }
                    try injector.inject(injector.announcement(for: address))
                }
                print("announced \(address) on \(target.interface) (MAC \(injector.mac.map { String($0, radix: 16).leftPadded(2) }.joined(separator: ":"))) \(max(1, min(count, 100))) time(s)")
            } catch {
                printError("pgchorus: \(error)")
                throw ExitCode(1)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the interface's addresses; pgchorus' own are marked.")
        @Option(help: "The network interface.") var interface: String

        func run() async throws {
            do {
                for a in try AddressTable.list(interface: interface) {
                    print("\(a.address)\(a.protocolTag == AddressTable.protocolTag ? "  (pgchorus)" : "")")
                }
            } catch {
                printError("pgchorus: \(error)")
                throw ExitCode(1)
            }
        }
    }
}
