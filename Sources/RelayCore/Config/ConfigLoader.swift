import Foundation
import TOMLKit

// Longer than 400 lines: one pass over the file, table by table, with every check and its
// message next to the key it is about; the value readers are in TableReader.swift.

/// Reads the TOML config into a validated `RelayConfig`. Each mistake becomes one
/// `ConfigError` naming the file, table and key; nothing here traps.
public enum ConfigLoader {
    /// Loads and validates `path`. `checkFiles` also verifies that key files and the
    /// known_hosts file can be read (off for tools that only need the state directory).
    public static func load(path: String, checkFiles: Bool = true) throws(ConfigError) -> RelayConfig {
        let text: String
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            guard let s = String(data: data, encoding: .utf8) else {
                throw ConfigError(file: path, table: "", key: nil,
                                  kind: .unreadableFile(reason: "the file is not valid UTF-8"))
            }
            text = s
        } catch let e as ConfigError {
            throw e
        } catch {
            throw ConfigError(file: path, table: "", key: nil,
                              kind: .unreadableFile(reason: describeFileError(path: path, error: error)))
        }
        return try parse(text, file: path, checkFiles: checkFiles)
    }

    /// Validates config text; `file` is only used in messages.
    public static func parse(_ text: String, file: String, checkFiles: Bool = true) throws(ConfigError) -> RelayConfig {
        if let (line, column, reason) = lexicalProblem(text) {
            throw ConfigError(file: file, table: "", key: nil, kind: .syntax(line: line, column: column, reason: reason))
        }
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let e as TOMLParseError {
            throw ConfigError(file: file, table: "", key: nil,
                              kind: .syntax(line: e.source.begin.line, column: e.source.begin.column,
                                            reason: e.description))
        } catch {
            throw ConfigError(file: file, table: "", key: nil,
                              kind: .syntax(line: 0, column: 0, reason: "\(error)"))
        }

        let top = TableReader(table: root, file: file, path: "")
        try top.allowOnly(["relay", "servers", "jumps", "clients", "metrics", "web", "notify"])
        let relayTable = try top.requiredTable("relay")
        let relay = try parseRelay(relayTable)

        var servers: [String: ServerConfig] = [:]
        if let t = try top.optionalTable("servers") {
            for name in t.keys {
                try checkName(name, kind: "server", table: "servers", file: file)
                let s = try t.requiredTable(name)
                servers[name] = try parseServer(name: name, s)
            }
        }
        var jumps: [String: JumpConfig] = [:]
        if let t = try top.optionalTable("jumps") {
            for name in t.keys {
                try checkName(name, kind: "jump", table: "jumps", file: file)
                let j = try t.requiredTable(name)
                jumps[name] = JumpConfig(name: name, endpoint: try parseEndpoint(j, defaultUser: nil))
                try j.allowOnly(endpointKeys)
            }
        }
        var clients: [String: ClientConfig] = [:]
        if let t = try top.optionalTable("clients") {
            for name in t.keys {
                try checkName(name, kind: "client", table: "clients", file: file)
                let c = try t.requiredTable(name)
                clients[name] = try parseClient(name: name, c, servers: servers)
            }
        }

        // Every `via` must name defined jumps, without loops.
        for (name, s) in servers { try checkVia(s.endpoint.via, table: "servers.\(name)", jumps: jumps, file: file) }
        for (name, c) in clients { try checkVia(c.endpoint.via, table: "clients.\(name)", jumps: jumps, file: file) }
        for (name, j) in jumps { try checkVia(j.endpoint.via, table: "jumps.\(name)", jumps: jumps, file: file) }

        if let s = relay.stateServer, servers[s] == nil {
            throw ConfigError(file: file, table: "relay", key: "state_server",
                              kind: .unknownReference(kind: "server", name: s, known: servers.keys.sorted()))
        }
        if relay.database == nil, let c = clients.values.sorted(by: { $0.name < $1.name }).first(where: { !$0.relays.isEmpty }) {
            throw ConfigError(file: file, table: "clients.\(c.name)", key: "relays", kind: .invalidValue(reason:
                "chooses relays of a fleet, but there is no fleet: [relay] database is not set (remove 'relays', or set [relay] database for a fleet on PostgreSQL)"))
        }
        var config = RelayConfig(file: file, relay: relay, servers: servers, jumps: jumps, clients: clients)
        config.metrics = try top.optionalTable("metrics").map { m throws(ConfigError) in try parseMetrics(m) }
        config.web = try top.optionalTable("web").map { w throws(ConfigError) in try parseWeb(w) }
        if let t = try top.optionalTable("notify") {
            for name in t.keys {
                try checkName(name, kind: "notifier", table: "notify", file: file)
                config.notifiers[name] = try parseNotifier(name: name, try t.requiredTable(name), clients: clients)
            }
        }
        if checkFiles {
            try checkReadable(config)
            try checkGroups(config)
        }
        return config
    }

    /// TOML allows non-ASCII characters only inside strings and comments, and no control
    /// characters but tab outside them. Checked before the TOML library sees the text:
    /// toml++ aborts on some non-ASCII table names (found by the fuzz test).
    static func lexicalProblem(_ text: String) -> (line: Int, column: Int, reason: String)? {
        let b = Array(text.utf8)
        let newline = UInt8(ascii: "\n"), hash = UInt8(ascii: "#"), dq = UInt8(ascii: "\""), sq = UInt8(ascii: "'")
        let backslash = UInt8(ascii: "\\")
        var i = 0, line = 1, lineStart = 0
        // Arrays and inline tables open in a value (`x = [`, `x = {`): a `[` there is not
        // a table header, and a closing bracket must match (toml++ aborts on `x = [}`).
        var containers: [UInt8] = []
        var lineHasEquals = false
        func run(_ q: UInt8, _ n: Int) -> Bool {
            i + n <= b.count && b[i..<(i + n)].allSatisfy { $0 == q }
        }
        func isBare(_ ch: UInt8) -> Bool {
            (ch >= 0x30 && ch <= 0x39) || (ch >= 0x41 && ch <= 0x5A) || (ch >= 0x61 && ch <= 0x7A)
                || ch == UInt8(ascii: "_") || ch == UInt8(ascii: "-")
        }
        let open = UInt8(ascii: "["), close = UInt8(ascii: "]"), brace = UInt8(ascii: "{"), endBrace = UInt8(ascii: "}")
        while i < b.count {
            let c = b[i]
            let atLineStart = b[lineStart..<i].allSatisfy { $0 == 0x20 || $0 == 0x09 }
            let inValue = !containers.isEmpty || lineHasEquals
            if c == UInt8(ascii: "=") { lineHasEquals = true }
            if (c == open || c == brace) && inValue {
                containers.append(c)
            } else if (c == close || c == endBrace) && !containers.isEmpty {
                let expected = containers.removeLast() == open ? close : endBrace
                if c != expected {
                    return (line, i - lineStart + 1, "'\(Character(UnicodeScalar(c)))' does not close the '\(expected == close ? "[" : "{")' opened before it")
                }
            } else if c == open && atLineStart {
                // A table header: its first name must be a bare key or a quoted one
                // (toml++ aborts on anything else).
                var j = i + 1
                if j < b.count && b[j] == open { j += 1 }
                while j < b.count && (b[j] == 0x20 || b[j] == 0x09) { j += 1 }
                if j < b.count && !(isBare(b[j]) || b[j] == dq || b[j] == sq || b[j] == close) {
                    return (line, j - lineStart + 1, "a table name must start with a letter, a digit, _, - or a quote")
                }
            }
            if c == newline {
                line += 1
                lineStart = i + 1
                if containers.isEmpty { lineHasEquals = false }
                i += 1
            } else if c == hash {
                while i < b.count && b[i] != newline { i += 1 }
            } else if c == dq || c == sq {
                let multi = run(c, 3)
                let width = multi ? 3 : 1
                i += width
                while i < b.count {
                    if b[i] == newline {
                        if !multi { break }  // unterminated: the TOML parser reports it
                        line += 1
                        lineStart = i + 1
                    }
                    if c == dq && b[i] == backslash {
                        i += 2
                        continue
                    }
                    if run(c, width) {
                        i += width
                        break
                    }
                    i += 1
                }
            } else if c >= 0x80 {
                return (line, i - lineStart + 1, "a non-ASCII character outside a string or comment (names must be ASCII; quote values)")
            } else if c < 0x20 && c != UInt8(ascii: "\t") && c != UInt8(ascii: "\r") {
                return (line, i - lineStart + 1, "control character 0x\(String(c, radix: 16)) outside a string")
            } else {
                i += 1
            }
        }
        return nil
    }

    /// Why `name` cannot name a client, server or jump, or nil if it can: names become
    /// file and directory names under state_dir (logs/CLIENT/…) and appear in messages.
    public static func nameProblem(_ name: String) -> String? {
        if name.isEmpty { return "a name may not be empty" }
        if name.count > 128 { return "a name may be at most 128 characters long" }
        if name.hasPrefix(".") { return "a name may not start with '.'" }
        if let bad = name.unicodeScalars.first(where: { !($0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._-".unicodeScalars.contains($0))) }) {
            return "'\(printable(String(bad)))' is not allowed in a name"
        }
        return nil
    }

    static func checkName(_ name: String, kind: String, table: String, file: String) throws(ConfigError) {
        guard let problem = nameProblem(name) else { return }
        throw ConfigError(file: file, table: table, key: nil, kind: .invalidValue(reason:
            "the \(kind) name '\(printable(name))' is not allowed: \(problem); names must match [A-Za-z0-9._-]+ and not start with '.' (they name files under state_dir); rename [\(table).NAME]"))
    }

    /// `text` with control and non-ASCII characters shown as `?`, for messages.
    static func printable(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.prefix(200).map { $0.isASCII && $0.value >= 0x20 && $0.value != 0x7f ? $0 : "?" }))
    }

    /// The groups of `socket_group` and `admin_group` exist on this host.
    static func checkGroups(_ c: RelayConfig) throws(ConfigError) {
        for (key, name) in [("socket_group", c.relay.socketGroup), ("admin_group", c.relay.adminGroup)] {
            guard let name else { continue }
            if GroupLookup.gid(of: name) == nil {
                throw ConfigError(file: c.file, table: "relay", key: key, kind: .invalidValue(reason:
                    "no group named '\(name)' on this host; create it (groupadd \(name)) or fix the name"))
            }
        }
    }

    // MARK: - Tables

    static let endpointKeys: Set<String> = ["host", "port", "user", "key", "via"]

    static func parseRelay(_ t: TableReader) throws(ConfigError) -> RelaySettings {
        try t.allowOnly(["state_dir", "socket", "known_hosts", "max_parallel",
                         "keepalive_interval", "keepalive_count", "connect_timeout", "ciphers",
                         "shutdown_grace", "history_keep_runs", "history_keep_days",
                         "auth_timeout", "channel_timeout", "idle_timeout", "run_timeout",
                         "connect_attempts", "retry_delay", "share_jumps",
                         "socket_group", "admin_group", "name", "database", "database_password_file", "lease",
                         "state_server", "state_repository", "state_schedule"])
        let stateDir = try t.absolutePath("state_dir", default: RelaySettings.Defaults.stateDir)
        let socket = try t.absolutePath("socket", default: RelaySettings.defaultSocket)
        let knownHosts = try t.absolutePath("known_hosts", default: RelaySettings.Defaults.knownHosts)
        let maxParallel = try t.int("max_parallel", default: RelaySettings.Defaults.maxParallel, range: 1...1000)
        let interval = try t.int("keepalive_interval", default: RelaySettings.Defaults.keepaliveInterval, range: 1...3600)
        let count = try t.int("keepalive_count", default: RelaySettings.Defaults.keepaliveCount, range: 1...100)
        let connectTimeout = try t.int("connect_timeout", default: RelaySettings.Defaults.connectTimeout, range: 1...3600)
        let ciphers = try t.optionalString("ciphers")
        if let c = ciphers {
            let known: Set<String> = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                                      "aes128-ctr", "aes192-ctr", "aes256-ctr"]
            let names = c.split(separator: ",").map(String.init)
            if names.isEmpty || names.contains(where: { !known.contains($0) }) {
                throw t.error("ciphers", .invalidValue(reason:
                    "'\(c)' is not a comma-separated list of \(known.sorted().joined(separator: ", "))"))
            }
        }
        var r = RelaySettings(stateDir: stateDir, socket: socket, knownHosts: knownHosts,
                              maxParallel: maxParallel, keepaliveInterval: interval,
                              keepaliveCount: count, connectTimeout: connectTimeout, ciphers: ciphers)
        r.shutdownGrace = try t.int("shutdown_grace", default: r.shutdownGrace, range: 0...86400)
        r.historyKeepRuns = try t.int("history_keep_runs", default: r.historyKeepRuns, range: 1...10_000_000)
        r.historyKeepDays = try t.int("history_keep_days", default: r.historyKeepDays, range: 0...100_000)
        r.authTimeout = try t.int("auth_timeout", default: r.authTimeout, range: 1...3600)
        r.channelTimeout = try t.int("channel_timeout", default: r.channelTimeout, range: 1...3600)
        r.idleTimeout = try t.int("idle_timeout", default: r.idleTimeout, range: 0...604_800)
        r.runTimeout = try t.int("run_timeout", default: r.runTimeout, range: 0...2_592_000)
        r.connectAttempts = try t.int("connect_attempts", default: r.connectAttempts, range: 1...100)
        r.retryDelay = try t.int("retry_delay", default: r.retryDelay, range: 0...3600)
        r.shareJumps = try t.optionalBool("share_jumps") ?? r.shareJumps
        r.socketGroup = try t.groupName("socket_group")
        r.adminGroup = try t.groupName("admin_group")
        try parseFleet(t, into: &r)
        try parseOwnStateKeys(t, into: &r)
        return r
    }

    /// `state_server`, `state_repository`, `state_schedule`: where the daemon stores its own
    /// sealed state (docs/recovery.md). The server's existence is checked with the servers.
    static func parseOwnStateKeys(_ t: TableReader, into r: inout RelaySettings) throws(ConfigError) {
        r.stateServer = try t.optionalString("state_server")
        r.stateRepository = try t.optionalAbsolutePath("state_repository")
        if let p = r.stateRepository, p.contains("\n") || p.contains("\r") || p.contains("::") {
            throw t.error("state_repository", .invalidValue(reason: "contains a newline or '::'"))
        }
        if let text = try t.optionalString("state_schedule") {
            do {
                r.stateSchedule = try CronSchedule(text)
            } catch {
                throw t.error("state_schedule", .invalidValue(reason: "\(error.reason) (e.g. \"@daily\" or \"15 3 * * *\")"))
            }
        }
        switch (r.stateServer, r.stateRepository) {
        case (nil, nil):
            if t.value("state_schedule") != nil {
                throw t.error("state_schedule", .invalidValue(reason: "is for the state backup, but there is none: set state_server and state_repository (docs/recovery.md)"))
            }
        case (_?, nil):
            throw t.error("state_repository", .invalidValue(reason: "is required with state_server: the path of the state repository on that server"))
        case (nil, _?):
            throw t.error("state_server", .invalidValue(reason: "is required with state_repository: the [servers.NAME] that holds it"))
        case (_?, _?):
            break
        }
    }

    /// `name`, `database`, `database_password_file`, `lease` (a fleet on PostgreSQL).
    static func parseFleet(_ t: TableReader, into r: inout RelaySettings) throws(ConfigError) {
        if let name = try t.optionalString("name") {
            guard RelayName.isValid(name) else {
                throw t.error("name", .invalidValue(reason: "'\(printable(name))' is not a relay name (1 to 64 letters, digits, '.', '_', '-'; starting with a letter or digit)"))
            }
            r.name = name
        }
        r.lease = try t.int("lease", default: r.lease, range: 30...3600)
        let passwordFile = try t.optionalAbsolutePath("database_password_file")
        guard let url = try t.optionalString("database") else {
            if passwordFile != nil {
                throw t.error("database_password_file", .invalidValue(reason: "is for [relay] database, which is not set"))
            }
            return
        }
        switch DatabaseSettings.parse(url) {
        case .success(var d):
            d.passwordFile = passwordFile
            r.database = d
        case .failure(let problem):
            // The URL itself is not repeated: it may hold the password that was refused.
            throw t.error("database", .invalidValue(reason: problem.reason))
        }
    }

    static func parseEndpoint(_ t: TableReader, defaultUser: String?) throws(ConfigError) -> HostEndpoint {
        let host = try t.requiredString("host")
        if host.isEmpty || host.contains(where: { $0.isWhitespace || $0 == "/" }) {
            throw t.error("host", .invalidValue(reason: "'\(host)' is not a host name or address"))
        }
        let port = try t.int("port", default: 22, range: 1...65535)
        let user: String
        if let d = defaultUser {
            user = try t.optionalString("user") ?? d
        } else {
            user = try t.requiredString("user")
        }
        if user.isEmpty || user.contains(where: { $0.isWhitespace || $0 == "@" || $0 == ":" }) {
            throw t.error("user", .invalidValue(reason: "'\(user)' is not a valid user name"))
        }
        let key = try t.requiredAbsolutePath("key")
        let via = try t.stringArray("via") ?? []
        return HostEndpoint(host: host, port: port, user: user, key: key, via: via)
    }

    static func parseServer(name: String, _ t: TableReader) throws(ConfigError) -> ServerConfig {
        try t.allowOnly(endpointKeys.union(["maintenance_key"]))
        let endpoint = try parseEndpoint(t, defaultUser: nil)
        let maint = try t.optionalAbsolutePath("maintenance_key")
        return ServerConfig(name: name, endpoint: endpoint, maintenanceKey: maint)
    }

    static func parseClient(name: String, _ t: TableReader, servers: [String: ServerConfig]) throws(ConfigError) -> ClientConfig {
        try t.allowOnly(endpointKeys.union([
            "server", "repository", "passphrase", "paths", "exclude", "compression", "archive",
            "transport", "borg_path", "schedule", "jitter", "catch_up", "retention", "pre", "post",
            "pre_timeout", "post_timeout", "guard", "lock_wait", "checkpoint_interval", "retry",
            "relocated_ok", "max_age", "check_schedule", "check", "check_max_duration", "relays",
        ]))
        let endpoint = try parseEndpoint(t, defaultUser: nil)
        let server = try t.requiredString("server")
        guard servers[server] != nil else {
            throw t.error("server", .unknownReference(kind: "server", name: server, known: servers.keys.sorted()))
        }
        let repository = try t.requiredAbsolutePath("repository")
        // Values that reach the client's shell: csh cannot take a newline in a quoted word.
        if repository.contains("\n") || repository.contains("\r") {
            throw t.error("repository", .invalidValue(reason: "contains a newline (no login shell on the client could be sent it safely)"))
        }
        var passphrase: SealedValue?
        if let p = try t.optionalString("passphrase") {
            guard let sealed = SealedValue(text: p) else {
                throw t.error("passphrase", .invalidValue(reason:
                    "must be a sealed value ('sealed:…' as printed by `relayctl seal`); plain passphrases are not accepted in the config"))
            }
            passphrase = sealed
        }
        guard let paths = try t.stringArray("paths") else {
            throw t.error("paths", .missingKey)
        }
        if paths.isEmpty {
            throw t.error("paths", .invalidValue(reason: "lists no path to back up"))
        }
        for p in paths where p.isEmpty || p.contains("\0") || p.contains("\n") || p.contains("\r") {
            throw t.error("paths", .invalidValue(reason: "contains an empty path, a NUL byte or a newline (csh, a possible login shell on the client, cannot be sent a newline; back up the parent directory instead)"))
        }
        let exclude = try t.stringArray("exclude") ?? []
        for p in exclude where p.isEmpty || p.contains("\0") || p.contains("\n") || p.contains("\r") {
            throw t.error("exclude", .invalidValue(reason: "contains an empty pattern, a NUL byte or a newline (use a pattern such as *, which matches a newline too)"))
        }
        let compression = try t.optionalString("compression")
        if let c = compression, c.isEmpty || c.contains(where: { $0.isWhitespace }) {
            throw t.error("compression", .invalidValue(reason: "'\(c)' is not a borg compression spec (e.g. \"zstd,3\", \"lz4\")"))
        }
        let archive = try t.optionalString("archive") ?? "{hostname}-{now}"
        if archive.isEmpty || archive.contains("/") || archive.contains("::") || archive.contains("\n") {
            throw t.error("archive", .invalidValue(reason: "'\(archive)' is not a valid archive name template"))
        }
        let transportText = try t.optionalString("transport") ?? "tcp"
        guard let transport = Transport(rawValue: transportText) else {
            throw t.error("transport", .invalidValue(reason: "must be \"tcp\" or \"unix\", not '\(transportText)'"))
        }
        let borgPath = try t.optionalString("borg_path") ?? "borg"
        if borgPath.isEmpty || borgPath.contains("\n") {
            throw t.error("borg_path", .invalidValue(reason: "must name the borg executable on the client"))
        }
        var schedule: CronSchedule?
        if let text = try t.optionalString("schedule") {
            do {
                schedule = try CronSchedule(text)
            } catch {
                throw t.error("schedule", .invalidValue(reason: "\(error.reason) (e.g. \"30 2 * * *\" or \"@daily\")"))
            }
        }
        let jitter = try t.int("jitter", default: 0, range: 0...86_400)
        let catchUp = try t.optionalBool("catch_up") ?? false
        let retention = try t.optionalTable("retention").map { r throws(ConfigError) in try parseRetention(r) }
        let pre = try t.hookCommand("pre")
        let post = try t.hookCommand("post")
        var client = ClientConfig(name: name, endpoint: endpoint, server: server, repository: repository,
                            passphrase: passphrase, paths: paths, exclude: exclude,
                            compression: compression, archive: archive, transport: transport,
                            borgPath: borgPath, schedule: schedule, jitter: jitter, catchUp: catchUp,
                            retention: retention,
                            pre: pre, post: post)
        client.preTimeout = try t.int("pre_timeout", default: 3600, range: 1...86_400)
        client.postTimeout = try t.int("post_timeout", default: 3600, range: 1...86_400)
        client.lockWait = try t.int("lock_wait", default: 300, range: 0...86_400)
        if t.value("checkpoint_interval") != nil {
            client.checkpointInterval = try t.int("checkpoint_interval", default: 1800, range: 1...86_400)
        }
        client.retry = try t.optionalBool("retry") ?? false
        client.relocatedOK = try t.optionalBool("relocated_ok") ?? false
        if let g = try t.hookCommand("guard") {
            guard g[0].hasPrefix("/") else {
                throw t.error("guard", .invalidValue(reason: "must start with the guard's absolute path on the client (e.g. \"/usr/local/sbin/borg-relay-guard\")"))
            }
            client.guardCommand = g
        }
        try parseClientMonitoring(t, into: &client)
        client.relays = try t.stringArray("relays") ?? []
        for r in client.relays where !RelayName.isValid(r) {
            throw t.error("relays", .invalidValue(reason: "'\(printable(r))' is not a relay name (the [relay] name of a relay in the fleet)"))
        }
        return client
    }

    static func parseRetention(_ t: TableReader) throws(ConfigError) -> Retention {
        try t.allowOnly(["within", "hourly", "daily", "weekly", "monthly", "yearly"])
        let r = Retention(
            within: try t.optionalString("within"),
            hourly: try t.optionalInt("hourly", range: 0...100_000),
            daily: try t.optionalInt("daily", range: 0...100_000),
            weekly: try t.optionalInt("weekly", range: 0...100_000),
            monthly: try t.optionalInt("monthly", range: 0...100_000),
            yearly: try t.optionalInt("yearly", range: 0...100_000))
        if let w = r.within, w.wholeMatch(of: /[0-9]+[Hdwmy]/) == nil {
            throw t.error("within", .invalidValue(reason: "'\(w)' is not a borg interval like 12H, 7d, 4w, 6m or 1y"))
        }
        if r.within == nil && [r.hourly, r.daily, r.weekly, r.monthly, r.yearly].allSatisfy({ $0 == nil || $0 == 0 }) {
            throw t.error("daily", .invalidValue(reason: "a retention policy keeps nothing; set at least one of within, hourly, daily, weekly, monthly, yearly"))
        }
        return r
    }

    static func checkVia(_ via: [String], table: String, jumps: [String: JumpConfig], file: String) throws(ConfigError) {
        var seen: [String] = []
        var queue = via
        while let next = queue.first {
            queue.removeFirst()
            guard let j = jumps[next] else {
                throw ConfigError(file: file, table: table, key: "via",
                                  kind: .unknownReference(kind: "jump", name: next, known: jumps.keys.sorted()))
            }
            if seen.contains(next) {
                throw ConfigError(file: file, table: table, key: "via",
                                  kind: .invalidValue(reason: "the jump chain loops: \((seen + [next]).joined(separator: " -> "))"))
            }
            seen.append(next)
            queue = j.endpoint.via + queue
        }
    }

    static func checkReadable(_ c: RelayConfig) throws(ConfigError) {
        func check(_ path: String, table: String, key: String) throws(ConfigError) {
            if var reason = FileCheck.unreadableReason(path) {
                if key != "known_hosts", access(path, F_OK) != 0, errno == ENOENT {
                    reason += table.hasPrefix("clients.")
                        ? "; `relayctl add-client` creates a client's key pair (or ssh-keygen -t ed25519 -N '' -f \(path))"
                        : "; create the key pair with ssh-keygen -t ed25519 -N '' -f \(path)"
                }
                throw ConfigError(file: c.file, table: table, key: key, kind: .unreadablePath(path: path, reason: reason))
            }
            // Private keys: only their owner may read them (as ssh insists too).
            if key != "known_hosts", let reason = FileCheck.loosePermissions(path) {
                throw ConfigError(file: c.file, table: table, key: key, kind: .unreadablePath(path: path, reason: reason))
            }
        }
        try check(c.relay.knownHosts, table: "relay", key: "known_hosts")
        for name in c.servers.keys.sorted() {
            let s = c.servers[name]!
            try check(s.endpoint.key, table: "servers.\(name)", key: "key")
            if let m = s.maintenanceKey { try check(m, table: "servers.\(name)", key: "maintenance_key") }
        }
        for name in c.jumps.keys.sorted() {
            try check(c.jumps[name]!.endpoint.key, table: "jumps.\(name)", key: "key")
        }
        for name in c.clients.keys.sorted() {
            try check(c.clients[name]!.endpoint.key, table: "clients.\(name)", key: "key")
        }
    }

    static func describeFileError(path: String, error: Error) -> String {
        if let reason = FileCheck.unreadableReason(path) { return reason }
        return "\(error)"
    }
}
