import ArgumentParser
import Foundation
import RelayCLI
import RelayCore

@main
struct RelayCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relayctl",
        abstract: "Operate borg-relay: runs, status and history through the agent; the passphrase vault.",
        version: RelayVersion.current,
        subcommands: [RunCtlCommand.self, StatusCommand.self, RunsCommand.self, LogCommand.self, CancelCommand.self,
                      InitCommand.self, ListCommand.self, InfoCommand.self, KeyExportCommand.self,
                      PruneCommand.self, CompactCommand.self, CheckCommand.self, RestoreCommand.self, BorgCommand.self,
                      HostKeyCommand.self, AuthorizedKeysCommand.self,
                      VaultCommand.self, SealCommand.self, NotifyCommand.self, WebCommand.self,
                      ConfigCommand.self, AddClientCommand.self,
                      RecoveryCommand.self, StateCommand.self, RecoverCommand.self]
    )

    static func main() async {
        CLI.quietLogging()
        await asyncMainWithContractExitCodes()
    }
}

struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "The config file.")
    var config: String = RelayConfig.defaultPath

    /// The config, for its state directory; key files are not checked.
    func load() throws -> RelayConfig { try loadConfig(config) }
}
