import Foundation
import RelayCore
import Testing

/// Multi-hop: the relay reaches T through jump hosts with libssh alone (direct-tcpip
/// tunnels), pinning every hop's host key.
@Suite("Jumps: reaching hosts through chains of jump hosts (real sshd, real borg)", .serialized)
struct JumpTests {
    @Test("loopback chain R → j1 → j2 → T: backup and restore byte-identical; a changed host key on j2 stops the run before T; a jump that refuses the tunnel is named")
    func loopbackChain() throws {
        let s = try Sandbox(name: "jumps")
        defer { s.close() }
        try writeRandomFile("\(s.dataDir)/blob", count: 3 * 1024 * 1024)
        try Data("through two jumps\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f.txt"))
        let j2 = try s.addJump("j2", permitOpen: "127.0.0.1:\(s.t.port)")
        let j1 = try s.addJump("j1", permitOpen: "127.0.0.1:\(j2.port)")
        s.extraTables = [s.jumpTable(j1), s.jumpTable(j2)]
        s.clientExtra = ["via = [\"j1\", \"j2\"]"]
        try s.configure()

        let r = try s.runAgent(["--json"])
        #expect(r.status == 0, "\(r.output)")
        #expect(j1.log.contains("Accepted publickey"), "j1 was not used: \(j1.log)")
        #expect(j2.log.contains("Accepted publickey"), "j2 was not used: \(j2.log)")
        let name = try #require(try s.archives().first)
        let restore = "\(s.dir)/restore"
        try FileManager.default.createDirectory(atPath: restore, withIntermediateDirectories: true)
        try s.borg(["extract", "\(s.repo)::\(name)"], cwd: restore)
        #expect(TreeCompare.differences(s.dataDir, restore + s.dataDir).isEmpty)
        #expect(s.sessionsLeft(on: [j1, j2, s.t, s.b], within: 10).isEmpty, "sessions left after the run")

        // j2's key changes: stopped at j2, before anything reaches T.
        let tLogins = s.t.log.components(separatedBy: "Accepted publickey").count
        try Proc.check("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", "\(s.dir)/other"])
        let other = try String(contentsOfFile: "\(s.dir)/other.pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
        let pinned = try String(contentsOfFile: s.knownHosts, encoding: .utf8)
        try pinned.replacingOccurrences(of: j2.knownHostsLine, with: "[127.0.0.1]:\(j2.port) \(other)")
            .write(toFile: s.knownHosts, atomically: true, encoding: .utf8)
        let changed = try s.runAgent(["--json"])
        #expect(changed.status == 1)
        #expect(changed.stdout.contains("jump j2") && changed.stdout.contains("HOST KEY CHANGED"), "\(changed.stdout)")
        #expect(s.t.log.components(separatedBy: "Accepted publickey").count == tLogins, "T was reached although j2's key changed")
        try pinned.write(toFile: s.knownHosts, atomically: true, encoding: .utf8)

        // j1 may open tunnels only to another port: the run names j1 and the fix.
        let j1Keys = try String(contentsOfFile: "\(j1.dir)/authorized_keys", encoding: .utf8)
        try j1Keys.replacingOccurrences(of: "127.0.0.1:\(j2.port)", with: "127.0.0.1:9")
            .write(toFile: "\(j1.dir)/authorized_keys", atomically: true, encoding: .utf8)
        let refused = try s.runAgent(["--json"])
        #expect(refused.status == 1)
        #expect(refused.stdout.contains("jump j1") && refused.stdout.contains("refused a tunnel (direct-tcpip) to 127.0.0.1:\(j2.port)"),
                "\(refused.stdout)")
        try j1Keys.write(toFile: "\(j1.dir)/authorized_keys", atomically: true, encoding: .utf8)
        #expect(try s.runAgent().status == 0)
    }
}
