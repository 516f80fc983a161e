import Foundation

/// Where a run is, in the history and the control API (stored and sent as its raw value).
public enum RunState: String, Codable, Sendable, CaseIterable {
    /// Waiting in the daemon's queue.
    case queued
    case running
    case succeeded
    /// borg exited 1 ("succeeded with warnings") and the rest of the run's proof holds
    /// (for a backup: the archive was named and recorded).
    case warning
    case failed
    case cancelled
    /// Its agent ended (killed, crashed) before the run did.
    case interrupted
    /// The client could not be reached before anything started (connect refused or timed
    /// out after the retries): offline is not failure. Counts toward `max_age` (overdue).
    case skipped

    /// The raw values of the states of a run that has not ended (for queries).
    public static let unfinished = [RunState.queued.rawValue, RunState.running.rawValue]

    /// The run has ended (every state but queued and running).
    public var isFinished: Bool { self != .queued && self != .running }

    /// The run reached its goal (succeeded, or succeeded with warnings).
    public var isSuccess: Bool { self == .succeeded || self == .warning }
}

/// A failure the operator must look at beyond "the run failed" (its own event and metric).
public enum RunAlarm: String, Codable, Sendable {
    /// Archives the relay created and never pruned are gone or replaced (`TamperCheck`).
    case tamper
    /// A host offered another key than the one pinned in known_hosts.
    case hostKeyChanged = "host_key_changed"
}

/// borg's own figures for the archive a run created (from `borg create --json`).
public struct ArchiveSummary: Codable, Sendable, Equatable {
    /// Archive ids compare in lower case.
    public static func normalizedID(_ id: String) -> String { id.lowercased() }

    public var name: String
    public var id: String?
    public var nfiles: Int64
    public var originalSize: Int64
    public var compressedSize: Int64
    public var deduplicatedSize: Int64
    public var duration: Double?

    enum CodingKeys: String, CodingKey {
        case name, id, nfiles, duration
        case originalSize = "original_size"
        case compressedSize = "compressed_size"
        case deduplicatedSize = "deduplicated_size"
    }

    /// Parses the JSON document `borg create --json` prints on stdout.
    public static func parse(borgJSON data: Data) -> ArchiveSummary? {
        struct Output: Decodable {
            struct Archive: Decodable {
                struct Stats: Decodable {
                    var original_size: Int64
                    var compressed_size: Int64
                    var deduplicated_size: Int64
                    var nfiles: Int64
                }
                var name: String
                var id: String?
                var duration: Double?
                var stats: Stats
            }
            var archive: Archive
        }
        guard let o = try? JSONDecoder().decode(Output.self, from: data) else { return nil }
        let a = o.archive
        return ArchiveSummary(name: a.name, id: a.id, nfiles: a.stats.nfiles,
                              originalSize: a.stats.original_size, compressedSize: a.stats.compressed_size,
                              deduplicatedSize: a.stats.deduplicated_size, duration: a.duration)
    }
}

/// One attempt of a run that was retried: when it started and ended, and why it failed.
public struct RunAttempt: Codable, Sendable, Equatable {
    public var number: Int
    public var started: Date
    public var ended: Date
    public var error: String
    /// Seconds waited before the next attempt.
    public var retryAfter: Double

    public init(number: Int, started: Date, ended: Date, error: String, retryAfter: Double) {
        self.number = number
        self.started = started
        self.ended = ended
        self.error = error
        self.retryAfter = retryAfter
    }

    enum CodingKeys: String, CodingKey {
        case number, started, ended, error
        case retryAfter = "retry_after"
    }
}

/// What one run did, for the human summary and for `--json`.
public struct RunReport: Codable, Sendable {
    public var runID: String
    /// backup, or the operation: init, list, info, key-export, prune, compact, check, restore, borg
    public var kind: RunKind = .backup
    public var client: String
    public var server: String
    public var state: RunState
    public var error: String?
    public var started: Date
    public var ended: Date
    public var borgExitStatus: Int32?
    public var archive: ArchiveSummary?
    public var bytesToServer: UInt64 = 0
    public var bytesFromServer: UInt64 = 0
    public var warnings: [String] = []
    public var logFile: String?
    public var clientCipher: String?
    public var serverCipher: String?
    public var durationSeconds: Double = 0
    /// The failed attempts before the last one (empty when the first attempt was the last).
    public var attempts: [RunAttempt] = []
    public var alarm: RunAlarm?
    /// A backup's proof of success, judged again once the history has recorded the
    /// archive (`HistoryStore.finish`). Not part of the JSON.
    public var backupProof: BackupProof? = nil

