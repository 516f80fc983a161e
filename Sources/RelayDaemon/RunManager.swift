import Foundation
import Logging
import RelayCore

// Longer than 400 lines: the actor is the daemon's one serialisation point, so every
// request the control API serves is a method here; its parts are values elsewhere
// (RunQueue, EphemeralKeys, RunFiles, RunFactory); a fleet's queue, leases and scheduler
// lock are in RunManager+Fleet.swift.

/// A refused control request: the HTTP status and the body the client gets.
public struct ControlError: Error, CustomStringConvertible, Sendable {
    public let status: Int
    public let body: APIErrorBody

    public var description: String { body.error }

    static func badRequest(_ text: String) -> ControlError { .init(status: 400, body: .init(code: "bad_request", error: text)) }
    static func notFound(_ text: String) -> ControlError { .init(status: 404, body: .init(code: "not_found", error: text)) }
    static func busy(_ text: String, runID: String) -> ControlError {
        .init(status: 409, body: .init(code: "busy", error: text, runID: runID))
    }
    static func conflict(_ text: String) -> ControlError { .init(status: 409, body: .init(code: "conflict", error: text)) }
    static func tooManyQueued(client: String, queued: Int, cap: Int) -> ControlError {
        .init(status: 429, body: .init(code: "too_many_queued", error: """
            client \(client) already has \(queued) run(s) waiting in the queue, the most a client may have (\(cap)); \
            nothing was queued: wait for the queued runs or cancel some: relayctl runs \(client)
            """))
    }
    static func shuttingDown() -> ControlError {
        .init(status: 503, body: .init(code: "shutting_down", error: "relay-agent is shutting down and accepts no new runs"))
    }
    static func internalError(_ text: String) -> ControlError { .init(status: 500, body: .init(code: "internal", error: text)) }
}

