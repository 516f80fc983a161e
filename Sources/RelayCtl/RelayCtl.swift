import ArgumentParser
import Foundation
import RelayCLI
import RelayCore

@main
struct RelayCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relayctl",
        abstract: "Operate borg-relay: the passphrase vault and sealing.",
        subcommands: [VaultCommand.self, SealCommand.self]
    )

    static func main() { mainWithContractExitCodes() }
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
