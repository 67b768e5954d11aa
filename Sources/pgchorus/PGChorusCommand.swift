import ArgumentParser
import Daemon
import Foundation
import State

/// One binary for both programs: started as `pgchorusd` (the package's /usr/sbin/pgchorusd is a link to
/// it) it is the daemon, otherwise the operations CLI.
@main
enum Entry {
    static func main() async {
        let name = CommandLine.arguments.first.map { URL(fileURLWithPath: $0).lastPathComponent } ?? ""
        if name == "pgchorusd" {
            await PGChorusDaemon.main()
        } else {
            await PGChorusCommand.main()
        }
    }
}

/// The pgchorus operations CLI.
struct PGChorusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pgchorus",
        abstract: "Operate a pgchorus cluster: status, backends, nodes, events, attach/detach, configuration check, local demo.",
        version: PGChorusVersion.current,
        subcommands: [StatusCommand.self, BackendsCommand.self, NodesCommand.self, EventsCommand.self, AttachCommand.self, DetachCommand.self, RecoverCommand.self, ReloadCommand.self, VIPCommand.self, DNSCommand.self,
                      ConfigCommand.self, DemoCommand.self, SecretCommand.self])
}
