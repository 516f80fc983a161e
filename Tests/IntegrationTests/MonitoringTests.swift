import Foundation
import RelayCore
import Synchronization
import Testing

/// Metrics scraped by a real Prometheus, notifications received by a real HTTP server,
/// overdue clients, scheduled repository checks and skipped runs (real daemon, sshd, borg).
@Suite("Monitoring: Prometheus metrics, notifications, overdue, scheduled checks, skipped runs (real daemon, sshd, borg, Prometheus)", .serialized)
struct MonitoringTests {
    static func sandbox(_ name: String, maintenance: Bool = false) throws -> Sandbox {
        let s = try Sandbox(name: name, maintenance: maintenance)
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        try writeRandomFile("\(s.dataDir)/f.bin", count: 256 * 1024)
        return s
    }

    /// A webhook notifier to `receiver`'s /hook (`on`: nil for every event) and metrics on a
    /// free loopback port: the tables and the port.
    static func hookAndMetrics(_ receiver: Receiver, on events: [String]?) -> (tables: [String], port: Int) {
        let port = Proc.freePort()
        let on = events.map { "\non = [" + $0.map { "\"\($0)\"" }.joined(separator: ", ") + "]" } ?? ""
        return (["[notify.hook]\nkind = \"webhook\"\nurl = \"\(receiver.url)/hook\"" + on, "[metrics]\nlisten = \"127.0.0.1:\(port)\""], port)
    }

    /// Replaces the first `port = OLD` of the config (servers come before clients) and
    /// makes the agent read it again.
    static func repoint(_ s: Sandbox, _ d: AgentDaemon, from old: Int, to new: Int) throws {
        let text = try String(contentsOfFile: s.configPath, encoding: .utf8)
        let range = try #require(text.range(of: "port = \(old)\n"))
        try text.replacingCharacters(in: range, with: "port = \(new)\n").write(toFile: s.configPath, atomically: true, encoding: .utf8)
        let before = d.log.components(separatedBy: "configuration reloaded").count
        d.process.kill(SIGHUP)
        let deadline = Date().addingTimeInterval(10)
        while d.log.components(separatedBy: "configuration reloaded").count == before && Date() < deadline { usleep(50_000) }
        #expect(d.log.components(separatedBy: "configuration reloaded").count > before, "the agent did not reload: \(d.log)")
    }

    @Test("a real Prometheus scrapes the agent: last success equals the run's end, promtool accepts the exposition and the shipped rules, the textfile is never half-written, values survive a restart")
    func prometheusScrape() throws {
        try #require(PrometheusServer.available, "the prometheus package is not installed (scripts/setup installs it)")
        let s = try Self.sandbox("metrics")
        defer { s.close() }
        let port = Proc.freePort()
        let textfile = "\(s.dir)/relay/borg-relay.prom"
        s.extraTables = ["[metrics]\nlisten = \"127.0.0.1:\(port)\"\ntextfile = \"\(textfile)\"\ntextfile_interval = 1"]
        try s.configure()
        let d = try AgentDaemon(s)
        let prometheus = try PrometheusServer(dir: s.dir, target: "127.0.0.1:\(port)")
        defer { prometheus.stop() }

        // A reader of the textfile while runs end and the file is rewritten every second:
        // every read is a whole exposition (rename, never a partial write).
        let stop = Mutex(false)
        let reads = Mutex<[String]>([])
        let reader = Thread {
            while !stop.withLock({ $0 }) {
                if let t = try? String(contentsOfFile: textfile, encoding: .utf8) { reads.withLock { $0.append(t) } }
                usleep(2_000)
            }
        }
        reader.start()
        let run = try d.ctl(["run", "web1", "--follow"])
        #expect(run.status == 0, "\(run.output)")
        let second = try d.ctl(["run", "web1", "--follow"])
        #expect(second.status == 0, "\(second.output)")
        usleep(2_500_000)
        stop.withLock { $0 = true }
        while !reader.isFinished { usleep(10_000) }
        let last = try #require(try d.runs("web1").first)
        let ended = try #require(last.endedAt).timeIntervalSince1970

        // Prometheus has scraped it: the query answers the run's end time.
        let series = "borg_relay_last_success_timestamp_seconds{client=\"web1\",kind=\"backup\"}"
        var value: Double?
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            value = prometheus.query(series)
            if let v = value, abs(v - ended) < 0.01 { break }
            usleep(250_000)
        }
        let v = try #require(value, "Prometheus never had \(series)")
        #expect(abs(v - ended) < 0.01, "Prometheus has \(v), the run ended at \(ended)")
        #expect(prometheus.query("borg_relay_runs_total{client=\"web1\",kind=\"backup\",result=\"succeeded\"}") == 2)
        #expect(prometheus.query("up{job=\"borg-relay\"}") == 1)

