import Foundation
import RelayCore
import Testing

/// Losing R loses nothing: the recovery key, the sealed state bundle (to a file and to the
/// state repository on B), and recovery on a wiped R (real sshd, real borg, the real binaries).
@Suite("Recovery: recovery key, state bundles, recover (real sshd, real borg)", .serialized)
struct RecoveryTests {
    /// A command with stdin and stdout on pipes only: the recovery secret passes through
    /// no file, not even the test's own temporary files.
    static func piped(_ args: [String], stdin: Data = Data(), timeout: TimeInterval = 300) throws -> ProcessResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try Proc.binary("relayctl"))
        p.arguments = args
        let inPipe = Pipe(), outPipe = Pipe(), errPipe = Pipe()
        p.standardInput = inPipe
        p.standardOutput = outPipe
        p.standardError = errPipe
        try p.run()
        inPipe.fileHandleForWriting.write(stdin)
        try inPipe.fileHandleForWriting.close()
        let out = outPipe.fileHandleForReading.readDataToEndOfFile()
        let err = errPipe.fileHandleForReading.readDataToEndOfFile()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            throw FixtureError("relayctl \(args) did not finish")
        }
        return ProcessResult(status: p.terminationStatus, stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self))
    }

    /// `relayctl recovery init --json`: the secret and the fingerprint.
    static func recoveryInit(config: String) throws -> (secret: String, fingerprint: String) {
        let r = try piped(["recovery", "init", "--json", "--config", config])
        guard r.status == 0, let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: String],
              let secret = obj["secret"], let fp = obj["fingerprint"] else {
            throw FixtureError("recovery init failed: \(r.output)")
        }
        return (secret, fp)
    }

    /// Every regular file under `dir` (path → bytes).
    static func files(under dir: String) -> [String: Data] {
        var out: [String: Data] = [:]
        guard let e = FileManager.default.enumerator(atPath: dir) else { return out }
        while let rel = e.nextObject() as? String {
            let p = dir + "/" + rel
            var st = stat()
            guard lstat(p, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, let d = FileManager.default.contents(atPath: p) else { continue }
            out[p] = d
        }
        return out
    }

    /// Path → size and mtime of every file and directory under `dir`: proves that nothing was written.
    static func listing(_ dir: String) -> [String: String] {
        var out: [String: String] = [:]
        guard let e = FileManager.default.enumerator(atPath: dir) else { return out }
        while let rel = e.nextObject() as? String {
            var st = stat()
            guard lstat(dir + "/" + rel, &st) == 0 else { continue }
            out[rel] = "\(st.st_mode) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
        }
        return out
    }

    /// The paths of `haystacks` that contain any of `needles`.
    static func containing(_ needles: [Data], in haystacks: [String: Data]) -> [String] {
        haystacks.filter { _, d in needles.contains { !$0.isEmpty && d.range(of: $0) != nil } }.keys.sorted()
    }

    /// The readable memory of a process (as root), region by region.
    static func processMemory(_ pid: Int32) -> [Data] {
        guard let maps = try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8),
              let mem = FileHandle(forReadingAtPath: "/proc/\(pid)/mem") else { return [] }
        defer { try? mem.close() }
        var regions: [Data] = []
        for line in maps.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count >= 2, f[1].hasPrefix("r") else { continue }
            let r = f[0].split(separator: "-").compactMap { UInt64($0, radix: 16) }
            guard r.count == 2, r[1] > r[0], r[1] - r[0] < 1 << 30 else { continue }
            do {
                try mem.seek(toOffset: r[0])
                if let d = try mem.read(upToCount: Int(r[1] - r[0])) { regions.append(d) }
            } catch {
                continue  // [vvar] and guard pages do not read
            }
        }
        return regions
    }

    /// A sandbox whose relay backs its state up to `b/relay-state` on B with B's append-only key.
    static func sandbox(_ name: String) throws -> Sandbox {
        let s = try Sandbox(name: name, multiRepo: true)
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\"", "name = \"relay-a\"",
                        "state_server = \"vault\"", "state_repository = \"\(s.dir)/b/relay-state\""]
        return s
    }

    @Test("recovery init prints the secret once and keeps only recovery.pub; a second init refuses; the secret is nowhere on R: not in state_dir, the config, the logs, any file of the sandbox, nor the running agent's environment, arguments or memory")
    func recoveryKeyStaysOffR() throws {
        let s = try Self.sandbox("rkey")
        defer { s.close() }
        try Data("data\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.configure()
        let (secret, fingerprint) = try Self.recoveryInit(config: s.configPath)
        #expect(secret.hasPrefix("BRS1-") && fingerprint.hasPrefix("BRR-"), "\(secret.prefix(5)) \(fingerprint)")
        let pubPath = "\(s.stateDir)/recovery.pub"
        let pub = try #require(FileManager.default.contents(atPath: pubPath))
        var st = stat()
        #expect(stat(pubPath, &st) == 0 && st.st_mode & 0o777 == 0o600)
        // Twice: refused, recovery.pub unchanged, no secret printed.
        let again = try Self.piped(["recovery", "init", "--config", s.configPath])
        #expect(again.status == 1 && again.stderr.contains("already exists"), "\(again.output)")
        #expect(!again.stdout.contains("BRS1-"))
        #expect(FileManager.default.contents(atPath: pubPath) == pub)

        // The agent works with it: a backup and a state backup, then the scans while it runs.
        let d = try AgentDaemon(s)
        #expect(try d.ctl(["run", "web1", "--follow"]).status == 0)
        let backup = try d.ctl(["state", "backup"])
        #expect(backup.status == 0 && backup.stdout.contains("state backed up"), "\(backup.output)")
        let raw = try #require(Data(base64Encoded: String(secret.dropFirst(5))))
        #expect(raw.count == 32)
        let needles = [Data(secret.utf8), Data(secret.dropFirst(5).utf8), raw]
        let onDisk = Self.files(under: s.dir)
        #expect(onDisk.count > 20 && onDisk.keys.contains(s.configPath) && onDisk.keys.contains(d.logPath))
        #expect(Self.containing(needles, in: onDisk).isEmpty, "the recovery secret is on disk: \(Self.containing(needles, in: onDisk))")
        let pid = d.process.pid
        let procFiles = ["environ", "cmdline"].reduce(into: [String: Data]()) { $0[$1] = FileManager.default.contents(atPath: "/proc/\(pid)/\($1)") }
        #expect(procFiles.values.allSatisfy { !$0.isEmpty })
        #expect(Self.containing(needles, in: procFiles).isEmpty)
        let memory = Self.processMemory(pid)
        #expect(memory.reduce(0) { $0 + $1.count } > 1_000_000, "the agent's memory could not be read")
        // The scan can find things: the agent's arguments are in its memory.
        #expect(memory.contains { $0.range(of: Data(s.configPath.utf8)) != nil })
        #expect(!memory.contains { m in needles.contains { m.range(of: $0) != nil } }, "the recovery secret is in the agent's memory")
        #expect(d.stop() == 0)
    }

    @Test("a bundle whose config puts a key file outside state_dir and the config's directory is refused and writes nothing (the canary key is not created); --allow-path for that directory lets it through")
    func outsidePaths() throws {
        let s = try Self.sandbox("outside")
        defer { s.close() }
        try s.configure()
        // The config names T's key in a directory of its own: what a forged bundle would do
        // with /etc/cron.d or ~root/.ssh, here inside the sandbox.
        let outside = "\(s.dir)/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        let canary = "\(outside)/canary-key"
        try FileManager.default.copyItem(atPath: "\(s.dir)/relay/keys/t", toPath: canary)
        let keyBytes = try Data(contentsOf: URL(fileURLWithPath: canary))
        let text = try String(contentsOfFile: s.configPath, encoding: .utf8)
        #expect(text.contains("\"\(s.dir)/relay/keys/t\""))
        try text.replacingOccurrences(of: "\"\(s.dir)/relay/keys/t\"", with: "\"\(canary)\"").write(toFile: s.configPath, atomically: true, encoding: .utf8)
        let (secret, _) = try Self.recoveryInit(config: s.configPath)
        let bundle = "\(s.dir)/outside.bundle"
        try Proc.check(try Proc.binary("relayctl"), ["state", "export", bundle, "--config", s.configPath])
        // R is lost.
        for p in [s.stateDir, s.configPath, "\(s.dir)/relay/keys", s.knownHosts, outside] { try FileManager.default.removeItem(atPath: p) }
        let before = Self.listing(s.dir)
        let owner = geteuid() == 0 ? ["--owner", "root"] : []
        let refused = try Self.piped(["recover", "--file", bundle, "--config", s.configPath] + owner, stdin: Data((secret + "\n").utf8))
        #expect(refused.status == 1 && refused.stderr.contains("\(canary) outside") && refused.stderr.contains("--allow-path")
                && refused.stderr.contains("nothing was written"), "\(refused.output)")
        #expect(!FileManager.default.fileExists(atPath: canary) && !FileManager.default.fileExists(atPath: outside))
        #expect(Self.listing(s.dir) == before, "something was written")
        // The operator checked the paths: allowed, recovered, the key byte-identical.
        let allowed = try Self.piped(["recover", "--file", bundle, "--config", s.configPath, "--allow-path", outside] + owner,
                                     stdin: Data((secret + "\n").utf8))
        #expect(allowed.status == 0, "\(allowed.output)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: canary)) == keyBytes)
    }

    @Test("refusals, each writing nothing: a wrong secret, a truncated, a tampered bundle, another relay's bundle, garbage, and recovery onto a host that has a vault")
    func refusals() throws {
        let s = try Self.sandbox("refuse")
        defer { s.close() }
        try s.configure()
        let (secretA, fpA) = try Self.recoveryInit(config: s.configPath)
        let bundleA = "\(s.dir)/a.bundle"
        let export = try Proc.run(try Proc.binary("relayctl"), ["state", "export", bundleA, "--config", s.configPath])
        #expect(export.status == 0 && export.stdout.contains(fpA), "\(export.output)")
        var st = stat()
        #expect(stat(bundleA, &st) == 0 && st.st_mode & 0o777 == 0o600)
        // No passphrase, private key or vault key in clear in the bundle (the scan can fail:
        // they are all in R's files).
        var secrets = [Data(s.passphrase.utf8), try Data(contentsOf: URL(fileURLWithPath: "\(s.stateDir)/vault.key"))]
        for key in ["b", "t"] { secrets.append(try Data(contentsOf: URL(fileURLWithPath: "\(s.dir)/relay/keys/\(key)"))) }
        let exported = [bundleA: try Data(contentsOf: URL(fileURLWithPath: bundleA))]
        #expect(Self.containing(secrets, in: exported).isEmpty)
        #expect(Self.containing(secrets, in: Self.files(under: "\(s.dir)/relay")).count >= 3)
        #expect(try Proc.run(try Proc.binary("relayctl"), ["state", "export", bundleA, "--config", s.configPath]).status == 1)
        // A second relay on the same host (its own state_dir, vault and recovery key).
        let configB = "\(s.dir)/relay/relay-b.toml"
        let textB = try String(contentsOfFile: s.configPath, encoding: .utf8)
            .replacingOccurrences(of: "name = \"relay-a\"", with: "name = \"relay-b\"")
            .replacingOccurrences(of: "state_dir = \"\(s.stateDir)\"", with: "state_dir = \"\(s.dir)/relay/state-b\"")
        try textB.write(toFile: configB, atomically: true, encoding: .utf8)
        try Proc.check(try Proc.binary("relayctl"), ["vault", "init", "--config", configB])
        let (secretB, _) = try Self.recoveryInit(config: configB)
        let bundleB = "\(s.dir)/b.bundle"
        try Proc.check(try Proc.binary("relayctl"), ["state", "export", bundleB, "--config", configB])

        let sealed = try Data(contentsOf: URL(fileURLWithPath: bundleA))
        let truncated = "\(s.dir)/truncated.bundle", tampered = "\(s.dir)/tampered.bundle", garbage = "\(s.dir)/garbage.bundle"
        try sealed.prefix(sealed.count - 40).write(to: URL(fileURLWithPath: truncated))
        var t = sealed
        t[sealed.count / 2] ^= 0x40
        try t.write(to: URL(fileURLWithPath: tampered))
        try Data("[relay]\nstate_dir = \"/tmp/x\"\n".utf8).write(to: URL(fileURLWithPath: garbage))

        // Recovery targets a fresh place; the bundle's own paths exist here, so also try one
        // whose vault is gone to prove the refusals come first.
        let target = "\(s.dir)/fresh"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        let before = Self.listing(s.dir)
        let cases: [(String, String, [String], String)] = [
            ("wrong secret", bundleA, [], "was sealed to recovery key \(fpA), but the secret given belongs to"),
            ("truncated", truncated, [], "cut short"),
            ("tampered", tampered, [], "damaged or was altered"),
            ("another relay's bundle", bundleB, ["--relay", "relay-a"], "is the state of relay 'relay-b', not of 'relay-a'"),
            ("garbage", garbage, [], "is not a borg-relay state bundle"),
        ]
        for (what, file, extra, message) in cases {
            let secret = what == "wrong secret" ? secretB : secretA
            let r = try Self.piped(["recover", "--file", file, "--config", "\(target)/relay.toml"] + extra, stdin: Data((secret + "\n").utf8))
            #expect(r.status == 1, "\(what): \(r.output)")
            #expect(r.stderr.contains(message), "\(what): \(r.stderr)")
            #expect(r.stderr.contains("nothing was written") || r.stderr.contains("nothing was"), "\(what): \(r.stderr)")
            #expect(Self.listing(s.dir) == before, "\(what): something was written")
        }
        // Another relay's bundle with its own secret but this relay's name: refused too.
        let other = try Self.piped(["recover", "--file", bundleB, "--config", "\(target)/relay.toml", "--relay", "relay-a"],
                                   stdin: Data((secretB + "\n").utf8))
        #expect(other.status == 1 && other.stderr.contains("relay-b"), "\(other.output)")
        // The right secret and bundle, but this host has the vault already: refused, nothing written.
        let ontoVault = try Self.piped(["recover", "--file", bundleA, "--config", "\(target)/relay.toml"], stdin: Data((secretA + "\n").utf8))
        #expect(ontoVault.status == 1 && ontoVault.stderr.contains("already has a vault"), "\(ontoVault.output)")
        // Not a secret at all (a passphrase pasted by mistake): a usage error.
        let notSecret = try Self.piped(["recover", "--file", bundleA, "--config", "\(target)/relay.toml"], stdin: Data((s.passphrase + "\n").utf8))
        #expect(notSecret.status == 2 && notSecret.stderr.contains("not a recovery secret"), "\(notSecret.output)")
        #expect(Self.listing(s.dir) == before, "something was written")
    }

    @Test("the full drill: two clients back up, the state goes to B, R's state_dir, config, keys and known_hosts are deleted; recover from B rebuilds them; check passes, a new backup works, an archive from before the loss restores byte-identically, the tamper alarm knows every archive id, and B's bytes hold no secret in clear")
    func fullDrill() throws {
        let s = try Self.sandbox("drill")
        defer { s.close() }
        s.relayExtra += ["[metrics]", "textfile = \"\(s.dir)/metrics.prom\"", "textfile_interval = 1"]
        try writeRandomFile("\(s.dataDir)/f1.bin", count: 300_000)
        let original1 = try Data(contentsOf: URL(fileURLWithPath: "\(s.dataDir)/f1.bin"))
        let sealed = try s.sealed()
        let data2 = try s.addClient("web2", sealed: sealed)
        try writeRandomFile("\(data2)/f2.bin", count: 200_000)
        let original2 = try Data(contentsOf: URL(fileURLWithPath: "\(data2)/f2.bin"))
        try s.writeConfig(sealed: sealed)
        let (secret, fingerprint) = try Self.recoveryInit(config: s.configPath)

        let d = try AgentDaemon(s)
        #expect(try d.ctl(["run", "web1", "--follow"]).status == 0)
        #expect(try d.ctl(["run", "web2", "--follow"]).status == 0)
        let state = try d.ctl(["state", "backup", "--json"])
        #expect(state.status == 0, "\(state.output)")
        let result = try ControlAPI.decoder().decode(StateBackupResult.self, from: Data(state.stdout.utf8))
        #expect(result.error == nil && result.archive?.hasPrefix("relay-state-relay-a-") == true, "\(result)")
        // The gauge (textfile every second).
        var metrics = ""
        for _ in 0..<150 where !metrics.contains("borg_relay_state_backup_last_success_timestamp_seconds ") {
            usleep(100_000)
            metrics = (try? String(contentsOfFile: "\(s.dir)/metrics.prom", encoding: .utf8)) ?? ""
        }
        #expect(metrics.contains("borg_relay_state_backup_last_success_timestamp_seconds ")
                && metrics.contains("borg_relay_state_backup_last_success 1"), "\(metrics)")
        #expect(d.stop() == 0)
        // check names the last state backup: the archive just made, its age.
        let checked = try Proc.run(try Proc.binary("relayctl"), ["check", "--config", s.configPath])
        let line = checked.stdout.split(separator: "\n").first { $0.contains("backed up to") }.map(String.init) ?? checked.output
        #expect(line.contains("last succeeded just now (archive \(result.archive ?? "?"))"), "\(line)")
        #expect(line.contains("sealed to recovery key \(fingerprint)"), "\(line)")

        let repo2 = "\(s.dir)/b/repo-web2"
        func ids(_ repo: String) throws -> [String: String] {
            let archives = try #require(PresentArchive.parse(borgListJSON: Data(try s.borg(["list", "--json", repo]).stdout.utf8)))
            return Dictionary(uniqueKeysWithValues: archives.map { ($0.name, $0.id) })
        }
        let before1 = try ids(s.repo), before2 = try ids(repo2)
        #expect(before1.count == 1 && before2.count == 1)

        // B's bytes: the state repository holds no secret in clear.
        let stateRepo = "\(s.dir)/b/relay-state"
        let onB = Self.files(under: stateRepo)
        #expect(onB.keys.contains { $0.contains("/data/") }, "no segments in \(stateRepo)")
        var secrets: [Data] = [Data(s.passphrase.utf8), try Data(contentsOf: URL(fileURLWithPath: "\(s.stateDir)/vault.key"))]
        for key in ["b", "t"] {
            let text = try String(contentsOfFile: "\(s.dir)/relay/keys/\(key)", encoding: .utf8)
            secrets.append(Data(text.utf8))
            // Each base64 line of the private key on its own.
            secrets += text.split(separator: "\n").filter { !$0.hasPrefix("-----") && $0.count > 30 }.map { Data($0.utf8) }
        }
        #expect(Self.containing(secrets, in: onB).isEmpty, "secrets in clear on B: \(Self.containing(secrets, in: onB))")
        // The scan can fail: the same secrets are in R's state_dir and keys.
        #expect(!Self.containing(secrets, in: Self.files(under: "\(s.dir)/relay")).isEmpty)

        // R is lost: state_dir, config, keys, known_hosts.
        let originalConfig = try Data(contentsOf: URL(fileURLWithPath: s.configPath))
        for p in [s.stateDir, s.configPath, "\(s.dir)/relay/keys", s.knownHosts] { try FileManager.default.removeItem(atPath: p) }

        // A new key authorized on B for the state repository only, and B's fingerprint.
        let newKey = "\(s.dir)/newkey"
        try Proc.check("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "recovery", "-f", newKey])
        let newPub = try String(contentsOfFile: newKey + ".pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let authorized = try String(contentsOfFile: "\(s.b.dir)/authorized_keys", encoding: .utf8)
        try (authorized + "command=\"borg serve --append-only --restrict-to-repository \(stateRepo)\",restrict \(newPub)\n")
            .write(toFile: "\(s.b.dir)/authorized_keys", atomically: true, encoding: .utf8)
        let fp = try #require(try Proc.check("/usr/bin/ssh-keygen", ["-lf", "\(s.b.dir)/host_key.pub"]).stdout.split(separator: " ").dropFirst().first)

        // A wrong fingerprint: refused before anything is fetched or written.
        let wrongFP = try Self.piped(["recover", "--server", "127.0.0.1:\(s.b.port)", "--user", s.user, "--key", newKey,
                                      "--repository", stateRepo, "--host-key-fingerprint", "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                      "--config", s.configPath], stdin: Data((secret + "\n").utf8))
        #expect(wrongFP.status == 1 && wrongFP.stderr.contains("offers no host key with fingerprint"), "\(wrongFP.output)")
        // An attacker on B replays the bundle under a newer name (a rollback dressed as the
        // newest state): its authenticated header says otherwise, so it is passed over and
        // the genuine archive is taken.
        let genuine = try #require(result.archive)
        let stampFormat = DateFormatter()
        stampFormat.locale = Locale(identifier: "en_US_POSIX")
        stampFormat.timeZone = TimeZone(identifier: "UTC")
        stampFormat.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        let made = try #require(stampFormat.date(from: String(genuine.suffix(16))))
        let replay = "relay-state-relay-a-" + stampFormat.string(from: made.addingTimeInterval(3600))
        let replayDir = "\(s.dir)/replay"
        try FileManager.default.createDirectory(atPath: replayDir, withIntermediateDirectories: true)
        var attacker = ProcessInfo.processInfo.environment
        attacker["BORG_BASE_DIR"] = "\(s.dir)/attacker-borg-base"
        attacker["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "yes"
        @discardableResult func attackerBorg(_ args: [String]) throws -> ProcessResult { try Proc.check(s.localBorg, args, env: attacker, stdin: Data(), cwd: replayDir) }
        try attackerBorg(["extract", "\(stateRepo)::\(genuine)"])
        let replayed = try FileManager.default.contentsOfDirectory(atPath: replayDir)
        try attackerBorg(["create", "\(stateRepo)::\(replay)"] + replayed)
        #expect(try attackerBorg(["list", "--short", stateRepo]).stdout.contains(replay))
        #expect(!FileManager.default.fileExists(atPath: s.configPath) && !FileManager.default.fileExists(atPath: s.stateDir))

        let started = Date()
        // As root with no state_dir yet, the owner must be named.
        let noOwner = try Self.piped(["recover", "--server", "127.0.0.1:\(s.b.port)", "--user", s.user, "--key", newKey,
                                      "--repository", stateRepo, "--host-key-fingerprint", String(fp), "--config", s.configPath],
                                     stdin: Data((secret + "\n").utf8))
        if geteuid() == 0 {
            #expect(noOwner.status == 1 && noOwner.stderr.contains("--owner"), "\(noOwner.output)")
            #expect(!FileManager.default.fileExists(atPath: s.stateDir) && !FileManager.default.fileExists(atPath: s.configPath))
        }
        let owner = geteuid() == 0 ? ["--owner", "root"] : []
        let rec = try Self.piped(["recover", "--server", "127.0.0.1:\(s.b.port)", "--user", s.user, "--key", newKey,
                                  "--repository", stateRepo, "--host-key-fingerprint", String(fp), "--config", s.configPath] + owner,
                                 stdin: Data((secret + "\n").utf8))
        #expect(rec.status == 0, "\(rec.output)")
        #expect(rec.stdout.contains("recovered relay relay-a"), "\(rec.stdout)")
        #expect(rec.stderr.contains("archive \(replay) not used") && rec.stderr.contains("is named for") && rec.stderr.contains("fetched \(genuine)"),
                "\(rec.stderr)")
        print("recover from B took \(String(format: "%.1f", Date().timeIntervalSince(started))) s (recovery key \(fingerprint))")
        #expect(try Data(contentsOf: URL(fileURLWithPath: s.configPath)) == originalConfig)
        // The secret was used, not kept: nowhere on disk after the recovery.
        let raw = try #require(Data(base64Encoded: String(secret.dropFirst(5))))
        #expect(Self.containing([Data(secret.utf8), Data(secret.dropFirst(5).utf8), raw], in: Self.files(under: s.dir)).isEmpty)
        for p in [s.configPath, "\(s.stateDir)/vault.key", "\(s.stateDir)/history.sqlite", "\(s.dir)/relay/keys/b", "\(s.dir)/relay/keys/t", s.knownHosts] {
            var st = stat()
            #expect(stat(p, &st) == 0 && st.st_mode & 0o777 == 0o600 && st.st_uid == geteuid(), "\(p): \(String(st.st_mode, radix: 8))")
        }
        var dst = stat()
        #expect(stat(s.stateDir, &dst) == 0 && dst.st_mode & 0o777 == 0o700)

        // check passes; the tamper alarm's records are back, every archive id made before the loss.
        let check = try Proc.run(try Proc.binary("relayctl"), ["check", "web1", "web2", "--config", s.configPath])
        #expect(check.status == 0, "\(check.output)")
        #expect(check.stdout.contains("backed up to \(stateRepo) on server vault"), "\(check.stdout)")
        let history = try HistoryStore(path: "\(s.stateDir)/history.sqlite")
        #expect(Dictionary(uniqueKeysWithValues: try history.expectedArchives(client: "web1").map { ($0.name, $0.id ?? "") }) == before1)
        #expect(Dictionary(uniqueKeysWithValues: try history.expectedArchives(client: "web2").map { ($0.name, $0.id ?? "") }) == before2)

        // The daemon starts; a new backup works; the archives from before the loss restore identically.
        try writeRandomFile("\(s.dataDir)/f1.bin", count: 1000)
        let d2 = try AgentDaemon(s)
        let after = try d2.ctl(["run", "web1", "--follow"])
        #expect(after.status == 0, "\(after.output)")
        #expect(try s.archives().count == 2)
        #expect(d2.stop() == 0)
        let restored = "\(s.dir)/restored"
        try FileManager.default.createDirectory(atPath: restored, withIntermediateDirectories: true)
        try s.borg(["extract", "\(s.repo)::\(try #require(before1.keys.first))"], cwd: restored)
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(restored)\(s.dataDir)/f1.bin")) == original1)
        try s.borg(["extract", "\(repo2)::\(try #require(before2.keys.first))"], cwd: restored)
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(restored)\(data2)/f2.bin")) == original2)
        // Recovering again onto the recovered host: refused (the vault exists), nothing changed.
        let listing = Self.listing("\(s.dir)/relay")
        let twice = try Self.piped(["recover", "--server", "127.0.0.1:\(s.b.port)", "--user", s.user, "--key", newKey,
                                    "--repository", stateRepo, "--host-key-fingerprint", String(fp), "--config", s.configPath] + owner,
                                   stdin: Data((secret + "\n").utf8))
        #expect(twice.status == 1 && twice.stderr.contains("already has a vault"), "\(twice.output)")
        #expect(Self.listing("\(s.dir)/relay") == listing)
    }

    @Test("the daemon backs its state up on state_schedule and after a reload; without a recovery key it says how to make one")
    func scheduleAndReload() throws {
        let s = try Self.sandbox("sched")
        defer { s.close() }
        s.relayExtra.append("state_schedule = \"* * * * *\"")
        let events = "\(s.dir)/events.json"
        s.extraTables.append("[notify.cmd]\nkind = \"command\"\nargv = [\"/bin/sh\", \"-c\", \"cat >> \(events); echo >> \(events)\"]\non = [\"state_backup_failed\"]")
        try s.configure()
        let d = try AgentDaemon(s)
        let none = try d.ctl(["state", "backup"])
        #expect(none.status == 1 && none.stderr.contains("relayctl recovery init"), "\(none.output)")
        // The failure is an event (state_backup_failed) for the notifiers.
        var delivered = ""
        for _ in 0..<50 where !delivered.contains("state_backup_failed") {
            usleep(100_000)
            delivered = (try? String(contentsOfFile: events, encoding: .utf8)) ?? ""
        }
        #expect(delivered.contains("\"event\":\"state_backup_failed\"") && delivered.contains("relayctl recovery init"), "\(delivered)")
        _ = try Self.recoveryInit(config: s.configPath)
        let stateRepo = "\(s.dir)/b/relay-state"
        var env = ProcessInfo.processInfo.environment
        env["BORG_BASE_DIR"] = "\(s.dir)/check-borg-base"
        env["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "yes"
        func archives() -> [String] {
            guard let r = try? Proc.run(Borgs.system, ["list", "--short", stateRepo], env: env), r.status == 0 else { return [] }
            return r.stdout.split(separator: "\n").map(String.init)
        }
        func waitLog(_ text: String, seconds: Double) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while !d.log.contains(text) && Date() < deadline { usleep(200_000) }
            return d.log.contains(text)
        }
        #expect(waitLog("state backup (schedule): state backed up", seconds: 80), "\(d.log)")
        let scheduled = archives()
        #expect(scheduled.count == 1 && scheduled[0].hasPrefix("relay-state-relay-a-"), "\(scheduled) \(d.log)")
        // A reload (the schedule now yearly, so only the reload can make the next one).
        s.relayExtra.removeLast()
        s.relayExtra.append("state_schedule = \"0 0 1 1 *\"")
        try s.configure()
        sleep(1)
        d.process.kill(SIGHUP)
        #expect(waitLog("state backup (reload): state backed up", seconds: 30), "\(d.log)")
        let reloaded = archives()
        #expect(reloaded.count == 2, "\(reloaded) \(d.log)")
        sleep(2)
        #expect(archives().count == 2)
        #expect(d.stop() == 0)
    }
}
