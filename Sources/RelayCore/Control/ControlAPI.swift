import Foundation

/// The control API between `relay-agent serve` and `relayctl`: HTTP/JSON over the unix
/// socket `[relay] socket`, paths under `/v1`. These types are its wire format; both
/// sides encode and decode them with `ControlAPI.encoder` / `ControlAPI.decoder`.
///
/// - `GET  /v1/status`                      → `StatusView`
/// - `POST /v1/runs` (`RunRequest`)         → 202 `RunList` (the runs queued or started)
/// - `GET  /v1/runs?client=C&limit=N`       → `RunList`, newest first
/// - `GET  /v1/runs/ID`                     → `RunView`
/// - `GET  /v1/runs/ID/log?offset=N`        → `LogChunk`
/// - `GET  /v1/runs/ID/output?offset=N`     → `LogChunk` of borg's stdout (operations)
/// - `GET  /v1/runs/ID/output/raw?offset=N` → the same bytes as they are (binary-safe), with
///   `X-Next-Offset` and `X-Complete` headers
/// - `POST /v1/runs/ID/cancel`              → `RunView`
/// - `POST /v1/keys`                        → `EphemeralKey` (for a per-run passphrase)
///
/// Every error is a 4xx/5xx with an `APIErrorBody`.
public enum ControlAPI {
    public static let prefix = "/v1"
    /// The largest request body the agent reads.
    public static let maxRequestBody = 64 * 1024
    /// The largest log chunk one request returns.
    public static let maxLogChunk = 256 * 1024
    /// The largest raw output chunk one request returns (`/output/raw`).
    public static let maxRawChunk = 4 * 1024 * 1024
    /// Headers of `/output/raw`: where the next chunk starts, and whether this was the last.
    public static let nextOffsetHeader = "X-Next-Offset"
    public static let completeHeader = "X-Complete"

    /// Whether `s` can be a run id in a path (letters, digits and '-', at most 64): ids from
    /// a URL are checked with this before they reach the history.
    public static func isRunID(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 64 && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
    }

    /// Dates are ISO 8601 in UTC with milliseconds ("2026-11-22T02:30:00.125Z"): `JSONCoding`.
    public static func encoder() -> JSONEncoder { JSONCoding.encoder() }

    public static func decoder() -> JSONDecoder { JSONCoding.decoder() }
}

/// `POST /v1/runs`.
public struct RunRequest: Codable, Sendable, Equatable {
    /// Clients to back up (each gets its own run).
    public var clients: [String]
    /// All clients of the config (instead of `clients`).
    public var all: Bool?
    /// Queue behind a run of the same client instead of being refused.
    public var queue: Bool?
    /// A passphrase for this run only, sealed to a key from `POST /v1/keys`.
    public var passphrase: SealedPassphrase?
    /// An operation instead of a backup (init, list, info, key-export).
    public var operation: OperationRequest?

    public init(clients: [String], all: Bool? = nil, queue: Bool? = nil, passphrase: SealedPassphrase? = nil,
                operation: OperationRequest? = nil) {
        self.clients = clients
        self.all = all
        self.queue = queue
        self.passphrase = passphrase
        self.operation = operation
    }
}

public struct SealedPassphrase: Codable, Sendable, Equatable {
    public var keyID: String
    /// `crypto_box_seal` of the passphrase to the key's public half, base64.
    public var sealed: String

    public init(keyID: String, sealed: String) {
        self.keyID = keyID
        self.sealed = sealed
    }

    enum CodingKeys: String, CodingKey {
        case keyID = "key_id"
        case sealed
    }
}

/// A one-time key pair held in the agent's memory: the passphrase sealed to it can be
/// opened only by the agent, only once, and only until `expiresAt`.
public struct EphemeralKey: Codable, Sendable, Equatable {
    public var keyID: String
    /// The public key, base64 (32 bytes, X25519).
    public var publicKey: String
    public var expiresAt: Date

    public init(keyID: String, publicKey: String, expiresAt: Date) {
        self.keyID = keyID
        self.publicKey = publicKey
        self.expiresAt = expiresAt
    }

    enum CodingKeys: String, CodingKey {
        case keyID = "key_id"
        case publicKey = "public_key"
        case expiresAt = "expires_at"
    }
}

/// One run as the API shows it: the history record plus, while it runs, live progress.
public struct RunView: Codable, Sendable, Equatable {
    public var id: String
    public var client: String
    public var server: String
    public var kind: RunKind
    public var state: RunState
    public var trigger: String?
    public var queuedAt: Date?
    public var startedAt: Date
    public var endedAt: Date?
    public var bytesToServer: Int64
    public var bytesFromServer: Int64
    public var borgExitStatus: Int?
    public var archive: String?
    public var stats: ArchiveSummary?
    public var error: String?
    public var logFile: String?
    /// While running: what has moved so far.
    public var progress: RunProgress?
    /// While running: bytes to the server per second, averaged over the run.
    public var rate: Double?
    /// Failed attempts before the last one (retries), if any.
    public var attempts: [RunAttempt]?
    /// The relay of a fleet that runs or ran it.
    public var relay: String?

    public var isFinished: Bool { state.isFinished }

