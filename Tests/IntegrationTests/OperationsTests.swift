import Foundation
import RelayCore
import Testing

/// Operations through the relay (borg on R, its repository connection spliced into B).
@Suite("Operations through the relay (real daemon, real sshd, real borg)", .serialized)
struct OperationsTests {
    @Test("init (maintenance key) → backup → list, list ARCHIVE, info, key-export read back; init twice refused")
    func initBackupListInfoKeyExport() throws {
        let s = try Sandbox(name: "ops", initRepo: false, maintenance: true)
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        try Data("hello from T\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/hello.txt"))
        try s.configure()
        let d = try AgentDaemon(s)

        let created = try d.ctl(["init", "web1"])
        #expect(created.status == 0, "\(created.output)\n\(d.log)")
        #expect(created.stdout.contains("relayctl key-export web1"), "\(created.stdout)")
        // Read back with borg itself: the repository exists and opens with the passphrase.
        #expect(try s.archives().isEmpty)
        let again = try d.ctl(["init", "web1"])
        #expect(again.status == 1, "\(again.output)")
        #expect(again.stderr.contains("already exists"), "\(again.stderr)")

        let backup = try d.ctl(["run", "web1", "--follow"])
        #expect(backup.status == 0, "\(backup.output)")
        let archive = try #require(try s.archives().first)

        let list = try d.ctl(["list", "web1"])
        #expect(list.status == 0, "\(list.output)")
        #expect(list.stdout.contains(archive), "\(list.stdout)")
        let listJSON = try d.ctl(["list", "web1", "--json"])
        #expect(listJSON.status == 0, "\(listJSON.output)")
        let parsed = try JSONSerialization.jsonObject(with: Data(listJSON.stdout.utf8)) as? [String: Any]
        let names = (parsed?["archives"] as? [[String: Any]])?.compactMap { $0["name"] as? String }
        #expect(names == [archive])
        let contents = try d.ctl(["list", "web1", archive])
        #expect(contents.status == 0 && contents.stdout.contains("hello.txt"), "\(contents.output)")
        let info = try d.ctl(["info", "web1", archive, "--json"])
        #expect(info.status == 0, "\(info.output)")
        #expect(info.stdout.contains("\"nfiles\": 1"), "\(info.stdout)")

        let keyFile = "\(s.dir)/web1.key"
        let export = try d.ctl(["key-export", "web1", keyFile])
        #expect(export.status == 0, "\(export.output)")
        let key = try String(contentsOfFile: keyFile, encoding: .utf8)
        #expect(key.hasPrefix("BORG_KEY "), "\(key.prefix(40))")
        var st = stat()
        #expect(stat(keyFile, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(try d.ctl(["key-export", "web1", keyFile]).status == 2)  // never overwritten

        let check = try d.ctl(["check", "web1", "--repository", "--config", s.configPath])
        #expect(check.status == 0 && check.stdout.contains("web1: repository: borg check passed"), "\(check.output)")

        // An unknown archive fails with borg's reason.
        let missing = try d.ctl(["list", "web1", "no-such-archive"])
        #expect(missing.status == 1 && missing.stderr.contains("does not exist"), "\(missing.output)")

        // History shows each operation; nothing secret anywhere; no private socket left.
        let kinds = Set(try d.runs().map(\.kind))
        #expect(kinds.isSuperset(of: [.initialize, .backup, .list, .info, .keyExport, .check]))
        #expect(d.stop() == 0)
        #expect(!d.log.contains(s.passphrase))
        for r in try HistoryStore(path: "\(s.stateDir)/history.sqlite").recent(limit: 100) {
            let text = (try? String(contentsOfFile: r.logFile ?? "", encoding: .utf8)) ?? ""
            #expect(!text.contains(s.passphrase))
            let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: FileManager.default.temporaryDirectory.path))?
                .filter { $0.hasPrefix("borg-relay-\(r.id)") } ?? []
            #expect(leftovers.isEmpty, "private run directory left: \(leftovers)")
        }
        #expect(s.sessionsLeft(on: [s.b, s.t], within: 5).isEmpty)
    }
}

