import Foundation
import Logging

/// prune, compact and check: borg on R, one step after another, each through its own
/// `LocalBorgRun`. Before anything that can make deletions permanent (prune, compact), the
/// tamper alarm compares the repository's archives with the relay's archive records (by
/// borg's archive id, `TamperCheck`): an archive the relay created and never pruned that is
/// gone, or replaced by another under its name, was deleted behind its back (append-only
/// mode lets T mark archives deleted; a compact would then free their data for good, borg
/// issue #7645). Then nothing is pruned or compacted, and the run fails saying which
/// archives vanished and how to get them back.
public final class MaintenanceRun: RelayRun, @unchecked Sendable {
    // @unchecked: state is touched only by the thread inside `execute()`.
    public let runID: String
    public let client: ClientConfig
    public let server: ServerConfig
    public let operation: OperationRequest
    public let canceller: RunCanceller
    public let progress = ProgressBoard()
    let options: SessionOptions
    let logger: Logger
    let logFile: String?
    let outputPath: String?
    let borgBaseDir: String
    let connectorPath: String
    let history: any RunStore
    /// A step succeeded with warnings (borg exited 1).
    private var warned = false
    /// Each step gets its own copy; wiped when the run ends.
    private var passphrase: SecretBytes?

    public init(runID: String, client: ClientConfig, server: ServerConfig, operation: OperationRequest,
                options: SessionOptions, passphrase: SecretBytes?, logger: Logger, logFile: String?, outputPath: String?,
                borgBaseDir: String, connectorPath: String, history: any RunStore) throws(RunError) {
        self.passphrase = passphrase
        self.runID = runID
        self.client = client
        self.server = server
        self.operation = operation
        self.options = options
        self.logger = logger
        self.logFile = logFile
        self.outputPath = outputPath
        self.borgBaseDir = borgBaseDir
        self.connectorPath = connectorPath
        self.history = history
        self.canceller = try RunCanceller()
    }

    deinit { passphrase?.wipe() }

    public func execute() -> RunReport {
        var report = RunReport(runID: runID, client: client.name, server: server.name, started: Date())
        report.kind = operation.kind
        report.logFile = logFile
        let repo = LocalBorgPlan.repository
        do {
            switch operation.kind {
            case .check:
                let args = try operation.checkArguments(repository: repo)
                try step(LocalBorgPlan(kind: .check, arguments: args, maintenance: false), output: outputPath, into: &report)
            case .prune, .compact:
                let before = try archives(into: &report)
                try tamperCheck(present: before)
                if operation.kind == .prune {
                    guard let retention = client.retention else { throw RunError.setup("no retention policy") }
                    let dry = operation.dryRun == true
                    let args = ["prune", "--list"] + (dry ? ["--dry-run"] : []) + retention.keepArguments + ["--", repo]
                    if dry {
                        try step(LocalBorgPlan(kind: .prune, arguments: args, maintenance: true), output: outputPath, into: &report)
                    } else {
                        // Whatever prune did, even if it failed or was cancelled halfway, the
                        // archives it removed are recorded as pruned (by id), so that the
                        // next tamper check does not take them for deleted behind its back.
                        var pruneError: (any Error)?
                        var messages: [String] = []
                        do {
                            try step(LocalBorgPlan(kind: .prune, arguments: args, maintenance: true), output: outputPath,
                                     into: &report, messages: &messages)
                        } catch {
                            pruneError = error
                        }
                        let pruneStatus = report.borgExitStatus
                        let after: [PresentArchive]
                        do {
                            after = try archives(into: &report, evenIfCancelled: true)
                            report.borgExitStatus = pruneStatus
                        } catch {
                            if pruneError == nil { logger.error("listing the archives after prune failed: \(error)") }
                            throw pruneError ?? error
                        }
                        let pruned = TamperCheck.prunedByRelay(before: before, after: after, borgMessages: messages)
                        let marked = try history.recordPruned(client: client.name, runID: runID, removed: pruned)
                        logger.info("pruned \(pruned.count) archive(s)\(pruned.isEmpty ? "" : ": " + pruned.map(\.name).joined(separator: ", ")); \(after.count) kept; \(marked) record(s) of the relay's archives marked pruned")
                        if let e = pruneError { throw e }
                        // An archive of the relay's that someone else deleted while prune
                        // ran is still expected: the alarm, and no compact.
                        try tamperCheck(present: after)
                        if operation.compact == true {
                            try step(LocalBorgPlan(kind: .compact, arguments: ["compact", "--", repo], maintenance: true),
                                     output: nil, into: &report)
                        }
                    }
                } else {
                    try step(LocalBorgPlan(kind: .compact, arguments: ["compact", "--", repo], maintenance: true),
                             output: outputPath, into: &report)
                }
            default:
                throw RunError.setup("\(operation.kind) is not a maintenance operation")
            }
            // Each step proved its success; a step that ended with borg's warnings makes
            // the run a warning.
            report.state = warned ? .warning : .succeeded
        } catch let stop as StepStop {
            report.state = stop.state
            report.error = stop.error
            report.alarm = stop.alarm
        } catch {
            report.state = .failed
            report.error = "\(error)"
            logger.error("\(error)")
        }
        passphrase?.wipe()
        passphrase = nil
        report.finish()
        logger.info("run \(runID) \(report.state.rawValue)\(report.error.map { ": \($0)" } ?? "")")
        return report
    }

