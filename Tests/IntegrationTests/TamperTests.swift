import Foundation
import RelayCore
import Testing

/// What an attacker holding the client's append-only key can do to the repository, and the
/// alarm by archive id that keeps the relay from compacting it away; the queue cap; the
/// history's mode.
@Suite("Tamper alarm by archive id, queue cap, private history (real daemon, real sshd, real borg)", .serialized)
struct TamperTests {
    /// Environment for borg on the test machine that reaches B exactly as T does: the
    /// relay's append-only key for B (what a compromised T could use).
    static func attackerEnv(_ s: Sandbox) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["BORG_BASE_DIR"] = "\(s.dir)/attacker"
        env["BORG_PASSPHRASE"] = s.passphrase
        env["BORG_RSH"] = "ssh -i \(s.dir)/relay/keys/b -o IdentitiesOnly=yes -o UserKnownHostsFile=\(s.knownHosts) -o StrictHostKeyChecking=yes -o BatchMode=yes"
        return env
    }

    static func attackerURL(_ s: Sandbox) -> String { "ssh://\(s.user)@127.0.0.1:\(s.b.port)\(s.repo)" }

    /// name → archive id, read with borg itself.
    static func archiveIDs(_ s: Sandbox) throws -> [String: String] {
        let out = try s.borg(["list", "--json", s.repo]).stdout
        let archives = try #require(PresentArchive.parse(borgListJSON: Data(out.utf8)), "\(out)")
        return Dictionary(archives.map { ($0.name, $0.id) }, uniquingKeysWith: { a, _ in a })
    }

    @Test("same-name re-creation through the append-only key: compact refuses naming the archive and both ids; the repository is untouched and rolls back to the original")
    func sameNameRecreation() throws {
        let s = try Sandbox(name: "recreate", maintenance: true)
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        try writeRandomFile("\(s.dataDir)/f.bin", count: 2 * 1024 * 1024)
        try s.configure()
        let d = try AgentDaemon(s)
        let backup = try d.ctl(["run", "web1", "--follow"])
        #expect(backup.status == 0, "\(backup.output)")
        let victim = try #require(try s.archives().first)
        let originalID = try #require(try Self.archiveIDs(s)[victim])
        let lastGood = try #require(segmentNumbers(s.repo).last)

        // Delete A through the append-only key, then create a small archive under A's name.
        let env = Self.attackerEnv(s)
        let del = try Proc.run("/usr/bin/borg", ["delete", "\(Self.attackerURL(s))::\(victim)"], env: env)
        #expect(del.status == 0, "append-only delete: \(del.output)")
        let decoy = "\(s.dir)/decoy"
        try FileManager.default.createDirectory(atPath: decoy, withIntermediateDirectories: true)
        try Data("nothing to see\n".utf8).write(to: URL(fileURLWithPath: "\(decoy)/readme"))
        let create = try Proc.run("/usr/bin/borg", ["create", "\(Self.attackerURL(s))::\(victim)", "."], env: env, cwd: decoy)
        #expect(create.status == 0, "append-only create: \(create.output)")
        let fakeID = try #require(try Self.archiveIDs(s)[victim])
        #expect(fakeID != originalID)
        #expect(try s.archives() == [victim])  // by name, all looks well

        let files = try s.repositoryFiles()
        let compact = try d.ctl(["compact", "web1"])
        #expect(compact.status == 1, "\(compact.output)")
        #expect(compact.stderr.contains("TAMPER ALARM"), "\(compact.stderr)")
        #expect(compact.stderr.contains("\(victim) (expected id \(originalID), found id \(fakeID))"), "\(compact.stderr)")
        // Nothing written to the repository: no compact (nor anything else) ran.
        #expect(try s.repositoryFiles() == files, "the repository changed although the alarm fired")
        let run = try #require(try d.runs("web1").first)
        #expect(run.kind == .compact && run.state == .failed, "\(run)")
        let log = try d.ctl(["log", run.id]).stdout
        #expect(!log.contains("borg --log-json compact"), "compact ran: \(log)")
        #expect(log.contains("TAMPER ALARM"))
        #expect(d.stop() == 0)
        // prune is refused the same way (a policy is needed for it to get that far), also
        // by a restarted agent.
        s.clientExtra = ["retention = { daily = 1 }"]
        try s.writeConfig(sealed: try s.sealed())
        let d2 = try AgentDaemon(s)
        let prune = try d2.ctl(["prune", "web1"])
        #expect(prune.status == 1 && prune.stderr.contains("TAMPER ALARM") && prune.stderr.contains(originalID), "\(prune.output)")
        #expect(try s.repositoryFiles() == files, "the repository changed although the alarm fired")
        #expect(try s.archives() == [victim])
        #expect(d2.stop() == 0)

        // The original is still there: rolled back, A has its original id and its data.
        try rollBackAppendOnly(s.repo, to: lastGood)
        #expect(try Self.archiveIDs(s) == [victim: originalID])
        try s.borg(["check", s.repo])
        let restored = "\(s.dir)/check-restore"
        try FileManager.default.createDirectory(atPath: restored, withIntermediateDirectories: true)
        try s.borg(["extract", "\(s.repo)::\(victim)"], cwd: restored)
        #expect(TreeCompare.sameBytes("\(s.dataDir)/f.bin", "\(restored)\(s.dataDir)/f.bin"))
    }

    @Test("history_keep_runs = 3, five backups, the first archive deleted behind the relay's back: compact refuses and names it")
    func alarmOutlivesHistoryPruning() throws {
        let s = try Sandbox(name: "keep3", maintenance: true)
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\"", "history_keep_runs = 3"]
        try Data("small\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.configure()
        let d = try AgentDaemon(s)
        var names: [String] = []
        for i in 1...5 {
            try Data("run \(i)\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
            let r = try d.ctl(["run", "web1", "--follow"])
            #expect(r.status == 0, "\(r.output)")
            names = try s.archives()
        }
        #expect(names.count == 5)
        let first = try #require(names.sorted().first)
        let firstID = try #require(try Self.archiveIDs(s)[first])
        // The runs that created the first archives are gone from the history.
        let runs = try d.runs("web1")
        #expect(runs.count == 3, "\(runs.map(\.id))")

        let del = try Proc.run("/usr/bin/borg", ["delete", "\(Self.attackerURL(s))::\(first)"], env: Self.attackerEnv(s))
        #expect(del.status == 0, "append-only delete: \(del.output)")
        let before = repositoryBytes(s.repo)
        let compact = try d.ctl(["compact", "web1"])
        #expect(compact.status == 1, "\(compact.output)")
        #expect(compact.stderr.contains("TAMPER ALARM") && compact.stderr.contains("\(first) (expected id \(firstID), missing)"),
                "\(compact.stderr)")
        // Only the deleted one is named.
        for other in names where other != first { #expect(!compact.stderr.contains(other), "\(other) named: \(compact.stderr)") }
        #expect(repositoryBytes(s.repo) >= before, "data was freed although the alarm fired")
        #expect(d.stop() == 0)

        // Read back: the relay's records of all five survive (history holds 3 runs).
        let store = try HistoryStore(path: "\(s.stateDir)/history.sqlite")
        let records = try store.expectedArchives(client: "web1")
        #expect(records.map(\.name).sorted() == names.sorted())
        let firstRecord = try #require(records.first { $0.name == first })
        #expect(firstRecord.id == firstID)
        #expect(!runs.map(\.id).contains(firstRecord.runID), "the first backup's run should have left the history")
        #expect(try store.recent(client: "web1", limit: 100).count <= 4)  // 3 backups + the compact
    }

    @Test("the relay's own prune marks its archive pruned by id (from borg prune's list); the check after it and a later compact pass")
    func ownPruneIsNotTamper() throws {
        let s = try Sandbox(name: "ownprune", maintenance: true)
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        s.clientExtra = ["retention = { daily = 1 }"]
        try Data("one\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.configure()
        let d = try AgentDaemon(s)
        func retentionRuns(_ count: Int) throws -> [RunView] {
            var runs: [RunView] = []
            for _ in 0..<300 {
                runs = try d.runs("web1").filter { $0.trigger == "retention" }
                if runs.count >= count && runs.allSatisfy(\.isFinished) { break }
                usleep(100_000)
            }
            return runs
        }
        #expect(try d.ctl(["run", "web1", "--follow"]).status == 0)
        _ = try retentionRuns(1)
        let first = try #require(try s.archives().first)
        let firstID = try #require(try Self.archiveIDs(s)[first])
        try Data("two\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        #expect(try d.ctl(["run", "web1", "--follow"]).status == 0)
        // daily = 1: the second backup's retention run prunes the first archive.
        let runs = try retentionRuns(2)
        #expect(runs.count == 2 && runs.allSatisfy { $0.state == .succeeded }, "\(runs.map { "\($0.state) \($0.error ?? "")" })")
        let left = try s.archives()
        #expect(left.count == 1 && !left.contains(first), "\(left)")
        let compact = try d.ctl(["compact", "web1"])
        #expect(compact.status == 0, "\(compact.output)")
        #expect(d.stop() == 0)
        let records = try HistoryStore(path: "\(s.stateDir)/history.sqlite").archiveRecords(client: "web1")
        #expect(records.count == 2)
        let pruned = try #require(records.first { $0.name == first })
        #expect(pruned.id == firstID && pruned.prunedAt != nil, "\(pruned)")
        #expect(runs.map(\.id).contains(pruned.prunedByRun ?? "-"), "\(pruned)")
        #expect(records.filter { $0.prunedAt == nil }.map(\.name) == left)
    }

    @Test("queue cap: 10 waiting runs of one client are accepted, the 11th gets 429 through relayctl; other clients are not affected")
    func queueCap() throws {
        let s = try daemonSandbox("qcap", multiRepo: true)
        defer { s.close() }
        // web1's run waits in its pre hook, so the runs behind it stay queued.
        s.clientExtra = ["pre = ['sleep', '60']", "pre_timeout = 90"]
        let sealed = try s.sealed()
        let data2 = try s.addClient("web2", sealed: sealed)
        try Data("two\n".utf8).write(to: URL(fileURLWithPath: "\(data2)/f"))
        try s.writeConfig(sealed: sealed)
        let d = try AgentDaemon(s)
        let running = try d.start(["web1"])[0]
        #expect(try d.waitFor(running, within: 20) { $0.state == .running } != nil)
        var queued: [String] = []
        for i in 1...10 {
            let r = try d.ctl(["run", "web1", "--queue", "--json"])
            #expect(r.status == 0, "queued run \(i): \(r.output)")
            if r.status == 0 {
                queued += try ControlAPI.decoder().decode(RunList.self, from: Data(r.stdout.utf8)).runs.map(\.id)
            }
        }
        #expect(queued.count == 10)
        let refused = try d.ctl(["run", "web1", "--queue"])
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.stderr.contains("client web1 already has 10 run(s) waiting in the queue"), "\(refused.stderr)")
        #expect(refused.stderr.contains("(10)") && refused.stderr.contains("relayctl runs web1"), "\(refused.stderr)")
        #expect(!refused.stderr.contains("{"), "raw JSON shown: \(refused.stderr)")
        // The raw answer is a 429 with the JSON body.
        let raw = try Proc.run("/usr/bin/curl", ["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", d.socket,
                                                 "-H", "Content-Type: application/json", "-d", #"{"clients":["web1"],"queue":true}"#,
                                                 "http://localhost/v1/runs"])
        #expect(raw.stdout.hasSuffix("\n429"), "\(raw.output)")
        #expect(raw.stdout.contains(#""code":"too_many_queued""#) || raw.stdout.contains(#""code" : "too_many_queued""#), "\(raw.stdout)")
        let web1 = try d.runs("web1")
        #expect(web1.filter { $0.state == .queued }.count == 10, "\(web1.map(\.state))")

        // Another client is not affected: queued and run to the end.
        let other = try d.ctl(["run", "web2", "--queue", "--follow"])
        #expect(other.status == 0, "\(other.output)")
        // Cancelling one frees a place.
        #expect(try d.ctl(["cancel", queued[0]]).status == 0)
        let again = try d.ctl(["run", "web1", "--queue", "--json"])
        #expect(again.status == 0, "\(again.output)")
        if again.status == 0 {
            queued += try ControlAPI.decoder().decode(RunList.self, from: Data(again.stdout.utf8)).runs.map(\.id)
        }
        #expect(try d.ctl(["run", "web1", "--queue"]).status == 1)
        // The queued ones first, so none of them starts when the running one ends.
        for id in queued.dropFirst() { #expect(try d.ctl(["cancel", id]).status == 0) }
        #expect(try d.ctl(["cancel", running]).status == 0)
        #expect(try d.waitFinished(running, within: 30)?.state == .cancelled)
        #expect(d.stop() == 0)
    }

    @Test("history.sqlite created by a foreground relay-agent run is 0600 (umask 022), and a wider one is narrowed")
    func foregroundHistoryIsPrivate() throws {
        let s = try Sandbox(name: "histmode")
        defer { s.close() }
        try Data("x\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.configure()
        let history = "\(s.stateDir)/history.sqlite"
        #expect(!FileManager.default.fileExists(atPath: history))
        func mode(_ p: String) -> mode_t? {
            var st = stat()
            return stat(p, &st) == 0 ? st.st_mode & 0o777 : nil
        }
        func runUnderUmask() throws -> ProcessResult {
            try Proc.run("/bin/sh", ["-c", "umask 022; exec \"$0\" run web1 --config \"$1\"",
                                     try Proc.binary("relay-agent"), s.configPath])
        }
        let r = try runUnderUmask()
        #expect(r.status == 0, "\(r.output)")
        #expect(mode(history) == 0o600, "history.sqlite is \(mode(history).map { String($0, radix: 8) } ?? "absent")")
        #expect(mode(s.stateDir) == 0o700)
        for suffix in ["-wal", "-shm", "-journal"] {
            if let m = mode(history + suffix) { #expect(m == 0o600, "\(suffix) is \(String(m, radix: 8))") }
        }
        // Read back: the run and its archive are recorded.
        let store = try HistoryStore(path: history)
        #expect(try store.recent(client: "web1").first?.state == .succeeded)
        #expect(try store.expectedArchives(client: "web1").map(\.name) == (try s.archives()))

        #expect(chmod(history, 0o644) == 0)
        #expect(try runUnderUmask().status == 0)
        #expect(mode(history) == 0o600)
    }
}
