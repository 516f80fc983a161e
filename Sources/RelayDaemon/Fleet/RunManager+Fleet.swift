import Foundation
import Logging
import RelayCore

/// A fleet of relays on one PostgreSQL database (`[relay] database`): the queue is the
/// database's (`state = 'queued'` rows); each relay claims what it may run, holds a lease
/// on each claimed run and renews it; a relay whose leases expired is taken over by the
/// others; one relay at a time (the advisory lock's holder) enqueues scheduled runs.
/// Every method here does nothing for one relay on SQLite (`fleetStore` nil).
extension RunManager {
    /// The fleet's runs in progress or waiting; nil for one relay (or when the database
    /// does not answer: then the local view stands).
    func fleetUnfinished() -> [RunRecord]? {
        guard let store = fleetStore else { return nil }
        do {
            return try store.unfinished()
        } catch {
            logger.warning("fleet: cannot read the queue: \(error)")
            return nil
        }
    }

    /// `client`'s run: running anywhere in the fleet, else its first waiting run.
    func current(of client: String, in runs: [RunRecord]) -> RunView? {
        let mine = runs.filter { $0.client == client }
        return (mine.first { $0.state == .running } ?? mine.first).map { view(of: $0) }
    }

    /// How many runs `client` has waiting when that is the most it may have; nil otherwise.
    func queueRefusal(client: String) throws(ControlError) -> Int? {
        guard let store = fleetStore else { return queue.refusal(client: client) }
        let waiting: Int
        do { waiting = try store.unfinished().count { $0.client == client && $0.state == .queued } } catch {
            throw .internalError("\(error)")
        }
        return waiting >= Self.maxQueuedPerClient ? waiting : nil
    }

    /// Cancels a run of the fleet that this relay does not run: a queued one in the
    /// database, a running one by asking its relay. False when it is neither.
    func cancelInFleet(_ id: String) throws(ControlError) -> Bool {
        guard let store = fleetStore else { return false }
        do {
            if try store.cancelQueued(id) {
                pinnedSecrets.removeValue(forKey: id)?.wipe()
                logger.info("run \(id) cancelled in the fleet's queue")
                return true
            }
            if let relay = try store.requestCancel(id) {
                store.notifyFleet("cancel \(id)")
                logger.info("run \(id) runs on relay \(relay): asked it to cancel")
                return true
            }
        } catch {
            throw .internalError("\(error)")
        }
        return false
    }

    /// The log of another relay's run: as stored in the database when the run ended, or
    /// nothing yet (and not complete) while it runs there.
    func remoteLog(of r: RunView, offset: Int) throws(ControlError) -> LogChunk? {
        guard let store = fleetStore, let relay = r.relay, relay != relayName else { return nil }
        guard offset >= 0 else { throw .badRequest("offset must be 0 or more") }
        let stored: [UInt8]?
        do { stored = try store.storedLog(runID: r.id) } catch { throw .internalError("\(error)") }
        guard let bytes = stored else {
            if r.isFinished {
                let note = Array("(the log of run \(r.id) is on relay \(relay) in \(r.logFile ?? "its state_dir"); it was not stored in the database)\n".utf8)
                return RunFiles.chunk(of: note, runID: r.id, offset: offset, finished: true)
            }
            return LogChunk(runID: r.id, offset: offset, nextOffset: offset, data: "", complete: false)
        }
        return RunFiles.chunk(of: bytes, runID: r.id, offset: offset, finished: r.isFinished)
    }

    /// Claims and starts runs while this relay has room.
    func claimFromFleet() {
        guard let store = fleetStore else { return }
        let mine = config.clients.values.filter { $0.relays.isEmpty || $0.relays.contains(relayName) }.map(\.name).sorted()
        while accepting && queue.running.count < config.relay.maxParallel {
            let claimed: ClaimedRun?
            do {
                claimed = try store.claim(clients: mine, lease: config.relay.lease, pid: getpid(),
                                          agentStart: ProcessIdentity.startTime(of: getpid()), logDir: config.relay.logDir)
            } catch {
                logger.warning("fleet: cannot claim runs: \(error)")
                return
            }
            guard let c = claimed else { return }
            logger.info("run \(c.record.id) of client \(c.record.client) claimed from the fleet's queue (\(c.record.trigger ?? "?"))")
            start(.init(id: c.record.id, client: c.record.client,
                        item: Pending(passphrase: pinnedSecrets.removeValue(forKey: c.record.id), operation: c.operation)))
        }
    }

