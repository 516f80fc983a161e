import Foundation
import GRDB

/// One run as recorded in the history database.
public struct RunRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "run"

    public var id: String
    public var client: String
    public var server: String
    public var kind: RunKind
    public var state: RunState
    public var startedAt: Date
    public var endedAt: Date?
    public var bytesToServer: Int64
    public var bytesFromServer: Int64
    public var borgExitStatus: Int?
    public var archive: String?
    /// borg's figures for the archive, as JSON.
    public var stats: String?
    public var error: String?
    public var logFile: String?
    /// The agent process that ran it (to tell a live run from one whose agent died).
    public var agentPID: Int32
    /// That process's start time (clock ticks since boot, /proc/PID/stat), so that a
    /// reused PID is not taken for the agent.
    public var agentStart: Int64?
    /// When the run was asked for (it may wait in the queue before `startedAt`).
    public var queuedAt: Date?
    /// What asked for it: cli (relay-agent run), api (relayctl run), schedule.
    public var trigger: String?
    /// The failed attempts before the last one, as JSON ([RunAttempt]); nil when none.
    public var attempts: String?
    /// The alarm a failed run raised (tamper, host_key_changed); nil for most runs.
    public var alarm: RunAlarm?
    /// The relay of a fleet that ran it (`[relay] name`); nil with one relay on SQLite.
    public var relay: String? = nil

    enum CodingKeys: String, CodingKey {
        case id, client, server, kind, state, archive, stats, error
        case startedAt = "started_at"
        case endedAt = "ended_at"
        case bytesToServer = "bytes_to_server"
        case bytesFromServer = "bytes_from_server"
        case borgExitStatus = "borg_exit_status"
        case logFile = "log_file"
        case agentPID = "agent_pid"
        case agentStart = "agent_start"
        case queuedAt = "queued_at"
        case trigger, attempts, alarm, relay
    }

    public init(id: String, client: String, server: String, kind: RunKind, state: RunState, startedAt: Date,
                endedAt: Date?, bytesToServer: Int64, bytesFromServer: Int64, borgExitStatus: Int?, archive: String?,
                stats: String?, error: String?, logFile: String?, agentPID: Int32, agentStart: Int64?, queuedAt: Date?,
                trigger: String?, attempts: String?, alarm: RunAlarm?, relay: String? = nil) {
        self.id = id
        self.client = client
        self.server = server
        self.kind = kind
        self.state = state
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.bytesToServer = bytesToServer
        self.bytesFromServer = bytesFromServer
        self.borgExitStatus = borgExitStatus
        self.archive = archive
        self.stats = stats
        self.error = error
        self.logFile = logFile
        self.agentPID = agentPID
        self.agentStart = agentStart
        self.queuedAt = queuedAt
        self.trigger = trigger
        self.attempts = attempts
        self.alarm = alarm
        self.relay = relay
    }

    /// A record for a run that is starting now in this process.
    public static func starting(runID: String, client: String, server: String, kind: RunKind = .backup,
                                logFile: String?, state: RunState = .running, trigger: String = "cli") -> RunRecord {
        // (kind: backup, init, list, info, key-export, …)
        let now = Date()
        return RunRecord(id: runID, client: client, server: server, kind: kind, state: state, startedAt: now,
                         endedAt: nil, bytesToServer: 0, bytesFromServer: 0, borgExitStatus: nil, archive: nil,
                         stats: nil, error: nil, logFile: logFile, agentPID: getpid(),
                         agentStart: ProcessIdentity.startTime(of: getpid()), queuedAt: now, trigger: trigger,
                         attempts: nil, alarm: nil)
    }

    /// True once the run has ended (whatever the outcome).
    public var isFinished: Bool { state.isFinished }
}

/// One archive the relay created (table `archive`): kept for good, the tamper alarm's
/// reference. `id` is borg's archive id (hex, lower case); nil for archives recorded
/// before the relay kept ids, which are checked by name.
public struct ArchiveRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "archive"

    public var seq: Int64?
    public var client: String
    public var name: String
    public var id: String?
    public var runID: String
    public var createdAt: Date
    public var prunedAt: Date?
    public var prunedByRun: String?

    public init(client: String, name: String, id: String?, runID: String, createdAt: Date,
                prunedAt: Date? = nil, prunedByRun: String? = nil) {
        self.client = client
        self.name = name
        self.id = id.map(ArchiveSummary.normalizedID)
        self.runID = runID
        self.createdAt = createdAt
        self.prunedAt = prunedAt
        self.prunedByRun = prunedByRun
    }

    enum CodingKeys: String, CodingKey {
        case seq, client, name, id
        case runID = "run_id"
        case createdAt = "created_at"
        case prunedAt = "pruned_at"
        case prunedByRun = "pruned_by_run"
    }
}

/// Tells a live process from a dead one whose PID was reused.
public enum ProcessIdentity {
    /// Field 22 of /proc/PID/stat: the start time in clock ticks after boot.
    public static func startTime(of pid: Int32) -> Int64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        // After "pid (comm)" the fields start at 3 (state); starttime is field 22.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 19 else { return nil }
        return Int64(fields[19])
    }
}
