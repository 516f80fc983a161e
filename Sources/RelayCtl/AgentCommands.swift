import ArgumentParser
import Foundation
import RelayCore

struct RunCtlCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Start backups of clients through the agent.",
        discussion: """
            Without --follow: prints the runs queued and exits 0. With --follow: shows live progress \
            and then each run's summary; exits 0 if every run succeeded, 1 otherwise. A client that \
            already has a run is refused (exit 1, naming the run) unless --queue is given.
            """
    )

    @OptionGroup var agent: AgentOptions

    @Argument(help: "Clients to back up.")
    var clients: [String] = []

    @Flag(name: .long, help: "Back up every client of the config.")
    var all = false

    @Flag(name: .long, help: "Wait behind a run of the same client instead of being refused.")
    var queue = false

    @Flag(name: .long, help: "Show live progress until the runs end, then their summaries.")
    var follow = false

    @Flag(name: .long, help: "Print the runs as JSON.")
    var json = false

    @Flag(name: .long, help: "Show the commands each run would send (from the config); start nothing.")
    var dryRun = false

    @Flag(name: .long, help: """
        Read the repository passphrase for this run from stdin (one client only). It is sealed \
        to a one-time key of the agent before it is sent; the plain passphrase never crosses the socket.
        """)
    var passphraseStdin = false

    func validate() throws {
        if clients.isEmpty && !all { throw ValidationError("name at least one client, or give --all") }
        if !clients.isEmpty && all { throw ValidationError("give client names or --all, not both") }
        if passphraseStdin && (all || clients.count != 1) {
            throw ValidationError("--passphrase-stdin is for exactly one client")
        }
    }

    func run() async throws {
        if dryRun {
            let cfg: RelayConfig
            do {
                cfg = try ConfigLoader.load(path: agent.config, checkFiles: false)
            } catch {
                throw fail("\(error) (--dry-run reads the config)", exit: CLI.Exit.usage)
            }
            for name in all ? cfg.clients.keys.sorted() : clients {
                guard let c = cfg.clients[name] else {
                    throw fail("unknown client '\(name)': \(cfg.file) has no [clients.\(name)]", exit: CLI.Exit.usage)
                }
                print(BackupPlan.dryRun(client: c, server: cfg.server(for: c)))
            }
            return
        }
        let code = try await withAgent(agent) { client -> Int32 in
            var request = RunRequest(clients: clients, all: all ? true : nil, queue: queue ? true : nil)
            if passphraseStdin {
                request.passphrase = try await sealPassphrase(client)
            }
            let started: RunList = try await client.post("/runs", body: request)
            if !follow {
                if json {
                    print(Format.json(started))
                } else {
                    for r in started.runs { print("\(r.id)  \(r.client)  \(r.state)") }
                }
                return 0
            }
            let final = try await followRuns(started.runs.map(\.id), client: client, json: json)
            if final.allSatisfy({ $0.state == .succeeded }) { return 0 }
            // borg's warnings (the archives were proven): 3, unless a run failed.
            return final.allSatisfy { $0.state.isSuccess } ? CLI.Exit.warning : CLI.Exit.runFailed
        }
        if code != 0 { throw ExitCode(code) }
    }
}

