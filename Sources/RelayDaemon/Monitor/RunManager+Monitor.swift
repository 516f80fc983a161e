import Foundation
import RelayCore

/// Monitoring inside the daemon's serialisation point: the fleet's state moves as runs end
/// and as time passes (overdue); its events go to the notifiers, its figures to the metrics
/// (served on [metrics] listen, written to [metrics] textfile).
extension RunManager {
    /// Reads the history once at start-up: the metrics and the fleet's state as they were
    /// (no events fire for the past), and the clients whose overdue event was sent before;
    /// then `agent_started`, and overdue events for clients that became overdue meanwhile.
    func startMonitoring() {
        do {
            let recent = Date().addingTimeInterval(-600)
            for r in try history.finishedRuns() {
                guard let f = FinishedRun(r) else { continue }
                // A fleet's relay counts what it ran; its state knows every relay's runs.
                if !isFleet || r.relay == relayName || r.relay == nil { metrics.record(f) }
                _ = fleet.record(f)
                if isFleet && r.relay != relayName, let ended = r.endedAt, ended > recent { othersSeen[r.id] = ended }
            }
        } catch {
            logger.error("monitoring: the history could not be read, the metrics start from zero: \(error)")
        }
        fleet.restoreOverdue(OverdueRecord.read(stateDir: config.relay.stateDir))
        fleet.watch(Array(config.clients.keys), now: Date())
        send(RelayEvent(event: .agentStarted, time: Date(), relay: relayName))
        monitorTick(now: Date())
    }

    /// A run ended: metrics, state, events.
    func observe(_ run: FinishedRun, logFile: String?) {
        metrics.record(run)
        let events = fleet.record(run)
        if !events.isEmpty {
            let tail = logFile.flatMap { Self.logTail($0) }
            for e in events { send(RelayEvent(e, run: run, relay: relayName), logTail: tail) }
        }
        refreshMetrics(now: Date(), writeTextfile: true)
    }

    /// Called by the scheduler every few seconds: overdue transitions, the gauges, the
    /// textfile when its interval has passed.
    func monitorTick(now: Date) {
        absorbOthersRuns(now: now)
        let before = fleet.overdue
        let became = fleet.updateOverdue(now: now, maxAges: config.clients.mapValues(\.overdueAfter))
        if fleet.overdue != before {
            do {
                try OverdueRecord.write(fleet.overdue, stateDir: config.relay.stateDir)
            } catch {
                logger.error("monitoring: \(error) (overdue events may fire again after a restart)")
            }
        }
        for client in became {
            let maxAge = config.clients[client]?.overdueAfter ?? 0
            let last = fleet.lastBackup(client)
            logger.warning("client \(client) is OVERDUE: its last successful backup \(last.map { "ended \(RelayEvent.rfc3339($0))" } ?? "never happened") (max_age \(Int(maxAge)) s)")
            // In a fleet every relay sees the same history; the scheduler's leader tells.
            if isFleet && !leading { continue }
            send(RelayEvent(event: .overdue, client: client, server: config.clients[client]?.server, kind: .backup, time: now,
                            error: "no successful backup within \(Int(maxAge)) s", relay: relayName))
        }
        refreshMetrics(now: now, writeTextfile: false)
    }

    /// In a fleet, the runs other relays finished move this relay's view too (last success,
    /// overdue, tamper alarm, the gauges): without events, which the relay that ran each run
    /// sent, and without this relay's counters. A run recorded late (its relay had lost the
    /// database) is still seen: the window looks 10 minutes back, by run id.
    func absorbOthersRuns(now: Date) {
        guard let store = fleetStore else { return }
        let window = now.addingTimeInterval(-600)
        do {
            for r in try store.finishedByOthers(since: window) where othersSeen[r.id] == nil {
                othersSeen[r.id] = r.endedAt ?? now
                if let f = FinishedRun(r) { _ = fleet.record(f) }
            }
        } catch {
            logger.debug("fleet: other relays' runs not read: \(error)")
        }
        othersSeen = othersSeen.filter { $0.value > window }
    }

    func send(_ event: RelayEvent, logTail: String? = nil) {
        notify.send(event, logTail: logTail)
    }

    /// The end of a run log, for Healthchecks' ping body (at most 10 KB).
    static func logTail(_ path: String) -> String? {
        guard let h = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? h.close() }
        let size = (try? h.seekToEnd()) ?? 0
        try? h.seek(toOffset: size > 10_000 ? size - 10_000 : 0)
        guard let data = try? h.readToEnd() else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}

/// The clients whose overdue event was sent (state_dir/overdue.json), so that a restart does
/// not send it again, and an agent that was down still sends it for a client that became
/// overdue meanwhile.
enum OverdueRecord {
    static func path(_ stateDir: String) -> String { stateDir + "/overdue.json" }

    static func read(stateDir: String) -> Set<String> {
        guard let data = FileManager.default.contents(atPath: path(stateDir)),
              let names = try? JSONDecoder().decode([String].self, from: data) else { return [] }
        return Set(names)
    }

    static func write(_ clients: Set<String>, stateDir: String) throws {
        let data = try JSONEncoder().encode(clients.sorted())
        try FileCheck.writeAtomically(Array(data), to: path(stateDir), mode: 0o600)
    }
}
