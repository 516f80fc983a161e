import Foundation
import RelayCore
import Testing

@Suite("Setup tools: hostkey, authorized-keys, key permissions (real sshd, real borg)", .serialized)
struct SetupTests {
    @Test("hostkey prints ssh-keygen's fingerprint; --add pins an unpinned host (then a run works), refuses without --yes and on a changed key")
    func hostkey() throws {
        let s = try Sandbox(name: "hostkey")
        defer { s.close() }
        try Data("x".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.configure()
        let ctl = try Proc.binary("relayctl")
        let keygen = try Proc.check("/usr/bin/ssh-keygen", ["-lf", "\(s.b.dir)/host_key.pub"]).stdout
        let expected = try #require(keygen.split(separator: " ").first { $0.hasPrefix("SHA256:") })
        let shown = try Proc.run(ctl, ["hostkey", "127.0.0.1:\(s.b.port)", "--config", s.configPath])
        #expect(shown.status == 0, "\(shown.output)")
        #expect(shown.stdout.contains(String(expected)), "\(shown.stdout) vs \(keygen)")
        #expect(shown.stdout.contains("[127.0.0.1]:\(s.b.port) ssh-ed25519 "), "\(shown.stdout)")
        #expect(shown.stdout.contains("(pinned)"))

        // Unpin T: the run stops; hostkey --add without --yes (no terminal) refuses; with --yes it pins.
        try (s.b.knownHostsLine + "\n").write(toFile: s.knownHosts, atomically: true, encoding: .utf8)
        #expect(try s.runAgent().status == 1)
        let target = "127.0.0.1:\(s.t.port)"
        let unconfirmed = try Proc.run(ctl, ["hostkey", target, "--add", "--config", s.configPath])
        #expect(unconfirmed.status == 2 && unconfirmed.stderr.contains("--yes"), "\(unconfirmed.output)")
        let added = try Proc.run(ctl, ["hostkey", target, "--add", "--yes", "--config", s.configPath])
        #expect(added.status == 0 && added.stdout.contains("pinned 1 key"), "\(added.output)")
        #expect(try s.runAgent().status == 0)
        let again = try Proc.run(ctl, ["hostkey", target, "--add", "--yes", "--config", s.configPath])
        #expect(again.stdout.contains("already pinned"), "\(again.output)")

        // A different key pinned for B: --add refuses and says why.
        try Proc.check("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", "\(s.dir)/other"])
        let other = try String(contentsOfFile: "\(s.dir)/other.pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
        try ("[127.0.0.1]:\(s.b.port) \(other)\n" + s.t.knownHostsLine + "\n").write(toFile: s.knownHosts, atomically: true, encoding: .utf8)
        let changed = try Proc.run(ctl, ["hostkey", "127.0.0.1:\(s.b.port)", "--add", "--yes", "--config", s.configPath])
        #expect(changed.status == 1 && changed.stderr.contains("OTHER keys"), "\(changed.output)")
        let bad = try Proc.run(ctl, ["hostkey", "127.0.0.1:99999"])
        #expect(bad.status == 2)
    }

    @Test("a repository path with a space, a double quote and a backslash: the printed B lines, pasted verbatim, are accepted by sshd and restrict borg serve to exactly that path")
    func authorizedKeysQuoting() throws {
        let s = try Sandbox(name: "authkeys-quoting", initRepo: false, maintenance: true)
        defer { s.close() }
        let odd = "\(s.dir)/b/my \"odd\" re\\po"
        let data = "\(s.dir)/t/data-odd"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        try Data("quoted".utf8).write(to: URL(fileURLWithPath: "\(data)/f"))
        try s.borg(["init", "--encryption=repokey-blake2", odd])
        let sealed = try s.sealed()
        func q(_ v: String) -> String { "'" + v + "'" }  // TOML literal strings: no escapes
        s.extraTables = ["""
            [clients.odd]
            host = "\(s.t.address)"
            port = \(s.t.port)
            user = "\(s.user)"
            key = "\(s.dir)/relay/keys/t"
            server = "vault"
            repository = \(q(odd))
            paths = [\(q(data))]
            archive = "odd-{now:%Y-%m-%dT%H:%M:%S}"
            passphrase = "\(sealed)"
            """]
        try s.writeConfig(sealed: sealed)
        let ctl = try Proc.binary("relayctl")
        let out = try Proc.run(ctl, ["authorized-keys", "odd", "--config", s.configPath])
        #expect(out.status == 0, "\(out.output)")
        let bLines = out.stdout.split(separator: "\n").filter { $0.hasPrefix("command=") }.map(String.init)
        #expect(bLines.count == 2, "\(out.stdout)")
        #expect(bLines.first?.contains(#"'\#(s.dir)/b/my \"odd\" re\po'"#) == true, "\(bLines)")
        try (bLines.joined(separator: "\n") + "\n").write(toFile: "\(s.b.dir)/authorized_keys", atomically: true, encoding: .utf8)
        let run = try Proc.run(try Proc.binary("relay-agent"), ["run", "odd", "--config", s.configPath])
        #expect(run.status == 0, "\(run.output)")
        let listed = try s.borg(["list", "--short", odd]).stdout
        #expect(listed.hasPrefix("odd-"), "\(listed)")
        let check = try Proc.run(ctl, ["check", "odd", "--config", s.configPath])
        #expect(check.status == 0 && check.stdout.contains("ok    odd: server append-only"), "\(check.output)")
    }

    @Test("hostkey shows the key of an RSA-only Dropbear (it signs with rsa-sha2-256 or ssh-rsa, never rsa-sha2-512)",
          .enabled(if: dropbearInstalled, "dropbear-bin is not installed (scripts/setup installs it)"))
    func hostkeyDropbearRSA() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("borg-relay-it-dropbear-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try Dropbear(name: "rsa-only", dir: dir, keyType: "rsa", login: false)
        defer { db.stop() }
        #expect(db.hostPublicKey.hasPrefix("ssh-rsa "), "\(db.hostPublicKey)")
        try (db.hostPublicKey + "\n").write(toFile: "\(dir)/rsa.pub", atomically: true, encoding: .utf8)
        let expected = try #require(try Proc.check("/usr/bin/ssh-keygen", ["-lf", "\(dir)/rsa.pub"]).stdout
            .split(separator: " ").first { $0.hasPrefix("SHA256:") })
        let shown = try Proc.run(try Proc.binary("relayctl"), ["hostkey", "127.0.0.1:\(db.port)", "--config", "\(dir)/none.toml"])
        #expect(shown.status == 0, "\(shown.output)")
        #expect(shown.stdout.contains(db.knownHostsLine), "\(shown.stdout)")
        #expect(shown.stdout.contains(String(expected)) && shown.stdout.contains("(ssh-rsa)"), "\(shown.stdout)")
    }

