import ArgumentParser
import Dispatch
import Foundation
import RelayCore

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run one backup of CLIENT in the foreground (no daemon needed).",
        discussion: "Exit status: 0 the backup succeeded (archive created and recorded), 1 the run failed, 2 bad usage or configuration, 3 succeeded with borg's warnings (archive created and recorded)."
    )

    @Argument(help: "The client to back up (a [clients.NAME] table of the config).")
    var client: String

    @Option(name: .long, help: "The config file.")
    var config: String = RelayConfig.defaultPath

    @Flag(name: .long, help: "Print the run report as JSON on stdout.")
    var json = false

    @Flag(name: [.short, .long], help: "Echo the run log to stderr while it runs.")
    var verbose = false

    @Flag(name: .long, help: "Show the commands the run would send to each host; connect to nothing.")
    var dryRun = false

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        if dryRun {
            do {
                let cfg = try ConfigLoader.load(path: config)
                let c = try cfg.client(client)
                print(BackupPlan.dryRun(client: c, server: cfg.server(for: c)))
                return
            } catch {
                CLI.printError("relay-agent: \(error)")
                throw ExitCode(CLI.Exit.usage)
            }
        }
        let prepared: Prepared
        do {
            prepared = try prepare()
        } catch {
            CLI.printError("relay-agent: \(error)")
            throw ExitCode(CLI.Exit.usage)
        }
        let run = prepared.run
        // SIGINT/SIGTERM cancel the run cleanly (forward closed, channels closed).
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { run.canceller.cancel() }
            s.resume()
            sources.append(s)
        }
        var report = run.execute()
        sources.forEach { $0.cancel() }
        prepared.sink.close()
        do {
            report = try prepared.history.finish(report)
        } catch {
            CLI.printError("relay-agent: warning: the run could not be recorded: \(error)")
            report.recordingFailed("\(error)")
        }
        if json {
            print(report.jsonString())
        } else {
            print(report.summary())
        }
        switch report.state {
        case .succeeded: return
        case .warning: throw ExitCode(CLI.Exit.warning)
        default: throw ExitCode(CLI.Exit.runFailed)
        }
    }

    struct Prepared {
        var run: BackupRun
        var sink: RunLogSink
        var history: HistoryStore
    }

    /// Everything that can fail because of the config or the vault (exit 2).
    func prepare() throws -> Prepared {
        let cfg = try ConfigLoader.load(path: config)
        let c = try cfg.client(client)
        let s = cfg.server(for: c)
        let passphrase = try Vault.openPassphrase(of: c, config: cfg)
        let runID = CLI.newRunID()
        let logPath = "\(cfg.relay.logDir)/\(c.name)/\(runID).log"
        let history = try HistoryStore(path: cfg.relay.historyPath)
        let sink = try RunLogSink(path: logPath, echoToStderr: verbose)
        let logger = sink.logger(label: "borg-relay.run")
        // Runs left "running" by an agent that was killed are interrupted, not running.
        for id in try history.markInterrupted() {
            logger.warning("run \(id) was interrupted (its agent ended mid-run); marked in the history")
        }
        if c.retention != nil {
            logger.info("[clients.\(c.name)] 'retention' is applied by the daemon after its backups, or by relayctl prune; not by a foreground run")
        }
        let run = try BackupRun(runID: runID, client: c, server: s, options: SessionOptions(cfg), policy: RunPolicy(cfg.relay),
                                passphrase: passphrase, logger: logger, logFile: logPath)
        try history.insert(.starting(runID: runID, client: c.name, server: s.name, logFile: logPath))
        return Prepared(run: run, sink: sink, history: history)
    }
}