/// Bytes in a repository's segment files.
func repositoryBytes(_ repo: String) -> Int {
    var total = 0
    if let e = FileManager.default.enumerator(atPath: "\(repo)/data") {
        for case let p as String in e {
            total += ((try? FileManager.default.attributesOfItem(atPath: "\(repo)/data/\(p)"))?[.size] as? Int) ?? 0
        }
    }
    return total
}

/// Segment numbers in a repository, ascending.
func segmentNumbers(_ repo: String) -> [Int] {
    let e = FileManager.default.enumerator(atPath: "\(repo)/data")
    var out: [Int] = []
    while let p = e?.nextObject() as? String { if let n = Int((p as NSString).lastPathComponent) { out.append(n) } }
    return out.sorted()
}

/// Rolls an append-only repository back to the transaction that ended in segment
/// `lastGood` (borg's append-only documentation): the newer segments and the newer
/// index/hints/integrity files go.
func rollBackAppendOnly(_ repo: String, to lastGood: Int) throws {
    let e = FileManager.default.enumerator(atPath: "\(repo)/data")
    while let p = e?.nextObject() as? String {
        if let n = Int((p as NSString).lastPathComponent), n > lastGood {
            try FileManager.default.removeItem(atPath: "\(repo)/data/\(p)")
        }
    }
    for name in try FileManager.default.contentsOfDirectory(atPath: repo) {
        let parts = name.split(separator: ".")
        if parts.count == 2, ["index", "hints", "integrity"].contains(String(parts[0])), let n = Int(parts[1]), n > lastGood {
            try FileManager.default.removeItem(atPath: "\(repo)/\(name)")
        }
    }
}

@Suite("Retention and the tamper alarm (real daemon, real sshd, real borg)", .serialized)
struct RetentionTests {
    @Test("the passphrase never appears in /proc of the relay's own borg (check --verify-data) nor in logs")
    func passphraseNotInLocalBorg() throws {
        let s = try Sandbox(name: "rsecret", maintenance: true)
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        try writeRandomFile("\(s.dataDir)/a.bin", count: 64 * 1024 * 1024)
        try s.configure()
        let d = try AgentDaemon(s)
        #expect(try d.ctl(["run", "web1", "--follow"]).status == 0)
        let scanner = ProcScanner(needle: s.passphrase) { c in
            c.contains("borg") && c.contains("check") && c.contains("ssh://borg-relay")
        }
        scanner.start()
        let check = try d.ctl(["check", "web1", "--verify-data", "--config", s.configPath])
        let result = scanner.stop()
        #expect(check.status == 0, "\(check.output)")
        #expect(result.sawBorgCreate, "the sampler never saw borg check running on the relay (\(result.samples) samples)")
        #expect(result.hits.isEmpty, "passphrase found in /proc: \(result.hits)")
        #expect(d.stop() == 0)
        #expect(!d.log.contains(s.passphrase))
        for r in try HistoryStore(path: "\(s.stateDir)/history.sqlite").recent(limit: 100) {
            let text = (try? String(contentsOfFile: r.logFile ?? "", encoding: .utf8)) ?? ""
            #expect(!text.contains(s.passphrase))
        }
    }

