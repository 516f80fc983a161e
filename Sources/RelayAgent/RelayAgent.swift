import ArgumentParser
import Foundation
import RelayCore

@main
struct RelayAgent: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay-agent",
        abstract: "Relays borg backups from clients to backup servers that cannot reach each other.",
        subcommands: [RunCommand.self]
    )

    /// Usage errors exit with 2, as the command contract says (argument-parser uses 64).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            if exitCode(for: error) == .success { exit(withError: error) }
            CLI.printError(fullMessage(for: error))
            Foundation.exit(CLI.Exit.usage)
        }
    }
}
