import Foundation

/// `[metrics]`: where the agent publishes its Prometheus metrics.
public struct MetricsSettings: Sendable, Equatable {
    /// `/metrics` over HTTP on this address (loopback unless another address is written).
    public var listen: ListenAddress?
    /// The exposition written here (temp file + rename) for node_exporter's textfile collector.
    public var textfile: String?
    /// Seconds between two writes of `textfile` (it is also written after every run).
    public var textfileInterval: Int = 30
}

/// A TCP address to listen on, as written in the config: `HOST:PORT`, `[V6]:PORT`, or
/// `:PORT`/`PORT` for loopback.
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Parses the text; nil when it is not an address with a port (1–65535).
    public init?(text: String) {
        var host = "127.0.0.1"
        var portText = Substring(text)
        if let i = text.lastIndex(of: ":") {
            let h = text[..<i]
            portText = text[text.index(after: i)...]
            if h.hasPrefix("[") && h.hasSuffix("]") {
                host = String(h.dropFirst().dropLast())
            } else if !h.isEmpty {
                host = String(h)
            }
            if host.isEmpty || host.contains(where: { $0.isWhitespace || $0 == "/" || $0 == "[" || $0 == "]" })
                || (host.contains(":") && !h.hasPrefix("[")) {
                return nil
            }
        }
        guard let p = Int(portText), (1...65535).contains(p) else { return nil }
        self.host = host
        self.port = p
    }

    public var isLoopback: Bool { host == "127.0.0.1" || host == "::1" || host == "localhost" || host.hasPrefix("127.") }
}

/// What the relay tells its operator about (`[notify.X] on`, the webhook's `event` field).
public enum RelayEventKind: String, Sendable, CaseIterable, Codable, Comparable {
    case started, succeeded, failed, recovered, skipped, overdue
    case tamperAlarm = "tamper_alarm"
    case hostKeyChanged = "host_key_changed"
    case checkFailed = "check_failed"
    case agentStarted = "agent_started"
    case agentStopped = "agent_stopped"
    /// The relay's own state backup to `[relay] state_repository` failed (docs/recovery.md).
    case stateBackupFailed = "state_backup_failed"
    /// `relayctl notify test NAME`; always delivered to the named notifier.
    case test

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// `[notify.NAME]`: one way of telling the operator.
public struct NotifierConfig: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// POST one JSON object per event.
        case webhook
        /// Healthchecks / Uptime Kuma push URLs: URL/start, URL, URL/fail.
        case healthchecks
        /// ntfy topic URL: title, message and priority by event.
        case ntfy
        /// An argv on R with the event as JSON on stdin and in BORG_RELAY_EVENT_* variables.
        case command
    }

    public var name: String
    public var kind: Kind
    /// The URL (http/https); `{client}` is replaced by the client's name.
    public var url: String?
    public var argv: [String]?
    /// The events sent; nil: every event.
    public var on: Set<RelayEventKind>?
    /// The clients whose events are sent; nil: every client (and the agent's own events).
    public var clients: Set<String>?
    /// Seconds one delivery attempt may take.
    public var timeout: Int = 10
    /// Delivery attempts per event (the first and the retries, with doubling delays).
    public var attempts: Int = 3

    /// Whether an event of `kind` about `client` (nil: about the agent) goes to this notifier.
    public func wants(_ kind: RelayEventKind, client: String?) -> Bool {
        if kind == .test { return true }
        if let on, !on.contains(kind) { return false }
        if let clients, let client, !clients.contains(client) { return false }
        return true
    }
}

/// `[clients.X] check`: how much a scheduled `borg check` reads.
public enum CheckScope: String, Sendable, Equatable, CaseIterable, Codable {
    /// The repository's segments only (`--repository-only`; `check_max_duration` applies).
    case repository
    /// The archives' metadata only (`--archives-only`).
    case archives
    /// Everything, including every chunk's data (`--verify-data`).
    case data
}

/// Durations as written in the config: `90s`, `30m`, `26h`, `7d`, `2w`, or several
/// (`1h30m`).
public enum DurationText {
    public static func seconds(_ text: String) -> TimeInterval? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604_800]
        var total = 0.0
        var digits = ""
        for ch in text {
            if ch.isASCII && ch.isNumber {
                digits.append(ch)
            } else if let u = units[ch], let n = Double(digits), !digits.isEmpty {
                total += n * u
                digits = ""
            } else {
                return nil
            }
        }
        guard digits.isEmpty, total > 0, !text.isEmpty else { return nil }
        return total
    }
}

extension CronSchedule {
    /// The longest gap between consecutive times among the first 16 after a fixed Monday
    /// (UTC): the period of a regular schedule, the longest wait of an irregular one (a
    /// weekday schedule's weekend, a yearly one's year); 0 for a schedule that never fires.
    public var period: TimeInterval {
        let utc = TimeZone(identifier: "UTC")!
        guard var prev = next(after: Date(timeIntervalSince1970: 1_735_516_800), in: utc) else { return 0 }  // Monday 2024-12-30
        var longest = 0.0
        for _ in 0..<15 {
            guard let n = next(after: prev, in: utc) else { break }
            longest = max(longest, n.timeIntervalSince(prev))
            prev = n
        }
        return longest.rounded()
    }
}