    @Test("the append-only key cannot destroy: a borg delete through it is undone by rolling back the transaction; prune never runs on T")
    func appendOnlyDeleteIsRecoverable() throws {
        let s = try Sandbox(name: "undelete", maintenance: true)
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        s.clientExtra = ["retention = { daily = 3 }"]
        try writeRandomFile("\(s.dataDir)/f.bin", count: 2 * 1024 * 1024)
        try s.configure()
        let d = try AgentDaemon(s)
        #expect(try d.ctl(["run", "web1", "--follow"]).status == 0)
        var retention: RunView?
        for _ in 0..<300 where retention == nil {
            retention = try d.runs("web1").first { $0.trigger == "retention" && $0.isFinished }
            usleep(100_000)
        }
        #expect(retention?.state == .succeeded, "\(retention?.error ?? "no retention run")")
        let archive = try #require(try s.archives().first)
        #expect(d.stop() == 0)

        // Every command the relay sent to T, from the run logs: no prune, no compact, no delete.
        for r in try HistoryStore(path: "\(s.stateDir)/history.sqlite").recent(limit: 100) {
            let log = (try? String(contentsOfFile: r.logFile ?? "", encoding: .utf8)) ?? ""
            for line in log.split(separator: "\n") where line.contains("client runs:") {
                #expect(!line.contains(" prune") && !line.contains(" compact") && !line.contains(" delete"), "\(line)")
            }
            if r.kind == .prune { #expect(log.contains("relay runs: borg --log-json prune"), "\(log)") }
        }

        // Delete through the append-only key (what a compromised T could do).
        func segments() -> [Int] { segmentNumbers(s.repo) }
        let lastGood = try #require(segments().last)
        var env = ProcessInfo.processInfo.environment
        env["BORG_BASE_DIR"] = "\(s.dir)/attacker"
        env["BORG_PASSPHRASE"] = s.passphrase
        env["BORG_RSH"] = "ssh -i \(s.dir)/relay/keys/b -o IdentitiesOnly=yes -o UserKnownHostsFile=\(s.knownHosts) -o StrictHostKeyChecking=yes -o BatchMode=yes"
        let del = try Proc.run("/usr/bin/borg", ["delete", "ssh://\(s.user)@127.0.0.1:\(s.b.port)\(s.repo)::\(archive)"], env: env)
        #expect(del.status == 0, "\(del.output)")
        #expect(try s.archives().isEmpty)
        // B refuses to really delete: compaction through the append-only key is refused too.
        let compact = try Proc.run("/usr/bin/borg", ["compact", "ssh://\(s.user)@127.0.0.1:\(s.b.port)\(s.repo)"], env: env)
        #expect(segments().first! <= lastGood, "old segments were removed through the append-only key")
        _ = compact

        // Roll back (borg's append-only documentation): drop the segments and index files
        // written after the last good transaction; the archive is back, intact.
        try rollBackAppendOnly(s.repo, to: lastGood)
        #expect(try s.archives() == [archive])
        try s.borg(["check", "--verify-data", s.repo])
        let restored = "\(s.dir)/check-restore"
        try FileManager.default.createDirectory(atPath: restored, withIntermediateDirectories: true)
        try s.borg(["extract", "\(s.repo)::\(archive)"], cwd: restored)
        #expect(TreeCompare.sameBytes("\(s.dataDir)/f.bin", "\(restored)\(s.dataDir)/f.bin"))
    }

    @Test("retention: prune --dry-run changes nothing, prune keeps what the policy says, compact frees space, a backup triggers prune+compact")
    func retentionPruneCompact() throws {
        let s = try Sandbox(name: "retain", maintenance: true)
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        s.clientExtra = ["retention = { daily = 2 }"]
        // Five archives on five days, each with 3 MiB of its own data.
        for i in 1...5 {
            let d = "\(s.dir)/old\(i)"
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
            try writeRandomFile("\(d)/f.bin", count: 3 * 1024 * 1024)
            try s.borg(["create", "--timestamp", "2026-11-0\(i)T12:00:00", "\(s.repo)::old-\(i)", "."], cwd: d)
        }
        try Data("now".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.configure()
        let d = try AgentDaemon(s)

        let dry = try d.ctl(["prune", "web1", "--dry-run"])
        #expect(dry.status == 0, "\(dry.output)")
        #expect(dry.stdout.contains("Would prune"), "\(dry.stdout)")
        #expect(try s.archives().count == 5)

        let before = repositoryBytes(s.repo)
        let pruned = try d.ctl(["prune", "web1"])
        #expect(pruned.status == 0, "\(pruned.output)")
        #expect(try s.archives().sorted() == ["old-4", "old-5"])
        let compacted = try d.ctl(["compact", "web1"])
        #expect(compacted.status == 0, "\(compacted.output)")
        let after = repositoryBytes(s.repo)
        #expect(after < before - 8 * 1024 * 1024, "compact freed too little: \(before) -> \(after)")

        // A backup through the relay: the daemon prunes and compacts afterwards by itself.
        let run = try d.ctl(["run", "web1", "--follow"])
        #expect(run.status == 0, "\(run.output)")
        var retention: RunView?
        for _ in 0..<300 where retention == nil {
            retention = try d.runs("web1").first { $0.trigger == "retention" && $0.isFinished }
            usleep(100_000)
        }
        let r = try #require(retention, "no retention run after the backup\n\(d.log)")
        #expect(r.state == .succeeded && r.kind == .prune, "\(r.error ?? "")")
        let left = try s.archives()
        #expect(left.count == 2 && left.contains("old-5") && !left.contains("old-4"), "\(left)")
        let log = try d.ctl(["log", r.id]).stdout
        #expect(log.contains("tamper check: all"), "\(log)")
        #expect(log.contains("borg --log-json compact"), "\(log)")
        #expect(d.stop() == 0)
        try s.borg(["check", s.repo])
    }

    @Test("tamper alarm: an archive deleted through the append-only key stops compact, names the archive, and the data stays")
    func tamperAlarm() throws {
        let s = try Sandbox(name: "tamper", maintenance: true)
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        try writeRandomFile("\(s.dataDir)/f.bin", count: 4 * 1024 * 1024)
        try s.configure()
        let d = try AgentDaemon(s)
        #expect(try d.ctl(["run", "web1", "--follow"]).status == 0)
        let victim = try #require(try s.archives().first)

        // The client (or anyone with the append-only key) deletes it behind the relay's back.
        var env = ProcessInfo.processInfo.environment
        env["BORG_BASE_DIR"] = "\(s.dir)/attacker"
        env["BORG_PASSPHRASE"] = s.passphrase
        env["BORG_RSH"] = "ssh -i \(s.dir)/relay/keys/b -o IdentitiesOnly=yes -o UserKnownHostsFile=\(s.knownHosts) -o StrictHostKeyChecking=yes -o BatchMode=yes"
        let url = "ssh://\(s.user)@127.0.0.1:\(s.b.port)\(s.repo)::\(victim)"
        let del = try Proc.run("/usr/bin/borg", ["delete", url], env: env)
        #expect(del.status == 0, "append-only delete: \(del.output)")
        #expect(try s.archives().isEmpty)
        let before = repositoryBytes(s.repo)

        let compact = try d.ctl(["compact", "web1"])
        #expect(compact.status == 1, "\(compact.output)")
        #expect(compact.stderr.contains("TAMPER ALARM") && compact.stderr.contains(victim), "\(compact.stderr)")
        #expect(repositoryBytes(s.repo) >= before, "data was freed although the alarm fired")
        #expect(try d.runs("web1").first?.state == .failed)
        #expect(d.stop() == 0)
    }
}

@Suite("Restore and read-only borg on the client (real daemon, real sshd, real borg)", .serialized)
struct RestoreTests {
    @Test("restore into a new directory on T is byte-identical; one path; --dry-run writes nothing; relayctl borg runs read-only commands only")
    func restoreAndBorgPassthrough() throws {
        let s = try Sandbox(name: "restore")
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        let data = s.dataDir
        try FileManager.default.createDirectory(atPath: "\(data)/docs/deep dir", withIntermediateDirectories: true)
        try Data("readme\n".utf8).write(to: URL(fileURLWithPath: "\(data)/docs/readme.txt"))
        try Data("it's $odd\n".utf8).write(to: URL(fileURLWithPath: "\(data)/docs/deep dir/it's $odd.txt"))
        try writeRandomFile("\(data)/blob.bin", count: 3 * 1024 * 1024)
        try FileManager.default.createSymbolicLink(atPath: "\(data)/link", withDestinationPath: "docs/readme.txt")
        if geteuid() == 0 { chown("\(data)/docs/readme.txt", 12345, 12345) }
        try s.configure()
        let d = try AgentDaemon(s)
        #expect(try d.ctl(["run", "web1", "--follow"]).status == 0)
        let archive = try #require(try s.archives().first)
        let rel = String(data.dropFirst())  // paths in the archive have no leading /

        let target = "\(s.dir)/t/restored"
        let full = try d.ctl(["restore", "web1", archive, "--to", target])
        #expect(full.status == 0, "\(full.output)")
        #expect(full.stdout.contains(target), "\(full.stdout)")
        #expect(TreeCompare.differences(data, "\(target)/\(rel)").isEmpty, "\(TreeCompare.differences(data, "\(target)/\(rel)"))")
        if geteuid() == 0 {
            var st = stat()
            #expect(stat("\(target)/\(rel)/docs/readme.txt", &st) == 0 && st.st_uid == 12345, "numeric ids not kept")
        }

        let single = "\(s.dir)/t/single"
        let one = try d.ctl(["restore", "web1", archive, "\(data)/docs/readme.txt", "--to", single])
        #expect(one.status == 0, "\(one.output)")
        #expect(FileManager.default.fileExists(atPath: "\(single)/\(rel)/docs/readme.txt"))
        #expect(!FileManager.default.fileExists(atPath: "\(single)/\(rel)/blob.bin"))

        let dry = try d.ctl(["restore", "web1", archive, "--dry-run", "--to", "\(s.dir)/t/dry"])
        #expect(dry.status == 0, "\(dry.output)")
        #expect(dry.stdout.contains("readme.txt"), "\(dry.stdout)")
        #expect(!FileManager.default.fileExists(atPath: "\(s.dir)/t/dry"))

        let root = try d.ctl(["restore", "web1", archive, "--to", "/"])
        #expect(root.status == 2 && root.stderr.contains("in-place"), "\(root.output)")

        let list = try d.ctl(["borg", "web1", "--", "list", "::\(archive)"])
        #expect(list.status == 0 && list.stdout.contains("it's $odd.txt"), "\(list.output)")
        let cat = try d.ctl(["borg", "web1", "--", "extract", "--stdout", "::\(archive)", "\(rel)/docs/readme.txt"])
        #expect(cat.status == 0 && cat.stdout == "readme\n", "\(cat.output)")
        // export-tar streams binary output back: the tar holds the 3 MiB blob byte for byte.
        let tarFile = "\(s.dir)/export.tar"
        let ctlPath = try Proc.binary("relayctl")
        let export = try Proc.run("/bin/sh", ["-c", "exec \"$0\" borg web1 --socket \"$1\" -- export-tar \"::$2\" - > \"$3\"",
                                              ctlPath, d.socket, archive, tarFile])
        #expect(export.status == 0, "\(export.output)")
        let unpacked = "\(s.dir)/unpacked"
        try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
        try Proc.check("/bin/tar", ["-xf", tarFile, "-C", unpacked])
        #expect(TreeCompare.sameBytes("\(data)/blob.bin", "\(unpacked)/\(rel)/blob.bin"), "export-tar output differs")
        // What the read commands printed (file contents, the tar) is not left on the relay's disk.
        let outputs = try FileManager.default.subpathsOfDirectory(atPath: "\(s.stateDir)/logs").filter { $0.hasSuffix(".out") }
        #expect(outputs.isEmpty, "output files left in state_dir/logs: \(outputs)")

        let delete = try d.ctl(["borg", "web1", "--", "delete", "::\(archive)"])
        #expect(delete.status == 2 && delete.stderr.contains("not allowed"), "\(delete.output)")
        #expect(try s.archives() == [archive])
        #expect(d.stop() == 0)
        #expect(s.sessionsLeft(on: [s.b, s.t], within: 5).isEmpty)
    }
}
