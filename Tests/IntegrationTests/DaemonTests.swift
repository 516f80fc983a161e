import Foundation
import RelayCore
import Testing

/// The daemon (`relay-agent serve`) and relayctl, against real sshd and real borg.
@Suite("Daemon and relayctl (real daemon, real sshd, real borg)", .serialized)
struct DaemonTests {
    func sandbox(_ name: String, multiRepo: Bool = false, relay: [String] = []) throws -> Sandbox {
        try daemonSandbox(name, multiRepo: multiRepo, relay: relay)
    }

    @Test("run --follow shows progress and ends with the summary; runs, log and status show the record")
    func followRunsLogStatus() throws {
        let s = try sandbox("follow")
        defer { s.close() }
        try writeRandomFile("\(s.dataDir)/big.bin", count: 160 * 1024 * 1024)
        try s.configure()
        let d = try AgentDaemon(s)

        let r = try d.ctl(["run", "web1", "--follow"])
        #expect(r.status == 0, "\(r.output)\n\(d.log)")
        #expect(r.stdout.contains("web1  running"), "no progress line: \(r.stdout)")
        #expect(r.stdout.contains("sent"), "\(r.stdout)")
        #expect(r.stdout.contains(" read"), "no borg progress in the progress lines: \(r.stdout)")
        #expect(r.stdout.contains("backup succeeded"), "\(r.stdout)")

        let runs = try d.runs("web1")
        let run = try #require(runs.first)
        #expect(runs.count == 1)
        #expect(run.state == .succeeded)
        #expect(run.trigger == "api")
        #expect(run.bytesToServer > 160 * 1024 * 1024 / 2)
        let archive = try #require(run.archive)
        #expect(run.stats?.nfiles == 1)
        #expect(try s.archives() == [archive])

        let log = try d.ctl(["log", run.id])
        #expect(log.status == 0)
        #expect(log.stdout.contains("[T borg]") || log.stdout.contains("backup of client web1"), "\(log.stdout)")
        #expect(log.stdout.contains("run \(run.id) succeeded"), "\(log.stdout)")

        let st = try d.status()
        #expect(st.clients.map(\.name) == ["web1"])
        #expect(st.clients[0].state == "idle")
        #expect(st.clients[0].last?.id == run.id)
        #expect(st.agent.running == 0)

        // The human table too.
        let table = try d.ctl(["status"])
        #expect(table.status == 0 && table.stdout.contains("CLIENT") && table.stdout.contains("web1"), "\(table.output)")
        #expect(d.stop() == 0, "\(d.log)")
        // Nothing secret in the daemon's log or the run log.
        #expect(!d.log.contains(s.passphrase))
        #expect(!log.stdout.contains(s.passphrase))
    }

