import ArgumentParser
import Foundation
import RelayCore

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Show or validate the configuration.",
        subcommands: [ConfigShowCommand.self, ConfigValidateCommand.self]
    )
}

struct ConfigShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print the effective configuration: every key with its default filled in; secrets shown as sealed:… or ***."
    )

    @OptionGroup var options: ConfigOption

    @Flag(name: .long, help: "Print it as JSON.")
    var json = false

    func run() throws {
        let cfg = try options.load()
        if json {
            print(String(decoding: ConfigDocument.json(cfg), as: UTF8.self))
        } else {
            print(ConfigDocument.toml(cfg), terminator: "")
        }
    }
}

struct ConfigValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check the configuration as relay-agent would at start (keys, values, references, key files): exit 0 when valid, 2 with the mistake.",
        discussion: "Key files are checked for the user running this command: run it as the agent's user (runuser -u borg-relay -- relayctl config validate)."
    )

    @OptionGroup var options: ConfigOption

    func run() throws {
        let cfg: RelayConfig
        do {
            cfg = try ConfigLoader.load(path: options.config)
        } catch {
            throw fail("\(error)", exit: CLI.Exit.usage)
        }
        print("\(cfg.file): valid (\(cfg.servers.count) server(s), \(cfg.clients.count) client(s), \(cfg.jumps.count) jump(s), \(cfg.notifiers.count) notifier(s))")
    }
}