        // The exposition: promtool accepts it; the figures are the run's.
        let exposition = try #require(Metrics.get("http://127.0.0.1:\(port)/metrics"))
        let lint = try Metrics.promtoolProblems(exposition)
        #expect(lint == nil, "\(lint ?? "")\n\(exposition)")
        let archive = try #require(last.stats)
        #expect(Metrics.value(exposition, "borg_relay_last_archive_original_bytes{client=\"web1\"}") == Double(archive.originalSize))
        #expect(Metrics.value(exposition, "borg_relay_archives{client=\"web1\"}") == 2)
        #expect(Metrics.value(exposition, "borg_relay_run_duration_seconds_count{client=\"web1\",kind=\"backup\"}") == 2)
        #expect((Metrics.value(exposition, "borg_relay_spliced_bytes_total{client=\"web1\",direction=\"to_server\"}") ?? 0) > 256 * 1024)
        #expect(Metrics.value(exposition, "borg_relay_build_info{version=\"\(RelayVersion.current)\"}") == 1)
        #expect(!exposition.contains(s.passphrase))

        // The textfile: valid after the runs, and no read saw a part of it.
        let file = try String(contentsOfFile: textfile, encoding: .utf8)
        #expect(try Metrics.promtoolProblems(file) == nil)
        #expect(Metrics.value(file, "borg_relay_runs_total{client=\"web1\",kind=\"backup\",result=\"succeeded\"}") == 2)
        let seen = reads.withLock { $0 }
        #expect(seen.count > 10, "the reader read the textfile \(seen.count) times")
        let partial = seen.filter { !$0.hasSuffix("\n") || !$0.contains("borg_relay_build_info{") || !$0.contains("# TYPE borg_relay_runs_running") }
        #expect(partial.isEmpty, "\(partial.count) of \(seen.count) reads saw a partial file: \(partial.first ?? "")")

        // The shipped rules are valid.
        let rules = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("contrib/prometheus/borg-relay.rules.yml").path
        let check = try Proc.run("/usr/bin/promtool", ["check", "rules", rules])
        #expect(check.status == 0, "\(check.output)")