    private struct StepStop: Error {
        var state: RunState
        var error: String?
        var alarm: RunAlarm? = nil
    }

    /// Runs one borg step; a step that does not succeed ends the run with its outcome.
    /// `evenIfCancelled`: the step runs even after a cancel request (a read-only step that
    /// must not be skipped, with a canceller of its own).
    private func step(_ plan: LocalBorgPlan, output: String?, into report: inout RunReport, evenIfCancelled: Bool = false) throws {
        var ignored: [String] = []
        try step(plan, output: output, into: &report, evenIfCancelled: evenIfCancelled, messages: &ignored, keepMessages: false)
    }

    /// A step that keeps borg's log messages in `messages` (also when it fails).
    private func step(_ plan: LocalBorgPlan, output: String?, into report: inout RunReport, evenIfCancelled: Bool = false,
                      messages: inout [String], keepMessages: Bool = true) throws {
        if canceller.isRequested && !evenIfCancelled { throw StepStop(state: .cancelled, error: RunError.cancelled.description) }
        let stepCanceller = try evenIfCancelled ? RunCanceller() : canceller
        let secret = try passphrase?.copy()
        let run = try LocalBorgRun(runID: runID, client: client, server: server, plan: plan, options: options,
                                   passphrase: secret, logger: logger, logFile: logFile, outputPath: output,
                                   borgBaseDir: borgBaseDir, connectorPath: connectorPath,
                                   canceller: stepCanceller, progress: progress)
        run.keepMessages = keepMessages
        let r = run.execute()
        messages = run.messages
        report.bytesToServer += r.bytesToServer
        report.bytesFromServer += r.bytesFromServer
        report.borgExitStatus = r.borgExitStatus
        report.serverCipher = r.serverCipher
        report.warnings += r.warnings
        guard r.isSuccess else { throw StepStop(state: r.state, error: r.error, alarm: r.alarm) }
        if r.state == .warning { warned = true }
    }

    /// The archives in the repository with their ids (borg list --json on R, read-only key).
    private func archives(into report: inout RunReport, evenIfCancelled: Bool = false) throws -> [PresentArchive] {
        let path = (outputPath ?? (FileManager.default.temporaryDirectory.path + "/borg-relay-\(runID)")) + ".list"
        defer { unlink(path) }
        try step(LocalBorgPlan(kind: .list, arguments: ["list", "--json", "--", LocalBorgPlan.repository], maintenance: false),
                 output: path, into: &report, evenIfCancelled: evenIfCancelled)
        guard let data = FileManager.default.contents(atPath: path),
              let listing = PresentArchive.parse(borgListJSON: data) else {
            throw RunError.protocolFailure("borg list --json printed nothing the relay could read")
        }
        return listing
    }

    private func tamperCheck(present: [PresentArchive]) throws {
        let expected = try history.expectedArchives(client: client.name)
        switch TamperCheck.decide(expected: expected, present: present) {
        case .ok(let count, let inRepository):
            logger.info("tamper check: all \(count) archive(s) the relay created and did not prune are present, ids matching (\(inRepository) in the repository)")
        case .alarm(let findings):
            let text = TamperCheck.message(findings, client: client.name, server: server.name)
            logger.critical("\(text)")
            throw StepStop(state: .failed, error: text, alarm: .tamper)
        }
    }
}