/// Polls the runs until they end, showing progress; prints the summaries (or JSON).
func followRuns(_ ids: [String], client: ControlClient, json: Bool) async throws -> [RunView] {
    let tty = isatty(1) == 1 && !json
    var done: [String: RunView] = [:]
    var lastPrinted: [String: Date] = [:]
    var lastLine: [String: String] = [:]
    while done.count < ids.count {
        for id in ids where done[id] == nil {
            let v: RunView = try await client.get("/runs/\(id)")
            if v.isFinished {
                done[id] = v
                if tty { Format.write("\r\u{1B}[K") }
                continue
            }
            let line = Format.progressLine(v)
            if json { continue }
            if tty && ids.count == 1 {
                Format.write("\r\u{1B}[K" + line)
            } else if line != lastLine[id] && Date().timeIntervalSince(lastPrinted[id] ?? .distantPast) >= 1 {
                Format.write(line + "\n")
                lastPrinted[id] = Date()
                lastLine[id] = line
            }
        }
        if done.count < ids.count { try await Task.sleep(for: .milliseconds(500)) }
    }
    let final = ids.compactMap { done[$0] }
    if json {
        print(Format.json(RunList(runs: final)))
    } else {
        for v in final { print(Format.summary(v)) }
    }
    return final
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show each client: state, last run, next scheduled run, live progress.",
        discussion: "With --check (for cron and Nagios-style probes): exits 3 when a client is overdue, has a tamper alarm or failed its last check, 0 otherwise."
    )

    @OptionGroup var agent: AgentOptions

    @Flag(name: .long, help: "Print the status as JSON.")
    var json = false

    @Flag(name: .long, help: "Exit 3 when a client is overdue, has a tamper alarm or failed its last repository check.")
    var check = false

    func run() async throws {
        let status: StatusView = try await withAgent(agent) { try await $0.get("/status") }
        if json {
            print(Format.json(status))
        } else {
            printTable(status)
        }
        if check {
            let problems = status.clients.flatMap { c -> [String] in
                var p: [String] = []
                if c.overdue { p.append("\(c.name): OVERDUE (last successful backup \(c.lastSuccess.map { Format.age($0) + " ago" } ?? "never"))") }
                if c.tamperAlarm { p.append("\(c.name): TAMPER ALARM (see relayctl runs \(c.name))") }
                if let lc = c.lastCheck, lc.state == .failed || lc.state == .interrupted { p.append("\(c.name): the last repository check FAILED (run \(lc.id))") }
                return p
            }
            for p in problems { FileHandle.standardError.write(Data((p + "\n").utf8)) }
            if !problems.isEmpty { throw ExitCode(3) }
        }
    }

    private func printTable(_ status: StatusView) {
        let a = status.agent
        let fleet = a.relay.map { "relay \($0) of a fleet, " } ?? ""
        print("relay-agent pid \(a.pid), \(fleet)up \(Format.age(a.startedAt)), \(a.running) running, \(a.queued) queued\(a.relay == nil ? "" : " in the fleet"), max_parallel \(a.maxParallel)\(a.accepting ? "" : ", SHUTTING DOWN")")
        var rows = [["CLIENT", "SERVER", "STATE", "LAST RUN", "NEXT RUN", "NOW"]]
        for c in status.clients {
            let last = c.last.map { "\(Format.age($0.endedAt ?? $0.startedAt)) ago \($0.state)\($0.stats.map { ", \(RunReport.size($0.originalSize))" } ?? "")" } ?? "never"
            let next = c.nextRun.map { Format.time($0) } ?? (c.schedule == nil ? "-" : "?")
            var now = "-"
            if let cur = c.current, cur.state == .running, let r = cur.relay, r != a.relay {
                now = "\(cur.id) running on relay \(r)"
            } else if let cur = c.current, cur.state == .running {
                now = "\(RunReport.size(cur.bytesToServer)) sent\(cur.rate.map { ", \(Format.rate($0))" } ?? "")"
            } else if let cur = c.current {
                now = "\(cur.id) \(cur.state)"
            }
            var state = c.state
            if c.tamperAlarm { state += " TAMPER-ALARM" }
            if c.overdue { state += " OVERDUE" }
            if let lc = c.lastCheck, lc.state == .failed || lc.state == .interrupted { state += " CHECK-FAILED" }
            rows.append([c.name, c.server, state, last, next, now])
        }
        print(Format.table(rows))
    }
}

struct RunsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs",
        abstract: "List recorded runs, newest first."
    )

    @OptionGroup var agent: AgentOptions

    @Argument(help: "Only the runs of this client.")
    var client: String?

    @Option(name: .long, help: "At most this many runs.")
    var limit: Int = 20

    @Flag(name: .long, help: "Print the runs as JSON.")
    var json = false

    func validate() throws {
        if !(1...10_000).contains(limit) { throw ValidationError("--limit must be from 1 to 10000") }
    }

    func run() async throws {
        var path = "/runs?limit=\(limit)"
        if let c = client {
            path += "&client=" + (c.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? c)
        }
        let list: RunList = try await withAgent(agent) { [path] in try await $0.get(path) }
        if json {
            print(Format.json(list))
            return
        }
        var rows = [["RUN", "CLIENT", "STATE", "STARTED", "DURATION", "ORIGINAL", "SENT", "DETAIL"]]
        for r in list.runs {
            let duration = r.endedAt.map { Format.duration($0.timeIntervalSince(r.startedAt)) } ?? Format.duration(Date().timeIntervalSince(r.startedAt)) + "…"
            var detail = r.error.map { String($0.prefix(60)) } ?? r.archive ?? ""
            if let n = r.attempts?.count, n > 0 { detail = "[\(n + 1) attempts] " + detail }
            rows.append([r.id, r.client, r.state.rawValue, Format.time(r.startedAt), r.state == .queued ? "-" : duration,
                         r.stats.map { RunReport.size($0.originalSize) } ?? "-", RunReport.size(r.bytesToServer), detail])
        }
        print(Format.table(rows))
    }
}