    @Test("AllowTcpForwarding no on T: check opens no forward and fails naming the setting and transport = \"unix\"; the run's error names them too; with transport = \"unix\" check skips the forward, passes a connection through the socket listener (leaving no directory) and the run works")
    func checkRemoteForward() throws {
        let s = try Sandbox(name: "check-forward")
        defer { s.close() }
        try Data("x".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.configure()
        let ctl = try Proc.binary("relayctl")
        let good = try Proc.run(ctl, ["check", "--config", s.configPath])
        #expect(good.status == 0 && good.stdout.contains("ok    web1: remote forward on the client"), "\(good.output)")
        let conf = "\(s.t.dir)/sshd_config"
        let text = try String(contentsOfFile: conf, encoding: .utf8)
        try text.replacingOccurrences(of: "AllowTcpForwarding remote", with: "AllowTcpForwarding no")
            .write(toFile: conf, atomically: true, encoding: .utf8)
        try s.t.restart()
        let bad = try Proc.run(ctl, ["check", "--config", s.configPath])
        #expect(bad.status == 1, "\(bad.output)")
        #expect(bad.stdout.contains("fail  web1: remote forward on the client") && bad.stdout.contains("AllowTcpForwarding yes")
                && bad.stdout.contains("transport = \"unix\""), "\(bad.stdout)")
        let run = try s.runAgent()
        #expect(run.status != 0 && run.output.contains("AllowTcpForwarding") && run.output.contains("transport = \"unix\""), "\(run.output)")
        #expect(try s.archives().isEmpty)
        // The unix transport needs no forwarding: check skips the forward and the run works.
        s.clientExtra = ["transport = \"unix\""]
        try s.configure()
        let dirsBefore = Set(unixSocketDirs())
        let unix = try Proc.run(ctl, ["check", "--config", s.configPath])
        #expect(unix.status == 0 && !unix.stdout.contains("remote forward"), "\(unix.output)")
        // check started the listener and passed a connection through it; nothing is left.
        #expect(unix.stdout.contains("ok    web1: socket listener on the client"), "\(unix.stdout)")
        #expect(UnixTransportTests().waitForNoNewDirs(dirsBefore), "check left \(Set(unixSocketDirs()).subtracting(dirsBefore))")
        #expect(try s.runAgent().status == 0)
        #expect(try s.archives().count == 1)
    }

