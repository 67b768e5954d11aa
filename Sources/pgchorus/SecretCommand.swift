import ArgumentParser
import State
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// `pgchorus secret USER`: prints a users-file line with a SCRAM-SHA-256 secret.
struct SecretCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secret",
        abstract: "Print a users-file line for USER with a SCRAM-SHA-256 secret of the password read from standard input.",
        discussion: "Example: echo -n 's3cret' | pgchorus secret app >> /etc/pgchorus/users.txt")

    @Argument(help: "The user name.")
    var user: String

    @Option(help: "SCRAM iteration count.")
    var iterations: Int = 4096

    func run() async throws {
        guard let line = readLine(strippingNewline: true), !line.isEmpty else {
            printError("pgchorus: no password on standard input")
            throw ExitCode(1)
        }
        var rng = SystemRandomNumberGenerator()
        let salt = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let secret = SCRAMSecret(password: line, salt: salt, iterations: max(iterations, 1))
        let quotedUser = user.split(separator: "\"", omittingEmptySubsequences: false).joined(separator: "\"\"")
        print("\"\(quotedUser)\" \"\(secret.text)\"")
    }
}
