import ArgumentParser
import State

/// The pgchorus operations CLI.
@main
struct PGChorusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pgchorus",
        abstract: "Operate a pgchorus cluster: status, backends, nodes, events, attach/detach, configuration check, local demo.",
        version: PGChorusVersion.current,
        subcommands: [StatusCommand.self, BackendsCommand.self, NodesCommand.self, EventsCommand.self, AttachCommand.self, DetachCommand.self, RecoverCommand.self, ReloadCommand.self, VIPCommand.self, DNSCommand.self,
                      ConfigCommand.self, DemoCommand.self, SecretCommand.self])
}
