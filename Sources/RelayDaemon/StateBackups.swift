import Foundation
import Logging
import RelayCore
import ServiceLifecycle

/// The daemon's state backups (docs/recovery.md): one at a time, each on a thread of its
/// own (borg on R blocks); a request while one runs gets that one's result. Started by
/// `relayctl state backup`, after each reload, and on `[relay] state_schedule`.
actor StateBackups {
    private var config: RelayConfig
    private let connectorPath: String
    private let logger: Logger
    private let metrics: RelayMetrics
    private let notify: NotifyCenter
    private let relayName: String
    private var running: Task<StateBackupResult, Never>?
    private(set) var last: StateBackupResult?

    init(config: RelayConfig, connectorPath: String, logger: Logger, metrics: RelayMetrics, notify: NotifyCenter) {
        self.config = config
        self.notify = notify
        self.relayName = config.relay.name
        self.connectorPath = connectorPath
        self.logger = logger
        self.metrics = metrics
        if let done = StateBackup.lastSuccess(config.relay) {
            metrics.stateBackupSucceeded(at: done.ended)
        }
    }

    var isConfigured: Bool { config.relay.stateServer != nil && config.relay.stateRepository != nil }
    var schedule: CronSchedule { config.relay.stateSchedule }

    /// Runs a state backup now (or waits for the one running) and returns its result.
    func backup(trigger: String) async -> StateBackupResult {
        if let running { return await running.value }
        let config = self.config, connectorPath = self.connectorPath, logger = self.logger
        let task = Task<StateBackupResult, Never> {
            await withCheckedContinuation { (c: CheckedContinuation<StateBackupResult, Never>) in
                let thread = Thread {
                    c.resume(returning: StateBackup.run(config: config, connectorPath: connectorPath, logger: logger, trigger: trigger))
                }
                thread.name = "state-backup"
                thread.start()
            }
        }
        running = task
        let result = await task.value
        running = nil
        last = result
        if result.error == nil {
            metrics.stateBackupSucceeded(at: result.ended)
        } else {
            metrics.stateBackupFailed()
            notify.send(RelayEvent(event: .stateBackupFailed, time: result.ended, error: result.error, relay: relayName))
        }
        return result
    }

    /// A reloaded config: the next backups use it, and one runs now (the config changed).
    func reloaded(_ new: RelayConfig) {
        config = new
        guard isConfigured else { return }
        Task { _ = await self.backup(trigger: "reload") }
    }
}

/// Backs the state up on `[relay] state_schedule` (default daily), in the daemon's time zone.
struct StateBackupService: Service {
    let backups: StateBackups
    let logger: Logger
    let timeZone: TimeZone

    func run() async throws {
        var due: Date?
        var plannedFor: CronSchedule?
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let now = Date()
            let schedule = await backups.schedule
            if await !backups.isConfigured {
                due = nil
            } else if due == nil || plannedFor != schedule {
                due = schedule.next(after: now, in: timeZone)
                plannedFor = schedule
            } else if let d = due, d <= now {
                logger.info("scheduled state backup")
                _ = await backups.backup(trigger: "schedule")
                due = schedule.next(after: Date(), in: timeZone)
            }
            // A reload shows within a minute.
            let wait = min(60, max(0.05, due?.timeIntervalSinceNow ?? 60))
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(Int64(wait * 1000))) }
        }
    }
}
