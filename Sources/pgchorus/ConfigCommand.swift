import ArgumentParser
import Proxy
import State

/// `pgchorus config check FILE`.
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Configuration tools.",
        subcommands: [Check.self])

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a configuration file (and the users file and TLS files it names). Exit 0 when valid, 1 otherwise.")

        @Argument(help: "The configuration file.")
        var file: String = "/etc/pgchorus/pgchorus.toml"

        static func isLoopback(_ host: String) -> Bool {
            host == "localhost" || host.hasPrefix("127.") || host == "::1"
        }

        func run() async throws {
            do {
                let configuration = try Configuration.load(path: file)
                _ = try ProxyContext(configuration: configuration, logger: .init(label: "pgchorus"))
                print("\(file): OK")
                print("  node \(configuration.node.id), listening on \(configuration.proxy.listenAddress):\(configuration.proxy.listenPort)\(configuration.proxy.tls == nil ? "" : " with TLS")")
                print("  \(configuration.backends.count) backend(s): \(configuration.backends.map(\.description).joined(separator: ", "))")
                print("  \(configuration.auth.rules.count) auth rule(s)\(configuration.auth.usersFile.map { ", users file \($0)" } ?? "")")
                print("  TLS to the backends: \(configuration.backends.map { "\($0.id) \($0.tls.mode.rawValue)" }.joined(separator: ", "))")
                for b in configuration.backends where !b.tls.mode.verifies && !Self.isLoopback(b.host) {
                    print("  warning: backend \(b.description) is reached with sslmode \(b.tls.mode.rawValue): whoever is on the network path can read\(b.tls.mode == .require ? " (through a forged certificate)" : "") or change its traffic; set sslmode = \"verify-full\" and sslrootcert (docs/security.md)")
                }
            } catch {
                printError("pgchorus: \(error)")
                throw ExitCode(1)
            }
        }
    }
}
