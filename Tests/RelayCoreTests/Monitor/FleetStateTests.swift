import Foundation
import Testing
@testable import RelayCore

@Suite("Monitoring's decisions: events per finished run, recovered, tamper alarm, overdue once per transition")
struct FleetStateTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func run(_ state: RunState, kind: RunKind = .backup, client: String = "web1", at offset: TimeInterval,
                    alarm: RunAlarm? = nil, archive: ArchiveSummary? = nil) -> FinishedRun {
        FinishedRun(runID: "r\(Int(offset))", client: client, server: "vault", kind: kind, state: state,
                    started: t0.addingTimeInterval(offset - 10), ended: t0.addingTimeInterval(offset),
                    error: state == .failed ? "it broke" : nil, alarm: alarm, archive: archive)
    }

    @Test("failed, then a success: failed, then succeeded and recovered; a second success is not a recovery")
    func recovered() {
        var f = FleetState(since: Self.t0)
        #expect(f.record(Self.run(.succeeded, at: 1)) == [.succeeded])
        #expect(f.record(Self.run(.failed, at: 2)) == [.failed])
        #expect(f.record(Self.run(.warning, at: 3)) == [.succeeded, .recovered])
        #expect(f.record(Self.run(.succeeded, at: 4)) == [.succeeded])
        #expect(f.lastBackup("web1") == Self.t0.addingTimeInterval(4))
        // An interrupted run counts as a failure too.
        #expect(f.record(Self.run(.interrupted, at: 5)) == [.failed])
        #expect(f.record(Self.run(.succeeded, at: 6)) == [.succeeded, .recovered])
    }

    @Test("skipped and cancelled runs change no result: a skip between a failure and a success still recovers; skipped fires skipped, not failed")
    func skippedAndCancelled() {
        var f = FleetState(since: Self.t0)
        #expect(f.record(Self.run(.failed, at: 1)) == [.failed])
        #expect(f.record(Self.run(.skipped, at: 2)) == [.skipped])
        #expect(f.record(Self.run(.cancelled, at: 3)) == [])
        #expect(f.lastResult[.init(client: "web1", kind: .backup)] == .failed)
        #expect(f.record(Self.run(.succeeded, at: 4)) == [.succeeded, .recovered])
    }

    @Test("checks: a failed check is check_failed, results are kept per kind (a failed check does not make the next backup a recovery)")
    func checks() {
        var f = FleetState(since: Self.t0)
        #expect(f.record(Self.run(.failed, kind: .check, at: 1)) == [.checkFailed])
        #expect(f.record(Self.run(.succeeded, at: 2)) == [.succeeded])
        #expect(f.record(Self.run(.succeeded, kind: .check, at: 3)) == [.succeeded, .recovered])
        #expect(f.lastSuccess[.init(client: "web1", kind: .check)] == Self.t0.addingTimeInterval(3))
    }

    @Test("alarms: tamper fires tamper_alarm and stays until a prune or compact passes; a changed host key fires host_key_changed")
    func alarms() {
        var f = FleetState(since: Self.t0)
        #expect(f.record(Self.run(.failed, kind: .compact, at: 1, alarm: .tamper)) == [.failed, .tamperAlarm])
        #expect(f.tamperAlarm == ["web1"])
        _ = f.record(Self.run(.succeeded, at: 2))
        #expect(f.tamperAlarm == ["web1"], "a backup does not clear the alarm")
        _ = f.record(Self.run(.succeeded, kind: .prune, at: 3))
        #expect(f.tamperAlarm.isEmpty)
        #expect(f.record(Self.run(.failed, at: 4, alarm: .hostKeyChanged)) == [.failed, .hostKeyChanged])
    }

    @Test("overdue: after max_age without a successful backup (from the start when there never was one), once per transition; a success clears it; no max_age, never overdue")
    func overdue() {
        var f = FleetState(since: Self.t0)
        let ages: [String: TimeInterval?] = ["web1": 5, "db1": 100, "free": nil]
        #expect(f.updateOverdue(now: Self.t0.addingTimeInterval(4), maxAges: ages) == [])
        #expect(f.updateOverdue(now: Self.t0.addingTimeInterval(6), maxAges: ages) == ["web1"])
        #expect(f.updateOverdue(now: Self.t0.addingTimeInterval(7), maxAges: ages) == [], "fires once")
        #expect(f.overdue == ["web1"])
        _ = f.record(Self.run(.succeeded, at: 8))
        #expect(f.overdue.isEmpty)
        #expect(!f.isOverdue("web1", maxAge: 5, now: Self.t0.addingTimeInterval(12)))
        #expect(f.updateOverdue(now: Self.t0.addingTimeInterval(14), maxAges: ages) == ["web1"], "fires again after it cleared")
        // A skipped run (T offline) does not reset the clock.
        _ = f.record(Self.run(.skipped, at: 15))
        #expect(f.isOverdue("web1", maxAge: 5, now: Self.t0.addingTimeInterval(15)))
        #expect(f.updateOverdue(now: Self.t0.addingTimeInterval(1000), maxAges: ages) == ["db1"])
        #expect(!f.overdue.contains("free"))
        // A client gone from the config is forgotten.
        #expect(f.updateOverdue(now: Self.t0.addingTimeInterval(1001), maxAges: ["db1": 100]) == [])
        #expect(f.overdue == ["db1"])
    }

    @Test("a client added later is watched from then: not overdue at once on an agent up for longer than its max_age; a removed one is forgotten; restored notifications do not fire again")
    func watch() {
        var f = FleetState(since: Self.t0)
        f.watch(["web1"], now: Self.t0)
        #expect(f.updateOverdue(now: Self.t0.addingTimeInterval(100), maxAges: ["web1": 50]) == ["web1"])
        f.watch(["web1", "new"], now: Self.t0.addingTimeInterval(100))
        #expect(f.updateOverdue(now: Self.t0.addingTimeInterval(120), maxAges: ["web1": 50, "new": 50]) == [])
        #expect(f.updateOverdue(now: Self.t0.addingTimeInterval(151), maxAges: ["web1": 50, "new": 50]) == ["new"])
        f.watch(["new"], now: Self.t0.addingTimeInterval(160))
        #expect(f.overdue == ["new"] && f.watchedSince["web1"] == nil)

        var g = FleetState(since: Self.t0)
        g.restoreOverdue(["web1", "gone"])
        g.watch(["web1", "db1"], now: Self.t0)
        #expect(g.overdue == ["web1"])
        #expect(g.updateOverdue(now: Self.t0.addingTimeInterval(100), maxAges: ["web1": 50, "db1": 50]) == ["db1"], "web1 was notified before the restart")
    }

    @Test("the last archive comes from the last successful backup")
    func lastArchive() {
        var f = FleetState(since: Self.t0)
        let a = ArchiveSummary(name: "a", id: "x", nfiles: 3, originalSize: 10, compressedSize: 9, deduplicatedSize: 8, duration: 1)
        _ = f.record(Self.run(.succeeded, at: 1, archive: a))
        _ = f.record(Self.run(.failed, at: 2))
        #expect(f.lastArchive["web1"] == a)
    }
}

