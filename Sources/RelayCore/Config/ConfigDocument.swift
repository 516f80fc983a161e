import Foundation

/// The effective configuration as a document (`relayctl config show`): every table and every
/// key with its default filled in, in the loader's vocabulary, as TOML the loader reads back
/// or as JSON. Secrets are not shown: a sealed passphrase as `sealed:…` with its first
/// characters, a notifier URL's path and query as `***` (they may hold a token).
public enum ConfigDocument {
    public indirect enum Value: Equatable, Sendable {
        case string(String)
        case int(Int)
        case bool(Bool)
        case strings([String])
        case table([(String, Value)])

        public static func == (a: Value, b: Value) -> Bool {
            switch (a, b) {
            case (.string(let x), .string(let y)): return x == y
            case (.int(let x), .int(let y)): return x == y
            case (.bool(let x), .bool(let y)): return x == y
            case (.strings(let x), .strings(let y)): return x == y
            case (.table(let x), .table(let y)): return x.map(\.0) == y.map(\.0) && zip(x, y).allSatisfy { $0.1 == $1.1 }
            default: return false
            }
        }
    }

    public struct Table: Sendable {
        public var name: String
        public var keys: [(String, Value)]
    }

    /// The tables in the order a config is written: relay, metrics, web, servers, jumps, clients, notify.
    public static func tables(_ c: RelayConfig) -> [Table] {
        var out: [Table] = []
        let r = c.relay
        var relay: [(String, Value)] = [
            ("state_dir", .string(r.stateDir)), ("socket", .string(r.socket)), ("known_hosts", .string(r.knownHosts)),
            ("max_parallel", .int(r.maxParallel)), ("keepalive_interval", .int(r.keepaliveInterval)),
            ("keepalive_count", .int(r.keepaliveCount)), ("connect_timeout", .int(r.connectTimeout)),
        ]
        if let ciphers = r.ciphers { relay.append(("ciphers", .string(ciphers))) }
        relay += [
            ("shutdown_grace", .int(r.shutdownGrace)), ("history_keep_runs", .int(r.historyKeepRuns)),
            ("history_keep_days", .int(r.historyKeepDays)), ("auth_timeout", .int(r.authTimeout)),
            ("channel_timeout", .int(r.channelTimeout)), ("idle_timeout", .int(r.idleTimeout)),
            ("run_timeout", .int(r.runTimeout)), ("connect_attempts", .int(r.connectAttempts)),
            ("retry_delay", .int(r.retryDelay)), ("share_jumps", .bool(r.shareJumps)),
        ]
        if let g = r.socketGroup { relay.append(("socket_group", .string(g))) }
        if let g = r.adminGroup { relay.append(("admin_group", .string(g))) }
        if let s = r.stateServer, let p = r.stateRepository {
            relay += [("state_server", .string(s)), ("state_repository", .string(p)), ("state_schedule", .string(r.stateSchedule.description))]
        }
        out.append(Table(name: "relay", keys: relay))
        if let m = c.metrics {
            var keys: [(String, Value)] = []
            if let l = m.listen { keys.append(("listen", .string(l.description))) }
            if let t = m.textfile { keys.append(("textfile", .string(t))) }
            keys.append(("textfile_interval", .int(m.textfileInterval)))
            out.append(Table(name: "metrics", keys: keys))
        }
        if let w = c.web {
            var keys: [(String, Value)] = [("listen", .string(w.listen.description))]
            if let h = w.trustProxyUserHeader { keys.append(("trust_proxy_user_header", .string(h))) }
            if let g = w.proxyGroup { keys.append(("proxy_group", .string(g))) }
            keys += [("cookie_secure", .bool(w.cookieSecure)), ("read_only", .bool(w.readOnly))]
            out.append(Table(name: "web", keys: keys))
        }
        for (name, s) in c.servers.sorted(by: { $0.key < $1.key }) {
            var keys = endpoint(s.endpoint)
            if let m = s.maintenanceKey { keys.append(("maintenance_key", .string(m))) }
            out.append(Table(name: "servers.\(name)", keys: keys))
        }
        for (name, j) in c.jumps.sorted(by: { $0.key < $1.key }) {
            out.append(Table(name: "jumps.\(name)", keys: endpoint(j.endpoint)))
        }
        for (name, cl) in c.clients.sorted(by: { $0.key < $1.key }) {
            out.append(Table(name: "clients.\(name)", keys: client(cl)))
        }
        for (name, n) in c.notifiers.sorted(by: { $0.key < $1.key }) {
            var keys: [(String, Value)] = [("kind", .string(n.kind.rawValue))]
            if let u = n.url { keys.append(("url", .string(redacted(url: u)))) }
            if let a = n.argv { keys.append(("argv", .strings(a))) }
            if let on = n.on { keys.append(("on", .strings(on.sorted().map(\.rawValue)))) }
            if let cs = n.clients { keys.append(("clients", .strings(cs.sorted()))) }
            keys += [("timeout", .int(n.timeout)), ("attempts", .int(n.attempts))]
            out.append(Table(name: "notify.\(name)", keys: keys))
        }
        return out
    }

    static func endpoint(_ e: HostEndpoint) -> [(String, Value)] {
        var keys: [(String, Value)] = [("host", .string(e.host)), ("port", .int(e.port)), ("user", .string(e.user)), ("key", .string(e.key))]
        if !e.via.isEmpty { keys.append(("via", .strings(e.via))) }
        return keys
    }