    @Test("a per-run passphrase from stdin is sealed to the agent's one-time key and works; without it the run fails")
    func passphraseFromStdin() throws {
        let s = try sandbox("ppstdin")
        defer { s.close() }
        try Data("hello".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.writeConfig(sealed: nil)  // no passphrase in the config
        let d = try AgentDaemon(s)
        let ok = try d.ctl(["run", "web1", "--follow", "--passphrase-stdin"], stdin: Data((s.passphrase + "\n").utf8))
        #expect(ok.status == 0, "\(ok.output)")
        #expect(try s.archives().count == 1)
        let bad = try d.ctl(["run", "web1", "--follow"])
        #expect(bad.status == 1, "\(bad.output)")
        #expect(bad.stdout.contains("FAILED"), "\(bad.stdout)")
        #expect(d.stop() == 0)
        #expect(!d.log.contains(s.passphrase))
        for v in try HistoryStore(path: "\(s.stateDir)/history.sqlite").recent() {
            let text = (try? String(contentsOfFile: v.logFile ?? "", encoding: .utf8)) ?? ""
            #expect(!text.contains(s.passphrase))
        }
    }

    @Test("max_parallel = 1: a second client waits for the first; max_parallel = 2: both run at once")
    func maxParallel() throws {
        for limit in [1, 2] {
            let s = try sandbox("par\(limit)", multiRepo: true, relay: ["max_parallel = \(limit)"])
            defer { s.close() }
            try writeRandomFile("\(s.dataDir)/big.bin", count: 80 * 1024 * 1024)
            let sealed = try s.sealed()
            let data2 = try s.addClient("web2", sealed: sealed)
            try writeRandomFile("\(data2)/big.bin", count: 80 * 1024 * 1024)
            try s.writeConfig(sealed: sealed)
            let d = try AgentDaemon(s)
            let ids = try d.start(["web1", "web2"])
            #expect(ids.count == 2)
            if limit == 1 {
                // While the first runs, the second is queued.
                let first = try #require(try d.waitFor(ids[0], within: 20) { $0.state == .running })
                #expect(first.state == .running)
                #expect(try d.run(ids[1])?.state == .queued)
                #expect(try d.status().clients.first { $0.name == "web2" }?.state == "queued")
            }
            let a = try #require(try d.waitFinished(ids[0]))
            let b = try #require(try d.waitFinished(ids[1]))
            #expect(a.state == .succeeded && b.state == .succeeded, "\(a.error ?? "") \(b.error ?? "")")
            let aEnd = try #require(a.endedAt), bEnd = try #require(b.endedAt)
            let overlap = min(aEnd, bEnd).timeIntervalSince(max(a.startedAt, b.startedAt))
            if limit == 1 {
                #expect(overlap <= 0, "runs overlapped by \(overlap) s with max_parallel = 1")
            } else {
                #expect(overlap > 0, "runs did not overlap with max_parallel = 2")
            }
            #expect(d.stop() == 0)
        }
    }

    @Test("the same client twice: refused naming the running run, or queued with --queue")
    func sameClientTwice() throws {
        let s = try sandbox("twice")
        defer { s.close() }
        try writeRandomFile("\(s.dataDir)/big.bin", count: 120 * 1024 * 1024)
        try s.configure()
        let d = try AgentDaemon(s)
        let first = try d.start(["web1"])[0]
        let refused = try d.ctl(["run", "web1"])
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.stderr.contains(first), "the refusal does not name run \(first): \(refused.stderr)")
        let queued = try d.start(["web1", "--queue"])[0]
        #expect(try d.run(queued)?.state == .queued)
        let a = try #require(try d.waitFinished(first))
        let b = try #require(try d.waitFinished(queued))
        #expect(a.state == .succeeded && b.state == .succeeded)
        let aEnded = try #require(a.endedAt)
        #expect(b.startedAt >= aEnded)
        #expect(try s.archives().count == 2)
        #expect(d.stop() == 0)
    }

    @Test("cancel mid-run: cancelled within 10 s, nothing left on T or B, the next run needs no break-lock")
    func cancelMidRun() throws {
        let s = try sandbox("dcancel")
        defer { s.close() }
        try writeRandomFile("\(s.dataDir)/big.bin", count: 400 * 1024 * 1024)
        try s.configure()
        let d = try AgentDaemon(s)
        let id = try d.start(["web1"])[0]
        #expect(d.waitForBorgOnT(), "borg create never started on T")
        usleep(500_000)
        let c = try d.ctl(["cancel", id])
        #expect(c.status == 0, "\(c.output)")
        let asked = Date()
        let v = try #require(try d.waitFinished(id, within: 10))
        #expect(v.state == .cancelled)
        #expect(Date().timeIntervalSince(asked) < 10)
        #expect(s.sessionsLeft(on: [s.t, s.b], within: 5).isEmpty)
        // Cancelling an ended run is an error naming its state.
        let again = try d.ctl(["cancel", id])
        #expect(again.status == 1 && again.stderr.contains("already ended"), "\(again.output)")
        try s.replaceWithSmallData(removing: "big.bin")
        let next = try d.ctl(["run", "web1", "--follow"])
        #expect(next.status == 0, "\(next.output)")
        #expect(d.stop() == 0)
        try s.borg(["check", s.repo])
    }