@Suite("Events as delivered: the webhook's JSON, the command's variables, Healthchecks' URLs, ntfy's priorities")
struct RelayEventTests {
    @Test("the webhook object has event, client, kind, run_id, an RFC 3339 time and the error; absent fields are absent")
    func json() throws {
        let run = FinishedRun(runID: "20261202T1-abc", client: "web1", server: "vault", kind: .backup, state: .failed,
                              started: Date(timeIntervalSince1970: 0), ended: Date(timeIntervalSince1970: 1_796_000_000.25),
                              error: "server vault: cannot connect")
        let e = RelayEvent(.failed, run: run, relay: "r1")
        let o = try #require(try JSONSerialization.jsonObject(with: e.json()) as? [String: Any])
        #expect(o["event"] as? String == "failed" && o["client"] as? String == "web1" && o["kind"] as? String == "backup")
        #expect(o["run_id"] as? String == "20261202T1-abc" && o["error"] as? String == "server vault: cannot connect")
        #expect(o["time"] as? String == "2026-11-30T00:53:20.250Z", "\(o["time"] ?? "")")
        #expect((o["message"] as? String)?.contains("FAILED") == true)
        let agent = try #require(try JSONSerialization.jsonObject(with: RelayEvent(event: .agentStarted, time: Date(), relay: "r1").json()) as? [String: Any])
        #expect(agent["client"] == nil && agent["run_id"] == nil && agent["error"] == nil)
    }