    @Test("authorized-keys output, pasted into the test sshds, makes a run succeed with B append-only")
    func authorizedKeysLinesWork() throws {
        let s = try Sandbox(name: "authkeys", maintenance: true)
        defer { s.close() }
        try Data("x".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.configure()
        let out = try Proc.run(try Proc.binary("relayctl"), ["authorized-keys", "web1", "--config", s.configPath])
        #expect(out.status == 0, "\(out.output)")
        let lines = out.stdout.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }.map(String.init)
        #expect(lines.count == 4, "\(out.stdout)")  // B, B maintenance, T for OpenSSH, T for Dropbear
        let bLines = lines.filter { $0.hasPrefix("command=") }
        let tLine = try #require(lines.first { $0.hasPrefix("restrict,port-forwarding") })
        #expect(bLines.first?.contains("borg serve --append-only --restrict-to-repository \(s.repo)") == true, "\(bLines)")
        #expect(bLines.last?.contains("--append-only") == false)
        // Replace what the sandbox wrote with the printed lines; sshd reads them per login.
        try (bLines.joined(separator: "\n") + "\n").write(toFile: "\(s.b.dir)/authorized_keys", atomically: true, encoding: .utf8)
        try (tLine + "\n").write(toFile: "\(s.t.dir)/authorized_keys", atomically: true, encoding: .utf8)
        let r = try s.runAgent()
        #expect(r.status == 0, "\(r.output)")
        #expect(try s.archives().count == 1)

        // The same lines pass check; without --append-only on B's line, check fails, and the
        // probe wrote nothing to the repository either way.
        let ctl = try Proc.binary("relayctl")
        let good = try Proc.run(ctl, ["check", "--config", s.configPath])
        #expect(good.status == 0, "\(good.output)")
        #expect(good.stdout.contains("ok    web1: server append-only"), "\(good.stdout)")
        #expect(good.stdout.contains("ok    web1: borg on the server: borg 1."), "\(good.stdout)")
        let before = try s.repositoryFiles()
        let writable = bLines[0].replacingOccurrences(of: "--append-only ", with: "")
        try ([writable] + bLines.dropFirst()).joined(separator: "\n").appending("\n")
            .write(toFile: "\(s.b.dir)/authorized_keys", atomically: true, encoding: .utf8)
        let bad = try Proc.run(ctl, ["check", "--config", s.configPath])
        #expect(bad.status == 1, "\(bad.output)")
        #expect(bad.stdout.contains("fail  web1: server append-only: borg serve on vault is NOT append-only"), "\(bad.stdout)")
        #expect(bad.stdout.contains("--append-only"))
        #expect(try s.repositoryFiles() == before, "the probe changed the repository")
        #expect(try s.archives().count == 1)
        let unknown = try Proc.run(try Proc.binary("relayctl"), ["authorized-keys", "nope", "--config", s.configPath])
        #expect(unknown.status == 2 && unknown.stderr.contains("unknown client 'nope'"))
    }

