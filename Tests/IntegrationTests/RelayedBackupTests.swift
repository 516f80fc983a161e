import Foundation
import Synchronization
import Testing
import RelayCore

/// End-to-end runs of the real relay-agent against real sshd and real borg.
@Suite("Relayed backup (real sshd, real borg)", .serialized)
struct RelayedBackupTests {
    @Test("backup then extract is byte-identical, odd names, links, empty dir, 0-byte and >100 MiB files")
    func backupAndExtractRoundTrip() throws {
        let s = try Sandbox(name: "roundtrip")
        defer { s.close() }
        let d = s.dataDir
        let odd = ["with space.txt", "quote'single", "quote\"double", "dollar$HOME$(id)`id`", "new\nline",
                   "ünïcödé-日本語.txt", "semi;colon&amp|pipe", "-leading-dash", "back\\slash", "star*?[x]"]
        for (i, name) in odd.enumerated() {
            try Data("file \(i): \(name)\n".utf8).write(to: URL(fileURLWithPath: "\(d)/\(name)"))
        }
        try FileManager.default.createDirectory(atPath: "\(d)/empty dir", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(d)/nested/deeper", withIntermediateDirectories: true)
        try Data().write(to: URL(fileURLWithPath: "\(d)/nested/zero-bytes"))
        try writeRandomFile("\(d)/nested/deeper/big.bin", count: 101 * 1024 * 1024 + 12345)
        try FileManager.default.createSymbolicLink(atPath: "\(d)/link to file", withDestinationPath: "with space.txt")
        try FileManager.default.createSymbolicLink(atPath: "\(d)/dangling", withDestinationPath: "/nonexistent/target")
        try FileManager.default.createSymbolicLink(atPath: "\(d)/dir-link", withDestinationPath: "nested")
        try s.configure()

        let r = try s.runAgent(["--json"])
        #expect(r.status == 0, "relay-agent failed: \(r.output)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "no JSON report: \(r.output)")
        #expect(report["state"] as? String == "succeeded")
        let archive = try #require(report["archive"] as? [String: Any])
        let name = try #require(archive["name"] as? String)
        #expect((report["bytes_to_server"] as? Int ?? 0) > 100 * 1024 * 1024, "the splice carried less than the big file")

        // Read it back from the repository itself.
        #expect(try s.archives() == [name])
        let restore = "\(s.dir)/restore"
        try FileManager.default.createDirectory(atPath: restore, withIntermediateDirectories: true)
        try s.borg(["extract", "\(s.repo)::\(name)"], cwd: restore)
        let diffs = TreeCompare.differences(d, restore + d)
        #expect(diffs.isEmpty, "restore differs: \(diffs)")
        // And the archive holds exactly the odd names, not mangled versions of them.
        let stored = Set(try s.archivePaths(name))
        for n in odd { #expect(stored.contains(String(d.dropFirst()) + "/" + n), "missing in archive: \(n)") }
    }

    @Test("a changed host key on B, then on T, stops the run before authentication")
    func hostKeyMismatch() throws {
        let s = try Sandbox(name: "hostkey")
        defer { s.close() }
        try Data("x".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/x"))
        try s.configure()
        try Proc.check("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", "\(s.dir)/impostor"])
        let impostor = try String(contentsOfFile: "\(s.dir)/impostor.pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
        func fingerprint(_ pub: String) throws -> String {
            let out = try Proc.check("/usr/bin/ssh-keygen", ["-l", "-f", pub]).stdout
            return String(out.split(separator: " ")[1])
        }
        let impostorFP = try fingerprint("\(s.dir)/impostor.pub")

        for (victim, role) in [(s.b, "server vault"), (s.t, "client web1")] {
            let other = victim === s.b ? s.t : s.b
            let lines = ["[127.0.0.1]:\(victim.port) \(impostor)", other.knownHostsLine]
            try (lines.joined(separator: "\n") + "\n").write(toFile: s.knownHosts, atomically: true, encoding: .utf8)
            let before = victim.log.count
            let r = try s.runAgent()
            #expect(r.status == 1, "expected a failed run: \(r.output)")
            #expect(r.output.contains(role), "the message must name the host: \(r.output)")
            #expect(r.output.contains("127.0.0.1:\(victim.port)"))
            #expect(r.output.contains("HOST KEY CHANGED"))
            #expect(r.output.contains(impostorFP), "the pinned fingerprint is missing: \(r.output)")
            #expect(r.output.contains(try fingerprint("\(victim.dir)/host_key.pub")), "the offered fingerprint is missing: \(r.output)")
            #expect(!victim.log.dropFirst(before).contains("Accepted publickey"), "\(role) was authenticated despite the mismatch")
            #expect(try s.archives().isEmpty, "the repository changed")
        }

        // Not pinned at all: refused as well, no trust on first use.
        try (s.t.knownHostsLine + "\n").write(toFile: s.knownHosts, atomically: true, encoding: .utf8)
        let before = s.b.log.count
        let r = try s.runAgent()
        #expect(r.status == 1)
        #expect(r.output.contains("server vault"))
        #expect(r.output.contains("not pinned"))
        #expect(!s.b.log.dropFirst(before).contains("Accepted publickey"))
        #expect(try s.archives().isEmpty)
    }

    @Test("a wrong passphrase fails with borg's error and leaves nothing behind on T")
    func wrongPassphrase() throws {
        let s = try Sandbox(name: "wrongpass")
        defer { s.close() }
        try Data("data".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        let wrong = "wrong-" + UUID().uuidString
        try s.configure(passphrase: wrong)
        let r = try s.runAgent()
        #expect(r.status == 1, "expected a failed run: \(r.output)")
        #expect(r.output.contains("passphrase") && r.output.contains("incorrect"), "borg's error is not surfaced: \(r.output)")
        #expect(!r.output.contains(wrong), "the passphrase leaked into the output")
        #expect(try s.archives().isEmpty)

        // No session process left on T, and the forward is gone.
        let left = s.sessionsLeft(on: [s.t], within: 5)
        #expect(left.isEmpty, "processes left on T: \(left)")
        let log = try logText(s)
        let port = try #require(forwardPort(in: log), "no forward port in the run log: \(log)")
        #expect(!Proc.canConnect(port: port), "the forward on T still accepts connections")
    }

    @Test("the passphrase never appears in /proc, files, output or logs")
    func passphraseNeverExposed() throws {
        let s = try Sandbox(name: "secret")
        defer { s.close() }
        try writeRandomFile("\(s.dataDir)/a.bin", count: 192 * 1024 * 1024)
        try s.configure()
        let scanner = ProcScanner(needle: s.passphrase)
        scanner.start()
        let r = try s.runAgent(["--verbose"])
        let result = scanner.stop()
        #expect(r.status == 0, "relay-agent failed: \(r.output)")
        #expect(result.sawBorgCreate, "the sampler never saw borg create running (\(result.samples) samples)")
        #expect(result.samples > 5)
        #expect(result.hits.isEmpty, "passphrase found in /proc: \(result.hits)")
        #expect(!r.output.contains(s.passphrase), "passphrase in the agent's output")
        let needle = Data(s.passphrase.utf8)
        var leaks: [String] = []
        let e = FileManager.default.enumerator(atPath: s.dir)
        while let rel = e?.nextObject() as? String {
            let p = s.dir + "/" + rel
            var st = stat()
            guard lstat(p, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
            if let data = FileManager.default.contents(atPath: p), data.range(of: needle) != nil { leaks.append(rel) }
        }
        #expect(leaks.isEmpty, "passphrase found in files: \(leaks)")
    }

    @Test("paths and excludes with shell metacharacters reach borg exactly (no injection on T)")
    func shellMetacharactersInPaths() throws {
        let s = try Sandbox(name: "inject")
        defer { s.close() }
        let marker = "PWNED" + UUID().uuidString.prefix(6)
        // (A newline is refused at load: csh, a possible login shell on T, cannot be sent one.)
        let names = ["a;touch \(marker)1", "$(touch \(marker)2)", "`touch \(marker)3`", "x'y\"z", "-rf", "sp ace", "back\\slash!bang", "|| touch \(marker)4"]
        var dirs: [String] = []
        for n in names {
            let dir = "\(s.dataDir)/\(n)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try Data("x".utf8).write(to: URL(fileURLWithPath: "\(dir)/f"))
            dirs.append(dir)
        }
        try Data("skip".utf8).write(to: URL(fileURLWithPath: "\(dirs[0])/skip;touch \(marker)5"))
        s.paths = dirs
        try s.configure()
        try s.writeConfig(sealed: try sealedValue(s), extraClient: ["exclude = [\"*/skip;touch \(marker)5\"]"])
        let r = try s.runAgent(["--json"])
        #expect(r.status == 0, "relay-agent failed: \(r.output)")
        let name = try #require(try s.archives().first)
        let stored = Set(try s.archivePaths(name))
        var expected = Set<String>()
        for d in dirs {
            expected.insert(String(d.dropFirst()))
            expected.insert(String(d.dropFirst()) + "/f")
        }
        #expect(stored == expected, "archive paths differ: extra \(stored.subtracting(expected)), missing \(expected.subtracting(stored))")
        // Nothing ran: no marker file anywhere a shell on T could have created one.
        let home = String(cString: getpwuid(geteuid())!.pointee.pw_dir)
        for place in [home, s.dir, s.dataDir, "/", FileManager.default.currentDirectoryPath] {
            for i in 1...5 {
                #expect(!FileManager.default.fileExists(atPath: "\(place)/\(marker)\(i)"), "injection ran: \(place)/\(marker)\(i)")
            }
        }
    }

    // MARK: helpers

    func logText(_ s: Sandbox) throws -> String {
        let dir = "\(s.stateDir)/logs/web1"
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        return try files.map { try String(contentsOfFile: "\(dir)/\($0)", encoding: .utf8) }.joined()
    }

    func forwardPort(in log: String) -> Int? {
        guard let r = log.range(of: "listening on 127.0.0.1:") else { return nil }
        return Int(log[r.upperBound...].prefix(while: { $0.isNumber }))
    }

    func sealedValue(_ s: Sandbox) throws -> String {
        let text = try String(contentsOfFile: s.configPath, encoding: .utf8)
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("passphrase = ") })
        return String(line.dropFirst("passphrase = \"".count).dropLast())
    }
}

/// Samples every process's cmdline and environ while a run goes on.
final class ProcScanner: Sendable {
    struct Result: Sendable {
        var hits: [String] = []
        var sawBorgCreate = false
        var samples = 0
    }
    private let needle: [UInt8]
    /// Recognises the process the scan is meant to catch (default: borg create on T).
    private let seen: @Sendable (String) -> Bool
    private let state = Mutex(Result())
    private let running = Atomic<Bool>(false)
    private let done = Atomic<Bool>(false)

    init(needle: String, seen: @escaping @Sendable (String) -> Bool = { c in
        c.contains("borg") && c.contains("create") && c.contains("ssh://borg-relay")
    }) {
        self.needle = Array(needle.utf8)
        self.seen = seen
    }

    func start() {
        running.store(true, ordering: .sequentiallyConsistent)
        let t = Thread { [self] in
            while running.load(ordering: .sequentiallyConsistent) {
                scanOnce()
                usleep(5_000)
            }
            done.store(true, ordering: .sequentiallyConsistent)
        }
        t.start()
    }

    func stop() -> Result {
        running.store(false, ordering: .sequentiallyConsistent)
        while !done.load(ordering: .sequentiallyConsistent) { usleep(1_000) }
        return state.withLock { $0 }
    }

    private func scanOnce() {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return }
        var hits: [String] = []
        var saw = false
        for e in entries where Int32(e) != nil {
            let cmd = read("/proc/\(e)/cmdline")
            let env = read("/proc/\(e)/environ")
            if contains(cmd) || contains(env) {
                hits.append("pid \(e): \(String(decoding: cmd.map { $0 == 0 ? 32 : $0 }, as: UTF8.self))")
            }
            let c = String(decoding: cmd, as: UTF8.self)
            if seen(c) { saw = true }
        }
        state.withLock {
            $0.samples += 1
            $0.hits += hits
            if saw { $0.sawBorgCreate = true }
        }
    }

    private func read(_ path: String) -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return out
    }

    private func contains(_ hay: [UInt8]) -> Bool {
        guard hay.count >= needle.count, let first = needle.first else { return false }
        var i = 0
        while i <= hay.count - needle.count {
            if hay[i] == first && Array(hay[i..<(i + needle.count)]) == needle { return true }
            i += 1
        }
        return false
    }
}

@Suite("Relayed failures and cancellation (real sshd, real borg)", .serialized)
struct RelayedFailureTests {
    @Test("a repository path B does not allow, and a client command that is not borg, fail with the reason")
    func failuresOnEitherSide() throws {
        let s = try Sandbox(name: "fail")
        defer { s.close() }
        try Data("x".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/x"))
        try s.configure()
        let sealed = try RelayedBackupTests().sealedValue(s)

        // B's forced command restricts borg serve to the real repository.
        let text = try String(contentsOfFile: s.configPath, encoding: .utf8)
        try text.replacingOccurrences(of: "repository = \"\(s.repo)\"", with: "repository = \"/srv/not-allowed\"")
            .write(toFile: s.configPath, atomically: true, encoding: .utf8)
        var r = try s.runAgent()
        #expect(r.status == 1, "\(r.output)")
        #expect(r.output.contains("Repository path not allowed"), "borg's reason is missing: \(r.output)")

        // Exit status 1 without archive statistics is a failure, not "success with warnings".
        try s.writeConfig(sealed: sealed, extraClient: ["borg_path = \"/bin/false\""])
        r = try s.runAgent(["--json"])
        #expect(r.status == 1, "\(r.output)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(report["state"] as? String == "failed")
        #expect(report["borg_exit_status"] as? Int == 1)
        #expect(try s.archives().isEmpty)
        let left = s.sessionsLeft(on: [s.t, s.b], within: 5)
        #expect(left.isEmpty, "session processes left: \(left)")
    }

    @Test("SIGINT mid-run cancels cleanly: nothing left on T or B, the repository stays consistent, the next run works")
    func cancelMidRun() throws {
        let s = try Sandbox(name: "cancel")
        defer { s.close() }
        try writeRandomFile("\(s.dataDir)/big.bin", count: 400 * 1024 * 1024)
        try s.configure()
        let out = "\(s.dir)/agent.out"
        // Wait until borg create runs on T, then interrupt the agent.
        let (agent, sawBorg) = try s.startAgentUntilBorgRuns(output: out)
        #expect(sawBorg, "borg create never started on T")
        usleep(500_000)
        agent.kill(SIGINT)
        let status = agent.wait(timeout: 30)
        #expect(status == 1, "agent exit status: \(String(describing: status))")
        let output = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        #expect(output.contains("backup cancelled"), "\(output)")
        let left = s.sessionsLeft(on: [s.t, s.b], within: 5)
        #expect(left.isEmpty, "session processes left: \(left)")
        try s.borg(["check", s.repo])
        try s.replaceWithSmallData(removing: "big.bin")
        let r = try s.runAgent()
        #expect(r.status == 0, "the run after a cancel failed: \(r.output)")
    }

    @Test("a backup server that stops answering (sshd frozen, TCP alive) is detected by SSH keepalives")
    func frozenServerDetected() throws {
        let s = try Sandbox(name: "keepalive")
        defer { s.close() }
        s.relayExtra = ["keepalive_interval = 1", "keepalive_count = 3"]
        try writeRandomFile("\(s.dataDir)/big.bin", count: 400 * 1024 * 1024)
        try s.configure()
        let out = "\(s.dir)/agent.out"
        let (agent, sawBorg) = try s.startAgentUntilBorgRuns(output: out)
        #expect(sawBorg, "borg create never started on T")
        usleep(300_000)
        // Freeze B's session: its sshd and borg serve stop, the kernel keeps TCP alive.
        let frozen = Proc.descendants(of: s.b.process.pid)
        #expect(!frozen.isEmpty)
        frozen.forEach { kill($0, SIGSTOP) }
        let t0 = Date()
        let status = agent.wait(timeout: 60)
        let took = Date().timeIntervalSince(t0)
        frozen.forEach { kill($0, SIGCONT) }
        let output = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        #expect(status == 1, "agent exit status \(String(describing: status)): \(output)")
        #expect(output.contains("server vault") && output.contains("no answer to SSH keepalives"), "\(output)")
        #expect(took < 20, "detection took \(took) s with keepalive_interval=1, keepalive_count=3")
        // borg on T ends (its connection was closed), and B's borg serve once it runs again.
        let left = s.sessionsLeft(on: [s.t, s.b], within: 10)
        #expect(left.isEmpty, "session processes left: \(left)")
        try s.replaceWithSmallData(removing: "big.bin")
        let r = try s.runAgent()
        #expect(r.status == 0, "the run after the frozen server failed: \(r.output)")
    }

    @Test("SIGKILL of the agent mid-run: the next run marks it interrupted and succeeds; history records both")
    func killedAgentIsInterrupted() throws {
        let s = try Sandbox(name: "sigkill")
        defer { s.close() }
        try writeRandomFile("\(s.dataDir)/big.bin", count: 400 * 1024 * 1024)
        try s.configure()
        let out = "\(s.dir)/agent.out"
        let (agent, sawBorg) = try s.startAgentUntilBorgRuns(output: out)
        #expect(sawBorg, "borg create never started on T")
        agent.kill(SIGKILL)
        _ = agent.wait(timeout: 10)
        let history = try HistoryStore(path: "\(s.stateDir)/history.sqlite")
        let killed = try #require(try history.recent(client: "web1").first)
        #expect(killed.state == .running)

        // Once B and T notice the dropped connections their processes end; the next run
        // then succeeds and records the killed one as interrupted.
        let left = s.sessionsLeft(on: [s.t, s.b], within: 15)
        #expect(left.isEmpty, "session processes left: \(left)")
        try s.replaceWithSmallData(removing: "big.bin")
        let r = try s.runAgent()
        #expect(r.status == 0, "the run after SIGKILL failed: \(r.output)")
        let runs = try history.recent(client: "web1")
        #expect(runs.count == 2)
        #expect(runs.first { $0.id == killed.id }?.state == .interrupted)
        #expect(runs.first { $0.id != killed.id }?.state == .succeeded)
        #expect(runs.first { $0.id != killed.id }?.archive != nil)
    }
}
