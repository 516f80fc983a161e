import Foundation
import RelayCore
import Testing

/// A login user on this machine, playing T's login with `shell` as its login shell (sshd
/// runs every command through it: `SHELL -c COMMAND`). '*' is not a locked password for
/// sshd. `remove()` deletes the account again.
struct ShellTestLogin {
    let name: String
    let uid: uid_t
    let gid: gid_t

    init(shell: String, home: String) throws {
        name = "brs" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(10).lowercased()
        try Proc.check("/usr/sbin/useradd", ["--system", "--no-create-home", "--home-dir", home,
                                             "--shell", shell, "--password", "*", name])
        guard let pw = getpwnam(name) else { throw FixtureError("useradd \(name) made no user") }
        (uid, gid) = (pw.pointee.pw_uid, pw.pointee.pw_gid)
        try own(home)
    }

    /// Creates `dir` (if missing) owned by the login.
    func own(_ dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        chown(dir, uid, gid)
    }

    /// userdel refuses while a process of the login still runs (a session of the last run
    /// that sshd is closing): tries for up to 15 s.
    func remove() {
        for _ in 0..<75 {
            if let r = try? Proc.run("/usr/sbin/userdel", [name]), r.status == 0 || getpwnam(name) == nil { return }
            usleep(200_000)
        }
        Issue.record("userdel \(name) kept failing: remove the account by hand")
    }
}

@Suite("Clients with any login shell, BusyBox, borg_path and a relocated repository (real sshd, real borg)", .serialized)
struct ClientShellTests {
    /// Small data whose names need quoting in every shell: a quote, a !, a backslash, a $.
    static func writeData(_ s: Sandbox) throws -> [String] {
        let odd = "\(s.dataDir)/it's a !dir \\ $HOME"
        let plain = "\(s.dataDir)/plain"
        for d in [odd, plain] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        try writeRandomFile("\(odd)/random.bin", count: 300_000)
        try Data("fish & ash\n".utf8).write(to: URL(fileURLWithPath: "\(plain)/note \"quoted\".txt"))
        try Data("x".utf8).write(to: URL(fileURLWithPath: "\(odd)/!!"))
        return [odd, plain]
    }

    /// Backs up over tcp and over unix as the login, then extracts every archive and
    /// compares it with the data, byte for byte.
    func backupBothTransports(_ s: Sandbox, login: ShellTestLogin, extra: [String] = []) throws {
        for transport in ["tcp", "unix"] {
            s.clientExtra = extra + ["transport = \"\(transport)\""]
            try s.configure()
            let r = try s.runAgent(["--json"])
            #expect(r.status == 0, "\(transport): \(r.output)")
            let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
            #expect((report?["state"] as? String) == "succeeded", "\(transport): \(r.stdout)")
            // (The second run sends little: borg deduplicates against the first.)
            let sent = (report?["bytes_to_server"] as? NSNumber)?.intValue ?? 0
            #expect(sent > (transport == "tcp" ? 300_000 : 1_000), "\(transport): nothing was spliced: \(r.stdout)")
            // borg on T really ran as the login (its cache is the login's).
            var st = stat()
            #expect(stat("\(s.dir)/t/borg-base/.cache/borg", &st) == 0 && st.st_uid == login.uid, "\(transport)")
        }
        let archives = try s.archives()
        #expect(archives.count == 2, "\(archives)")
        for (i, archive) in archives.enumerated() {
            let out = "\(s.dir)/extract-\(i)"
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            try s.borg(["extract", "\(s.repo)::\(archive)"], cwd: out)
            let diffs = TreeCompare.differences(s.dataDir, out + s.dataDir)
            #expect(diffs.isEmpty, "\(archive): \(diffs)")
        }
    }

