import ArgumentParser
import Foundation
import RelayCLI
import RelayCore

@main
struct RelayAgent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay-agent",
        abstract: "Relays borg backups from clients to backup servers that cannot reach each other.",
        version: RelayVersion.current,
        subcommands: [ServeCommand.self, RunCommand.self, BenchSpliceCommand.self, BenchStatusPageCommand.self, BenchFleetCommand.self, ConnectCommand.self]
    )

    static func main() async { await asyncMainWithContractExitCodes() }
}
