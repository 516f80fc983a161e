import Foundation
import Logging
import RelayCore

/// Builds the run a queued request asks for: a backup or an operation on the client
/// (restore, borg) runs borg on T (`BackupRun`); prune, compact and check run several borg
/// steps on R with the tamper check (`MaintenanceRun`); the other operations run borg on R
/// once (`LocalBorgRun`).
enum RunFactory {
    /// `passphrase` belongs to the run once it is built (the run wipes it); when building
    /// fails, the caller still owns it.
    static func make(id: String, client c: ClientConfig, server s: ServerConfig, operation: OperationRequest?,
                     passphrase: SecretBytes?, config: RelayConfig, history: any RunStore, connectorPath: String,
                     logger: Logger, logFile path: String) throws -> any RelayRun {
        let options = SessionOptions(config)
        let borgBaseDir = config.relay.stateDir + "/borg"
        guard let op = operation else {
            return try BackupRun(runID: id, client: c, server: s, options: options, policy: RunPolicy(config.relay),
                                 passphrase: passphrase, logger: logger, logFile: path)
        }
        if OperationRequest.clientKinds.contains(op.kind) {
            let r = try BackupRun(runID: id, client: c, server: s, options: options, policy: RunPolicy(config.relay),
                                  passphrase: passphrase, logger: logger, logFile: path,
                                  workload: try op.clientWorkload(client: c.name, runID: id))
            r.outputPath = RunFiles.outputPath(path)
            if op.kind == .restore {
                logger.info("restore of archive \(op.archive ?? "?") into \(op.dryRun == true ? "nothing (dry run)" : op.restoreTarget(client: c.name, runID: id)) on the client")
            }
            return r
        }
        if OperationRequest.maintenanceKinds.contains(op.kind) {
            return try MaintenanceRun(runID: id, client: c, server: s, operation: op, options: options,
                                      passphrase: passphrase, logger: logger, logFile: path,
                                      outputPath: RunFiles.outputPath(path), borgBaseDir: borgBaseDir,
                                      connectorPath: connectorPath, history: history)
        }
        return try LocalBorgRun(runID: id, client: c, server: s, plan: try op.plan(), options: options,
                                passphrase: passphrase, logger: logger, logFile: path,
                                outputPath: RunFiles.outputPath(path), borgBaseDir: borgBaseDir,
                                connectorPath: connectorPath)
    }
}