    public init(_ r: RunRecord, progress: RunProgress? = nil, now: Date = Date()) {
        id = r.id
        client = r.client
        server = r.server
        kind = r.kind
        state = r.state
        trigger = r.trigger
        queuedAt = r.queuedAt
        startedAt = r.startedAt
        endedAt = r.endedAt
        bytesToServer = r.bytesToServer
        bytesFromServer = r.bytesFromServer
        borgExitStatus = r.borgExitStatus
        archive = r.archive
        stats = r.stats.flatMap { try? JSONDecoder().decode(ArchiveSummary.self, from: Data($0.utf8)) }
        relay = r.relay
        error = r.error
        logFile = r.logFile
        attempts = r.attempts.flatMap { try? JSONCoding.decoder().decode([RunAttempt].self, from: Data($0.utf8)) }
        if let p = progress, r.state == .running {
            self.progress = p
            bytesToServer = Int64(clamping: p.bytesToServer)
            bytesFromServer = Int64(clamping: p.bytesFromServer)
            let elapsed = now.timeIntervalSince(r.startedAt)
            rate = elapsed > 0.5 ? Double(p.bytesToServer) / elapsed : nil
        }
    }

    enum CodingKeys: String, CodingKey {
        case id, client, server, kind, state, trigger, archive, stats, error, progress, rate, attempts, relay
        case queuedAt = "queued_at"
        case startedAt = "started_at"
        case endedAt = "ended_at"
        case bytesToServer = "bytes_to_server"
        case bytesFromServer = "bytes_from_server"
        case borgExitStatus = "borg_exit_status"
        case logFile = "log_file"
    }
}

public struct RunList: Codable, Sendable, Equatable {
    public var runs: [RunView]
    public init(runs: [RunView]) { self.runs = runs }
}

/// `GET /v1/status`.
public struct StatusView: Codable, Sendable, Equatable {
    public struct Agent: Codable, Sendable, Equatable {
        public var pid: Int32
        public var startedAt: Date
        public var config: String
        public var maxParallel: Int
        public var running: Int
        public var queued: Int
        /// False once the agent is shutting down.
        public var accepting: Bool
        /// This relay's name when it is one of a fleet (then `queued` counts the fleet's queue).
        public var relay: String?

        public init(pid: Int32, startedAt: Date, config: String, maxParallel: Int, running: Int, queued: Int,
                    accepting: Bool) {
            self.pid = pid
            self.startedAt = startedAt
            self.config = config
            self.maxParallel = maxParallel
            self.running = running
            self.queued = queued
            self.accepting = accepting
        }

        enum CodingKeys: String, CodingKey {
            case pid, config, running, queued, accepting, relay
            case startedAt = "started_at"
            case maxParallel = "max_parallel"
        }
    }

    public struct Client: Codable, Sendable, Equatable {
        public var name: String
        public var server: String
        /// idle, queued or running
        public var state: String
        /// The run in progress or waiting.
        public var current: RunView?
        /// The newest finished run.
        public var last: RunView?
        public var schedule: String?
        public var nextRun: Date?
        /// When the last successful backup ended.
        public var lastSuccess: Date?
        /// Seconds the last successful backup may be old (max_age or twice the schedule's period).
        public var maxAge: Double?
        /// The last successful backup is older than `maxAge`.
        public var overdue: Bool = false
        /// Archives the relay created are gone from the repository (the last tamper check).
        public var tamperAlarm: Bool = false
        /// The newest finished repository check.
        public var lastCheck: RunView?
        public var checkSchedule: String?
        public var nextCheck: Date?

        public init(name: String, server: String, state: String, current: RunView?, last: RunView?,
                    schedule: String?, nextRun: Date?) {
            self.name = name
            self.server = server
            self.state = state
            self.current = current
            self.last = last
            self.schedule = schedule
            self.nextRun = nextRun
        }

        enum CodingKeys: String, CodingKey {
            case name, server, state, current, last, schedule, overdue
            case nextRun = "next_run"
            case lastSuccess = "last_success"
            case maxAge = "max_age"
            case tamperAlarm = "tamper_alarm"
            case lastCheck = "last_check"
            case checkSchedule = "check_schedule"
            case nextCheck = "next_check"
        }
    }

    public var agent: Agent
    public var clients: [Client]

    public init(agent: Agent, clients: [Client]) {
        self.agent = agent
        self.clients = clients
    }
}

/// `GET /v1/runs/ID/log?offset=N`: the run log from byte `offset`.
public struct LogChunk: Codable, Sendable, Equatable {
    public var runID: String
    public var offset: Int
    public var nextOffset: Int
    public var data: String
    /// The run has ended and `data` reaches the end of its log.
    public var complete: Bool

    public init(runID: String, offset: Int, nextOffset: Int, data: String, complete: Bool) {
        self.runID = runID
        self.offset = offset
        self.nextOffset = nextOffset
        self.data = data
        self.complete = complete
    }

    enum CodingKeys: String, CodingKey {
        case runID = "run_id"
        case offset
        case nextOffset = "next_offset"
        case data, complete
    }
}

/// The body of every error response.
public struct APIErrorBody: Codable, Sendable, Equatable, Error {
    /// A short machine-readable reason: bad_request, forbidden, not_found, busy,
    /// shutting_down, internal.
    public var code: String
    /// What went wrong and what to do, for people.
    public var error: String
    /// For `busy`: the run that holds the client.
    public var runID: String?

    public init(code: String, error: String, runID: String? = nil) {
        self.code = code
        self.error = error
        self.runID = runID
    }

    enum CodingKeys: String, CodingKey {
        case code, error
        case runID = "run_id"
    }
}

/// `POST /v1/notify/NAME/test`: the delivered test event.
public struct NotifyTestResult: Codable, Sendable, Equatable {
    public var result: String
    public init(result: String) { self.result = result }
}