    /// A finished run's log goes to the database too: relayctl on any relay reads it.
    func storeLogInFleet(_ report: RunReport) {
        guard let store = fleetStore, let path = report.logFile,
              let data = FileManager.default.contents(atPath: path) else { return }
        do {
            try store.storeLog(runID: report.runID, bytes: [UInt8](data.suffix(Self.maxStoredLog)))
        } catch {
            logger.warning("fleet: run \(report.runID): its log stays on this relay only: \(error)")
        }
    }

    /// The logs of this relay's running runs go to the database as they grow (at most every
    /// `liveLogEvery`), so that `relayctl log` through another relay follows them.
    func storeLiveLogs(now: Date) {
        guard let store = fleetStore, now.timeIntervalSince(lastLiveLogs) >= Self.liveLogEvery else { return }
        lastLiveLogs = now
        for (id, r) in queue.running {
            let path = logPath(r.client, id)
            guard let data = FileManager.default.contents(atPath: path), data.count != liveLogSizes[id] else { continue }
            do {
                try store.storeLog(runID: id, bytes: [UInt8](data.prefix(Self.maxStoredLog)), complete: false)
                liveLogSizes[id] = data.count
            } catch {
                logger.debug("fleet: run \(id): its live log was not stored: \(error)")
                return
            }
        }
        liveLogSizes = liveLogSizes.filter { queue.running[$0.key] != nil }
    }

    static let liveLogEvery: TimeInterval = 2

    /// The most of a run's log kept in the database (its end, where the outcome is).
    static let maxStoredLog = 4 << 20

    /// At start: this relay's runs that an earlier agent of it left running are interrupted
    /// (their PIDs are this host's), scheduled backups among them queued again.
    func recoverOwnRuns() {
        guard let store = fleetStore else { return }
        do {
            for id in try store.markInterrupted() {
                logger.warning("run \(id) was interrupted (an earlier agent of relay \(relayName) ended mid-run); marked in the history")
                if let r = try store.get(id) { requeue(ExpiredRun(id: id, client: r.client, kind: r.kind, trigger: r.trigger, relay: relayName)) }
            }
            for id in try store.cancelOrphanedPins() {
                logger.warning("run \(id) was queued with a passphrase from stdin for an earlier agent of relay \(relayName); cancelled (the passphrase is gone)")
            }
        } catch {
            logger.error("fleet: cannot recover this relay's runs: \(error)")
        }
    }

    /// One turn of the fleet's upkeep (about every second, and when woken): renew leases
    /// or give runs up, take over expired leases, carry out cancel requests, record what
    /// could not be recorded, claim runs.
    func fleetTick() {
        guard let store = fleetStore, !leftFleet else { return }
        // Leases are judged on a monotonic clock: a wall clock stepped back would fence late.
        let now = Self.monotonicNow()
        let held = Array(queue.running.keys) + unrecorded.map(\.runID)
        for action in leases.due(now: now, holding: held.count) {
            switch action {
            case .renew:
                leases.attempting(at: now)
                do {
                    if let renewed = try store.renew(instance: instance, lease: config.relay.lease, held: held) {
                        leases.renewed(sentAt: now)
                        for id in held where !renewed.contains(id) {
                            if let a = queue.running[id]?.item {
                                logger.error("run \(id) of client \(a.client): another relay took it over (its lease had expired); stopping it here")
                                a.run.canceller.cancel()
                            }
                        }
                    } else {
                        logger.error("fleet: another agent registered as relay \(relayName); this one stops its runs")
                        fence(silentFor: 0)
                    }
                } catch {
                    logger.warning("fleet: cannot renew the leases (\(Int(now.timeIntervalSince(leases.renewedAt))) s since the last renewal; runs stop at \(Int(leases.fenceAfter)) s): \(error)")
                }
            case .fence(let silent):
                fence(silentFor: silent)
            }
        }
        do {
            for e in try store.expireLeases() {
                logger.warning("run \(e.id) of client \(e.client): relay \(e.relay ?? "?") stopped renewing its lease; marked interrupted")
                requeue(e)
            }
            for id in try store.cancelRequests() {
                if let a = queue.running[id]?.item {
                    logger.info("run \(id) of client \(a.client): cancel requested through another relay")
                    a.run.canceller.cancel()
                }
            }
        } catch {
            logger.debug("fleet: upkeep skipped: \(error)")
        }
        retryUnrecorded()
        startEligible()
        storeLiveLogs(now: Date())
    }

