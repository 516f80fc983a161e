import Foundation

/// One thing the relay tells its operator: the webhook's JSON object, the command
/// notifier's stdin and BORG_RELAY_EVENT_* variables, the text of ntfy and Healthchecks.
/// It carries names, ids, states and error texts only: never a passphrase or a key (run
/// errors never contain one; the tests check the delivered bytes).
public struct RelayEvent: Codable, Sendable, Equatable {
    public var event: RelayEventKind
    /// The client, for events about a client's runs and state; nil for the agent's own.
    public var client: String?
    public var server: String?
    /// backup, check, prune, …
    public var kind: RunKind?
    public var runID: String?
    /// The run's final state, for events about a finished run.
    public var state: RunState?
    public var time: Date
    public var error: String?
    /// The relay's host name (several relays may report to one receiver).
    public var relay: String
    /// One line for a person.
    public var message: String

    enum CodingKeys: String, CodingKey {
        case event, client, server, kind, state, time, error, relay, message
        case runID = "run_id"
    }

    public init(event: RelayEventKind, client: String? = nil, server: String? = nil, kind: RunKind? = nil, runID: String? = nil,
                state: RunState? = nil, time: Date, error: String? = nil, relay: String, message: String? = nil) {
        self.event = event
        self.client = client
        self.server = server
        self.kind = kind
        self.runID = runID
        self.state = state
        self.time = time
        self.error = error
        self.relay = relay
        self.message = message ?? ""
        if self.message.isEmpty { self.message = defaultMessage }
    }

    /// The event `kind` about a finished run.
    public init(_ kind: RelayEventKind, run: FinishedRun, relay: String) {
        self.init(event: kind, client: run.client, server: run.server, kind: run.kind, runID: run.runID, state: run.state,
                  time: run.ended, error: run.error, relay: relay)
    }

    private var defaultMessage: String {
        let who = client.map { "client \($0)" } ?? "relay \(relay)"
        let what = kind.map { "\($0) " } ?? ""
        let run = runID.map { " (run \($0))" } ?? ""
        switch event {
        case .started: return "\(who): \(what)started\(run)"
        case .succeeded: return "\(who): \(what)\(state == .warning ? "succeeded with warnings" : "succeeded")\(run)"
        case .failed: return "\(who): \(what)FAILED\(run)"
        case .recovered: return "\(who): \(what)succeeded again after a failure\(run)"
        case .skipped: return "\(who): \(what)skipped, the client was not reachable\(run)"
        case .overdue: return "\(who): OVERDUE, no successful backup within its max_age"
        case .tamperAlarm: return "\(who): TAMPER ALARM, archives the relay created are gone from the repository\(run)"
        case .hostKeyChanged: return "\(who): a HOST KEY CHANGED; the run was refused\(run)"
        case .checkFailed: return "\(who): repository check FAILED\(run)"
        case .agentStarted: return "relay-agent on \(relay) started"
        case .agentStopped: return "relay-agent on \(relay) stopped"
        case .stateBackupFailed: return "relay \(relay): the backup of its own state FAILED (without it, losing this relay loses its keys and vault)"
        case .test: return "a test event from relay-agent on \(relay)"
        }
    }

    /// The JSON object (RFC 3339 times, sorted keys).
    public func json() -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        enc.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(Self.rfc3339(date))
        }
        return (try? enc.encode(self)) ?? Data("{}".utf8)
    }

    public static func rfc3339(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: date)
    }

    /// The variables a command notifier gets (BORG_RELAY_EVENT_EVENT, _CLIENT, _KIND, …);
    /// absent fields are absent variables.
    public var environment: [String: String] {
        var env: [String: String] = ["BORG_RELAY_EVENT_EVENT": event.rawValue, "BORG_RELAY_EVENT_TIME": Self.rfc3339(time),
                                     "BORG_RELAY_EVENT_RELAY": relay, "BORG_RELAY_EVENT_MESSAGE": message]
        if let client { env["BORG_RELAY_EVENT_CLIENT"] = client }
        if let server { env["BORG_RELAY_EVENT_SERVER"] = server }
        if let kind { env["BORG_RELAY_EVENT_KIND"] = kind.rawValue }
        if let runID { env["BORG_RELAY_EVENT_RUN_ID"] = runID }
        if let state { env["BORG_RELAY_EVENT_STATE"] = state.rawValue }
        if let error { env["BORG_RELAY_EVENT_ERROR"] = error }
        return env
    }

    /// ntfy's priority (1 min … 5 max) for this event.
    public var ntfyPriority: Int {
        switch event {
        case .tamperAlarm, .hostKeyChanged: return 5
        case .failed, .checkFailed, .overdue, .stateBackupFailed: return 4
        case .recovered, .agentStopped, .test: return 3
        case .skipped, .agentStarted: return 2
        case .started, .succeeded: return 1
        }
    }

    /// Where a Healthchecks ping for this event goes: URL/start, URL (success), URL/fail, and
    /// URL/log for a test (logged, the check's state unchanged); nil for events Healthchecks
    /// has no use for. The suffix goes on the URL's path; a query (`?create=1`) stays.
    public func healthchecksURL(base: String) -> String? {
        let suffix: String
        switch event {
        case .started where kind == .backup: suffix = "/start"
        case .succeeded where kind == .backup: suffix = ""
        case .test: suffix = "/log"
        case .failed where kind == .backup, .checkFailed, .tamperAlarm, .hostKeyChanged, .overdue: suffix = "/fail"
        default: return nil
        }
        guard var c = URLComponents(string: base) else { return nil }
        var path = c.percentEncodedPath
        if path.hasSuffix("/") { path.removeLast() }
        c.percentEncodedPath = path + suffix
        return c.string
    }
}