    @Test("SIGTERM mid-run: within the grace period the run completes; beyond it, it is cancelled; exit 0")
    func sigtermGrace() throws {
        for grace in [120, 1] {
            let s = try sandbox("term\(grace)", relay: ["shutdown_grace = \(grace)"])
            defer { s.close() }
            try writeRandomFile("\(s.dataDir)/big.bin", count: 200 * 1024 * 1024)
            try s.configure()
            let d = try AgentDaemon(s)
            let id = try d.start(["web1"])[0]
            #expect(d.waitForBorgOnT(), "borg create never started on T")
            let status = d.stop(signal: SIGTERM, timeout: 180)
            #expect(status == 0, "daemon exit: \(String(describing: status))\n\(d.log)")
            let r = try #require(try HistoryStore(path: "\(s.stateDir)/history.sqlite").get(id))
            #expect(r.state == (grace == 120 ? .succeeded : .cancelled), "\(r.state) \(r.error ?? "")")
            #expect(s.sessionsLeft(on: [s.t, s.b], within: 5).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: d.socket), "socket left behind")
        }
    }

    @Test("SIGKILL mid-run, restart: the run is marked interrupted and the next run succeeds")
    func sigkillInterrupted() throws {
        let s = try sandbox("dkill")
        defer { s.close() }
        try writeRandomFile("\(s.dataDir)/big.bin", count: 300 * 1024 * 1024)
        try s.configure()
        var d = try AgentDaemon(s)
        let id = try d.start(["web1"])[0]
        #expect(d.waitForBorgOnT())
        d.stop(signal: SIGKILL)
        #expect(s.sessionsLeft(on: [s.t, s.b], within: 15).isEmpty)
        try s.replaceWithSmallData(removing: "big.bin")
        d = try AgentDaemon(s)  // a stale socket file is taken over
        let v = try #require(try d.run(id))
        #expect(v.state == .interrupted)
        #expect(v.error?.contains("ended while the run was in progress") == true)
        let next = try d.ctl(["run", "web1", "--follow"])
        #expect(next.status == 0, "\(next.output)")
        #expect(d.stop() == 0)
    }

}

/// A sandbox whose config puts the control socket into the sandbox.
func daemonSandbox(_ name: String, multiRepo: Bool = false, relay: [String] = []) throws -> Sandbox {
    let s = try Sandbox(name: name, multiRepo: multiRepo)
    s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""] + relay
    return s
}

/// The daemon's control side: signals, the socket, the schedule, errors. A suite of its
/// own so that it runs beside the run-heavy one (the schedule test mostly waits).
@Suite("Daemon control: signals, socket, schedule, errors (real daemon, real sshd, real borg)", .serialized)
struct DaemonControlTests {
    func sandbox(_ name: String, multiRepo: Bool = false, relay: [String] = []) throws -> Sandbox {
        try daemonSandbox(name, multiRepo: multiRepo, relay: relay)
    }

    @Test("SIGHUP: a broken config is refused with the error logged and the old one kept; a good one is taken")
    func sighupReload() throws {
        let s = try sandbox("hup", multiRepo: true)
        defer { s.close() }
        try s.configure()
        let sealed = try s.sealed()
        let d = try AgentDaemon(s)
        let good = try String(contentsOfFile: s.configPath, encoding: .utf8)
        try (good + "\n[clients.broken]\nhost = 12\n").write(toFile: s.configPath, atomically: true, encoding: .utf8)
        d.process.kill(SIGHUP)
        var logged = false
        for _ in 0..<100 where !logged {
            logged = d.log.contains("the new configuration was refused")
            usleep(100_000)
        }
        #expect(logged, "\(d.log)")
        #expect(d.log.contains("clients.broken"), "the error does not name the table: \(d.log)")
        #expect(try d.status().clients.map(\.name) == ["web1"])

        try s.addClient("web2", sealed: sealed)
        try s.writeConfig(sealed: sealed)
        d.process.kill(SIGHUP)
        var names: [String] = []
        for _ in 0..<100 where names.count != 2 {
            names = try d.status().clients.map(\.name)
            usleep(100_000)
        }
        #expect(names == ["web1", "web2"])
        #expect(d.stop() == 0)
    }

