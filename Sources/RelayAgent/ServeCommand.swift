import ArgumentParser
import Foundation
import Logging
import RelayCore
import RelayDaemon

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the daemon: the control socket for relayctl, the scheduler and parallel runs.",
        discussion: """
            SIGTERM or SIGINT: no new runs; running ones may finish within [relay] shutdown_grace \
            seconds, then they are cancelled cleanly. SIGHUP: reload the config (a config with a \
            mistake is refused and the old one kept). Logs go to stderr (the journal under systemd). \
            Exit status: 0 after a clean stop, 1 if the daemon failed, 2 bad usage or configuration.
            """
    )

    @Option(name: .long, help: "The config file.")
    var config: String = RelayConfig.defaultPath

    @Flag(name: [.short, .long], help: "Debug-level daemon log.")
    var verbose = false

    func run() async throws {
        let cfg: RelayConfig
        do {
            cfg = try ConfigLoader.load(path: config)
        } catch {
            CLI.printError("relay-agent: \(error)")
            throw ExitCode(CLI.Exit.usage)
        }
        let level: Logger.Level = verbose ? .debug : .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        var logger = Logger(label: "relay-agent")
        logger.logLevel = level
        do {
            try await Daemon.run(configPath: config, config: cfg, logger: logger)
        } catch {
            logger.critical("relay-agent failed: \(error)")
            throw ExitCode(CLI.Exit.runFailed)
        }
    }
}
