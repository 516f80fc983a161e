import Foundation
import RelayCore
import Testing

/// Dropbear (Debian's dropbear-bin) as T's sshd, with the lines `relayctl authorized-keys`
/// prints pasted verbatim; real borg, real binaries. B is the sandbox's OpenSSH.
@Suite("Dropbear as the client's sshd (real dropbear, real borg)", .serialized,
       .enabled(if: dropbearInstalled && geteuid() == 0, "needs /usr/sbin/dropbear (scripts/setup) and root (useradd for Dropbear's login)"))
struct DropbearTests {
    /// A sandbox whose client `db` is reached through a Dropbear with its own login; data
    /// in the sandbox (readable by that login).
    func setUp(_ name: String, transport: String) throws -> (Sandbox, Dropbear) {
        let s = try Sandbox(name: name)
        let db = try Dropbear(name: "t-dropbear", dir: "\(s.dir)/dropbear", login: true)
        let pinned = try String(contentsOfFile: s.knownHosts, encoding: .utf8)
        try (pinned + db.knownHostsLine + "\n").write(toFile: s.knownHosts, atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: "\(s.dataDir)/sub dir", withIntermediateDirectories: true)
        try writeRandomFile("\(s.dataDir)/blob.bin", count: 2 * 1024 * 1024)
        try Data("it's $odd\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/sub dir/it's $odd.txt"))
        try FileManager.default.createSymbolicLink(atPath: "\(s.dataDir)/link", withDestinationPath: "sub dir")
        let sealed = try s.sealed()
        s.extraTables = ["""
            [clients.db]
            host = "\(db.address)"
            port = \(db.port)
            user = "\(db.user ?? "")"
            key = "\(s.dir)/relay/keys/t"
            server = "vault"
            repository = "\(s.repo)"
            paths = ["\(s.dataDir)"]
            archive = "db-{now:%Y-%m-%dT%H:%M:%S.%f}"
            transport = "\(transport)"
            passphrase = "\(sealed)"
            """]
        try s.writeConfig(sealed: sealed)
        return (s, db)
    }

    /// The two client lines authorized-keys prints for `db`: (OpenSSH, Dropbear).
    func printedLines(_ s: Sandbox) throws -> (openssh: String, dropbear: String, text: String) {
        let out = try Proc.run(try Proc.binary("relayctl"), ["authorized-keys", "db", "--config", s.configPath])
        #expect(out.status == 0, "\(out.output)")
        let lines = out.stdout.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") && $0.hasSuffix(" borg-relay:db") }
        guard lines.count == 2 else { throw FixtureError("expected two client lines (OpenSSH, Dropbear): \(out.stdout)") }
        return (lines[0], lines[1], out.stdout)
    }

    func run(_ s: Sandbox) throws -> ProcessResult {
        try Proc.run(try Proc.binary("relay-agent"), ["run", "db", "--config", s.configPath])
    }

    func check(_ s: Sandbox) throws -> ProcessResult {
        try Proc.run(try Proc.binary("relayctl"), ["check", "db", "--config", s.configPath])
    }

    /// Extracts `archive` with borg on this machine and compares it with the data.
    func extractMatches(_ s: Sandbox, _ archive: String) throws -> [String] {
        let out = "\(s.dir)/extract-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try s.borg(["extract", "\(s.repo)::\(archive)"], cwd: out)
        return TreeCompare.differences(s.dataDir, out + s.dataDir)
    }

    @Test("tcp: the OpenSSH line is refused by Dropbear (the relay says so and names the line for Dropbear); the Dropbear line pasted verbatim: backup, extract identical, check names dropbear, restore identical")
    func tcp() throws {
        let (s, db) = try setUp("dropbear-tcp", transport: "tcp")
        defer { db.stop(); s.close() }
        let (openssh, dropbear, text) = try printedLines(s)
        #expect(openssh.hasPrefix(#"restrict,port-forwarding,permitlisten="127.0.0.1:*",permitopen="127.0.0.1:9" ssh-ed25519 "#), "\(openssh)")
        #expect(dropbear.hasPrefix(#"no-agent-forwarding,no-X11-forwarding,no-pty,permitopen="127.0.0.1:9" ssh-ed25519 "#), "\(dropbear)")
        #expect(text.contains("permitlisten") && text.contains("-a"), "the limit of Dropbear is not stated: \(text)")

        // The OpenSSH line in Dropbear: the key is refused; the run and check say why.
        try db.setAuthorizedKeys(openssh + "\n")
        let refused = try run(s)
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.output.contains("was refused") && refused.output.contains("dropbear_2022.83")
                && refused.output.contains("line for Dropbear"), "\(refused.output)")
        #expect(db.log.contains("Bad public key options"), "\(db.log)")
        #expect(try s.archives().isEmpty)
        let badCheck = try check(s)
        #expect(badCheck.status == 1, "\(badCheck.output)")
        #expect(badCheck.stdout.contains("fail  db: client connection") && badCheck.stdout.contains("line for Dropbear")
                && badCheck.stdout.contains(#"no-agent-forwarding,no-X11-forwarding,no-pty,permitopen="127.0.0.1:9""#), "\(badCheck.stdout)")
        #expect(badCheck.stdout.contains("ok    db: client sshd: dropbear_2022.83"), "\(badCheck.stdout)")

        // A Dropbear line that forbids forwarding: check's forward probe fails and names the line for Dropbear.
        try db.setAuthorizedKeys("no-port-forwarding," + dropbear + "\n")
        let noForward = try check(s)
        #expect(noForward.status == 1, "\(noForward.output)")
        #expect(noForward.stdout.contains("fail  db: remote forward on the client") && noForward.stdout.contains("Dropbear refused the remote forward")
                && noForward.stdout.contains("without -k") && noForward.stdout.contains("transport = \"unix\""), "\(noForward.stdout)")

        // The Dropbear line: check passes and names the server; the backup works.
        try db.setAuthorizedKeys(dropbear + "\n")
        let good = try check(s)
        #expect(good.status == 0, "\(good.output)")
        #expect(good.stdout.contains("ok    db: client sshd: dropbear_2022.83"), "\(good.stdout)")
        #expect(good.stdout.contains("ok    db: remote forward on the client"), "\(good.stdout)")
        let r = try run(s)
        #expect(r.status == 0, "\(r.output)\n\(db.log)")
        let archive = try #require(try s.archives().first { $0.hasPrefix("db-") })
        #expect(try extractMatches(s, archive).isEmpty)

        // A restore into the login's home through the daemon.
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        try s.writeConfig(sealed: try s.sealed())
        let d = try AgentDaemon(s)
        defer { _ = d.stop() }
        let target = try db.ownedDirectory("restores") + "/one"
        let restored = try d.ctl(["restore", "db", archive, "--to", target])
        #expect(restored.status == 0, "\(restored.output)\n\(d.log)")
        let rel = String(s.dataDir.dropFirst())
        #expect(TreeCompare.differences(s.dataDir, "\(target)/\(rel)").isEmpty, "\(TreeCompare.differences(s.dataDir, "\(target)/\(rel)"))")
    }

    @Test("unix: the Dropbear line (no forwarding at all) pasted verbatim: backup, extract identical, check names dropbear and passes a connection through the socket listener")
    func unix() throws {
        let (s, db) = try setUp("dropbear-unix", transport: "unix")
        defer { db.stop(); s.close() }
        let (openssh, dropbear, _) = try printedLines(s)
        #expect(openssh.hasPrefix("restrict ssh-ed25519 "), "\(openssh)")
        #expect(dropbear.hasPrefix("no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty ssh-ed25519 "), "\(dropbear)")
        try db.setAuthorizedKeys(dropbear + "\n")
        let good = try check(s)
        #expect(good.status == 0, "\(good.output)")
        #expect(good.stdout.contains("ok    db: client sshd: dropbear_2022.83"), "\(good.stdout)")
        #expect(good.stdout.contains("ok    db: socket listener on the client"), "\(good.stdout)")
        let r = try run(s)
        #expect(r.status == 0, "\(r.output)\n\(db.log)")
        #expect(!r.output.contains("listening on 127.0.0.1"), "the TCP forward was used")
        let archive = try #require(try s.archives().first { $0.hasPrefix("db-") })
        #expect(try extractMatches(s, archive).isEmpty)
    }

    @Test("guard: the Dropbear line with the guard's command= pasted verbatim: a backup passes the guard; a shell command sent with the relay's key is refused and leaves no trace")
    func guarded() throws {
        let (s, db) = try setUp("dropbear-guard", transport: "tcp")
        defer { db.stop(); s.close() }
        let conf = "\(db.dir)/guard.conf"
        s.extraTables[0] += "\nguard = ['/usr/bin/python3', '\(GuardTests.guardPath)', '--config', '\(conf)']"
        try s.writeConfig(sealed: try s.sealed())
        let (openssh, dropbear, text) = try printedLines(s)
        #expect(openssh.hasPrefix("command=\"/usr/bin/python3 \(GuardTests.guardPath) --config \(conf)\",restrict,"), "\(openssh)")
        #expect(dropbear.hasPrefix("command=\"/usr/bin/python3 \(GuardTests.guardPath) --config \(conf)\",no-agent-forwarding,no-X11-forwarding,no-pty,permitopen="), "\(dropbear)")
        let allowlist = text.split(separator: "\n").filter { $0.hasPrefix("#   ") }.map { $0.dropFirst(4) }
        try (allowlist.joined(separator: "\n") + "\n").write(toFile: conf, atomically: true, encoding: .utf8)
        try db.setAuthorizedKeys(dropbear + "\n")
        let r = try run(s)
        #expect(r.status == 0, "\(r.output)\n\(db.log)")
        #expect(try s.archives().contains { $0.hasPrefix("db-") })

        // What anyone holding the key could send: the guard (Dropbear's forced command) refuses it.
        let canary = "\(db.home ?? s.dir)/INJECTED"
        let attack = try Proc.run("/usr/bin/ssh", ["-o", "BatchMode=yes", "-o", "UserKnownHostsFile=\(s.knownHosts)", "-o", "StrictHostKeyChecking=yes",
                                                   "-o", "IdentitiesOnly=yes", "-i", "\(s.dir)/relay/keys/t", "-p", "\(db.port)",
                                                   "\(db.user ?? "")@127.0.0.1", "sh -c 'touch \(canary)'"], timeout: 60)
        #expect(attack.status == 126, "\(attack.output)")
        #expect(!FileManager.default.fileExists(atPath: canary), "the guard let a shell command through")
    }
}
