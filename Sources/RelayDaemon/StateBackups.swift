import Foundation
import Logging
import RelayCore
import ServiceLifecycle

/// The daemon's state backups (docs/recovery.md): one at a time, each on a thread of its
/// own (borg on R blocks). A request while one runs waits for it and then runs its own
/// (the running one may have collected the state before what the request wants kept),
/// unless another one started after the request meanwhile. Started by `relayctl state
/// backup`, after each reload, on `[relay] state_schedule`, and at start when stale.
actor StateBackups {
    private var config: RelayConfig
    private let connectorPath: String
    private let logger: Logger
    private let metrics: RelayMetrics
    private let notify: NotifyCenter
    private let relayName: String
    private var running: (task: Task<StateBackupResult, Never>, started: Date)?
    private(set) var last: StateBackupResult?
    /// When the last state backup succeeded (this agent's, or recorded in state_dir).
    private var lastSuccess: Date?

    init(config: RelayConfig, connectorPath: String, logger: Logger, metrics: RelayMetrics, notify: NotifyCenter) {
        self.config = config
        self.notify = notify
        self.relayName = config.relay.name
        self.connectorPath = connectorPath
        self.logger = logger
        self.metrics = metrics
        if let done = StateBackup.lastSuccess(config.relay) {
            metrics.stateBackupSucceeded(at: done.ended)
            lastSuccess = done.ended
        }
    }

    var isConfigured: Bool { config.relay.stateServer != nil && config.relay.stateRepository != nil }
    var schedule: CronSchedule { config.relay.stateSchedule }

    /// Runs a state backup that starts after this call and returns its result.
    func backup(trigger: String) async -> StateBackupResult {
        let asked = Date()
        while let r = running {
            let result = await r.task.value
            if r.started >= asked { return result }
        }
        let config = self.config, connectorPath = self.connectorPath, logger = self.logger
        let task = Task<StateBackupResult, Never> {
            let result = await withCheckedContinuation { (c: CheckedContinuation<StateBackupResult, Never>) in
                let thread = Thread {
                    c.resume(returning: StateBackup.run(config: config, connectorPath: connectorPath, logger: logger, trigger: trigger))
                }
                thread.name = "state-backup"
                thread.start()
            }
            self.finished(result)
            return result
        }
        running = (task, Date())
        return await task.value
    }

    /// Book-keeping of an ended backup, before anyone waiting on it resumes.
    private func finished(_ result: StateBackupResult) {
        running = nil
        last = result
        if result.error == nil {
            lastSuccess = result.ended
            metrics.stateBackupSucceeded(at: result.ended)
        } else {
            metrics.stateBackupFailed()
            notify.send(RelayEvent(event: .stateBackupFailed, time: result.ended, error: result.error, relay: relayName))
        }
    }

    /// At start: a backup now when none succeeded within the schedule's period (a new
    /// state_server, or an agent that was down), so the state is not a day late.
    func backupIfStale(now: Date) async {
        guard isConfigured else { return }
        if let lastSuccess, now.timeIntervalSince(lastSuccess) < config.relay.stateSchedule.period { return }
        logger.info("no state backup within the last \(Int(config.relay.stateSchedule.period)) s: backing the state up now")
        _ = await backup(trigger: "start")
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
        await backups.backupIfStale(now: Date())
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
