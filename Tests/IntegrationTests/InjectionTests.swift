import Foundation
import RelayCore
import Testing

/// The option injections of issue 13, tried as an attacker would: each payload leaves a
/// canary file if it gets through. Through `relayctl borg` (the relay's grammar) against an
/// unguarded T, and through sshd + the client guard (its grammar) with the relay's key.
@Suite("Injection: borg options from a request (relayctl borg, the client guard) with real sshd and borg", .serialized)
struct InjectionTests {
    struct Payload {
        let what: String
        let argv: [String]
        /// The file the payload creates when it runs.
        let canary: String
        /// What the refusal must name.
        let named: String
    }

    /// `c`: the canary directory; `home`: where borg on T runs (its extract writes there).
    static func payloads(archive a: String, rel: String, c: String, home: String) -> [Payload] {
        [
            Payload(what: "--rsh=", argv: ["list", "--rsh=sh -c 'touch \(c)/rsh'", "::\(a)"], canary: "\(c)/rsh", named: "'--rsh=sh -c"),
            Payload(what: "--rsh= after the positional", argv: ["list", "::\(a)", "--rsh=sh -c 'touch \(c)/rsh-after'"], canary: "\(c)/rsh-after", named: "option --rsh"),
            Payload(what: "--rsh VALUE", argv: ["list", "--rsh", "sh -c 'touch \(c)/rsh-sep'", "::\(a)"], canary: "\(c)/rsh-sep", named: "option --rsh"),
            Payload(what: "--rs= (abbreviation)", argv: ["list", "--rs=sh -c 'touch \(c)/rs'", "::\(a)"], canary: "\(c)/rs", named: "'--rs=sh"),
            Payload(what: "--rsh reading borg's stdin (the passphrase)",
                    argv: ["list", "--rsh=sh -c 'cat /proc/$PPID/fd/0 > \(c)/passphrase'", "::\(a)"], canary: "\(c)/passphrase", named: "option --rsh"),
            Payload(what: "--tar-filter=", argv: ["export-tar", "--tar-filter=touch \(c)/tar", "::\(a)", "-"], canary: "\(c)/tar", named: "option --tar-filter"),
            Payload(what: "--tar-filter VALUE after the positionals", argv: ["export-tar", "::\(a)", "-", "--tar-filter", "touch \(c)/tar-sep"],
                    canary: "\(c)/tar-sep", named: "option --tar-filter"),
            Payload(what: "--tar-f= (abbreviation)", argv: ["export-tar", "--tar-f=touch \(c)/tar-f", "::\(a)", "-"], canary: "\(c)/tar-f", named: "'--tar-f=touch"),
            Payload(what: "--debug-profile=FILE", argv: ["list", "--debug-profile=\(c)/profile", "::\(a)"], canary: "\(c)/profile", named: "option --debug-profile"),
            Payload(what: "--debug-p= (abbreviation)", argv: ["info", "--debug-p=\(c)/profile-p", "::\(a)"], canary: "\(c)/profile-p", named: "'--debug-p="),
            Payload(what: "export-tar ::A FILE", argv: ["export-tar", "::\(a)", "\(c)/export.tar"], canary: "\(c)/export.tar", named: "FILE must be -"),
            Payload(what: "extract -- ::A path --dry-run (the flag as a path)", argv: ["extract", "--", "::\(a)", "\(rel)/readme.txt", "--dry-run"],
                    canary: "\(home)/\(rel)/readme.txt", named: "needs --stdout"),
        ]
    }

    static func home() -> String { String(cString: getpwuid(geteuid())!.pointee.pw_dir) }

    /// Removes what an extract that got through wrote into the login's home: HOME/tmp/SANDBOX
    /// (unique to the sandbox; the test has failed already if it exists).
    static func removeStrayExtract(home: String, rel: String) {
        let mine = rel.split(separator: "/").prefix(2).joined(separator: "/")
        guard mine.contains("borg-relay-it-") else { return }
        try? FileManager.default.removeItem(atPath: "\(home)/\(mine)")
    }

    @Test("relayctl borg against an unguarded T: every injection is refused naming the argument, no canary; read commands still work")
    func relayctlRefusesInjections() throws {
        let s = try Sandbox(name: "inject")
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        try Data("readme\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/readme.txt"))
        try s.configure()
        let d = try AgentDaemon(s)
        let backup = try d.ctl(["run", "web1", "--follow"])
        #expect(backup.status == 0, "\(backup.output)")
        let archive = try #require(try s.archives().first)
        let rel = String(s.dataDir.dropFirst())
        let c = "\(s.dir)/canary"
        try FileManager.default.createDirectory(atPath: c, withIntermediateDirectories: true)
        let home = Self.home()
        #expect(!FileManager.default.fileExists(atPath: "\(home)/\(rel)"), "a stale extract in \(home)")
        defer { Self.removeStrayExtract(home: home, rel: rel) }