struct LogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "Print a run's log (relay events, the client's borg output, borg serve's stderr)."
    )

    @OptionGroup var agent: AgentOptions

    @Argument(help: "The run id (see `relayctl runs`).")
    var run: String

    @Flag(name: [.short, .long], help: "Keep printing as the log grows, until the run ends.")
    var follow = false

    func run() async throws {
        try await withAgent(agent) { client in
            var offset = 0
            while true {
                let chunk: LogChunk = try await client.get("/runs/\(run)/log?offset=\(offset)")
                if !chunk.data.isEmpty {
                    FileHandle.standardOutput.write(Data(chunk.data.utf8))
                }
                offset = chunk.nextOffset
                if chunk.complete || (!follow && chunk.data.isEmpty) { break }
                if chunk.data.isEmpty { try await Task.sleep(for: .milliseconds(500)) }
            }
        }
    }
}

struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel a queued or running run (borg on the client is stopped, the forward and channels closed)."
    )

    @OptionGroup var agent: AgentOptions

    @Argument(help: "The run id.")
    var run: String

    @Flag(name: .long, help: "Print the run as JSON.")
    var json = false

    func run() async throws {
        let v: RunView = try await withAgent(agent) { try await $0.post("/runs/\(run)/cancel", body: Optional<RunRequest>.none) }
        if json {
            print(Format.json(v))
        } else {
            print(v.state == .running ? "run \(v.id) of \(v.client): cancelling" : "run \(v.id) of \(v.client): \(v.state)")
        }
    }
}

enum Format {
    /// Writes to stdout at once (progress lines must not wait in a buffer).
    static func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    static func json<T: Encodable>(_ v: T) -> String {
        let e = ControlAPI.encoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        return (try? e.encode(v)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    static func duration(_ s: TimeInterval) -> String {
        let t = Int(max(0, s))
        if t < 60 { return String(format: "%.1fs", max(0, s)) }
        if t < 3600 { return String(format: "%dm%02ds", t / 60, t % 60) }
        return String(format: "%dh%02dm", t / 3600, (t % 3600) / 60)
    }

    static func age(_ d: Date) -> String { duration(Date().timeIntervalSince(d)) }

    static func time(_ d: Date) -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return f.string(from: d)
    }

    static func rate(_ bytesPerSecond: Double) -> String {
        RunReport.size(Int64(bytesPerSecond)) + "/s"
    }

    static func progressLine(_ v: RunView) -> String {
        if v.state == .queued { return "\(v.client)  queued (run \(v.id))" }
        var parts = ["\(v.client)  \(v.progress?.phase ?? v.state.rawValue)"]
        parts.append("\(RunReport.size(v.bytesToServer)) sent")
        if let r = v.rate { parts.append(rate(r)) }
        if let p = v.progress {
            if let f = p.files { parts.append("\(f) files") }
            if let o = p.originalSize { parts.append("\(RunReport.size(o)) read") }
        }
        parts.append(duration(Date().timeIntervalSince(v.startedAt)))
        return parts.joined(separator: "  ")
    }

    static func summary(_ v: RunView) -> String {
        RunSummary.text(client: v.client, server: v.server, kind: v.kind, state: v.state,
                        duration: duration((v.endedAt ?? Date()).timeIntervalSince(v.startedAt)), runID: v.id,
                        archive: v.stats, toServer: v.bytesToServer, fromServer: v.bytesFromServer,
                        attempts: v.attempts ?? [], warnings: [], error: v.error, log: "relayctl log \(v.id)")
    }

    static func table(_ rows: [[String]]) -> String {
        guard let first = rows.first else { return "" }
        var widths = [Int](repeating: 0, count: first.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        return rows.map { r in
            r.enumerated().map { i, c in i == r.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

struct NotifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "notify",
        abstract: "Notifiers ([notify.NAME] in the config).",
        subcommands: [NotifyTestCommand.self]
    )
}

struct NotifyTestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Send a test event through one notifier and wait for its delivery."
    )

    @OptionGroup var agent: AgentOptions

    @Argument(help: "The notifier's name (the NAME of [notify.NAME]).")
    var name: String

    func run() async throws {
        let r: NotifyTestResult = try await withAgent(agent) { try await $0.post("/notify/\(name)/test", body: Optional<RunRequest>.none) }
        print(r.result)
    }
}
