import Foundation

/// One finished run as monitoring sees it (from a `RunReport` as it ends, or from the
/// history at start-up).
public struct FinishedRun: Sendable, Equatable {
    public var runID: String
    public var client: String
    public var server: String
    public var kind: RunKind
    public var state: RunState
    public var started: Date
    public var ended: Date
    public var error: String?
    public var alarm: RunAlarm?
    public var archive: ArchiveSummary?
    public var bytesToServer: UInt64
    public var bytesFromServer: UInt64

    public init(runID: String, client: String, server: String, kind: RunKind, state: RunState, started: Date, ended: Date,
                error: String? = nil, alarm: RunAlarm? = nil, archive: ArchiveSummary? = nil,
                bytesToServer: UInt64 = 0, bytesFromServer: UInt64 = 0) {
        self.runID = runID
        self.client = client
        self.server = server
        self.kind = kind
        self.state = state
        self.started = started
        self.ended = ended
        self.error = error
        self.alarm = alarm
        self.archive = archive
        self.bytesToServer = bytesToServer
        self.bytesFromServer = bytesFromServer
    }

    public init(_ r: RunReport) {
        self.init(runID: r.runID, client: r.client, server: r.server, kind: r.kind, state: r.state, started: r.started,
                  ended: r.ended, error: r.error, alarm: r.alarm, archive: r.archive,
                  bytesToServer: r.bytesToServer, bytesFromServer: r.bytesFromServer)
    }

    /// A finished run of the history; nil for a run that has not ended.
    public init?(_ r: RunRecord) {
        guard r.state.isFinished else { return nil }
        let archive = r.stats.flatMap { try? JSONDecoder().decode(ArchiveSummary.self, from: Data($0.utf8)) }
        self.init(runID: r.id, client: r.client, server: r.server, kind: r.kind, state: r.state, started: r.startedAt,
                  ended: r.endedAt ?? r.startedAt, error: r.error, alarm: r.alarm, archive: archive,
                  bytesToServer: UInt64(max(0, r.bytesToServer)), bytesFromServer: UInt64(max(0, r.bytesFromServer)))
    }

    /// Runs of these kinds are the client's "check" results (metrics, status, check_failed).
    public var isCheck: Bool { kind == .check }
}

/// What monitoring knows of the fleet, as a value: each client's last results, last
/// successes, tamper alarm and overdue state, and the events each change fires. Fed the
/// history's runs at start-up (oldest first, events dropped) and every run as it ends; no
/// clock and no I/O (the daemon passes the time and delivers the events).
public struct FleetState: Sendable {
    public struct Key: Hashable, Sendable, Comparable {
        public var client: String
        public var kind: RunKind
        public init(client: String, kind: RunKind) {
            self.client = client
            self.kind = kind
        }
        public static func < (a: Key, b: Key) -> Bool { (a.client, a.kind.rawValue) < (b.client, b.kind.rawValue) }
    }

    /// The last counted result per client and kind (skipped and cancelled runs do not count:
    /// they say nothing about the backup or the repository).
    public private(set) var lastResult: [Key: RunState] = [:]
    public private(set) var lastSuccess: [Key: Date] = [:]
    /// The archive of each client's last successful backup.
    public private(set) var lastArchive: [String: ArchiveSummary] = [:]
    /// Clients whose last tamper check found archives missing (until a maintenance run passes it).
    public private(set) var tamperAlarm: Set<String> = []
    /// Clients overdue now (the last successful backup is older than their max age).
    public private(set) var overdue: Set<String> = []
    /// When monitoring began: a client that never succeeded is overdue `max_age` after it
    /// (or after it was added to the config, `watch`).
    public let since: Date
    /// When each client came into the config (clients of the config at start: `since`).
    public private(set) var watchedSince: [String: Date] = [:]

    public init(since: Date) {
        self.since = since
    }

    /// The configured clients at `now` (start, reload): a new one is watched from now, a
    /// removed one forgotten.
    public mutating func watch(_ clients: [String], now: Date) {
        let names = Set(clients)
        for c in names where watchedSince[c] == nil { watchedSince[c] = now }
        watchedSince = watchedSince.filter { names.contains($0.key) }
        overdue = overdue.filter { names.contains($0) }
    }

    /// The clients whose overdue event was sent before a restart (from the state directory):
    /// they do not fire again while they stay overdue.
    public mutating func restoreOverdue(_ clients: Set<String>) {
        overdue = clients
    }

    /// A run ended: the state moves on; returns the events it fires.
    public mutating func record(_ run: FinishedRun) -> [RelayEventKind] {
        let key = Key(client: run.client, kind: run.kind)
        var events: [RelayEventKind] = []
        if run.alarm == .tamper { tamperAlarm.insert(run.client) }
        if run.kind == .prune || run.kind == .compact, run.state.isSuccess { tamperAlarm.remove(run.client) }
        switch run.state {
        case .skipped:
            events.append(.skipped)
        case .succeeded, .warning:
            events.append(.succeeded)
            if let prev = lastResult[key], prev == .failed || prev == .interrupted { events.append(.recovered) }
            lastResult[key] = run.state
            lastSuccess[key] = max(lastSuccess[key] ?? run.ended, run.ended)
            if run.kind == .backup {
                if let a = run.archive { lastArchive[run.client] = a }
                overdue.remove(run.client)
            }
        case .failed, .interrupted:
            events.append(run.isCheck ? .checkFailed : .failed)
            lastResult[key] = run.state
        case .cancelled, .queued, .running:
            break
        }
        switch run.alarm {
        case .tamper?: events.append(.tamperAlarm)
        case .hostKeyChanged?: events.append(.hostKeyChanged)
        case nil: break
        }
        return events
    }

    /// When `client`'s last successful backup was, if it ever had one.
    public func lastBackup(_ client: String) -> Date? { lastSuccess[Key(client: client, kind: .backup)] }

    /// Whether `client` is overdue at `now` with `maxAge` (nil: never overdue).
    public func isOverdue(_ client: String, maxAge: TimeInterval?, now: Date) -> Bool {
        guard let maxAge else { return false }
        return now.timeIntervalSince(lastBackup(client) ?? watchedSince[client] ?? since) > maxAge
    }

    /// Takes the overdue state of every client at `now` (`maxAges`: each configured client's
    /// max age, nil for none); returns the clients that have just become overdue, each once
    /// per transition (a successful backup clears the state).
    public mutating func updateOverdue(now: Date, maxAges: [String: TimeInterval?]) -> [String] {
        var became: [String] = []
        for (client, maxAge) in maxAges.sorted(by: { $0.key < $1.key }) {
            if isOverdue(client, maxAge: maxAge, now: now) {
                if overdue.insert(client).inserted { became.append(client) }
            } else {
                overdue.remove(client)
            }
        }
        overdue = overdue.filter { maxAges[$0] != nil }
        return became
    }
}
