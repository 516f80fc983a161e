import Foundation
import Prometheus
import RelayCore
import Synchronization

/// The agent's Prometheus metrics (swift-prometheus): counters and the duration histogram
/// move as runs end; the gauges are set from `FleetState` and the live figures before each
/// exposition. At start-up every finished run of the history is recorded once, so the
/// values survive a restart (counters then count what the history keeps).
///
/// Labels are only client, kind, result, direction (and version, notifier); in a fleet
/// every series also carries `relay` (this relay's `[relay] name`), so that the series of
/// several relays scraped into one Prometheus stay apart.
final class RelayMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    /// This relay's name in a fleet; nil for one relay (no `relay` label).
    let relay: String?
    /// The exposition as of the last `publish()` (the scheduler's tick, each run's end): what
    /// GET /metrics serves, without entering the run manager.
    private let published = Mutex<[UInt8]>([])
    /// Seconds: a few seconds to a day and more.
    static let durationBuckets: [Double] = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400]

    init(version: String = RelayVersion.current, started: Date, relay: String? = nil) {
        self.relay = relay
        gauge("borg_relay_build_info", [("version", version)]).set(to: 1)
        gauge("borg_relay_agent_start_timestamp_seconds").set(to: started.timeIntervalSince1970)
        counterFamilyStarts()
    }

    /// The families that exist before any run (so that alerts and rate() see zeros).
    private func counterFamilyStarts() {
        gauge("borg_relay_runs_running").set(to: 0)
        gauge("borg_relay_runs_queued").set(to: 0)
    }

    /// A run ended (or was read from the history at start-up).
    func record(_ run: FinishedRun) {
        let c = run.client, k = run.kind.rawValue
        counter("borg_relay_runs_total", [("client", c), ("kind", k), ("result", run.state.rawValue)]).increment()
        histogram("borg_relay_run_duration_seconds", [("client", c), ("kind", k)])
            .record(max(0, run.ended.timeIntervalSince(run.started)))
        if run.bytesToServer > 0 {
            counter("borg_relay_spliced_bytes_total", [("client", c), ("direction", "to_server")]).increment(by: Int64(clamping: run.bytesToServer))
        }
        if run.bytesFromServer > 0 {
            counter("borg_relay_spliced_bytes_total", [("client", c), ("direction", "from_server")]).increment(by: Int64(clamping: run.bytesFromServer))
        }
    }

    /// What the gauges show: the fleet's state and the agent's live figures.
    struct Live {
        var clients: [String]
        var running: Int
        var queued: Int
        var nextRun: [String: Date]
        var archives: [String: Int]
        var maxAge: [String: TimeInterval?]
        var now: Date
    }

    func update(_ fleet: FleetState, _ live: Live) {
        gauge("borg_relay_runs_running").set(to: Double(live.running))
        gauge("borg_relay_runs_queued").set(to: Double(live.queued))
        for (key, state) in fleet.lastResult {
            let labels = [("client", key.client), ("kind", key.kind.rawValue)]
            gauge("borg_relay_last_run_success", labels)
                .set(to: state.isSuccess ? 1 : 0)
            if key.kind == .check {
                gauge("borg_relay_last_check_success", [("client", key.client)])
                    .set(to: state.isSuccess ? 1 : 0)
            }
        }
        for (key, at) in fleet.lastSuccess {
            gauge("borg_relay_last_success_timestamp_seconds", [("client", key.client), ("kind", key.kind.rawValue)]).set(to: at.timeIntervalSince1970)
            if key.kind == .check {
                gauge("borg_relay_last_check_success_timestamp_seconds", [("client", key.client)]).set(to: at.timeIntervalSince1970)
            }
        }
        for (client, a) in fleet.lastArchive {
            let l = [("client", client)]
            gauge("borg_relay_last_archive_original_bytes", l).set(to: Double(a.originalSize))
            gauge("borg_relay_last_archive_compressed_bytes", l).set(to: Double(a.compressedSize))
            gauge("borg_relay_last_archive_deduplicated_bytes", l).set(to: Double(a.deduplicatedSize))
            gauge("borg_relay_last_archive_files", l).set(to: Double(a.nfiles))
        }
        for client in live.clients {
            let l = [("client", client)]
            gauge("borg_relay_overdue", l)
                .set(to: fleet.isOverdue(client, maxAge: live.maxAge[client] ?? nil, now: live.now) ? 1 : 0)
            gauge("borg_relay_tamper_alarm", l)
                .set(to: fleet.tamperAlarm.contains(client) ? 1 : 0)
            gauge("borg_relay_archives", l)
                .set(to: Double(live.archives[client] ?? 0))
            if let next = live.nextRun[client] {
                gauge("borg_relay_next_run_timestamp_seconds", l).set(to: next.timeIntervalSince1970)
            }
        }
    }

    /// Each notifier's failure counter exists from the start at 0, so that an alert on its
    /// increase sees the first failure.
    func notifiersConfigured(_ names: [String]) {
        for n in names {
            _ = counter("borg_relay_notify_failures_total", [("notifier", n)])
        }
    }

    func notifyFailed(_ notifier: String) {
        counter("borg_relay_notify_failures_total", [("notifier", notifier)]).increment()
    }

    func notifyDropped(_ notifier: String) {
        counter("borg_relay_notify_dropped_total", [("notifier", notifier)]).increment()
    }

    /// A state backup succeeded (docs/recovery.md): its age is what alerts watch.
    func stateBackupSucceeded(at date: Date) {
        gauge("borg_relay_state_backup_last_success_timestamp_seconds").set(to: date.timeIntervalSince1970)
        gauge("borg_relay_state_backup_last_success").set(to: 1)
    }

    func stateBackupFailed() {
        gauge("borg_relay_state_backup_last_success").set(to: 0)
    }

    /// The text exposition format, as the registry holds it now.
    func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }

    /// Takes the exposition for `GET /metrics`; returns it.
    @discardableResult
    func publish() -> [UInt8] {
        let bytes = exposition()
        published.withLock { $0 = bytes }
        return bytes
    }

    var publishedExposition: [UInt8] { published.withLock { $0 } }

    /// The per-client gauges of clients no longer in the config are dropped (their counters
    /// stay: what happened, happened).
    func forget(clients: Set<String>) {
        let names = ["borg_relay_overdue", "borg_relay_tamper_alarm", "borg_relay_archives", "borg_relay_next_run_timestamp_seconds",
                     "borg_relay_last_archive_original_bytes", "borg_relay_last_archive_compressed_bytes",
                     "borg_relay_last_archive_deduplicated_bytes", "borg_relay_last_archive_files",
                     "borg_relay_last_check_success", "borg_relay_last_check_success_timestamp_seconds"]
        for client in clients {
            for name in names {
                registry.unregisterGauge(gauge(name, [("client", client)]))
            }
            for kind in RunKind.allCases {
                let labels = [("client", client), ("kind", kind.rawValue)]
                registry.unregisterGauge(gauge("borg_relay_last_run_success", labels))
                registry.unregisterGauge(gauge("borg_relay_last_success_timestamp_seconds", labels))
            }
        }
    }

    // MARK: - swift-prometheus

    private func gauge(_ name: String, _ labels: [(String, String)] = []) -> Gauge {
        registry.makeGauge(descriptor: Self.descriptor(name), labels: withRelay(labels))
    }

    private func counter(_ name: String, _ labels: [(String, String)]) -> Counter {
        registry.makeCounter(descriptor: Self.descriptor(name), labels: withRelay(labels))
    }

    private func histogram(_ name: String, _ labels: [(String, String)]) -> ValueHistogram {
        registry.makeValueHistogram(descriptor: Self.descriptor(name), labels: withRelay(labels), buckets: Self.durationBuckets)
    }

    private func withRelay(_ labels: [(String, String)]) -> [(String, String)] {
        relay.map { labels + [("relay", $0)] } ?? labels
    }

    /// One name, one help text: swift-prometheus traps on a name registered with two.
    private static func descriptor(_ name: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help[name]!)
    }

    /// Every metric's help text, by name.
    static let help: [String: String] = [
        "borg_relay_agent_start_timestamp_seconds": "When this relay-agent started.",
        "borg_relay_archives": "Archives the relay created in the repository and has not pruned.",
        "borg_relay_build_info": "The running relay-agent's version (always 1).",
        "borg_relay_last_archive_compressed_bytes": "The last archive's compressed size.",
        "borg_relay_last_archive_deduplicated_bytes": "What the last archive added to the repository.",
        "borg_relay_last_archive_files": "Files in the last archive.",
        "borg_relay_last_archive_original_bytes": "The last archive's original size.",
        "borg_relay_last_check_success": "1 if the last repository check passed.",
        "borg_relay_last_check_success_timestamp_seconds": "When the last repository check that passed ended.",
        "borg_relay_last_run_success": "1 if the last run of this kind succeeded (skipped and cancelled runs do not count).",
        "borg_relay_last_success_timestamp_seconds": "When the last successful run of this kind ended.",
        "borg_relay_next_run_timestamp_seconds": "When the next scheduled backup is due.",
        "borg_relay_notify_dropped_total": "Notifications dropped because too many were pending.",
        "borg_relay_notify_failures_total": "Notifications that could not be delivered (after their retries).",
        "borg_relay_overdue": "1 if the last successful backup is older than the client's max_age.",
        "borg_relay_run_duration_seconds": "How long runs took, from start to end.",
        "borg_relay_runs_queued": "Runs waiting in the queue now.",
        "borg_relay_runs_running": "Runs in progress now.",
        "borg_relay_runs_total": "Runs that ended, by result.",
        "borg_relay_spliced_bytes_total": "Bytes the relay carried between client and server.",
        "borg_relay_state_backup_last_success": "1 if the last backup of the relay's own state to the state repository succeeded.",
        "borg_relay_state_backup_last_success_timestamp_seconds": "When the relay's own state was last backed up to the state repository.",
        "borg_relay_tamper_alarm": "1 if archives the relay created are gone from the repository.",
    ]
}