    @Test("variables for a command: BORG_RELAY_EVENT_* of the fields present")
    func environment() {
        let e = RelayEvent(event: .overdue, client: "web1", kind: .backup, time: Date(), error: "no backup", relay: "r1")
        let env = e.environment
        #expect(env["BORG_RELAY_EVENT_EVENT"] == "overdue" && env["BORG_RELAY_EVENT_CLIENT"] == "web1")
        #expect(env["BORG_RELAY_EVENT_ERROR"] == "no backup" && env["BORG_RELAY_EVENT_RUN_ID"] == nil)
    }

    @Test("Healthchecks: a backup's start pings /start, its success the URL, a failure /fail; other events and kinds ping nothing")
    func healthchecks() {
        func url(_ k: RelayEventKind, _ kind: RunKind? = .backup) -> String? {
            RelayEvent(event: k, client: "c", kind: kind, time: Date(), relay: "r").healthchecksURL(base: "https://hc.example/ping/abc/")
        }
        #expect(url(.started) == "https://hc.example/ping/abc/start")
        #expect(url(.succeeded) == "https://hc.example/ping/abc")
        #expect(url(.failed) == "https://hc.example/ping/abc/fail")
        #expect(url(.checkFailed, .check) == "https://hc.example/ping/abc/fail")
        #expect(url(.overdue) == "https://hc.example/ping/abc/fail")
        #expect(url(.started, .list) == nil && url(.succeeded, .check) == nil && url(.skipped) == nil && url(.recovered) == nil)
        #expect(url(.test) == "https://hc.example/ping/abc/log", "a test changes no check's state")
        // The suffix goes on the path: a query (Healthchecks' ?create=1, Uptime Kuma's
        // ?status=up&msg=OK) stays a query.
        let e = RelayEvent(event: .failed, client: "c", kind: .backup, time: Date(), relay: "r")
        #expect(e.healthchecksURL(base: "https://hc.example/ping/key/web1?create=1") == "https://hc.example/ping/key/web1/fail?create=1")
        #expect(RelayEvent(event: .started, client: "c", kind: .backup, time: Date(), relay: "r")
                    .healthchecksURL(base: "http://kuma:3001/api/push/Tok?status=up&msg=OK&ping=") == "http://kuma:3001/api/push/Tok/start?status=up&msg=OK&ping=")
    }

    @Test("ntfy priorities: alarms max, failures high, successes min")
    func priorities() {
        #expect(RelayEvent(event: .tamperAlarm, time: Date(), relay: "r").ntfyPriority == 5)
        #expect(RelayEvent(event: .failed, time: Date(), relay: "r").ntfyPriority == 4)
        #expect(RelayEvent(event: .succeeded, time: Date(), relay: "r").ntfyPriority == 1)
    }
}

