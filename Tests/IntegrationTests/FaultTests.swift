import Foundation
import RelayCore
import Testing

/// Faults during a run: cut links (in network namespaces, root only), killed processes,
/// a repository over quota, timeouts and retries. Each must end in a recorded, explained
/// outcome, with nothing left behind and the next run working.
@Suite("Faults: cut links, killed processes, timeouts, retries, quota (real sshd, real borg)", .serialized)
struct FaultTests {
    /// `relay-agent run web1 --json` in the background (inside `netns` when given):
    /// stdout (the JSON report) and stderr (the log) to files in the sandbox.
    final class BackgroundRun {
        let process: Spawned
        let out: String
        let err: String

        init(_ s: Sandbox, netns: String? = nil) throws {
            out = "\(s.dir)/run-\(UUID().uuidString.prefix(6)).json"
            err = out + ".log"
            var argv = [try Proc.binary("relay-agent"), "run", "web1", "--config", s.configPath, "--json"]
            if let ns = netns { argv = ["/usr/sbin/ip", "netns", "exec", ns] + argv }
            process = try Spawned(argv[0], Array(argv.dropFirst()), stdin: "/dev/null", stdout: out, stderr: err)
        }

        var log: String { (try? String(contentsOfFile: err, encoding: .utf8)) ?? "" }

        /// The run's own log file (the report names it).
        func runLog() throws -> String {
            let path = try #require(try report().logFile)
            return try String(contentsOfFile: path, encoding: .utf8)
        }

        func report() throws -> RunReport {
            let data = try Data(contentsOf: URL(fileURLWithPath: out))
            let d = JSONDecoder()
            d.dateDecodingStrategy = .iso8601
            return try d.decode(RunReport.self, from: data)
        }
    }

    /// B, R and T in namespaces, R's link to B shaped to `rateMbit`, and `bigMiB` of random
    /// data on T (so that a run lasts long enough to be cut mid-way).
    static func namespaces(_ name: String, rateMbit: Int, bigMiB: Int) throws -> (Topology, Sandbox) {
        let topo = try Topology()
        do {
            let s = try Sandbox(name: name, netns: (b: topo.b, bAddr: Topology.bAddr, t: topo.t, tAddr: Topology.tAddr))
            do {
                try topo.shape(topo.r, topo.rToBLink, rateMbit: rateMbit)
                try writeRandomFile("\(s.dataDir)/big.bin", count: bigMiB * 1024 * 1024)
                return (topo, s)
            } catch {
                s.close()
                throw error
            }
        } catch {
            topo.remove()
            throw error
        }
    }

    /// A run report as `relay-agent run --json` prints it.
    static func decode(_ json: String) throws -> RunReport {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return try d.decode(RunReport.self, from: Data(json.utf8))
    }

    /// borg create's process on T, once it runs (up to 20 s).
    static func borgOnT(_ s: Sandbox) -> Int32? {
        for _ in 0..<400 {
            if let pid = Proc.descendants(of: s.t.process.pid).first(where: {
                let c = Proc.commandLine($0)
                return c.contains("ssh://borg-relay") && c.contains(" create ")
            }) { return pid }
            usleep(50_000)
        }
        return nil
    }

