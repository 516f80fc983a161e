import Foundation
import RelayCore
import Testing

@Suite("Client guard (contrib/guard/borg-relay-guard) with real sshd and borg", .serialized)
struct GuardTests {
    static let guardPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../contrib/guard/borg-relay-guard").standardized.path

    @Test("the relay's commands pass the guard (tcp and unix, hooks); a shell, borg delete, a path outside the allowlist and shell syntax are refused with 126")
    func guardAllowsTheRelayAndNothingElse() throws {
        let s = try Sandbox(name: "guard")
        defer { s.close() }
        try Data("guarded".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        let conf = "\(s.dir)/t/guard.conf"
        // authorized-keys prints T's line with the guard and the guard's allowlist.
        let guardLine = "guard = ['/usr/bin/python3', '\(Self.guardPath)', '--config', '\(conf)']"
        s.clientExtra = [guardLine, "pre = ['sh', '-c', 'echo pre-ok']"]
        try s.configure()
        let printed = try Proc.check(try Proc.binary("relayctl"), ["authorized-keys", "web1", "--config", s.configPath]).stdout
        let tLine = try #require(printed.split(separator: "\n").first { $0.hasPrefix("command=") && $0.hasSuffix("borg-relay:web1") },
                                 "\(printed)")
        #expect(tLine.hasPrefix("command=\"/usr/bin/python3 \(Self.guardPath) --config \(conf)\",restrict,port-forwarding,"), "\(tLine)")
        let allowlist = printed.split(separator: "\n").filter { $0.hasPrefix("#   ") }.map { $0.dropFirst(4) }
        #expect(allowlist == ["path \(s.dataDir)", "hook sh -c 'echo pre-ok'"], "\(printed)")
        try (allowlist.joined(separator: "\n") + "\nrestore-to \(s.dir)/t/restores\n").write(toFile: conf, atomically: true, encoding: .utf8)
        try (tLine + "\n").write(toFile: "\(s.t.dir)/authorized_keys", atomically: true, encoding: .utf8)

        // Through sshd: a backup with an allowed pre hook, over tcp and over unix.
        let tcp = try s.runAgent()
        #expect(tcp.status == 0, "\(tcp.output)")
        // (relocated_ok: the guard lets BORG_RELOCATED_REPO_ACCESS_IS_OK=yes through.)
        s.clientExtra = [guardLine, "transport = \"unix\"", "relocated_ok = true"]
        try s.configure()
        let unix = try s.runAgent()
        #expect(unix.status == 0, "\(unix.output)")
        #expect(try s.archives().count == 2)
        // The preflight probe passes too.
        let check = try Proc.run(try Proc.binary("relayctl"), ["check", "--config", s.configPath])
        #expect(check.stdout.contains("ok    web1: socat on the client"), "\(check.stdout)")
        #expect(check.stdout.contains("ok    web1: socket listener on the client"), "\(check.stdout)")

        // A path outside the allowlist: the run fails with the guard's reason. (Over tcp: a
        // unix listener whose borg never connects would wait for its listen-timeout.)
        s.clientExtra = [guardLine]
        s.paths = [s.dataDir, "/etc/hostname"]
        try s.configure()
        let outside = try s.runAgent()
        #expect(outside.status == 1)
        #expect(outside.stdout.contains("refused") && outside.stdout.contains("/etc/hostname"), "\(outside.stdout)")
        s.paths = [s.dataDir]

        // Direct: what anyone with the key could send.
        let cfg = try ConfigLoader.load(path: s.configPath)
        let plan = BackupPlan(client: try cfg.client("web1"))
        let good = plan.createCommand(port: 4711, withPassphrase: true)
        let goodScript = plan.createScript(connector: BackupPlan.connector(port: 4711), withPassphrase: true)
        let marker = "\(s.dir)/t/INJECTED"
        let sockDir = BackupPlan.unixSocketDir(random: String(repeating: "0f", count: 16))
        func wrapped(_ script: String, _ args: [String] = []) -> String { Shell.anyShell(script, arguments: args) }
        let refused: [(String, String)] = [
            ("interactive login", ""),
            ("a shell", "sh"),
            ("a shell command", "bash -c id"),
            ("borg delete", wrapped("exec env 'BORG_RSH=sh -c '\\''exec socat STDIO TCP:127.0.0.1:4711'\\''' borg delete -- 'ssh://borg-relay\(s.repo)::a'")),
            ("a path outside the allowlist", good.replacingOccurrences(of: s.dataDir, with: "/root")),
            ("; after the command", good + "; touch \(marker)"),
            ("; inside the script", wrapped(goodScript + "; touch \(marker)")),
            ("$() in a word", wrapped(goodScript.replacingOccurrences(of: s.dataDir, with: "\(s.dataDir)$(touch \(marker))"))),
            ("backticks", good + " `touch \(marker)`"),
            ("a newline", good + "\ntouch \(marker)"),
            ("a newline in the script", wrapped(goodScript + "\ntouch \(marker)")),
            ("another BORG_RSH", wrapped(goodScript.replacingOccurrences(of: "exec socat STDIO TCP:127.0.0.1:4711", with: "touch \(marker)"))),
            ("a hook not in the config", BackupPlan.hookCommand(argv: ["touch", marker], timeout: 5, runID: "x", client: "web1", result: nil)),
            ("a hook with another variable", wrapped(BackupPlan.hookScript, ["5", "env", "BORG_RSH=x", "sh", "-c", "echo pre-ok"])),
            ("a hook script changed", wrapped(BackupPlan.hookScript.replacingOccurrences(of: "exec timeout -k 10", with: "touch \(marker); exec timeout -k 10"),
                                              ["5", "env", "BORG_RELAY_RUN=x", "sh", "-c", "echo pre-ok"])),
            ("the relay's old shape (unwrapped)", goodScript),
            ("the script double-quoted", "exec sh -c \"\(goodScript)\""),
            ("quoted another way than the relay does", good.replacingOccurrences(of: "exec sh -c '", with: "exec sh -c ''''")),
            ("an extra argument after the script", good + " x"),
            ("any other script", wrapped("touch \(marker)")),
            ("the listener with a changed script", wrapped(BackupPlan.unixListenerScript + "; touch \(marker)", [sockDir])),
            ("the listener in another directory", wrapped(BackupPlan.unixListenerScript, ["/tmp/x; touch \(marker)"])),
            ("check's socket probe changed", wrapped(BackupPlan.unixProbeScript + "; touch \(marker)", [sockDir])),
            ("check's socket probe in another directory", wrapped(BackupPlan.unixProbeScript, ["/tmp/x; touch \(marker)"])),
            ("check's socket probe with a second argument", wrapped(BackupPlan.unixProbeScript, [sockDir, "; touch \(marker)"])),
            ("relocated_ok with another value", wrapped(goodScript.replacingOccurrences(of: " borg create", with: " BORG_RELOCATED_REPO_ACCESS_IS_OK=1 borg create"))),
            ("the probe of another borg", BackupPlan.probeCommand(borgPath: "touch \(marker);borg")),
        ]
        for (what, command) in refused {
            var env = ProcessInfo.processInfo.environment
            env["SSH_ORIGINAL_COMMAND"] = command
            let r = try Proc.run("/usr/bin/python3", [Self.guardPath, "--config", conf], env: env, timeout: 30)
            #expect(r.status == 126, "\(what) was not refused: \(r.output)")
            #expect(r.stderr.contains("borg-relay-guard: refused"), "\(what): \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: marker), "an injected command ran")
    }

    @Test("with dac-read-search, borg create under a non-root login reads root's 0600 files and 0700 directories (ambient CAP_DAC_READ_SEARCH); without it, it cannot",
          .enabled(if: geteuid() == 0, "needs root: creates a login user and sets a file capability"))
    func ambientCapability() throws {
        let s = try Sandbox(name: "guardcap")
        defer { s.close() }
        // A login user for T (sshd runs the forced command through its shell); '*' is not a
        // locked password for sshd, and the account goes again at the end.
        let login = "brt" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(10).lowercased()
        try Proc.check("/usr/sbin/useradd", ["--system", "--no-create-home", "--home-dir", "\(s.dir)/t/home",
                                             "--shell", "/bin/sh", "--password", "*", login])
        defer { _ = try? Proc.run("/usr/sbin/userdel", [login]) }
        let pw = try #require(getpwnam(login))
        let (uid, gid) = (pw.pointee.pw_uid, pw.pointee.pw_gid)
        for d in ["\(s.dir)/t/home", "\(s.dir)/t/borg-base"] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
            chown(d, uid, gid)
        }
        // root's private data: a 0600 file and a file in a 0700 directory.
        let secret = Data((0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try secret.write(to: URL(fileURLWithPath: "\(s.dataDir)/secret"))
        chmod("\(s.dataDir)/secret", 0o600)
        try FileManager.default.createDirectory(atPath: "\(s.dataDir)/private", withIntermediateDirectories: true)
        try Data("inner".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/private/inner"))
        chmod("\(s.dataDir)/private/inner", 0o600)
        chmod("\(s.dataDir)/private", 0o700)

        let setpriv = "\(s.dir)/t/setpriv"
        try Proc.check("/usr/bin/install", ["-m", "0755", "/usr/bin/setpriv", setpriv])
        let conf = "\(s.dir)/t/guard.conf"
        let tPub = try String(contentsOfFile: "\(s.dir)/relay/keys/t.pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        try "command=\"/usr/bin/python3 \(Self.guardPath) --config \(conf)\",restrict,port-forwarding,permitlisten=\"127.0.0.1:*\",permitopen=\"127.0.0.1:9\" \(tPub)\n"
            .write(toFile: "\(s.t.dir)/authorized_keys", atomically: true, encoding: .utf8)
        s.clientUser = login
        try s.configure()

        // Without the rule: borg on T cannot read them (it warns and skips them).
        try "path \(s.dataDir)\n".write(toFile: conf, atomically: true, encoding: .utf8)
        let plain = try s.runAgent()
        #expect(plain.stdout.contains("Permission denied"), "\(plain.output)")
        let first = try #require(try s.archives().last)
        let plainPaths = try s.archivePaths(first)
        #expect(!plainPaths.contains { $0.hasSuffix("/secret") } && !plainPaths.contains { $0.hasSuffix("/private/inner") }, "\(plainPaths)")

        // The rule names a setpriv without the capability: refused with the setcap fix.
        try "path \(s.dataDir)\ndac-read-search \(setpriv)\n".write(toFile: conf, atomically: true, encoding: .utf8)
        let uncapped = try s.runAgent()
        #expect(uncapped.status != 0)
        #expect(uncapped.output.contains("setcap cap_dac_read_search+ep \(setpriv)"), "\(uncapped.output)")

        // With the capability on the setpriv copy: everything is backed up, byte for byte.
        try Proc.check("/usr/sbin/setcap", ["cap_dac_read_search+ep", setpriv])
        let capped = try s.runAgent()
        #expect(capped.status == 0, "\(capped.output)")
        let last = try #require(try s.archives().last)
        let out = "\(s.dir)/extract"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try s.borg(["extract", "\(s.repo)::\(last)"], cwd: out)
        let rel = String(s.dataDir.dropFirst())
        #expect(FileManager.default.contents(atPath: "\(out)/\(rel)/secret") == secret)
        #expect(FileManager.default.contents(atPath: "\(out)/\(rel)/private/inner") == Data("inner".utf8))
    }
}