@Suite("A notifier's command on the relay: the event reaches it as data, never as code; a hanging command is killed")
struct CommandRunnerTests {
    @Test("an error text with shell syntax in BORG_RELAY_EVENT_ERROR and on stdin runs nothing: the canary is not created")
    func noInjection() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cmd-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let canary = "\(dir)/canary"
        let payload = "$(touch \(canary)) `touch \(canary)`; touch \(canary)"
        let event = RelayEvent(event: .failed, client: "web1", time: Date(), error: payload, relay: "r")
        let out = "\(dir)/out"
        let r = try CommandRunner.run(["/bin/sh", "-c", "cat > \(out).json; printf '%s' \"$BORG_RELAY_EVENT_ERROR\" > \(out)"],
                                      env: event.environment.merging(["PATH": "/usr/bin:/bin"]) { a, _ in a },
                                      input: event.json(), timeout: 10)
        #expect(r.succeeded, "\(r.description)")
        #expect(!FileManager.default.fileExists(atPath: canary), "the payload ran")
        #expect(try String(contentsOfFile: out, encoding: .utf8) == payload)
        let json = try String(contentsOfFile: out + ".json", encoding: .utf8)
        #expect(json.contains("\"event\":\"failed\""))
    }

    @Test("a command that does not end within its timeout is killed; a failing one reports its status and stderr")
    func timeoutAndFailure() throws {
        let start = Date()
        let r = try CommandRunner.run(["/bin/sleep", "30"], env: [:], input: Data(), timeout: 1)
        #expect(r.timedOut && !r.succeeded)
        #expect(Date().timeIntervalSince(start) < 20)
        let f = try CommandRunner.run(["/bin/sh", "-c", "echo nope >&2; exit 7"], env: [:], input: Data(), timeout: 10)
        #expect(f.status == 7 && f.description.contains("nope"), "\(f.description)")
        #expect(throws: SystemError.self) { try CommandRunner.run(["/nonexistent/cmd"], env: [:], input: Data(), timeout: 1) }
    }
}

@Suite("The success rule's third outcome: skipped when the client could not be reached before anything started")
struct SkippedRuleTests {
    static func machine(kind: RunMachine.Kind = .relayed) -> RunMachine {
        var p = RunMachine.Policy(kind: kind, run: RunPolicy(idleTimeout: 3600, runTimeout: 0, connectAttempts: 1, retryDelay: 10),
                                  retryCreate: false, postHook: false, keepaliveInterval: 10, keepaliveCount: 3,
                                  clientLabel: "client web1", serverLabel: "server vault")
        p.jitter = { 1.0 }
        return RunMachine(policy: p)
    }

    @Test("the client refused the connection: clientUnreachable; the server did: not; a cancel: not; a failure after borg started: not")
    func rule() {
        let now = Date()
        var m = Self.machine()
        _ = m.handle(.begin, now: now)
        _ = m.handle(.failed(.ssh(.connect(host: "client web1 (root@t:22)", detail: "Connection refused"))), now: now)
        #expect(m.phase == .finished && m.clientUnreachable)

        var s = Self.machine()
        _ = s.handle(.begin, now: now)
        _ = s.handle(.failed(.ssh(.connect(host: "server vault (borg@b:22)", detail: "Connection refused"))), now: now)
        #expect(s.phase == .finished && !s.clientUnreachable)

        var c = Self.machine()
        _ = c.handle(.begin, now: now)
        _ = c.handle(.cancelRequested, now: now)
        _ = c.handle(.failed(.ssh(.connect(host: "client web1 (root@t:22)", detail: "refused"))), now: now)
        #expect(!c.clientUnreachable, "a cancelled run is cancelled")

        var b = Self.machine()
        _ = b.handle(.begin, now: now)
        _ = b.handle(.connected, now: now)
        _ = b.handle(.borgLaunched, now: now)
        _ = b.handle(.failed(.ssh(.connect(host: "client web1 (root@t:22)", detail: "refused"))), now: now)
        #expect(!b.clientUnreachable, "borg had started on the client")

        var l = Self.machine(kind: .local)
        _ = l.handle(.begin, now: now)
        _ = l.handle(.failed(.ssh(.connect(host: "client web1 (root@t:22)", detail: "refused"))), now: now)
        #expect(!l.clientUnreachable, "runs on the relay are never skipped")
    }
}