extension ConfigLoader {
    static func parseMetrics(_ t: TableReader) throws(ConfigError) -> MetricsSettings {
        try t.allowOnly(["listen", "textfile", "textfile_interval"])
        var m = MetricsSettings()
        if let text = try t.optionalString("listen") {
            guard let a = ListenAddress(text: text) else {
                throw t.error("listen", .invalidValue(reason: "'\(text)' is not an address with a port, such as \"127.0.0.1:9187\", \"[::1]:9187\" or \":9187\" (loopback)"))
            }
            m.listen = a
        }
        m.textfile = try t.optionalAbsolutePath("textfile")
        m.textfileInterval = try t.int("textfile_interval", default: m.textfileInterval, range: 1...86400)
        if m.listen == nil && m.textfile == nil {
            throw t.error("listen", .invalidValue(reason: "[metrics] publishes nowhere: set listen = \"127.0.0.1:9187\" and/or textfile = \"/var/lib/prometheus/node-exporter/borg-relay.prom\""))
        }
        return m
    }

    static func parseNotifier(name: String, _ t: TableReader, clients: [String: ClientConfig]) throws(ConfigError) -> NotifierConfig {
        try t.allowOnly(["kind", "url", "argv", "on", "clients", "timeout", "attempts"])
        let kindText = try t.requiredString("kind")
        guard let kind = NotifierConfig.Kind(rawValue: kindText) else {
            throw t.error("kind", .invalidValue(reason: "'\(kindText)' is not a notifier kind; use one of \(NotifierConfig.Kind.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", "))"))
        }
        var n = NotifierConfig(name: name, kind: kind)
        if kind == .command {
            guard let argv = try t.hookCommand("argv") else { throw t.error("argv", .missingKey) }
            guard argv[0].hasPrefix("/") else {
                throw t.error("argv", .invalidValue(reason: "must start with the command's absolute path on the relay (e.g. [\"/usr/local/bin/page-me\"])"))
            }
            if t.value("url") != nil { throw t.error("url", .invalidValue(reason: "a \"command\" notifier takes argv, not url")) }
            n.argv = argv
        } else {
            let url = try t.requiredString("url")
            guard let u = URL(string: url.replacingOccurrences(of: "{client}", with: "c")),
                  u.scheme == "http" || u.scheme == "https", u.host?.isEmpty == false else {
                throw t.error("url", .invalidValue(reason: "'\(url)' is not an http:// or https:// URL"))
            }
            if t.value("argv") != nil { throw t.error("argv", .invalidValue(reason: "only a \"command\" notifier takes argv")) }
            n.url = url
        }
        if let on = try t.stringArray("on") {
            var events = Set<RelayEventKind>()
            for e in on {
                guard let k = RelayEventKind(rawValue: e), k != .test else {
                    let known = RelayEventKind.allCases.filter { $0 != .test }.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
                    throw t.error("on", .invalidValue(reason: "'\(e)' is not an event; use some of \(known)"))
                }
                events.insert(k)
            }
            if events.isEmpty { throw t.error("on", .invalidValue(reason: "lists no event; remove the key to send every event")) }
            n.on = events
        }
        if let names = try t.stringArray("clients") {
            for c in names where clients[c] == nil {
                throw t.error("clients", .unknownReference(kind: "client", name: c, known: clients.keys.sorted()))
            }
            if names.isEmpty { throw t.error("clients", .invalidValue(reason: "lists no client; remove the key to send every client's events")) }
            n.clients = Set(names)
        }
        n.timeout = try t.int("timeout", default: n.timeout, range: 1...300)
        n.attempts = try t.int("attempts", default: n.attempts, range: 1...10)
        return n
    }

    /// The monitoring keys of `[clients.X]`: max_age, check_schedule, check, check_max_duration.
    static func parseClientMonitoring(_ t: TableReader, into c: inout ClientConfig) throws(ConfigError) {
        if let text = try t.optionalString("max_age") {
            guard let s = DurationText.seconds(text) else {
                throw t.error("max_age", .invalidValue(reason: "'\(text)' is not a duration such as \"26h\", \"90m\" or \"2d\""))
            }
            c.maxAge = s
        }
        // Computed once here: the agent asks for it on every tick and every scrape.
        let period = c.schedule?.period ?? 0
        c.overdueAfter = c.maxAge ?? (period > 0 ? 2 * period : nil)
        if let text = try t.optionalString("check_schedule") {
            do {
                c.checkSchedule = try CronSchedule(text)
            } catch {
                throw t.error("check_schedule", .invalidValue(reason: "\(error.reason) (e.g. \"0 4 * * 0\" or \"@weekly\")"))
            }
        }
        if let text = try t.optionalString("check") {
            guard let scope = CheckScope(rawValue: text) else {
                throw t.error("check", .invalidValue(reason: "'\(text)' is not a check scope; use \"repository\", \"archives\" or \"data\""))
            }
            c.checkScope = scope
        }
        if let text = try t.optionalString("check_max_duration") {
            guard let s = DurationText.seconds(text) else {
                throw t.error("check_max_duration", .invalidValue(reason: "'\(text)' is not a duration such as \"2h\" or \"45m\""))
            }
            guard s <= 2_592_000 else {
                throw t.error("check_max_duration", .invalidValue(reason: "'\(text)' is longer than 30 days; a partial check resumes where it stopped, so give it the time of one night (e.g. \"6h\")"))
            }
            guard c.checkScope == .repository else {
                throw t.error("check_max_duration", .invalidValue(reason: "borg checks partially only with check = \"repository\" (borg check --repository-only --max-duration); set check = \"repository\" or remove check_max_duration"))
            }
            c.checkMaxDuration = Int(s)
        }
        if c.checkSchedule == nil && (t.value("check") != nil || t.value("check_max_duration") != nil) {
            throw t.error("check_schedule", .invalidValue(reason: "check and check_max_duration apply to scheduled checks; add check_schedule (e.g. \"0 4 * * 0\")"))
        }
    }
}