/// The daemon's runs: the queue, the runs in progress (each on its own thread), the
/// history, the per-run keys and the schedule.
///
/// Rules: at most `max_parallel` runs at once; one run per client at a time; FIFO, but a
/// queued run of a busy client does not hold up the runs of other clients behind it.
public actor RunManager {
    private(set) var config: RelayConfig
    let history: any RunStore
    let logger: Logger
    let startedAt = Date()
    /// The `relay-agent` executable: the BORG_RSH connector of borg runs on the relay.
    let connectorPath: String

    /// A run waiting in the queue: its passphrase (from `--passphrase-stdin`) and operation.
    struct Pending {
        var passphrase: SecretBytes?
        var operation: OperationRequest?
    }

    final class Active: Sendable {
        let id: String
        let client: String
        let run: any RelayRun
        let sink: RunLogSink
        init(id: String, client: String, run: any RelayRun, sink: RunLogSink) {
            self.id = id
            self.client = client
            self.run = run
            self.sink = sink
        }
    }

    var queue = RunQueue<Pending, Active>(maxWaitingPerClient: RunManager.maxQueuedPerClient)
    var accepting = true
    private var keys = EphemeralKeys(lifetime: RunManager.keyLifetime, max: RunManager.maxKeys)
    var schedule = ScheduleBook()
    /// When each client's scheduled repository check is next due.
    var checks = ScheduleBook()
    /// What monitoring knows (last results, overdue, tamper alarm); events come from it
    /// (RunManager+Monitor.swift moves it on).
    var fleet: FleetState
    nonisolated let metrics: RelayMetrics
    nonisolated let notify: NotifyCenter
    /// The relay's own state backups (docs/recovery.md).
    nonisolated let stateBackups: StateBackups
    /// This relay's name in events and in a fleet (`[relay] name`, the host name by default).
    nonisolated let relayName: String
    /// The fleet's database when `[relay] database` is set (the queue is there, not in
    /// `queue.waiting`); nil for one relay on SQLite.
    nonisolated let fleetStore: PostgresStore?
    /// This agent's leases on the runs it claimed (fleet only).
    var leases: LeaseKeeper
    /// This agent, among the incarnations of its relay name.
    nonisolated let instance = UUID().uuidString
    /// Passphrases from `--passphrase-stdin` for runs pinned to this relay (fleet only).
    var pinnedSecrets: [String: SecretBytes] = [:]
    /// Reports of runs that ended while the database could not record them (fleet only):
    /// recorded when it answers again; their leases are renewed meanwhile.
    var unrecorded: [RunReport] = []
    /// Whether this relay leads the fleet's scheduler.
    var leading = false
    /// The agent stopped and freed its relay name (fleet only).
    var leftFleet = false
    /// The size of each running run's log as last stored in the database (fleet only).
    var liveLogSizes: [String: Int] = [:]
    var lastLiveLogs = Date.distantPast
    /// Runs of other relays already taken into monitoring's state, by id (fleet only).
    var othersSeen: [String: Date] = [:]
    private var lastTextfile: Date?
    static let keyLifetime: TimeInterval = 120
    /// The most runs one client may have waiting in the queue (not yet started): a flood
    /// of requests cannot grow the queue (or the history) without bound.
    public static let maxQueuedPerClient = 10
    static let maxKeys = 64

    public init(config: RelayConfig, history: any RunStore, logger: Logger, connectorPath: String = "relay-agent") {
        self.config = config
        self.history = history
        self.logger = logger
        self.connectorPath = connectorPath
        fleet = FleetState(since: startedAt)
        metrics = RelayMetrics(started: startedAt, relay: config.relay.database == nil ? nil : config.relay.name)
        notify = NotifyCenter(notifiers: config.notifiers, metrics: metrics, logger: logger)
        stateBackups = StateBackups(config: config, connectorPath: connectorPath, logger: logger, metrics: metrics, notify: notify)
        relayName = config.relay.name
        fleetStore = history as? PostgresStore
        leases = LeaseKeeper(lease: TimeInterval(config.relay.lease), start: Self.monotonicNow())
    }

    // MARK: - Requests

    /// Queues one run per client; each starts as soon as the limits allow. All clients are
    /// checked before any run is queued, so a refused request queues nothing.
    public func submit(_ request: RunRequest, trigger: String) throws(ControlError) -> [RunView] {
        try submit(request, trigger: trigger, slot: nil)
    }

    /// `slot`: the schedule's due time of a scheduled run (a fleet enqueues it once).
    func submit(_ request: RunRequest, trigger: String, slot: Date?) throws(ControlError) -> [RunView] {
        guard accepting else { throw .shuttingDown() }
        var names = request.all == true ? config.clients.keys.sorted() : request.clients
        var seen = Set<String>()
        names = names.filter { seen.insert($0).inserted }
        if names.isEmpty { throw .badRequest("no client given: name one or more clients, or ask for all") }
        if request.all == true && !request.clients.isEmpty {
            throw .badRequest("give either client names or 'all', not both")
        }
        for n in names where config.clients[n] == nil {
            throw .notFound("unknown client '\(n)': \(config.file) has no [clients.\(n)] (known: \(config.clients.keys.sorted().joined(separator: ", ")))")
        }
        if let op = request.operation {
            if names.count != 1 { throw .badRequest("\(op.kind) is for exactly one client; \(names.count) were named") }
            let c = config.clients[names[0]]!
            do {
                try op.validate(client: c, server: config.server(for: c), file: config.file)
            } catch {
                throw .badRequest("\(error)")
            }
        }
        if request.passphrase != nil && names.count != 1 {
            throw .badRequest("a passphrase from stdin is for exactly one client; \(names.count) were named")
        }
        if request.queue != true {
            let unfinished = fleetUnfinished()
            for n in names {
                if let busy = unfinished.map({ current(of: n, in: $0) }) ?? runOf(client: n) {
                    throw .busy("client \(n) already has run \(busy.id) \(busy.state); wait for it, cancel it, or ask again with --queue", runID: busy.id)
                }
            }
        }
        for n in names {
            if let waiting = try queueRefusal(client: n) {
                throw .tooManyQueued(client: n, queued: waiting, cap: Self.maxQueuedPerClient)
            }
        }
        var secret: SecretBytes?
        if let sealed = request.passphrase {
            secret = try openRunPassphrase(sealed, client: names[0])
        }
        var views: [RunView] = []
        for n in names {
            let c = config.clients[n]!
            let id = CLI.newRunID()
            let record = RunRecord.starting(runID: id, client: n, server: c.server,
                                            kind: request.operation?.kind ?? .backup, logFile: logPath(n, id),
                                            state: .queued, trigger: trigger)
            let pin = n == names[0] ? secret : nil
            if let store = fleetStore {
                let inserted: Bool
                do {
                    inserted = try store.insert(record, operation: request.operation.flatMap { try? JSONCoding.encoder().encode($0) }
                                                    .map { String(decoding: $0, as: UTF8.self) },
                                                pinnedRelay: pin == nil ? nil : relayName, scheduledFor: slot)
                } catch {
                    secret?.wipe()
                    throw .internalError("\(error)")
                }
                if !inserted {
                    logger.debug("client \(n): the run due at \(slot.map { "\($0)" } ?? "?") was queued by another relay")
                    continue
                }
                if let pin { pinnedSecrets[id] = pin }
                store.notifyFleet("queued \(id)")
            } else {
                do {
                    try history.insert(record)
                } catch {
                    secret?.wipe()
                    throw .internalError("\(error)")
                }
                queue.enqueue(id: id, client: n, item: Pending(passphrase: pin, operation: request.operation))
            }
            views.append(RunView(record))
            logger.info("run \(id) of client \(n) queued (\(trigger))")
        }
        startEligible()
        return views.map { v in (try? history.get(v.id)).flatMap { $0 }.map { view(of: $0) } ?? v }
    }

    /// Cancels a run: a queued one is dropped, a running one stops cleanly (borg on the
    /// client ended, forward cancelled, channels closed).
    public func cancel(_ id: String) throws(ControlError) -> RunView {
        if let a = queue.running[id]?.item {
            logger.info("run \(id) of client \(a.client): cancel requested")
            a.run.canceller.cancel()
        } else if let p = queue.remove(id: id) {
            p.item.passphrase?.wipe()
            try? history.markEnded(id, state: .cancelled, error: "cancelled before it started")
            logger.info("run \(id) of client \(p.client) cancelled in the queue")
        } else if fleetStore != nil, try cancelInFleet(id) {
            // queued: cancelled in the database; running on another relay: that relay was asked
        } else {
            guard let r = (try? history.get(id)) ?? nil else { throw .notFound("no run \(id)") }
            throw .conflict("run \(id) has already ended (\(r.state))")
        }
        return try run(id)
    }

    public func run(_ id: String) throws(ControlError) -> RunView {
        let record: RunRecord?
        do { record = try history.get(id) } catch { throw .internalError("\(error)") }
        guard let r = record else { throw .notFound("no run \(id) (see `relayctl runs`)") }
        return view(of: r)
    }

    public func runs(client: String?, limit: Int) throws(ControlError) -> [RunView] {
        do {
            return try history.recent(client: client, limit: limit).map { view(of: $0) }
        } catch {
            throw .internalError("\(error)")
        }
    }

    /// The run log from `offset`; `complete` once the run has ended and all is read.
    public func log(_ id: String, offset: Int) throws(ControlError) -> LogChunk {
        let r = try run(id)
        if let remote = try remoteLog(of: r, offset: offset) { return remote }
        return try chunk(of: r, path: r.logFile, offset: offset)
    }

    /// borg's stdout of an operation (list, info, key export), from `offset`.
    public func output(_ id: String, offset: Int) throws(ControlError) -> LogChunk {
        let r = try run(id)
        let c = try chunk(of: r, path: r.logFile.map(RunFiles.outputPath), offset: offset)
        if c.complete { delivered(r) }
        return c
    }

    /// borg's stdout of an operation as raw bytes (it may be binary, e.g. export-tar), from
    /// `offset`; `complete` once the run has ended and everything has been read.
    public func rawOutput(_ id: String, offset: Int) throws(ControlError) -> (bytes: [UInt8], next: Int, complete: Bool) {
        let r = try run(id)
        guard offset >= 0 else { throw .badRequest("offset must be 0 or more") }
        let raw = RunFiles.raw(r.logFile.map(RunFiles.outputPath), offset: offset, finished: r.isFinished)
        if raw.complete { delivered(r) }
        return raw
    }

    /// borg's output of a finished run has been read to its end: it is removed, so that what
    /// a read command printed (file contents from `extract --stdout`, a tar stream) does not
    /// stay on the relay's disk. It is delivered once; asking again gets nothing.
    private func delivered(_ r: RunView) {
        guard let log = r.logFile, let path = RunFiles.remove(outputOf: log) else { return }
        logger.info("run \(r.id): output delivered and removed (\(path))")
    }

    func chunk(of r: RunView, path: String?, offset: Int) throws(ControlError) -> LogChunk {
        guard offset >= 0 else { throw .badRequest("offset must be 0 or more") }
        return RunFiles.chunk(path, runID: r.id, offset: offset, finished: r.isFinished)
    }

    /// A fresh key pair for one passphrase (`relayctl run --passphrase-stdin`).
    public func newKey() throws(ControlError) -> EphemeralKey {
        do { return try keys.make(now: Date()) } catch { throw .internalError("\(error)") }
    }

    public func status() -> StatusView {
        let unfinished = fleetUnfinished()
        var agent = StatusView.Agent(pid: getpid(), startedAt: startedAt, config: config.file,
                                     maxParallel: config.relay.maxParallel, running: queue.running.count,
                                     queued: unfinished.map { $0.count { $0.state == .queued } } ?? queue.waiting.count,
                                     accepting: accepting)
        if fleetStore != nil { agent.relay = relayName }
        var clients: [StatusView.Client] = []
        for name in config.clients.keys.sorted() {
            let c = config.clients[name]!
            let current = unfinished.map { runs in self.current(of: name, in: runs) } ?? runOf(client: name)
            let last = ((try? history.lastFinished(client: name)) ?? nil).map { view(of: $0) }
            var client = StatusView.Client(name: name, server: c.server, state: current?.state.rawValue ?? "idle", current: current,
                                           last: last, schedule: c.schedule?.text, nextRun: schedule.nextDue[name])
            client.lastSuccess = fleet.lastBackup(name)
            client.maxAge = c.overdueAfter
            client.overdue = fleet.isOverdue(name, maxAge: c.overdueAfter, now: Date())
            client.tamperAlarm = fleet.tamperAlarm.contains(name)
            client.lastCheck = ((try? history.lastFinished(client: name, kind: .check)) ?? nil).map { view(of: $0) }
            client.checkSchedule = c.checkSchedule?.text
            client.nextCheck = checks.nextDue[name]
            clients.append(client)
        }
        return StatusView(agent: agent, clients: clients)
    }

    // MARK: - Scheduling (used by the scheduler)

    /// Recomputes every client's next due time after `now` (start, reload).
    func planSchedules(now: Date, timeZone: TimeZone) {
        schedule.plan(config.clients.values.map { ($0.name, $0.schedule) }, now: now, timeZone: timeZone)
        checks.plan(config.clients.values.map { ($0.name, $0.checkSchedule) }, now: now, timeZone: timeZone)
    }

    /// Clients whose schedule fired while the agent was down and that want `catch_up`.
    func missedSchedules(now: Date, timeZone: TimeZone) -> [String] {
        var missed: [String] = []
        for (name, c) in config.clients where c.catchUp {
            guard let s = c.schedule, let last = (try? history.lastQueued(client: name)) ?? nil else { continue }
            if let due = s.next(after: last, in: timeZone), due < now { missed.append(name) }
        }
        return missed.sorted()
    }

    /// Clients due at `now` (their next time moves on) and the earliest next due time.
    func takeDue(now: Date, timeZone: TimeZone) -> (due: [(client: String, jitter: Int, slot: Date)], checks: [(client: String, slot: Date)], next: Date?) {
        let (due, next) = schedule.takeDue(now: now, timeZone: timeZone) { config.clients[$0]?.schedule }
        let (dueChecks, nextCheck) = checks.takeDue(now: now, timeZone: timeZone) { config.clients[$0]?.checkSchedule }
        let earliest = [next, nextCheck].compactMap { $0 }.min()
        return (due.map { ($0.client, config.clients[$0.client]?.jitter ?? 0, $0.at) }, dueChecks.map { ($0.client, $0.at) }, earliest)
    }

    /// A scheduled repository check (`check_schedule`): queued behind the client's run, if any.
    func submitScheduledCheck(_ client: String, slot: Date? = nil) {
        guard accepting, let c = config.clients[client] else { return }
        // One check at a time per client: a check longer than its interval does not pile up.
        var waitingCheck = queue.waiting.contains { $0.client == client && $0.item.operation?.kind == .check }
        var runningCheck = queue.running.keys.contains { ((try? history.get($0)) ?? nil).map { $0.client == client && $0.kind == .check } ?? false }
        if let runs = fleetUnfinished() {
            waitingCheck = runs.contains { $0.client == client && $0.kind == .check && $0.state == .queued }
            runningCheck = runs.contains { $0.client == client && $0.kind == .check && $0.state == .running }
        }
        if waitingCheck || runningCheck {
            logger.warning("scheduled check of client \(client) skipped: its previous check is still \(runningCheck ? "running" : "queued")")
            return
        }
        let op = OperationRequest(kind: .check, scope: c.checkScope, maxDuration: c.checkMaxDuration)
        do {
            _ = try submit(RunRequest(clients: [client], queue: true, operation: op), trigger: "check-schedule", slot: slot)
        } catch {
            logger.error("scheduled check of client \(client) could not be queued: \(error)")
        }
    }

    /// A scheduled start: skipped (and logged) if the client still has a run.
    func submitScheduled(_ client: String, trigger: String, slot: Date? = nil) {
        guard accepting else { return }
        let busyRun = fleetUnfinished().map { current(of: client, in: $0) } ?? runOf(client: client)
        if let busy = busyRun {
            logger.warning("scheduled run of client \(client) skipped: run \(busy.id) is still \(busy.state)")
            return
        }
        do {
            _ = try submit(RunRequest(clients: [client], queue: true), trigger: trigger, slot: slot)
        } catch {
            logger.error("scheduled run of client \(client) could not be queued: \(error)")
        }
    }

    // MARK: - Configuration and shutdown

    /// Takes a new config: it applies to runs that start from now on.
    func reload(_ new: RelayConfig, timeZone: TimeZone) {
        let removed = Set(config.clients.keys).subtracting(new.clients.keys)
        config = new
        planSchedules(now: Date(), timeZone: timeZone)
        fleet.watch(Array(new.clients.keys), now: Date())
        metrics.forget(clients: removed)
        notify.reload(new.notifiers)
        logger.info("configuration reloaded from \(new.file): \(new.clients.count) clients, max_parallel \(new.relay.maxParallel)")
        startEligible()
    }

    /// Stops taking runs, drops the queue, lets running runs finish for `grace` seconds,
    /// then cancels them and waits for them to end.
    func shutdown(grace: TimeInterval) async {
        accepting = false
        for p in queue.drainWaiting() {
            p.item.passphrase?.wipe()
            try? history.markEnded(p.id, state: .cancelled, error: "the agent stopped before the run started")
        }
        // A fleet's queued runs stay for the other relays; those pinned to this one cannot.
        for (id, secret) in pinnedSecrets {
            secret.wipe()
            _ = try? fleetStore?.cancelQueued(id)
        }
        pinnedSecrets = [:]
        keys.wipeAll()
        if !queue.running.isEmpty {
            logger.info("shutting down: waiting up to \(Int(grace)) s for \(queue.running.count) running run(s) to finish")
        }
        let deadline = Date().addingTimeInterval(grace)
        if await !waitIdle(timeout: grace) {
            logger.warning("shutting down: grace period over; cancelling \(queue.running.count) run(s)")
            for a in queue.running.values { a.item.run.canceller.cancel() }
            if await !waitIdle(timeout: 120) {
                logger.error("shutting down: \(queue.running.count) run(s) did not end; they will be marked interrupted at the next start")
            }
        }
        // A fleet's runs that ended while the database was away: recorded if it comes back
        // within the grace period (their leases are renewed meanwhile by the fleet's upkeep).
        while !unrecorded.isEmpty && Date() < deadline.addingTimeInterval(30) {
            retryUnrecorded()
            if !unrecorded.isEmpty { try? await Task.sleep(for: .seconds(1)) }
        }
        for r in unrecorded {
            logger.error("shutting down: the result of run \(r.runID) (\(r.state.rawValue)) could not be recorded; the database will show it interrupted")
        }
    }

    private func waitIdle(timeout: TimeInterval) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while !queue.running.isEmpty && Date() < deadline {
            try? await Task.sleep(for: .milliseconds(100))
        }
        return queue.running.isEmpty
    }

    // MARK: - Monitoring (RunManager+Monitor.swift)

    /// Sets the gauges from the fleet's state and the queue; writes [metrics] textfile after
    /// a run (`writeTextfile`) or when its interval has passed.
    func refreshMetrics(now: Date, writeTextfile: Bool) {
        let archives = (try? history.archiveCounts()) ?? [:]
        metrics.update(fleet, .init(clients: config.clients.keys.sorted(), running: queue.running.count, queued: queue.waiting.count,
                                    nextRun: schedule.nextDue, archives: archives,
                                    maxAge: config.clients.mapValues(\.overdueAfter), now: now))
        let exposition = metrics.publish()
        guard let m = config.metrics, let path = m.textfile else { return }
        if writeTextfile || lastTextfile.map({ now.timeIntervalSince($0) >= Double(m.textfileInterval) }) ?? true {
            lastTextfile = now
            do {
                try FileCheck.writeAtomically(exposition, to: path, mode: 0o644)
            } catch {
                logger.error("[metrics] textfile: \(error)")
            }
        }
    }

    // MARK: - Internals

    func logPath(_ client: String, _ id: String) -> String {
        "\(config.relay.logDir)/\(client)/\(id).log"
    }

    func runOf(client: String) -> RunView? {
        queue.current(client: client).flatMap { try? run($0) }
    }

    func view(of r: RunRecord) -> RunView {
        RunView(r, progress: queue.running[r.id]?.item.run.progress.snapshot)
    }

    private func openRunPassphrase(_ sealed: SealedPassphrase, client: String) throws(ControlError) -> SecretBytes {
        do {
            return try keys.open(sealed, context: "the passphrase for this run of \(client)", now: Date())
        } catch {
            throw .badRequest("\(error)")
        }
    }

    func startEligible() {
        if fleetStore != nil {
            claimFromFleet()
            return
        }
        while accepting, let next = queue.next(maxParallel: config.relay.maxParallel) {
            start(next)
        }
    }

    func start(_ p: RunQueue<Pending, Active>.Entry) {
        var passphrase = p.item.passphrase
        do {
            guard let c = config.clients[p.client] else {
                throw RunError.setup("client \(p.client) is no longer in \(config.file)")
            }
            let s = config.server(for: c)
            if passphrase == nil {
                passphrase = try Vault.openPassphrase(of: c, config: config)
            }
            let path = logPath(c.name, p.id)
            let sink = try RunLogSink(path: path, echoToStderr: false)
            let runLogger = sink.logger(label: "borg-relay.run")
            let run = try RunFactory.make(id: p.id, client: c, server: s, operation: p.item.operation, passphrase: passphrase,
                                          config: config, history: history, connectorPath: connectorPath,
                                          logger: runLogger, logFile: path)
            passphrase = nil  // the run owns it now and wipes it
            try history.markStarted(p.id)
            let a = Active(id: p.id, client: c.name, run: run, sink: sink)
            queue.started(id: p.id, client: c.name, item: a)
            logger.info("run \(p.id) of client \(c.name) started (\(queue.running.count) of \(config.relay.maxParallel) running)")
            send(RelayEvent(event: .started, client: c.name, server: c.server, kind: p.item.operation?.kind ?? .backup,
                            runID: p.id, state: .running, time: Date(), relay: relayName))
            // One thread per run: every libssh call of the run happens on it.
            let id = p.id
            let thread = Thread { [self] in
                let report = run.execute()
                Task { await self.finished(id, report) }
            }
            thread.name = "run \(id)"
            thread.start()
        } catch {
            passphrase?.wipe()
            logger.error("run \(p.id) of client \(p.client) failed to start: \(error)")
            try? history.markEnded(p.id, state: .failed, error: "\(error)")
            if let r = (try? history.get(p.id)) ?? nil, let f = FinishedRun(r) { observe(f, logFile: nil) }
        }
    }

    private func finished(_ id: String, _ ran: RunReport) {
        guard let a = queue.finished(id: id) else { return }
        a.sink.close()
        var report = ran
        do {
            report = try history.finish(report)
            storeLogInFleet(report)
        } catch {
            if fleetStore != nil {
                // The database is away: the run is recorded when it is back (its lease is
                // renewed until then, so no other relay takes it for lost).
                logger.error("run \(id): could not record the result, will retry while the agent runs: \(error)")
                unrecorded.append(ran)
                startEligible()
                return
            }
            logger.error("run \(id): could not record the result: \(error)")
            report.recordingFailed("\(error)")
        }
        afterRecorded(report)
    }

    /// What follows a recorded run: monitoring, history pruning, retention, the next runs.
    func afterRecorded(_ report: RunReport) {
        let id = report.runID
        logger.info("run \(id) of client \(report.client) \(report.state.rawValue)\(report.error.map { ": \($0)" } ?? "")")
        observe(FinishedRun(report), logFile: report.logFile)
        prune()
        applyRetention(after: report)
        startEligible()
    }

    /// After a successful backup of a client with a `retention` policy: a prune run
    /// (tamper check, prune, compact) on the relay through the maintenance key. A backup
    /// with borg's warnings counts: its archive was proven (named, recorded).
    private func applyRetention(after report: RunReport) {
        guard report.kind == .backup, report.isSuccess, report.backupProof?.verdict.state == report.state, accepting,
              let c = config.clients[report.client], c.retention != nil else { return }
        guard config.server(for: c).maintenanceKey != nil else {
            logger.warning("client \(c.name) has a retention policy but [servers.\(c.server)] has no 'maintenance_key': nothing is pruned")
            return
        }
        do {
            let runs = try submit(RunRequest(clients: [c.name], queue: true,
                                             operation: OperationRequest(kind: .prune, compact: true)),
                                  trigger: "retention")
            logger.info("client \(c.name): retention run \(runs.first?.id ?? "?") queued after backup \(report.runID)")
        } catch {
            logger.error("client \(c.name): the retention run could not be queued: \(error)")
        }
    }

    /// Drops runs beyond `history_keep_runs` per client or older than `history_keep_days`,
    /// with their log files.
    func prune() {
        do {
            let logs = try history.prune(keepPerClient: config.relay.historyKeepRuns,
                                         maxAgeDays: config.relay.historyKeepDays)
            for l in logs {
                unlink(l)
                unlink(RunFiles.outputPath(l))
            }
            if !logs.isEmpty { logger.info("history: pruned \(logs.count) old run(s)") }
        } catch {
            logger.error("history: pruning failed: \(error)")
        }
    }
}