        let started = Date()
        for p in Self.payloads(archive: archive, rel: rel, c: c, home: home) {
            let r = try d.ctl(["borg", "web1", "--"] + p.argv)
            #expect(r.status != 0, "\(p.what) was not refused: \(r.output)")
            #expect(r.stderr.contains(p.named), "\(p.what): the refusal does not name \(p.named): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: p.canary), "\(p.what) ran: \(p.canary) exists")
        }
        print("relayctl borg: \(Self.payloads(archive: archive, rel: rel, c: c, home: home).count) injections refused in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        #expect(try FileManager.default.contentsOfDirectory(atPath: c).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(home)/\(rel)"), "extract wrote into \(home)")
        // A --format that walks from a value to borg's globals would print its environment.
        let leak = try d.ctl(["borg", "web1", "--", "list", "--format={mtime}|{mtime.__init__.__globals__[os].environ[BORG_RSH]}{NL}", "::\(archive)"])
        #expect(leak.status != 0 && leak.stderr.contains("is not a plain key"), "\(leak.output)")
        #expect(!leak.stdout.contains("socat"), "borg's environment leaked: \(leak.stdout)")
        // Refused before anything ran: no borg run was even queued.
        #expect(try d.runs("web1").filter { $0.kind == .borg }.isEmpty)

        // Legitimate reads work end to end.
        let list = try d.ctl(["borg", "web1", "--", "list", "--short", "::\(archive)"])
        #expect(list.status == 0 && list.stdout.contains("\(rel)/readme.txt"), "\(list.output)")
        let cat = try d.ctl(["borg", "web1", "--", "extract", "::\(archive)", "\(rel)/readme.txt", "--stdout"])
        #expect(cat.status == 0 && cat.stdout == "readme\n", "\(cat.output)")
        let after = try d.ctl(["borg", "web1", "--", "list", "::\(archive)", "--format={path}{NL}", "-e", "*.none"])
        #expect(after.status == 0 && after.stdout.contains("\(rel)/readme.txt"), "\(after.output)")
        #expect(d.stop() == 0)
    }

    @Test("sshd + guard: each injection, sent with the relay's key in the relay's command shape, is refused with 126 and leaves no canary; the same command without the guard does leave it; relayed reads and a restore still pass the guard")
    func guardRefusesInjections() throws {
        let s = try Sandbox(name: "injguard")
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        try Data("readme\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/readme.txt"))
        let conf = "\(s.dir)/t/guard.conf"
        let restores = "\(s.dir)/t/restores"
        try "path \(s.dataDir)\nrestore-to \(restores)\n".write(toFile: conf, atomically: true, encoding: .utf8)
        s.clientExtra = ["guard = ['/usr/bin/python3', '\(GuardTests.guardPath)', '--config', '\(conf)']"]
        try s.configure()
        let printed = try Proc.check(try Proc.binary("relayctl"), ["authorized-keys", "web1", "--config", s.configPath]).stdout
        let tLine = try #require(printed.split(separator: "\n").first { $0.hasPrefix("command=") && $0.hasSuffix("borg-relay:web1") }, "\(printed)")
        try (tLine + "\n").write(toFile: "\(s.t.dir)/authorized_keys", atomically: true, encoding: .utf8)
        let backup = try s.runAgent()
        #expect(backup.status == 0, "\(backup.output)")
        let archive = try #require(try s.archives().first)
        let rel = String(s.dataDir.dropFirst())

        // A real repository behind the connector's port, so that payloads which need the
        // repository (tar filter, export-tar FILE, extract) would really run.
        let port = Proc.freePort()
        let serve = try Spawned("/usr/bin/socat", ["TCP-LISTEN:\(port),bind=127.0.0.1,reuseaddr,fork",
                                                   "EXEC:borg serve --append-only --restrict-to-repository \(s.repo)"],
                                env: ProcessInfo.processInfo.environment.merging(["BORG_BASE_DIR": "\(s.dir)/serve-borg-base"]) { $1 },
                                stdin: "/dev/null", stdout: "/dev/null", stderr: "\(s.dir)/socat.log")
        defer { serve.kill(SIGTERM); _ = serve.wait(timeout: 10) }
        for _ in 0..<100 where !Proc.canConnect(port: port) { usleep(50_000) }

        let c = "\(s.dir)/canary"
        let controlHome = "\(s.dir)/control-home", guardCwd = "\(s.dir)/guard-cwd"
        for dir in [c, controlHome, guardCwd] { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        let home = Self.home()
        defer { Self.removeStrayExtract(home: home, rel: rel) }
        let plan = BackupPlan(client: try ConfigLoader.load(path: s.configPath).client("web1"))
        var env = ProcessInfo.processInfo.environment
        env["BORG_BASE_DIR"] = "\(s.dir)/control-borg-base"
        let passphrase = Data(s.passphrase.utf8)
        let ssh = ["-F", "/dev/null", "-p", String(s.t.port), "-i", "\(s.dir)/relay/keys/t", "-o", "IdentitiesOnly=yes",
                   "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=\(s.knownHosts)",
                   "\(s.user)@127.0.0.1"]

        let started = Date()
        var sent = 0
        for p in Self.payloads(archive: archive, rel: rel, c: c, home: home) {
            let command = plan.borgCommand(port: port, withPassphrase: true, arguments: p.argv, workDir: nil)
            // Without a guard (a plain shell, as sshd would run it): the payload is live.
            let controlCanary = p.canary.replacingOccurrences(of: home + "/", with: controlHome + "/")
            _ = try Proc.run("/bin/sh", ["-c", command], env: env, stdin: passphrase, cwd: controlHome, timeout: 60)
            #expect(FileManager.default.fileExists(atPath: controlCanary), "\(p.what): the payload did not run without the guard, so this test proves nothing")
            if p.what.contains("passphrase") {
                #expect((try? String(contentsOfFile: controlCanary, encoding: .utf8))?.contains(s.passphrase) == true, "\(p.what)")
            }
            try? FileManager.default.removeItem(atPath: "\(controlHome)/\(rel.split(separator: "/").first ?? "")")
            try? FileManager.default.removeItem(atPath: controlCanary)

            // Through sshd, with the guard as the key's forced command.
            let r = try Proc.run("/usr/bin/ssh", ssh + [command], stdin: passphrase, timeout: 60)
            sent += 1
            #expect(r.status == 126, "\(p.what) through sshd + guard: \(r.output)")
            #expect(r.stderr.contains("borg-relay-guard: refused"), "\(p.what): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: p.canary), "\(p.what) ran through the guard: \(p.canary) exists")

            // And the guard run directly with SSH_ORIGINAL_COMMAND.
            var genv = ProcessInfo.processInfo.environment
            genv["SSH_ORIGINAL_COMMAND"] = command
            let g = try Proc.run("/usr/bin/python3", [GuardTests.guardPath, "--config", conf], env: genv, stdin: passphrase,
                                 cwd: guardCwd, timeout: 30)
            #expect(g.status == 126 && g.stderr.contains(p.named), "\(p.what) (guard direct): \(g.output)")
            #expect(!FileManager.default.fileExists(atPath: p.canary.replacingOccurrences(of: home + "/", with: guardCwd + "/")),
                    "\(p.what) ran through the guard (direct)")
        }
        // A --format reading borg's environment: live without the guard, refused with it.
        let format = ["list", "--format={mtime}|{mtime.__init__.__globals__[os].environ[BORG_RSH]}{NL}", "::\(archive)"]
        let formatCommand = plan.borgCommand(port: port, withPassphrase: true, arguments: format, workDir: nil)
        let live = try Proc.run("/bin/sh", ["-c", formatCommand], env: env, stdin: passphrase, cwd: controlHome, timeout: 60)
        #expect(live.stdout.contains("exec socat STDIO TCP:127.0.0.1:\(port)"), "the format payload leaks nothing without the guard: \(live.output)")
        let guarded = try Proc.run("/usr/bin/ssh", ssh + [formatCommand], stdin: passphrase, timeout: 60)
        #expect(guarded.status == 126 && guarded.stderr.contains("is not a plain key") && !guarded.stdout.contains("socat"), "\(guarded.output)")
        print("sshd + guard: \(sent) injections refused in \(String(format: "%.1f", Date().timeIntervalSince(started))) s (with their unguarded controls)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: c).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: guardCwd).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(home)/\(rel)"), "extract wrote into \(home)")

        // The relay's own commands still pass the guard.
        let d = try AgentDaemon(s)
        let list = try d.ctl(["borg", "web1", "--", "list", "--short", "::\(archive)"])
        #expect(list.status == 0 && list.stdout.contains("\(rel)/readme.txt"), "\(list.output)")
        let cat = try d.ctl(["borg", "web1", "--", "extract", "--stdout", "::\(archive)", "\(rel)/readme.txt"])
        #expect(cat.status == 0 && cat.stdout == "readme\n", "\(cat.output)")
        let target = "\(restores)/r1"
        let restore = try d.ctl(["restore", "web1", archive, "\(s.dataDir)/readme.txt", "--to", target])
        #expect(restore.status == 0, "\(restore.output)")
        #expect(FileManager.default.contents(atPath: "\(target)/\(rel)/readme.txt") == Data("readme\n".utf8))
        #expect(d.stop() == 0)
    }
}