    @Test("a peer that is not root, the agent's user or in the socket's group is refused (SO_PEERCRED)")
    func socketPermissions() throws {
        guard geteuid() == 0 else { return }  // needs another uid
        let s = try sandbox("perm")
        defer { s.close() }
        try s.configure()
        let d = try AgentDaemon(s)
        var st = stat()
        #expect(stat(d.socket, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o660)
        // As nobody, the file mode stops it first.
        let ctl = try Proc.binary("relayctl")
        let denied = try Proc.run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", ctl,
                                                       "status", "--socket", d.socket])
        #expect(denied.status == 1, "\(denied.output)")
        #expect(denied.stderr.contains("permission denied"), "\(denied.stderr)")
        // With the mode opened, the agent's own check refuses it.
        chmod(d.socket, 0o666)
        let refused = try Proc.run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", ctl,
                                                        "status", "--socket", d.socket])
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.stderr.contains("may not use this socket"), "\(refused.stderr)")
        #expect(d.log.contains("refused a request from uid 65534"), "\(d.log)")
        // A member of the socket's group (root's group 0 here) is let in.
        let member = try Proc.run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--groups=0", ctl,
                                                       "status", "--socket", d.socket])
        #expect(member.status == 0, "\(member.output)")
        #expect(d.stop() == 0)
    }

    @Test("a schedule one minute ahead fires (live, up to about 70 s)")
    func scheduleFires() throws {
        let s = try sandbox("sched")
        defer { s.close() }
        try Data("tiny".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        s.clientExtra = ["schedule = \"* * * * *\""]
        try s.configure()
        // Measured from the daemon's start, not from the status call: on a loaded machine the
        // next minute can begin between the two.
        let started = Date()
        let d = try AgentDaemon(s)
        let next = try #require(try d.status().clients[0].nextRun)
        #expect(next > started && next <= started.addingTimeInterval(61), "next run \(next), daemon started \(started)")
        var fired: RunView?
        let deadline = Date().addingTimeInterval(75)
        while fired == nil && Date() < deadline {
            fired = try d.runs("web1").first { $0.trigger == "schedule" && $0.isFinished }
            usleep(500_000)
        }
        let run = try #require(fired, "no scheduled run within 75 s\n\(d.log)")
        #expect(run.state == .succeeded, "\(run.error ?? "")")
        #expect(run.queuedAt.map { $0 >= next.addingTimeInterval(-1) } == true)
        #expect(try s.archives().count == 1)
        #expect(d.stop() == 0)
    }

    @Test("garbage on the socket (random bytes, huge headers, bad JSON, unknown paths) gets 4xx or a close; the daemon still answers")
    func garbageOnTheSocket() throws {
        let s = try sandbox("garbage")
        defer { s.close() }
        try s.configure()
        let d = try AgentDaemon(s)
        var random = [UInt8](repeating: 0, count: 64 * 1024)
        for i in random.indices { random[i] = UInt8.random(in: 0...255) }
        let huge = "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "a", count: 1_000_000) + "\r\n\r\n"
        func post(_ path: String, _ body: String) -> String {
            "POST \(path) HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        }
        let cases: [(String, [UInt8], String?)] = [
            ("random bytes", random, nil),
            ("huge header", Array(huge.utf8), nil),
            ("invalid JSON", Array(post("/v1/runs", "{not json").utf8), "400"),
            ("wrong types", Array(post("/v1/runs", "{\"clients\": 5}").utf8), "400"),
            ("unknown client", Array(post("/v1/runs", "{\"clients\": [\"nope\"]}").utf8), "404"),
            ("unknown path", Array("GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8), "404"),
            ("bad run id", Array("GET /v1/runs/..%2f..%2fetc/log HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8), "40"),
            ("huge body", Array(post("/v1/runs", String(repeating: " ", count: 200_000)).utf8), "413"),
        ]
        for (name, bytes, expected) in cases {
            let answer = try rawExchange(d.socket, bytes)
            if let e = expected {
                #expect(answer.hasPrefix("HTTP/1.1 \(e)"), "\(name): \(answer.prefix(200))")
                #expect(answer.contains("\"error\""), "\(name): no JSON error: \(answer.prefix(300))")
            } else {
                #expect(answer.isEmpty || answer.hasPrefix("HTTP/1.1 4"), "\(name): \(answer.prefix(200))")
            }
            #expect(try d.status().clients.count == 1, "daemon stopped answering after \(name)")
        }
        // A half-sent request that just stops is not waited on forever by others.
        let hanging = try openRaw(d.socket)
        _ = "POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{".withCString { write(hanging, $0, strlen($0)) }
        #expect(try d.status().agent.pid == d.process.pid)
        close(hanging)
        #expect(d.stop() == 0)
    }

    @Test("systemd notifications (READY, RELOADING, STOPPING) and history pruning by count")
    func notifyAndPrune() throws {
        let s = try sandbox("notify", relay: ["history_keep_runs = 1"])
        defer { s.close() }
        try Data("tiny".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.configure()
        let notifyPath = "\(s.dir)/notify.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(notifyPath.utf8)) }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0)
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        func receive() -> String {
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buf, buf.count, 0)
            return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
        }
        var env = ProcessInfo.processInfo.environment
        env["NOTIFY_SOCKET"] = notifyPath
        let d = try AgentDaemon(s, env: env)
        #expect(receive().contains("READY=1"))

        let first = try d.ctl(["run", "web1", "--follow", "--json"])
        #expect(first.status == 0, "\(first.output)")
        let firstRun = try #require(try ControlAPI.decoder().decode(RunList.self, from: Data(first.stdout.utf8)).runs.first)
        let firstLog = try #require(firstRun.logFile)
        #expect(FileManager.default.fileExists(atPath: firstLog))
        #expect(try d.ctl(["run", "web1", "--follow"]).status == 0)
        let runs = try d.runs()
        #expect(runs.count == 1 && runs[0].id != firstRun.id, "\(runs.map(\.id))")
        #expect(!FileManager.default.fileExists(atPath: firstLog), "the pruned run's log is still there")

        d.process.kill(SIGHUP)
        #expect(receive().contains("RELOADING=1"))
        #expect(receive().contains("READY=1"))
        d.process.kill(SIGTERM)
        #expect(receive().contains("STOPPING=1"))
        #expect(d.stop() == 0)
    }

    @Test("helpful errors: daemon not running, unknown client, unknown run")
    func helpfulErrors() throws {
        let s = try sandbox("errors")
        defer { s.close() }
        try s.configure()
        let ctl = try Proc.binary("relayctl")
        let down = try Proc.run(ctl, ["status", "--config", s.configPath])
        #expect(down.status == 1)
        #expect(down.stderr.contains("relay-agent is not running"), "\(down.stderr)")
        #expect(down.stderr.contains("\(s.dir)/relay/control.sock"), "\(down.stderr)")
        let d = try AgentDaemon(s)
        let unknown = try d.ctl(["run", "nope"])
        #expect(unknown.status == 2)
        #expect(unknown.stderr.contains("unknown client 'nope'") && unknown.stderr.contains("web1"), "\(unknown.stderr)")
        let noMaint = try d.ctl(["init", "web1"])
        #expect(noMaint.status == 2 && noMaint.stderr.contains("maintenance_key"), "\(noMaint.output)")
        let noRun = try d.ctl(["log", "20260101T000000-abcdef"])
        #expect(noRun.status == 2 && noRun.stderr.contains("no run"), "\(noRun.output)")
        // relayctl finds the socket through the config too.
        #expect(try Proc.run(ctl, ["status", "--config", s.configPath]).status == 0)
        #expect(d.stop() == 0)
    }
}

/// Writes `bytes` to the socket and returns what comes back until the peer closes or
/// 5 s pass.
func rawExchange(_ path: String, _ bytes: [UInt8]) throws -> String {
    let fd = try openRaw(path)
    defer { close(fd) }
    var tv = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { break }  // the server closed early: fine
        off += n
    }
    shutdown(fd, Int32(SHUT_WR))
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = recv(fd, &buf, buf.count, 0)
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

func openRaw(_ path: String) throws -> Int32 {
    // Close-on-exec: processes other tests start meanwhile must not inherit the connection.
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard rc == 0 else { close(fd); throw FixtureError("connect \(path): \(String(cString: strerror(errno)))") }
    return fd
}