    @Test("fish as T's login shell: tcp and unix backups make real archives that extract to identical bytes",
          .enabled(if: geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/fish"),
                   "needs root (creates a login) and fish (scripts/setup installs it)"))
    func fishLogin() throws {
        let s = try Sandbox(name: "fish")
        defer { s.close() }
        let login = try ShellTestLogin(shell: "/usr/bin/fish", home: "\(s.dir)/t/home")
        defer { login.remove() }
        try login.own("\(s.dir)/t/borg-base")
        // fish really is the shell sshd uses for this login.
        #expect(String(cString: getpwnam(login.name)!.pointee.pw_shell) == "/usr/bin/fish")
        s.clientUser = login.name
        s.paths = try Self.writeData(s)
        try backupBothTransports(s, login: login)
    }

    @Test("BusyBox ash as T's login shell with BusyBox's applets first in PATH (sh, env, timeout, find, …): tcp and unix backups extract identically; a hook runs under BusyBox timeout and a hanging one is killed at its timeout",
          .enabled(if: geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/busybox"),
                   "needs root (creates a login) and busybox (scripts/setup installs it)"))
    func busyboxLogin() throws {
        // BusyBox's applets as a directory of symlinks (outside the sandbox: sshd gets its
        // PATH at start); `ash` in it is the login shell (BusyBox picks the applet by name).
        let bb = FileManager.default.temporaryDirectory.appendingPathComponent("borg-relay-busybox-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: bb, withIntermediateDirectories: true)
        chmod(bb, 0o755)
        defer { try? FileManager.default.removeItem(atPath: bb) }
        let applets = try Proc.check("/usr/bin/busybox", ["--list"]).stdout.split(separator: "\n").map(String.init)
        for a in ["ash", "sh", "env", "timeout", "find", "mkdir", "sleep", "cat", "rm"] {
            try #require(applets.contains(a), "BusyBox has no \(a) applet")
        }
        for a in applets { try FileManager.default.createSymbolicLink(atPath: "\(bb)/\(a)", withDestinationPath: "/usr/bin/busybox") }

        let s = try Sandbox(name: "busybox", tPath: "\(bb):/usr/bin:/bin")
        defer { s.close() }
        let login = try ShellTestLogin(shell: "\(bb)/ash", home: "\(s.dir)/t/home")
        defer { login.remove() }
        try login.own("\(s.dir)/t/borg-base")
        s.clientUser = login.name
        s.paths = try Self.writeData(s)
        // The hook proves which timeout and sh it found: BusyBox's.
        let marker = "\(s.dir)/t/home/hook.txt"
        let hook = "pre = ['sh', '-c', 'readlink -f \"$(command -v timeout)\" > \(marker); readlink -f \"$(command -v sh)\" >> \(marker); echo \"$BORG_RELAY_CLIENT\" >> \(marker)']"
        try backupBothTransports(s, login: login, extra: [hook])
        let seen = try String(contentsOfFile: marker, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(seen == ["/usr/bin/busybox", "/usr/bin/busybox", "web1"], "the hook did not find BusyBox timeout and sh: \(seen)")

        // A hanging hook: BusyBox's timeout kills it at pre_timeout; the run says so.
        s.clientExtra = ["pre = 'sleep 300'", "pre_timeout = 2"]
        try s.configure()
        let started = Date()
        let hung = try s.runAgent()
        #expect(hung.status == 1, "\(hung.output)")
        #expect(hung.stdout.contains("killed at its timeout of 2 s"), "\(hung.stdout)")
        #expect(Date().timeIntervalSince(started) < 30)
        #expect(s.sessionsLeft(on: [s.t, s.b], within: 10).isEmpty)
        #expect(try s.archives().count == 2)
    }

    @Test("check probes the client's borg_path (a path with a space) and compares T's and B's major versions")
    func checkUsesBorgPath() throws {
        let s = try Sandbox(name: "borgpath")
        defer { s.close() }
        let bin = "\(s.dir)/t/my bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        // A stand-in that only answers --version (check runs nothing else with it).
        func fake(_ version: String) throws -> String {
            let path = "\(bin)/borg-\(version)"
            try "#!/bin/sh\necho \"borg \(version)\"\n".write(toFile: path, atomically: true, encoding: .utf8)
            chmod(path, 0o755)
            return path
        }
        let server = try Proc.check("/usr/bin/borg", ["--version"]).stdout.split(separator: " ").last.map {
            $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? "?"
        let major = server.split(separator: ".").first.map(String.init) ?? "1"
        for (version, status) in [("\(major).99.1", "ok"), ("\((Int(major) ?? 1) + 1).0.0b9", "warn")] {
            let path = try fake(version)
            s.clientExtra = ["borg_path = \"\(path)\""]
            try s.configure()
            let check = try Proc.run(try Proc.binary("relayctl"), ["check", "--config", s.configPath])
            let lines = check.stdout.split(separator: "\n").map(String.init)
            let client = lines.first { $0.contains("web1: borg on the client") } ?? ""
            #expect(client.contains("borg \(version)") && client.contains(path), "\(check.stdout)")
            let versions = lines.first { $0.contains("web1: borg versions") } ?? ""
            #expect(versions.hasPrefix(status) && versions.contains(version) && versions.contains(server), "\(check.stdout)")
        }
        // A borg_path that does not exist: check fails naming it.
        s.clientExtra = ["borg_path = \"\(bin)/nothing here\""]
        try s.configure()
        let missing = try Proc.run(try Proc.binary("relayctl"), ["check", "--config", s.configPath])
        #expect(missing.status != 0)
        #expect(missing.stdout.contains("fail  web1: borg on the client") && missing.stdout.contains("\(bin)/nothing here"), "\(missing.stdout)")
    }

    @Test("migration from push: after a direct borg create from T, a relayed run fails with one line naming both locations and relocated_ok; with relocated_ok = true it succeeds, and later runs need it no more")
    func relocatedRepository() throws {
        let s = try Sandbox(name: "relocated")
        defer { s.close() }
        try Data("pushed before\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.configure()
        // T pushes to the repository directly once: its borg (T's BORG_BASE_DIR) records
        // the repository's location as the local path.
        var env = ProcessInfo.processInfo.environment
        env["BORG_BASE_DIR"] = "\(s.dir)/t/borg-base"
        env["BORG_PASSPHRASE"] = s.passphrase
        try Proc.check("/usr/bin/borg", ["create", "\(s.repo)::direct", s.dataDir], env: env)
        let location = try String(contentsOfFile: try Self.locationFile(s), encoding: .utf8)
        #expect(location == s.repo)

        let failed = try s.runAgent(["--json"])
        #expect(failed.status == 1, "\(failed.output)")
        let report = try JSONSerialization.jsonObject(with: Data(failed.stdout.utf8)) as? [String: Any]
        let error = report?["error"] as? String ?? ""
        #expect(error.contains("knew this repository as \(s.repo) and now reaches it as ssh://borg-relay\(s.repo)"), "\(error)")
        #expect(error.contains("relocated_ok = true in [clients.web1]"), "\(error)")
        #expect(!error.contains("\n") && !error.contains("Traceback"), "\(error)")
        // The full text is in the run log.
        let log = try String(contentsOfFile: report?["log_file"] as? String ?? "", encoding: .utf8)
        #expect(log.contains("was previously located at"), "\(log)")
        #expect(try s.archives() == ["direct"])

        s.clientExtra = ["relocated_ok = true"]
        try s.configure()
        let ok = try s.runAgent()
        #expect(ok.status == 0, "\(ok.output)")
        #expect(try s.archives().count == 2)
        #expect(try String(contentsOfFile: try Self.locationFile(s), encoding: .utf8) == "ssh://borg-relay\(s.repo)")

        // borg recorded the relay's location: the key can go again.
        s.clientExtra = []
        try s.configure()
        let again = try s.runAgent()
        #expect(again.status == 0, "\(again.output)")
        #expect(try s.archives().count == 3)
    }

    /// T's borg's record of the repository's location (security/REPO_ID/location).
    static func locationFile(_ s: Sandbox) throws -> String {
        let security = "\(s.dir)/t/borg-base/.config/borg/security"
        let ids = try FileManager.default.contentsOfDirectory(atPath: security)
        guard ids.count == 1 else { throw FixtureError("expected one repository in \(security): \(ids)") }
        return "\(security)/\(ids[0])/location"
    }
}
