import Foundation
import RelayCore
import Testing

@Suite("known_hosts markers as OpenSSH reads them: @revoked refuses, @cert-authority is reported (real sshd, real borg)", .serialized)
struct KnownHostsTests {
    /// What B's sshd logged about public-key logins so far.
    static func logins(_ host: SSHD) -> Int {
        ((try? String(contentsOfFile: host.logPath, encoding: .utf8)) ?? "").components(separatedBy: "Accepted publickey").count - 1
    }

    @Test("@revoked for B (host-specific and wildcard line): the run, check and hostkey --add refuse before authenticating, naming the line; the repository is unchanged")
    func revokedServer() throws {
        let s = try Sandbox(name: "revoked")
        defer { s.close() }
        try Data("revoked-test".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.configure()
        let pins = s.b.knownHostsLine + "\n" + s.t.knownHostsLine + "\n"
        let ctl = try Proc.binary("relayctl")
        for (what, revocation) in [("host-specific", "@revoked " + s.b.knownHostsLine), ("wildcard", "@revoked * " + s.b.hostPublicKey)] {
            try (pins + revocation + "\n").write(toFile: s.knownHosts, atomically: true, encoding: .utf8)
            let repoBefore = try s.repositoryFiles()
            let loginsBefore = Self.logins(s.b)
            let run = try s.runAgent()
            #expect(run.status != 0, "\(what): a run to a revoked host succeeded: \(run.output)")
            #expect(run.output.contains("HOST KEY REVOKED") && run.output.contains("line 3 of \(s.knownHosts)"), "\(what): \(run.output)")
            #expect(Self.logins(s.b) == loginsBefore, "\(what): the relay authenticated to a revoked host")
            #expect(try s.repositoryFiles() == repoBefore, "\(what): the repository changed")
            let check = try Proc.run(ctl, ["check", "--config", s.configPath])
            #expect(check.status != 0 && check.output.contains("HOST KEY REVOKED"), "\(what): \(check.output)")
            // hostkey marks the key and --add refuses to pin it again.
            let shown = try Proc.run(ctl, ["hostkey", "127.0.0.1:\(s.b.port)", "--config", s.configPath])
            #expect(shown.stdout.contains("REVOKED: line 3"), "\(what): \(shown.output)")
            let add = try Proc.run(ctl, ["hostkey", "127.0.0.1:\(s.b.port)", "--add", "--yes", "--config", s.configPath])
            #expect(add.status != 0 && add.stderr.contains("@revoked"), "\(what): \(add.output)")
            #expect(try String(contentsOfFile: s.knownHosts, encoding: .utf8) == pins + revocation + "\n")
        }
        #expect(try s.archives().isEmpty)
        // The same set-up without the revocation backs up: the refusal above was the marker's.
        try pins.write(toFile: s.knownHosts, atomically: true, encoding: .utf8)
        let ok = try s.runAgent()
        #expect(ok.status == 0, "\(ok.output)")
        #expect(try s.archives().count == 1)
    }

    @Test("a revocation of another key, or for another host, does not refuse B; a revoked T is refused before borg runs on it")
    func revocationScope() throws {
        let s = try Sandbox(name: "revoked-scope")
        defer { s.close() }
        try Data("scope".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.configure()
        let pins = s.b.knownHostsLine + "\n" + s.t.knownHostsLine + "\n"
        // B's key revoked only for another host name; T's key revoked for B's name (not T's).
        try (pins + "@revoked other.example " + s.b.hostPublicKey + "\n"
             + "@revoked [127.0.0.1]:\(s.b.port) " + s.t.hostPublicKey + "\n").write(toFile: s.knownHosts, atomically: true, encoding: .utf8)
        let ok = try s.runAgent()
        #expect(ok.status == 0, "\(ok.output)")
        // T revoked: refused, naming the client's host.
        try (pins + "@revoked [127.0.0.1]:\(s.t.port) " + s.t.hostPublicKey + "\n").write(toFile: s.knownHosts, atomically: true, encoding: .utf8)
        let loginsBefore = Self.logins(s.t)
        let refused = try s.runAgent()
        #expect(refused.status != 0 && refused.output.contains("HOST KEY REVOKED") && refused.output.contains("line 3"), "\(refused.output)")
        #expect(Self.logins(s.t) == loginsBefore)
        #expect(try s.archives().count == 1)
    }

    @Test("@cert-authority for an unpinned B: the run stops with a message naming the line and the fix (pin the host's own key)")
    func certAuthority() throws {
        let s = try Sandbox(name: "cert-authority")
        defer { s.close() }
        try s.configure()
        // A CA key (any ed25519 key) trusted for B's name; B's own key is not pinned.
        try Proc.check("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", "\(s.dir)/ca"])
        let ca = try String(contentsOfFile: "\(s.dir)/ca.pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
        try (s.t.knownHostsLine + "\n@cert-authority [127.0.0.1]:\(s.b.port) \(ca)\n").write(toFile: s.knownHosts, atomically: true, encoding: .utf8)
        let r = try s.runAgent()
        #expect(r.status != 0)
        #expect(r.output.contains("@cert-authority") && r.output.contains("line 2") && r.output.contains("hostkey --add"), "\(r.output)")
        #expect(try s.archives().isEmpty)
    }
}