    @Test("check (preflight) passes on a good setup and names each failure: loose key, unpinned host, unforced B key, no socat on T, a unix listener that cannot make its directory")
    func preflight() throws {
        let ctl = try Proc.binary("relayctl")
        let s = try Sandbox(name: "preflight")
        defer { s.close() }
        try s.configure()
        func check() throws -> (Int32, [PreflightResult]) {
            let r = try Proc.run(ctl, ["check", "--json", "--config", s.configPath])
            return (r.status, try ControlAPI.decoder().decode([PreflightResult].self, from: Data(r.stdout.utf8)))
        }
        func failed(_ results: [PreflightResult]) -> [String] { results.filter { $0.status == .fail }.map(\.check) }
        var (status, results) = try check()
        #expect(status == 0 && failed(results).isEmpty, "\(results)")
        #expect(Set(results.map(\.check)).isSuperset(of: ["config", "vault", "key file", "client connection", "server connection",
                                                          "borg on the client", "socat on the client", "server key forced",
                                                          "borg on the server", "borg versions", "repository", "server append-only"]))

        // No repository on B: check names it and says how to create it.
        try FileManager.default.moveItem(atPath: s.repo, toPath: s.repo + ".away")
        (status, results) = try check()
        #expect(status == 1 && failed(results) == ["repository"], "\(results)")
        #expect(results.contains { $0.check == "repository" && $0.fix == "create it: relayctl init web1" }, "\(results)")
        try FileManager.default.moveItem(atPath: s.repo + ".away", toPath: s.repo)

        chmod("\(s.dir)/relay/keys/t", 0o644)
        (status, results) = try check()
        #expect(status == 1 && failed(results) == ["key file"], "\(results)")
        #expect(results.contains { $0.status == .fail && $0.detail.contains("chmod 600") })
        chmod("\(s.dir)/relay/keys/t", 0o600)

        try (s.b.knownHostsLine + "\n").write(toFile: s.knownHosts, atomically: true, encoding: .utf8)
        (status, results) = try check()
        #expect(status == 1 && failed(results) == ["client connection"], "\(results)")
        #expect(results.contains { $0.fix?.contains("relayctl hostkey 127.0.0.1:\(s.t.port) --add") == true })
        try (s.b.knownHostsLine + "\n" + s.t.knownHostsLine + "\n").write(toFile: s.knownHosts, atomically: true, encoding: .utf8)

        let forced = try String(contentsOfFile: "\(s.b.dir)/authorized_keys", encoding: .utf8)
        let bare = forced.replacingOccurrences(of: #"command="[^"]*",restrict "#, with: "", options: .regularExpression)
        try bare.write(toFile: "\(s.b.dir)/authorized_keys", atomically: true, encoding: .utf8)
        (status, results) = try check()
        #expect(status == 1 && failed(results) == ["server key forced"], "\(results)")
        try forced.write(toFile: "\(s.b.dir)/authorized_keys", atomically: true, encoding: .utf8)

        // A client whose PATH has borg but no socat.
        let bin = FileManager.default.temporaryDirectory.appendingPathComponent("nosocat-\(UUID().uuidString.prefix(6))").path
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: bin) }
        for tool in ["borg", "env", "sh", "timeout"] {
            try FileManager.default.createSymbolicLink(atPath: "\(bin)/\(tool)", withDestinationPath: "/usr/bin/\(tool)")
        }
        let n = try Sandbox(name: "nosocat", tPath: bin)
        defer { n.close() }
        try n.configure()
        let r = try Proc.run(ctl, ["check", "--config", n.configPath])
        #expect(r.status == 1, "\(r.output)")
        #expect(r.stdout.contains("fail  web1: socat on the client"), "\(r.stdout)")
        #expect(r.stdout.contains("fix: install socat on the client"), "\(r.stdout)")

        // The unix transport on a client that cannot make the socket's directory (no mkdir
        // in its PATH): check starts the listener, which fails, and says so with the fix.
        let noMkdir = FileManager.default.temporaryDirectory.appendingPathComponent("nomkdir-\(UUID().uuidString.prefix(6))").path
        try FileManager.default.createDirectory(atPath: noMkdir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: noMkdir) }
        for tool in ["borg", "env", "sh", "timeout", "socat", "find", "rm", "cat", "sleep"] {
            try FileManager.default.createSymbolicLink(atPath: "\(noMkdir)/\(tool)", withDestinationPath: "/usr/bin/\(tool)")
        }
        let m = try Sandbox(name: "nomkdir", tPath: noMkdir)
        defer { m.close() }
        m.clientExtra = ["transport = \"unix\""]
        try m.configure()
        let u = try Proc.run(ctl, ["check", "--config", m.configPath])
        #expect(u.status == 1, "\(u.output)")
        #expect(u.stdout.contains("ok    web1: socat on the client"), "\(u.stdout)")
        #expect(u.stdout.contains("fail  web1: socket listener on the client") && u.stdout.contains("mkdir")
                && u.stdout.contains("writable /tmp") && u.stdout.contains("transport = \"tcp\""), "\(u.stdout)")
    }

    @Test("a key file or vault readable by others stops the agent with the file, the key and the fix")
    func loosePermissionsRefused() throws {
        let s = try Sandbox(name: "loose")
        defer { s.close() }
        try s.configure()
        chmod("\(s.dir)/relay/keys/t", 0o640)
        let r = try s.runAgent()
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains("[clients.web1]") && r.stderr.contains("'key'") && r.stderr.contains("chmod 600"), "\(r.stderr)")
        chmod("\(s.dir)/relay/keys/t", 0o600)
        chmod("\(s.stateDir)/vault.key", 0o644)
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        try s.configure()
        let serve = try Proc.run(try Proc.binary("relay-agent"), ["serve", "--config", s.configPath], timeout: 30)
        #expect(serve.status == 1, "\(serve.output)")
        #expect(serve.stderr.contains("vault.key"), "\(serve.stderr)")
    }
}