        // Values survive a restart: rebuilt from the history.
        #expect(d.stop() == 0)
        let d2 = try AgentDaemon(s)
        let again = try #require(Metrics.get("http://127.0.0.1:\(port)/metrics"))
        let restored = try #require(Metrics.value(again, series), "\(again)")
        #expect(abs(restored - ended) < 0.01, "after a restart: \(restored), the run ended at \(ended)")
        #expect(Metrics.value(again, "borg_relay_runs_total{client=\"web1\",kind=\"backup\",result=\"succeeded\"}") == 2)
        #expect(Metrics.value(again, "borg_relay_last_run_success{client=\"web1\",kind=\"backup\"}") == 1)
        #expect(d2.stop() == 0)
    }

    @Test("notifications: B unreachable gives exactly one failed event (webhook, Healthchecks, ntfy, command) with no passphrase; the next good run gives recovered; a hanging or failing receiver does not hold up the run")
    func notifications() throws {
        let s = try Self.sandbox("notify")
        defer { s.close() }
        let receiver = try Receiver(dir: s.dir)
        defer { receiver.stop() }
        let commandOut = "\(s.dir)/command-events"
        s.relayExtra += ["connect_attempts = 1"]
        s.extraTables = [
            "[notify.hook]\nkind = \"webhook\"\nurl = \"\(receiver.url)/hook\"",
            "[notify.hc]\nkind = \"healthchecks\"\nurl = \"\(receiver.url)/hc/{client}\"",
            "[notify.phone]\nkind = \"ntfy\"\nurl = \"\(receiver.url)/ntfy/backups\"\non = [\"failed\", \"recovered\"]",
            "[notify.script]\nkind = \"command\"\nargv = [\"/bin/sh\", \"-c\", \"cat >> \(commandOut); echo \\\" $BORG_RELAY_EVENT_EVENT $BORG_RELAY_EVENT_CLIENT\\\" >> \(commandOut)\"]\non = [\"failed\"]",
            "[notify.slow]\nkind = \"webhook\"\nurl = \"\(receiver.url)/hang/slow\"\non = [\"started\"]\ntimeout = 120\nattempts = 1",
            "[notify.broken]\nkind = \"webhook\"\nurl = \"\(receiver.url)/fail500/broken\"\non = [\"failed\"]\nattempts = 2",
            "[metrics]\nlisten = \"127.0.0.1:\(Proc.freePort())\"",
        ]
        try s.configure()
        let d = try AgentDaemon(s)
        #expect(receiver.wait(within: 10) { r in r.contains { ($0["path"] as? String) == "/hook" } }, "no agent_started event")
        #expect(receiver.events(path: "/hook").first?["event"] as? String == "agent_started")

        // B unreachable: the run fails; one failed event.
        let closed = Proc.freePort()
        try Self.repoint(s, d, from: s.b.port, to: closed)
        let bad = try d.ctl(["run", "web1", "--follow"])
        #expect(bad.status != 0, "\(bad.output)")
        let badRun = try #require(try d.runs("web1").first)
        #expect(badRun.state == .failed)
        #expect(receiver.wait(within: 15) { _ in receiver.events(path: "/hook").contains { $0["event"] as? String == "failed" } })
        #expect(receiver.wait(within: 15) { r in r.contains { ($0["path"] as? String) == "/hc/web1/fail" } })
        let failed = receiver.events(path: "/hook").filter { $0["event"] as? String == "failed" }
        #expect(failed.count == 1, "\(failed)")
        let f = try #require(failed.first)
        #expect(f["client"] as? String == "web1")
        #expect(f["run_id"] as? String == badRun.id)
        #expect(f["kind"] as? String == "backup")
        #expect((f["error"] as? String)?.contains("server vault") == true, "\(f)")
        #expect((f["time"] as? String).flatMap { ISO8601DateFormatter().date(from: $0.replacingOccurrences(of: #"\.\d+"#, with: "", options: .regularExpression)) } != nil, "\(f)")

        // Back to B: the good run recovers.
        try Self.repoint(s, d, from: closed, to: s.b.port)
        let good = try d.ctl(["run", "web1", "--follow"])
        #expect(good.status == 0, "\(good.output)")
        let goodRun = try #require(try d.runs("web1").first)
        let goodEnd = try #require(goodRun.endedAt).timeIntervalSince1970
        #expect(receiver.wait(within: 15) { _ in receiver.events(path: "/hook").contains { $0["event"] as? String == "recovered" } })
        let recovered = receiver.events(path: "/hook").filter { $0["event"] as? String == "recovered" }
        #expect(recovered.count == 1 && recovered.first?["run_id"] as? String == goodRun.id, "\(recovered)")
        #expect(receiver.events(path: "/hook").filter { $0["event"] as? String == "failed" }.count == 1)

        // Healthchecks: start, fail and success pings with the log's tail; ntfy: title and priority.
        #expect(receiver.wait(within: 10) { r in r.contains { ($0["path"] as? String) == "/hc/web1" } })
        let hcPaths = receiver.requests.compactMap { $0["path"] as? String }.filter { $0.hasPrefix("/hc/") }
        #expect(hcPaths.filter { $0 == "/hc/web1/start" }.count == 2 && hcPaths.contains("/hc/web1/fail"), "\(hcPaths)")
        let hcFail = try #require(receiver.requests.first { ($0["path"] as? String) == "/hc/web1/fail" })
        #expect((hcFail["body"] as? String)?.contains(badRun.id) == true, "\(hcFail)")
        let ntfy = receiver.requests.filter { ($0["path"] as? String) == "/ntfy/backups" }
        #expect(ntfy.count == 2, "ntfy got \(ntfy.count) requests (on = failed, recovered)")
        let ntfyFailed = try #require(ntfy.first { (($0["headers"] as? [String: String])?["title"] ?? "").contains("failed") })
        #expect((ntfyFailed["headers"] as? [String: String])?["priority"] == "4")

        // The command notifier: the event on stdin and in its variables.
        let command = (try? String(contentsOfFile: commandOut, encoding: .utf8)) ?? ""
        #expect(command.contains("\"run_id\":\"\(badRun.id)\"") && command.contains(" failed web1"), "\(command)")

        // The hanging receiver holds its started events unanswered until the test releases
        // it; meanwhile both runs ended and their events reached the other receivers: no run
        // waited for it.
        // (One request: the notifier's lane keeps its events in order, so the second started
        // event waits behind the first.)
        let hung = receiver.requests.filter { ($0["path"] as? String) == "/hang/slow" }
        #expect(hung.count == 1, "\(hung.count) started events reached the hanging receiver")
        let hungAt = hung.compactMap { $0["received"] as? Double }
        let succeededAt = receiver.requests.first { ($0["path"] as? String) == "/hook" && (($0["body"] as? String) ?? "").contains("\"event\":\"succeeded\"") }?["received"] as? Double
        let answeredBefore = receiver.answered.filter { $0.path == "/hang/slow" }
        print("notifications: the good run took \(String(format: "%.2f s", goodEnd - goodRun.startedAt.timeIntervalSince1970)) and ended at \(goodEnd); its succeeded event arrived at \(succeededAt ?? 0); the hanging receiver got its started events at \(hungAt) and had answered \(answeredBefore.count)")
        #expect(answeredBefore.isEmpty, "the hanging receiver answered before it was released: \(answeredBefore)")
        #expect(succeededAt != nil && hungAt.allSatisfy { $0 < goodEnd }, "order: started held at \(hungAt), run ended \(goodEnd)")
        try receiver.releaseHung()
        #expect(receiver.wait(within: 15) { _ in receiver.answered.filter { $0.path == "/hang/slow" }.count == 2 },
                "after the release both started events were delivered, in order: \(receiver.answered)")
        let slowRuns = receiver.events(path: "/hang/slow").compactMap { $0["run_id"] as? String }
        #expect(slowRuns == [badRun.id, goodRun.id], "\(slowRuns)")
        // The failing receiver: both attempts, counted as one failure.
        #expect(receiver.wait(within: 15) { r in r.filter { ($0["path"] as? String) == "/fail500/broken" }.count == 2 })
        let metricsPort = try #require(s.extraTables.last?.split(separator: ":").last.flatMap { Int($0.dropLast()) })
        var failures: Double?
        for _ in 0..<50 {
            failures = Metrics.value(Metrics.get("http://127.0.0.1:\(metricsPort)/metrics") ?? "", "borg_relay_notify_failures_total{notifier=\"broken\"}")
            if failures == 1 { break }
            usleep(100_000)
        }
        #expect(failures == 1)

        // relayctl notify test: delivered, and a refusal named.
        let test = try d.ctl(["notify", "test", "hook"])
        #expect(test.status == 0 && test.stdout.contains("delivered"), "\(test.output)")
        #expect(receiver.events(path: "/hook").contains { $0["event"] as? String == "test" })
        let broken = try d.ctl(["notify", "test", "broken"])
        #expect(broken.status != 0 && broken.stderr.contains("HTTP 500"), "\(broken.output)")
        let unknown = try d.ctl(["notify", "test", "nosuch"])
        #expect(unknown.status != 0 && unknown.stderr.contains("no notifier 'nosuch'"), "\(unknown.output)")

        #expect(d.stop() == 0)
        #expect(receiver.events(path: "/hook").last?["event"] as? String == "agent_stopped")
        // No secret in anything delivered.
        #expect(!receiver.raw.contains(s.passphrase), "the passphrase reached a receiver")
        #expect(!command.contains(s.passphrase))
    }

    @Test("overdue: a client with max_age = 5s becomes overdue, fires once, status --check exits 3, the metric is 1; a good run clears it")
    func overdue() throws {
        let s = try Self.sandbox("overdue")
        defer { s.close() }
        let receiver = try Receiver(dir: s.dir)
        defer { receiver.stop() }
        s.clientExtra = ["max_age = \"5s\""]
        let (tables, port) = Self.hookAndMetrics(receiver, on: ["overdue"])
        s.extraTables = tables
        try s.configure()
        let d = try AgentDaemon(s)
        let run = try d.ctl(["run", "web1", "--follow"])
        #expect(run.status == 0, "\(run.output)")
        let fresh = try d.ctl(["status", "--check"])
        #expect(fresh.status == 0, "\(fresh.output)")

        #expect(receiver.wait(within: 20) { _ in !receiver.events(path: "/hook").isEmpty }, "no overdue event")
        let status = try d.status()
        let c = try #require(status.clients.first { $0.name == "web1" })
        #expect(c.overdue && c.maxAge == 5, "\(c)")
        let check = try d.ctl(["status", "--check"])
        #expect(check.status == 3 && check.stderr.contains("web1: OVERDUE"), "\(check.output)")
        #expect(check.stdout.contains("OVERDUE"))
        #expect(Metrics.value(Metrics.get("http://127.0.0.1:\(port)/metrics") ?? "", "borg_relay_overdue{client=\"web1\"}") == 1)
        // Ticks go on (every few seconds); the event fired once.
        usleep(8_000_000)
        let events = receiver.events(path: "/hook")
        #expect(events.count == 1 && events.first?["event"] as? String == "overdue" && events.first?["client"] as? String == "web1", "\(events)")

        let again = try d.ctl(["run", "web1", "--follow"])
        #expect(again.status == 0, "\(again.output)")
        let cleared = try d.ctl(["status", "--check"])
        #expect(cleared.status == 0, "\(cleared.output)")
        #expect(Metrics.value(Metrics.get("http://127.0.0.1:\(port)/metrics") ?? "", "borg_relay_overdue{client=\"web1\"}") == 0)
        #expect(d.stop() == 0)
    }

    @Test("a scheduled repository check runs from check_schedule, its result is in status and the metrics; a corrupted segment on B makes the next one fail and notify check_failed")
    func scheduledCheck() throws {
        let s = try Self.sandbox("check")
        defer { s.close() }
        let receiver = try Receiver(dir: s.dir)
        defer { receiver.stop() }
        s.clientExtra = ["check_schedule = \"* * * * *\"", "check = \"repository\"", "check_max_duration = \"1h\""]
        let (tables, port) = Self.hookAndMetrics(receiver, on: ["check_failed", "succeeded"])
        s.extraTables = tables
        try s.configure()
        let d = try AgentDaemon(s)
        // --queue: the every-minute check may have started already (it did, in CI at 00:04:00).
        let run = try d.ctl(["run", "web1", "--queue", "--follow"])
        #expect(run.status == 0, "\(run.output)")

        // The first scheduled check (within a minute).
        func waitCheck(after count: Int) throws -> RunView? {
            let deadline = Date().addingTimeInterval(90)
            while Date() < deadline {
                let checks = try d.runs("web1").filter { $0.kind == .check && $0.isFinished }
                if checks.count > count { return checks.first }
                usleep(500_000)
            }
            return nil
        }
        let first = try #require(try waitCheck(after: 0), "no scheduled check ran: \(d.log)")
        #expect(first.state == .succeeded, "\(first)")
        #expect(first.trigger == "check-schedule")
        let log = try d.ctl(["log", first.id]).stdout
        #expect(log.contains("--repository-only") && log.contains("--max-duration"), "\(log)")
        let status = try d.status()
        #expect(status.clients.first?.lastCheck?.id == first.id)
        #expect(status.clients.first?.checkSchedule == "* * * * *" && status.clients.first?.nextCheck != nil)
        let m = Metrics.get("http://127.0.0.1:\(port)/metrics") ?? ""
        #expect(Metrics.value(m, "borg_relay_last_check_success{client=\"web1\"}") == 1, "\(m)")
        let at = try #require(Metrics.value(m, "borg_relay_last_check_success_timestamp_seconds{client=\"web1\"}"))
        #expect(abs(at - (first.endedAt?.timeIntervalSince1970 ?? 0)) < 0.01)

        // Corrupt the largest segment on B: the next scheduled check fails and notifies.
        let data = "\(s.repo)/data"
        let segments = try FileManager.default.subpathsOfDirectory(atPath: data).map { "\(data)/\($0)" }
            .filter { (try? FileManager.default.attributesOfItem(atPath: $0)[.type] as? FileAttributeType) == .typeRegular }
        let victim = try #require(segments.max { (try? FileManager.default.attributesOfItem(atPath: $0)[.size] as? Int ?? 0) ?? 0 < (try? FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int ?? 0) ?? 0 })
        var bytes = try Data(contentsOf: URL(fileURLWithPath: victim))
        for i in stride(from: bytes.count / 3, to: min(bytes.count, bytes.count / 3 + 4096), by: 1) { bytes[i] ^= 0x5A }
        try bytes.write(to: URL(fileURLWithPath: victim))
        let second = try #require(try waitCheck(after: 1), "no second scheduled check ran")
        #expect(second.state == .failed, "\(second)")
        #expect(receiver.wait(within: 15) { _ in receiver.events(path: "/hook").contains { $0["event"] as? String == "check_failed" } })
        let event = try #require(receiver.events(path: "/hook").first { $0["event"] as? String == "check_failed" })
        #expect(event["run_id"] as? String == second.id && event["kind"] as? String == "check", "\(event)")
        let m2 = Metrics.get("http://127.0.0.1:\(port)/metrics") ?? ""
        #expect(Metrics.value(m2, "borg_relay_last_check_success{client=\"web1\"}") == 0)
        let probe = try d.ctl(["status", "--check"])
        #expect(probe.status == 3 && probe.stderr.contains("check FAILED"), "\(probe.output)")
        #expect(d.stop() == 0)
    }

    @Test("T unreachable before anything started: the run is skipped, not failed; no failed event; counted as skipped")
    func unreachableClientSkips() throws {
        let s = try Self.sandbox("skip")
        defer { s.close() }
        let receiver = try Receiver(dir: s.dir)
        defer { receiver.stop() }
        s.relayExtra += ["connect_attempts = 2", "retry_delay = 0"]
        let (tables, port) = Self.hookAndMetrics(receiver, on: nil)
        s.extraTables = tables
        try s.configure()
        // The client's address answers nothing (a closed port on loopback).
        let text = try String(contentsOfFile: s.configPath, encoding: .utf8)
        try text.replacingOccurrences(of: "port = \(s.t.port)\n", with: "port = \(Proc.freePort())\n")
            .write(toFile: s.configPath, atomically: true, encoding: .utf8)
        let d = try AgentDaemon(s)
        let run = try d.ctl(["run", "web1", "--follow"])
        #expect(run.status != 0)
        let r = try #require(try d.runs("web1").first)
        #expect(r.state == .skipped, "\(r)")
        #expect(r.error?.contains("client web1") == true, "\(r.error ?? "")")
        #expect(receiver.wait(within: 15) { _ in receiver.events(path: "/hook").contains { $0["event"] as? String == "skipped" } })
        usleep(1_000_000)
        let events = receiver.events(path: "/hook").compactMap { $0["event"] as? String }
        #expect(!events.contains("failed"), "\(events)")
        let m = Metrics.get("http://127.0.0.1:\(port)/metrics") ?? ""
        #expect(Metrics.value(m, "borg_relay_runs_total{client=\"web1\",kind=\"backup\",result=\"skipped\"}") == 1, "\(m)")
        #expect(Metrics.value(m, "borg_relay_runs_total{client=\"web1\",kind=\"backup\",result=\"failed\"}") == nil)
        #expect(d.stop() == 0)
    }
}
