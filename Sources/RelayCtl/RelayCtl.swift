import ArgumentParser
import Foundation
import RelayCore

@main
struct RelayCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relayctl",
        abstract: "Operate borg-relay: the passphrase vault and sealing.",
        subcommands: [VaultCommand.self, SealCommand.self]
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

struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "The config file.")
    var config: String = RelayConfig.defaultPath

    /// The config, for its state directory; key files are not checked.
    func load() throws -> RelayConfig {
        do {
            return try ConfigLoader.load(path: config, checkFiles: false)
        } catch {
            CLI.printError("relayctl: \(error)")
            throw ExitCode(CLI.Exit.usage)
        }
    }
}