    enum CodingKeys: String, CodingKey {
        case runID = "run_id"
        case client, server, state, error, started, ended, archive, warnings, kind
        case borgExitStatus = "borg_exit_status"
        case bytesToServer = "bytes_to_server"
        case bytesFromServer = "bytes_from_server"
        case logFile = "log_file"
        case clientCipher = "client_cipher"
        case serverCipher = "server_cipher"
        case durationSeconds = "duration_seconds"
        case attempts, alarm
    }

    public init(runID: String, client: String, server: String, started: Date) {
        self.runID = runID
        self.client = client
        self.server = server
        self.state = .failed
        self.started = started
        self.ended = started
    }

    /// The run ended with `verdict`: its state, and its error or warning.
    public mutating func apply(_ verdict: RunVerdict) {
        state = verdict.state
        switch verdict {
        case .succeeded: break
        case .warning(let text): warnings.append(text)
        case .failed(let text): error = text
        }
    }

    /// Whether the run reached its goal (succeeded, or succeeded with warnings).
    public var isSuccess: Bool { state == .succeeded || state == .warning }

    /// The history could not record the archive: a backup whose archive id is not recorded
    /// did not succeed.
    public mutating func recordingFailed(_ why: String) {
        guard var proof = backupProof, isSuccess else { return }
        proof.recording = .failed(why)
        backupProof = proof
        warnings.removeAll { $0.hasPrefix("borg create finished with warnings") }
        apply(proof.verdict)
    }

    /// Sets the end time and the duration (rounded to milliseconds).
    public mutating func finish(at date: Date = Date()) {
        ended = date
        durationSeconds = (date.timeIntervalSince(started) * 1000).rounded() / 1000
    }

    public func jsonString() -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        enc.dateEncodingStrategy = .iso8601
        guard let d = try? enc.encode(self) else { return "{}" }
        return String(decoding: d, as: UTF8.self)
    }

    /// A few lines for a person.
    public func summary() -> String {
        RunSummary.text(client: client, server: server, kind: kind, state: state,
                        duration: String(format: "%.1f s", durationSeconds), runID: nil, archive: archive,
                        toServer: Int64(bytesToServer), fromServer: Int64(bytesFromServer), attempts: attempts,
                        warnings: warnings, error: error, log: logFile)
    }

    public static func size(_ n: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var v = Double(n)
        var i = 0
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        return i == 0 ? "\(n) B" : String(format: "%.2f %@", v, units[i])
    }
}

/// The lines a person reads at the end of a run (`relay-agent run`, `relayctl run`).
public enum RunSummary {
    public static func text(client: String, server: String, kind: RunKind, state: RunState, duration: String,
                            runID: String?, archive: ArchiveSummary?, toServer: Int64, fromServer: Int64,
                            attempts: [RunAttempt], warnings: [String], error: String?, log: String?) -> String {
        let run = runID.map { " (run \($0))" } ?? ""
        var lines: [String] = []
        switch state {
        case .succeeded: lines.append("\(client) -> \(server): \(kind) succeeded in \(duration)\(run)")
        case .warning: lines.append("\(client) -> \(server): \(kind) succeeded WITH WARNINGS in \(duration)\(run)")
        case .cancelled: lines.append("\(client) -> \(server): \(kind) cancelled after \(duration)\(run)")
        case .failed, .interrupted: lines.append("\(client) -> \(server): \(kind) \(state.rawValue.uppercased()) after \(duration)\(run)")
        case .skipped: lines.append("\(client) -> \(server): \(kind) skipped after \(duration), the client was not reachable\(run)")
        case .queued, .running: lines.append("\(client) -> \(server): \(kind) \(state.rawValue) for \(duration)\(run)")
        }
        if let a = archive {
            lines.append("  archive       \(a.name)")
            lines.append("  files         \(a.nfiles)")
            lines.append("  original      \(RunReport.size(a.originalSize))")
            lines.append("  compressed    \(RunReport.size(a.compressedSize))")
            lines.append("  deduplicated  \(RunReport.size(a.deduplicatedSize))")
        }
        lines.append("  spliced       \(RunReport.size(toServer)) to the server, \(RunReport.size(fromServer)) back")
        for a in attempts {
            lines.append("  attempt \(a.number)     failed: \(a.error) (retried after \(String(format: "%.0f", a.retryAfter)) s)")
        }
        for w in warnings { lines.append("  warning       \(w)") }
        if let e = error { lines.append("  \(state == .warning && warnings.isEmpty ? "warning " : "error   ")      \(e)") }
        if let l = log { lines.append("  log           \(l)") }
        return lines.joined(separator: "\n")
    }
}
