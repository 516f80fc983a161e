import Foundation
import Logging

/// The outcome of one state backup, as the control API and relayctl show it.
public struct StateBackupResult: Codable, Sendable, Equatable {
    public var server: String
    public var repository: String
    public var archive: String?
    public var archiveID: String?
    public var bytes: Int?
    public var started: Date
    public var ended: Date
    /// Why it failed; nil when it succeeded.
    public var error: String?
    /// What started it: cli, schedule, reload.
    public var trigger: String

    /// How long relayctl waits for the answer (seconds).
    public static let requestTimeout = 900

    enum CodingKeys: String, CodingKey {
        case server, repository, archive, bytes, started, ended, error, trigger
        case archiveID = "archive_id"
    }

    public var summary: String {
        if let error { return "state backup failed: \(error)" }
        return "state backed up: archive \(archive ?? "?") (id \(archiveID ?? "?"), \(bytes ?? 0) bytes sealed) in \(repository) on server \(server), read back and compared"
    }
}

/// The relay's own state backup: collect and seal (`StateCollector`), store in the state
/// repository and read back (`StateRepository`). The last success is kept in
/// `state_dir/state-backup.json` (for the metrics after a restart).
public enum StateBackup {
    public static func recordPath(_ relay: RelaySettings) -> String { relay.stateDir + "/state-backup.json" }

    /// Runs one state backup to `[relay] state_server`; never throws (the result says).
    public static func run(config: RelayConfig, connectorPath: String, logger: Logger, trigger: String,
                           now: Date = Date()) -> StateBackupResult {
        let r = config.relay
        var result = StateBackupResult(server: r.stateServer ?? "", repository: r.stateRepository ?? "", started: now,
                                       ended: now, trigger: trigger)
        do {
            guard let serverName = r.stateServer, let repository = r.stateRepository, let server = config.servers[serverName] else {
                throw RecoveryError.config("\(config.file): [relay] has no state_server and state_repository: there is nowhere to back the state up to (docs/recovery.md); `relayctl state export FILE` writes the bundle to a file")
            }
            let sealed = try StateCollector.sealedBundle(config: config, now: now)
            let name = StateArchives.name(relay: r.name, at: now)
            let work = try StateRepository.makeWork(under: r.stateDir)
            defer { StateRepository.removeWork(work) }
            let repo = StateRepository(server: server, repository: repository, options: SessionOptions(config),
                                       borgBaseDir: r.stateDir + "/borg", connectorPath: connectorPath, logger: logger)
            let id = try repo.store(sealed, archive: name, work: work)
            result.archive = name
            result.archiveID = id
            result.bytes = sealed.count
            result.ended = Date()
            if let data = try? JSONCoding.encoder().encode(result) {
                try? FileCheck.writeAtomically(Array(data), to: recordPath(r), mode: 0o600)
            }
            logger.info("state backup (\(trigger)): \(result.summary)")
        } catch {
            result.error = "\(error)"
            result.ended = Date()
            logger.error("state backup (\(trigger)) failed: \(error)")
        }
        return result
    }

    /// The last successful state backup recorded in state_dir, if any.
    public static func lastSuccess(_ relay: RelaySettings) -> StateBackupResult? {
        guard let data = FileManager.default.contents(atPath: recordPath(relay)) else { return nil }
        return try? JSONCoding.decoder().decode(StateBackupResult.self, from: data)
    }
}