    static func client(_ c: ClientConfig) -> [(String, Value)] {
        var keys = endpoint(c.endpoint)
        keys += [("server", .string(c.server)), ("repository", .string(c.repository))]
        if let p = c.passphrase { keys.append(("passphrase", .string(redacted(sealed: p)))) }
        keys += [("paths", .strings(c.paths)), ("exclude", .strings(c.exclude))]
        if let comp = c.compression { keys.append(("compression", .string(comp))) }
        keys += [("archive", .string(c.archive)), ("transport", .string(c.transport.rawValue)), ("borg_path", .string(c.borgPath))]
        if let s = c.schedule { keys.append(("schedule", .string(s.text))) }
        keys += [("jitter", .int(c.jitter)), ("catch_up", .bool(c.catchUp))]
        if let r = c.retention {
            var t: [(String, Value)] = []
            if let w = r.within { t.append(("within", .string(w))) }
            for (k, v) in [("hourly", r.hourly), ("daily", r.daily), ("weekly", r.weekly), ("monthly", r.monthly), ("yearly", r.yearly)] {
                if let v { t.append((k, .int(v))) }
            }
            keys.append(("retention", .table(t)))
        }
        if let pre = c.pre { keys.append(("pre", .strings(pre))) }
        if let post = c.post { keys.append(("post", .strings(post))) }
        keys += [("pre_timeout", .int(c.preTimeout)), ("post_timeout", .int(c.postTimeout))]
        if let g = c.guardCommand { keys.append(("guard", .strings(g))) }
        keys.append(("lock_wait", .int(c.lockWait)))
        if let i = c.checkpointInterval { keys.append(("checkpoint_interval", .int(i))) }
        keys += [("retry", .bool(c.retry)), ("relocated_ok", .bool(c.relocatedOK))]
        if let a = c.maxAge { keys.append(("max_age", .string("\(Int(a))s"))) }
        if let s = c.checkSchedule {
            keys += [("check_schedule", .string(s.text)), ("check", .string(c.checkScope.rawValue))]
            if let d = c.checkMaxDuration { keys.append(("check_max_duration", .string("\(d)s"))) }
        }
        return keys
    }

    /// `sealed:` and the first 8 characters of the base64: enough to tell two apart, nothing to open.
    static func redacted(sealed: SealedValue) -> String {
        SealedValue.prefix + String(sealed.base64.prefix(8)) + "…"
    }

    /// scheme://host[:port]/*** (a path or query may carry a token, as Healthchecks' ping keys do).
    static func redacted(url: String) -> String {
        guard let c = URLComponents(string: url.replacingOccurrences(of: "{client}", with: "c")), let scheme = c.scheme, let host = c.host else { return "***" }
        let port = c.port.map { ":\($0)" } ?? ""
        let hasMore = !(c.path.isEmpty || c.path == "/") || c.query != nil
        return "\(scheme)://\(host)\(port)/\(hasMore ? "***" : "")"
    }

    // MARK: - Rendering

    public static func toml(_ c: RelayConfig) -> String {
        var lines = ["# The effective configuration of \(c.file), every default filled in; secrets are not shown."]
        for t in tables(c) {
            lines.append("")
            lines.append("[\(tableHeader(t.name))]")
            for (k, v) in t.keys { lines.append("\(k) = \(toml(v))") }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// `clients.NAME`, with NAME quoted when it has a dot (names may: [A-Za-z0-9._-]).
    static func tableHeader(_ name: String) -> String {
        let parts = name.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2, parts[1].contains(".") else { return name }
        return parts[0] + "." + quote(parts[1])
    }

    static func toml(_ v: Value) -> String {
        switch v {
        case .string(let s): return quote(s)
        case .int(let i): return "\(i)"
        case .bool(let b): return b ? "true" : "false"
        case .strings(let a): return "[" + a.map(quote).joined(separator: ", ") + "]"
        case .table(let t): return "{ " + t.map { "\($0.0) = \(toml($0.1))" }.joined(separator: ", ") + " }"
        }
    }

    /// A TOML basic string.
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if u.value < 0x20 || u.value == 0x7f { out += String(format: "\\u%04X", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }

    /// `{"relay": {...}, "servers": {"NAME": {...}}, ...}` with sorted keys.
    public static func json(_ c: RelayConfig) -> Data {
        var root: [String: Any] = [:]
        for t in tables(c) {
            let obj = object(t.keys)
            let parts = t.name.split(separator: ".", maxSplits: 1).map(String.init)
            if parts.count == 1 {
                root[parts[0]] = obj
            } else {
                var group = root[parts[0]] as? [String: Any] ?? [:]
                group[parts[1]] = obj
                root[parts[0]] = group
            }
        }
        return (try? JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    }

    static func object(_ keys: [(String, Value)]) -> [String: Any] {
        var o: [String: Any] = [:]
        for (k, v) in keys {
            switch v {
            case .string(let s): o[k] = s
            case .int(let i): o[k] = i
            case .bool(let b): o[k] = b
            case .strings(let a): o[k] = a
            case .table(let t): o[k] = object(t)
            }
        }
        return o
    }
}