    /// Waits until the splice has moved a little (the run is really mid-way).
    static func waitForBytes(_ s: Sandbox, within seconds: Double = 20) {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if Proc.descendants(of: s.b.process.pid).contains(where: { Proc.commandLine($0).contains("borg serve") }) {
                usleep(1_500_000)
                return
            }
            usleep(50_000)
        }
    }

    // MARK: - Cut links (network namespaces)

    @Test("cut R↔B mid-run: fails within the keepalive window, T's borg ends; after the link returns the next run succeeds and borg check is clean",
          .enabled(if: NetnsTests.unavailableReason == nil, "skipped: \(NetnsTests.unavailableReason ?? "")"))
    func cutServerLink() throws {
        let (topo, s) = try Self.namespaces("cutb", rateMbit: 80, bigMiB: 80)
        defer { s.close(); topo.remove() }
        s.relayExtra = ["keepalive_interval = 1", "keepalive_count = 3"]
        s.clientExtra = ["lock_wait = 60"]
        try s.configure()
        let run = try BackgroundRun(s, netns: topo.r)
        #expect(Self.borgOnT(s) != nil, "borg create never started on T: \(run.log)")
        Self.waitForBytes(s)
        // B's side goes silent: R's link and route stay, its packets vanish.
        try topo.setLink(topo.b, topo.bLink, up: false)
        let t0 = Date()
        let status = run.process.wait(timeout: 60)
        let took = Date().timeIntervalSince(t0)
        #expect(status == 1, "agent exit status \(String(describing: status)): \(run.log)")
        let report = try run.report()
        #expect(report.state == .failed)
        // Keepalives, or the kernel's "no route to host" once ARP for B fails: either way named.
        #expect(report.error?.contains("server vault") == true && report.error?.contains("connection lost") == true, "\(report.error ?? "")")
        #expect(took < 15, "a dead link took \(took) s to notice with keepalive_interval=1, keepalive_count=3")
        #expect(s.sessionsLeft(on: [s.t], within: 10).isEmpty, "borg or sshd sessions left on T")

        try topo.setLink(topo.b, topo.bLink, up: true)
        try s.replaceWithSmallData(removing: "big.bin")
        let next = try s.runAgent(["--json"], netns: topo.r)
        #expect(next.status == 0, "the run after the cut failed: \(next.output)")
        #expect(s.sessionsLeft(on: [s.b, s.t], within: 20).isEmpty)
        try s.borg(["check", s.repo])
        #expect(!FileManager.default.fileExists(atPath: "\(s.repo)/lock.exclusive"), "a borg lock is left on B")
    }

    @Test("cut R↔T mid-run: fails; B's borg serve exits at once (lock released); the next run succeeds right away",
          .enabled(if: NetnsTests.unavailableReason == nil, "skipped: \(NetnsTests.unavailableReason ?? "")"))
    func cutClientLink() throws {
        let (topo, s) = try Self.namespaces("cutt", rateMbit: 80, bigMiB: 80)
        defer { s.close(); topo.remove() }
        s.relayExtra = ["keepalive_interval = 1", "keepalive_count = 3"]
        try s.configure()
        let run = try BackgroundRun(s, netns: topo.r)
        #expect(Self.borgOnT(s) != nil, "borg create never started on T: \(run.log)")
        Self.waitForBytes(s)
        try topo.setLink(topo.t, topo.tLink, up: false)
        let status = run.process.wait(timeout: 60)
        #expect(status == 1, "agent exit status \(String(describing: status)): \(run.log)")
        let report = try run.report()
        #expect(report.error?.contains("client web1") == true, "\(report.error ?? "")")
        // The relay closed B's channel: borg serve saw EOF and ended, releasing the lock.
        #expect(s.sessionsLeft(on: [s.b], within: 5).isEmpty, "borg serve still runs on B")
        #expect(!FileManager.default.fileExists(atPath: "\(s.repo)/lock.exclusive"), "a borg lock is left on B")

        try topo.setLink(topo.t, topo.tLink, up: true)
        try s.replaceWithSmallData(removing: "big.bin")
        let next = try s.runAgent(["--json"], netns: topo.r)
        #expect(next.status == 0, "the run after the cut failed: \(next.output)")
        try s.borg(["check", s.repo])
    }

    @Test("retry = true: a create cut off by a dropped R↔B link is retried once after the link returns; the archive is complete",
          .enabled(if: NetnsTests.unavailableReason == nil, "skipped: \(NetnsTests.unavailableReason ?? "")"))
    func createRetriedAfterCut() throws {
        let (topo, s) = try Self.namespaces("retrycut", rateMbit: 80, bigMiB: 60)
        defer { s.close(); topo.remove() }
        s.relayExtra = ["keepalive_interval = 1", "keepalive_count = 3", "retry_delay = 4"]
        s.clientExtra = ["retry = true", "lock_wait = 60", "checkpoint_interval = 2"]
        try s.configure()
        let run = try BackgroundRun(s, netns: topo.r)
        #expect(Self.borgOnT(s) != nil, "borg create never started on T: \(run.log)")
        Self.waitForBytes(s)
        try topo.setLink(topo.b, topo.bLink, up: false)
        // Bring the link back once the relay has noticed and is waiting to retry.
        let logs = "\(s.stateDir)/logs/web1"
        var noticed = false
        for _ in 0..<300 where !noticed {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: logs)) ?? []
            noticed = files.contains { ((try? String(contentsOfFile: "\(logs)/\($0)", encoding: .utf8)) ?? "").contains("attempt 1 failed") }
            usleep(100_000)
        }
        #expect(noticed, "the relay never logged the failed first attempt")
        try topo.setLink(topo.b, topo.bLink, up: true)
        #expect(run.process.wait(timeout: 180) == 0, "\(run.log)")
        let report = try run.report()
        #expect(report.state == .succeeded, "\(report.error ?? "")")
        #expect(report.attempts.count == 1 && report.attempts.first?.error.contains("server vault") == true, "\(report.attempts)")
        let name = try #require(report.archive?.name)
        let out = "\(s.dir)/extract"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try s.borg(["extract", "\(s.repo)::\(name)"], cwd: out)
        #expect(FileManager.default.contentsEqual(atPath: "\(s.dataDir)/big.bin", andPath: "\(out)\(s.dataDir)/big.bin"))
        try s.borg(["check", s.repo])
    }

    @Test("a shaped 20 Mbit/s link (tbf; netem where the kernel has it): the run completes at ≥ 80 % of the rate",
          .enabled(if: NetnsTests.unavailableReason == nil, "skipped: \(NetnsTests.unavailableReason ?? "")"))
    func slowLink() throws {
        let (topo, s) = try Self.namespaces("slow", rateMbit: 20, bigMiB: 24)
        defer { s.close(); topo.remove() }
        try s.configure()
        let r = try s.runAgent(["--json"], netns: topo.r)
        #expect(r.status == 0, "\(r.output)")
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        let report = try d.decode(RunReport.self, from: Data(r.stdout.utf8))
        // From borg's connection to the end of the run: the transfer, not SSH and borg start-up.
        let log = try String(contentsOfFile: try #require(report.logFile), encoding: .utf8)
        let line = try #require(log.split(separator: "\n").first { $0.contains("borg connected from") })
        let connected = try Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(String(line.prefix { $0 != " " }))
        let seconds = report.ended.timeIntervalSince(connected)
        let mbit = Double(report.bytesToServer) * 8 / 1_000_000 / seconds
        print("slow link: \(report.bytesToServer) bytes in \(String(format: "%.2f", seconds)) s after borg connected (run \(report.durationSeconds) s) = \(String(format: "%.1f", mbit)) Mbit/s of a 20 Mbit/s link")
        #expect(mbit >= 16, "throughput \(mbit) Mbit/s is below 80 % of the shaped 20 Mbit/s")
    }

    // MARK: - Killed processes

    @Test("borg killed on T mid-run, then B's sshd session killed mid-run: each failure names what happened; nothing is left; the next run works")
    func killedProcesses() throws {
        let s = try Sandbox(name: "killed")
        defer { s.close() }
        try writeRandomFile("\(s.dataDir)/big.bin", count: 400 * 1024 * 1024)
        s.clientExtra = ["lock_wait = 30"]
        try s.configure()

        var run = try BackgroundRun(s)
        let borg = try #require(Self.borgOnT(s), "borg create never started on T: \(run.log)")
        Self.waitForBytes(s)
        kill(borg, SIGKILL)
        #expect(run.process.wait(timeout: 60) == 1, "\(run.log)")
        var report = try run.report()
        #expect(report.error?.contains("borg create on the client was killed by SIGKILL") == true, "\(report.error ?? "")")
        #expect(s.sessionsLeft(on: [s.t, s.b], within: 10).isEmpty)

        run = try BackgroundRun(s)
        #expect(Self.borgOnT(s) != nil, "borg create never started on T: \(run.log)")
        Self.waitForBytes(s)
        let sessions = s.b.sessionPIDs()
        #expect(!sessions.isEmpty)
        sessions.forEach { kill($0, SIGKILL) }
        #expect(run.process.wait(timeout: 60) == 1, "\(run.log)")
        report = try run.report()
        #expect(report.error?.contains("server vault") == true, "\(report.error ?? "")")
        #expect(s.sessionsLeft(on: [s.t, s.b], within: 10).isEmpty)

        try s.replaceWithSmallData(removing: "big.bin")
        let next = try s.runAgent()
        #expect(next.status == 0, "\(next.output)")
        try s.borg(["check", s.repo])
    }

    // MARK: - Timeouts and retries

    @Test("idle_timeout fires when nothing moves (borg frozen on T); run_timeout ends a run that takes too long; both are in the log")
    func timeouts() throws {
        let s = try Sandbox(name: "timeouts")
        defer { s.close() }
        try writeRandomFile("\(s.dataDir)/big.bin", count: 400 * 1024 * 1024)
        s.relayExtra = ["idle_timeout = 3"]
        try s.configure()
        let run = try BackgroundRun(s)
        let borg = try #require(Self.borgOnT(s), "borg create never started on T: \(run.log)")
        Self.waitForBytes(s)
        kill(borg, SIGSTOP)
        let status = run.process.wait(timeout: 60)
        kill(borg, SIGCONT)
        #expect(status == 1, "\(run.log)")
        #expect(try run.report().error?.contains("timed out after 3 s ([relay] idle_timeout)") == true, "\(run.log)")
        #expect(try run.runLog().contains("idle_timeout"))
        #expect(s.sessionsLeft(on: [s.t, s.b], within: 20).isEmpty)

        s.relayExtra = ["run_timeout = 2"]
        try s.configure()
        let t0 = Date()
        let long = try s.runAgent(["--json"])
        #expect(long.status == 1, "\(long.output)")
        #expect(long.stdout.contains("the run timed out after 2 s ([relay] run_timeout)"), "\(long.output)")
        #expect(Date().timeIntervalSince(t0) < 30)
        #expect(s.sessionsLeft(on: [s.t, s.b], within: 20).isEmpty)
        try s.borg(["check", s.repo])
    }

    @Test("connect retries: T's sshd starts late, the run succeeds on a later attempt and the history shows each attempt; a host-key failure is not retried")
    func retryUntilSshdIsUp() throws {
        let s = try Sandbox(name: "retry")
        defer { s.close() }
        try Data("retry".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        s.relayExtra = ["connect_attempts = 6", "retry_delay = 1"]
        try s.configure()
        s.t.stop()
        let run = try BackgroundRun(s)
        usleep(2_500_000)
        try s.t.restart()
        #expect(run.process.wait(timeout: 90) == 0, "\(run.log)")
        let report = try run.report()
        #expect(report.state == .succeeded)
        #expect(report.attempts.count >= 1, "\(report.attempts)")
        #expect(report.attempts.allSatisfy { $0.error.contains("client web1") }, "\(report.attempts)")
        #expect(try run.runLog().contains("attempt 1 failed"))
        let history = try HistoryStore(path: "\(s.stateDir)/history.sqlite")
        let recorded = try #require(try history.recent(client: "web1").first)
        let attempts = try ControlAPI.decoder().decode([RunAttempt].self, from: Data(try #require(recorded.attempts).utf8))
        #expect(attempts.count == report.attempts.count)

        // An unpinned host key is a setup error: no retry, at once.
        try (s.b.knownHostsLine + "\n").write(toFile: s.knownHosts, atomically: true, encoding: .utf8)
        let t0 = Date()
        let pinned = try s.runAgent(["--json"])
        #expect(pinned.status == 1)
        #expect(try Self.decode(pinned.stdout).attempts.isEmpty, "\(pinned.stdout)")
        #expect(Date().timeIntervalSince(t0) < 10)
    }

    @Test("connect_timeout: a host that accepts TCP but never speaks SSH fails after the timeout, naming the key; retried per connect_attempts")
    func silentHostTimesOut() throws {
        let s = try Sandbox(name: "silent")
        defer { s.close() }
        // A listening socket nobody accepts on: the kernel completes the handshake, then silence.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, 8) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        #expect(bound)
        let port = Int(UInt16(bigEndian: addr.sin_port))
        s.relayExtra = ["connect_attempts = 2", "retry_delay = 0"]
        try s.configure()
        let cfg = try String(contentsOfFile: s.configPath, encoding: .utf8)
        #expect(cfg.contains("connect_timeout = 20"))
        try cfg.replacingOccurrences(of: "port = \(s.t.port)", with: "port = \(port)")
            .replacingOccurrences(of: "connect_timeout = 20", with: "connect_timeout = 2")
            .write(toFile: s.configPath, atomically: true, encoding: .utf8)
        let t0 = Date()
        let r = try s.runAgent(["--json"])
        let took = Date().timeIntervalSince(t0)
        #expect(r.status == 1, "\(r.output)")
        #expect(r.stdout.contains("timed out after 2 s ([relay] connect_timeout)"), "\(r.stdout)")
        #expect(try Self.decode(r.stdout).attempts.count == 1, "\(r.stdout)")
        #expect(took < 20, "two attempts of 2 s took \(took) s")
    }

    // MARK: - Quota

    @Test("a repository over its storage quota on B: a clear error, the repository stays consistent, the next run (quota raised) works")
    func overQuota() throws {
        let s = try Sandbox(name: "quota")
        defer { s.close() }
        let line = try String(contentsOfFile: "\(s.b.dir)/authorized_keys", encoding: .utf8)
        try line.replacingOccurrences(of: "borg serve --append-only", with: "borg serve --append-only --storage-quota 2M")
            .write(toFile: "\(s.b.dir)/authorized_keys", atomically: true, encoding: .utf8)
        try writeRandomFile("\(s.dataDir)/big.bin", count: 8 * 1024 * 1024)
        try s.configure()
        let r = try s.runAgent(["--json"])
        #expect(r.status == 1, "\(r.output)")
        #expect(r.stdout.lowercased().contains("quota"), "\(r.stdout)")
        #expect(try s.archives().isEmpty)
        try s.borg(["check", s.repo])

        try line.write(toFile: "\(s.b.dir)/authorized_keys", atomically: true, encoding: .utf8)
        let next = try s.runAgent()
        #expect(next.status == 0, "\(next.output)")
        #expect(try s.archives().count == 1)
    }

}

/// Its own suite, so that its minutes of sequential runs overlap the other suites.
@Suite("Leaks: many runs in one daemon (real sshd, real borg)")
struct LeakTests {

    /// Open fds, threads and resident memory (KiB) of a process.
    static func resources(_ pid: Int32) -> (fds: Int, threads: Int, rssKiB: Int) {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task").count) ?? -1
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let rss = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
            .flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") } ?? -1
        return (fds, threads, rss)
    }

    @Test("leaks: many sequential short runs in one daemon (RELAY_LEAK_RUNS, default 200): fds and threads back to baseline, RSS growth < 10 MiB")
    func noLeaksOverManyRuns() throws {
        let runs = Int(ProcessInfo.processInfo.environment["RELAY_LEAK_RUNS"] ?? "") ?? 200
        let s = try Sandbox(name: "leaks")
        defer { s.close() }
        try Data("tiny".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\"", "history_keep_runs = 20"]
        try s.configure()
        let d = try AgentDaemon(s)
        defer { d.stop() }
        var inRun: TimeInterval = 0
        func one() throws {
            let id = try #require(try d.start(["web1"]).first)
            let v = try #require(try d.waitFinished(id, within: 60))
            #expect(v.state == .succeeded, "\(v.error ?? "")")
            inRun += (v.endedAt ?? v.startedAt).timeIntervalSince(v.startedAt)
        }
        // Warm-up: thread pools, the history database, caches.
        for _ in 0..<5 { try one() }
        usleep(500_000)
        let base = Self.resources(d.process.pid)
        let t0 = Date()
        inRun = 0
        for _ in 0..<runs { try one() }
        usleep(1_000_000)
        let end = Self.resources(d.process.pid)
        let per = Date().timeIntervalSince(t0) / Double(max(runs, 1))
        print("leaks: \(runs) runs (\(String(format: "%.2f", per)) s each, \(String(format: "%.2f", inRun / Double(max(runs, 1)))) s of it in the run): fds \(base.fds) → \(end.fds), threads \(base.threads) → \(end.threads), RSS \(base.rssKiB / 1024) → \(end.rssKiB / 1024) MiB")
        #expect(end.fds <= base.fds, "fds grew from \(base.fds) to \(end.fds)")
        #expect(end.threads <= base.threads + 2, "threads grew from \(base.threads) to \(end.threads)")
        #expect(end.rssKiB - base.rssKiB < 10 * 1024, "RSS grew by \((end.rssKiB - base.rssKiB) / 1024) MiB")
    }
}
