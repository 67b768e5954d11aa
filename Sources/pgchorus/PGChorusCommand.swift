import ArgumentParser
import State

/// The pgchorus operations CLI.
@main
struct PGChorusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pgchorus",
        abstract: "Operate a pgchorus cluster: check configuration, run a local demo.",
        version: PGChorusVersion.current,
        subcommands: [ConfigCommand.self, DemoCommand.self, SecretCommand.self])
}