    /// Seconds of CLOCK_MONOTONIC as a Date (LeaseKeeper takes Dates; only differences count).
    static func monotonicNow() -> Date {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Date(timeIntervalSince1970: Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9)
    }

    /// The leases could not be renewed in time: every run of this relay is cancelled
    /// before another relay may take them over.
    private func fence(silentFor silent: TimeInterval) {
        leases.didFence()
        guard !queue.running.isEmpty else { return }
        logger.error("fleet: the leases were not renewed for \(Int(silent)) s; cancelling \(queue.running.count) run(s) before another relay takes them over")
        for a in queue.running.values { a.item.run.canceller.cancel() }
    }

    /// Runs that ended while the database was away are recorded now, if it answers.
    func retryUnrecorded() {
        guard let store = fleetStore, !unrecorded.isEmpty else { return }
        var left: [RunReport] = []
        for ran in unrecorded {
            do {
                let report = try store.finish(ran)
                logger.info("run \(ran.runID): recorded now that the database answers again")
                storeLogInFleet(report)
                afterRecorded(report)
            } catch {
                left.append(ran)
            }
        }
        unrecorded = left
    }

    /// A scheduled backup whose relay was lost is queued again, once (`FailoverRule`).
    private func requeue(_ e: ExpiredRun) {
        guard FailoverRule.restarts(kind: e.kind, trigger: e.trigger), accepting, config.clients[e.client] != nil else { return }
        do {
            let runs = try submit(RunRequest(clients: [e.client], queue: true), trigger: FailoverRule.trigger, slot: nil)
            logger.info("client \(e.client): scheduled backup \(e.id) was lost with its relay; queued again as \(runs.first?.id ?? "?")")
        } catch {
            logger.error("client \(e.client): the lost scheduled backup \(e.id) could not be queued again: \(error)")
        }
    }

    /// The scheduler's turn in a fleet: true when this relay leads it now. A relay that
    /// becomes the leader plans each schedule from the last due time the fleet enqueued
    /// (so a due time passed during the hand-over still runs once), at most `handover` back.
    func takeLead(_ leads: Bool, now: Date, timeZone: TimeZone) {
        guard let store = fleetStore else { return }
        defer { leading = leads }
        guard leads && !leading else { return }
        logger.info("fleet: relay \(relayName) now runs the fleet's scheduler")
        let backups = (try? store.lastSlots(kind: .backup)) ?? [:]
        let checkSlots = (try? store.lastSlots(kind: .check)) ?? [:]
        let floor = now.addingTimeInterval(-Self.handover)
        schedule.plan(config.clients.values.map { ($0.name, $0.schedule) }, now: now, timeZone: timeZone,
                      from: backups.mapValues { max($0, floor) })
        checks.plan(config.clients.values.map { ($0.name, $0.checkSchedule) }, now: now, timeZone: timeZone,
                    from: checkSlots.mapValues { max($0, floor) })
    }

    /// How far back a new scheduler leader looks for due times not yet enqueued.
    static let handover: TimeInterval = 120

    var isFleet: Bool { fleetStore != nil }

    /// The agent stops: its name is free again at once (not after a lease).
    func leaveFleet() {
        leftFleet = true
        fleetStore?.unregister(instance: instance)
    }
}
