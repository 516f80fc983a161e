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

        // authorized-keys prints each jump's line, allowing tunnels to its next hop only;
        // those lines are what the jumps get.
        let ctl = try Proc.binary("relayctl")
        let printed = try Proc.check(ctl, ["authorized-keys", "web1", "--config", s.configPath]).stdout
        for (j, next) in [(j1, "127.0.0.1:\(j2.port)"), (j2, "127.0.0.1:\(s.t.port)")] {
            let line = try #require(printed.split(separator: "\n").first { $0.hasSuffix("borg-relay-jump:\(j.name)") }, "\(printed)")
            #expect(line.hasPrefix("restrict,port-forwarding,permitopen=\"\(next)\" ssh-ed25519 "), "\(line)")
            try (line + "\n").write(toFile: "\(j.dir)/authorized_keys", atomically: true, encoding: .utf8)
        }
        // hostkey --via shows T's key as ssh-keygen does, through both jumps.
        let keygen = try Proc.check("/usr/bin/ssh-keygen", ["-lf", "\(s.t.dir)/host_key.pub"]).stdout
        let fp = try #require(keygen.split(separator: " ").first { $0.hasPrefix("SHA256:") })
        let shown = try Proc.run(ctl, ["hostkey", "127.0.0.1:\(s.t.port)", "--via", "j1,j2", "--config", s.configPath])
        #expect(shown.status == 0 && shown.stdout.contains(String(fp)), "hostkey --via (exit \(shown.status)): \(shown.output)")
        // check goes through the jumps too.
        let check = try Proc.run(ctl, ["check", "--config", s.configPath])
        #expect(check.status == 0, "\(check.output)")

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

    @Test("two runs through the same jump at once share one session to it (share_jumps), which closes when unused")
    func sharedJump() throws {
        let s = try Sandbox(name: "jumpshare", multiRepo: true)
        defer { s.close() }
        try writeRandomFile("\(s.dataDir)/big.bin", count: 40 * 1024 * 1024)
        let j1 = try s.addJump("j1", permitOpen: "127.0.0.1:\(s.t.port)")
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\"", "max_parallel = 2"]
        s.clientExtra = ["via = [\"j1\"]"]
        let data2 = try s.addClient("web2", sealed: nil)
        try writeRandomFile("\(data2)/big.bin", count: 40 * 1024 * 1024)
        s.extraTables[s.extraTables.count - 1] += "\nvia = [\"j1\"]\n"
        s.extraTables.append(s.jumpTable(j1))
        try s.configure()
        let sealed = try s.sealed()
        s.extraTables[0] = s.extraTables[0].replacingOccurrences(of: "archive = ", with: "passphrase = \"\(sealed)\"\narchive = ")
        try s.configure()
        let d = try AgentDaemon(s)
        defer { d.stop() }
        let ids = try d.start(["web1", "web2"])
        #expect(ids.count == 2)
        for id in ids {
            let v = try #require(try d.waitFinished(id, within: 120))
            #expect(v.state == .succeeded, "\(v.error ?? "")")
        }
        let logins = j1.log.components(separatedBy: "Accepted publickey").count - 1
        #expect(logins == 1, "j1 saw \(logins) logins for two concurrent runs: \(j1.log)")
        // Unused, the jump's session closes.
        #expect(s.sessionsLeft(on: [j1], within: 10).isEmpty, "the jump's session stayed open: \(d.log.split(separator: "\n").filter { $0.contains("jump") }.joined(separator: "\n"))")
    }

    @Test("namespaces R → J1 → J2 → T and R → B: R reaches only J1 and B, each jump only its neighbours; the backup and restore work; B and T stay apart",
          .enabled(if: NetnsTests.unavailableReason == nil, "skipped: \(NetnsTests.unavailableReason ?? "")"))
    func namespaceChain() throws {
        let topo = try ChainTopology()
        defer { topo.remove() }
        let s = try Sandbox(name: "jumpns", netns: (b: topo.b, bAddr: ChainTopology.bAddr, t: topo.t, tAddr: ChainTopology.tAddr))
        defer { s.close() }
        try writeRandomFile("\(s.dataDir)/blob", count: 2 * 1024 * 1024)
        try Data("two hops away\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f.txt"))
        let j2 = try s.addJump("j2", permitOpen: "\(ChainTopology.tAddr):22", netns: topo.j2, address: ChainTopology.j2Addr)
        let j1 = try s.addJump("j1", permitOpen: "\(ChainTopology.j2Addr):22", netns: topo.j1, address: ChainTopology.j1Addr)
        s.extraTables = [s.jumpTable(j1), s.jumpTable(j2)]
        s.clientExtra = ["via = [\"j1\", \"j2\"]"]
        try s.configure()

        #expect(try topo.canConnect(from: topo.r, to: ChainTopology.j1Addr, port: 22))
        #expect(try topo.canConnect(from: topo.r, to: ChainTopology.bAddr, port: 22))
        #expect(try !topo.canConnect(from: topo.r, to: ChainTopology.tAddr, port: 22), "R reaches T directly")
        #expect(try !topo.canConnect(from: topo.r, to: ChainTopology.j2Addr, port: 22), "R reaches J2 directly")
        #expect(try !topo.canConnect(from: topo.t, to: ChainTopology.bAddr, port: 22), "T reaches B")

        let r = try s.runAgent(["--json"], netns: topo.r)
        #expect(r.status == 0, "relayed backup through two jumps failed: \(r.output)")
        let name = try #require(try s.archives().first)
        let restore = "\(s.dir)/restore"
        try FileManager.default.createDirectory(atPath: restore, withIntermediateDirectories: true)
        try s.borg(["extract", "\(s.repo)::\(name)"], cwd: restore)
        #expect(TreeCompare.differences(s.dataDir, restore + s.dataDir).isEmpty)
        #expect(try !topo.canConnect(from: topo.t, to: ChainTopology.bAddr, port: 22))
    }
}

/// Five namespaces in a chain: B – R – J1 – J2 – T, each link its own /24, no forwarding.
final class ChainTopology: NamespaceSet {
    var created: [String] = []
    static let bAddr = "10.214.1.2", rToB = "10.214.1.1"
    static let rToJ1 = "10.214.2.1", j1Addr = "10.214.2.2"
    static let j1ToJ2 = "10.214.3.1", j2Addr = "10.214.3.2"
    static let j2ToT = "10.214.4.1", tAddr = "10.214.4.2"
    let r: String, b: String, j1: String, j2: String, t: String

    init() throws {
        let tag = String(format: "%05d", Int(getpid()) % 100_000)
        r = "bjc\(tag)r"; b = "bjc\(tag)b"; j1 = "bjc\(tag)1"; j2 = "bjc\(tag)2"; t = "bjc\(tag)t"
        do {
            for ns in [r, b, j1, j2, t] { try addNamespace(ns) }
            try link(r, "cb\(tag)r", Self.rToB, b, "cb\(tag)b", Self.bAddr)
            try link(r, "c1\(tag)r", Self.rToJ1, j1, "c1\(tag)j", Self.j1Addr)
            try link(j1, "c2\(tag)a", Self.j1ToJ2, j2, "c2\(tag)b", Self.j2Addr)
            try link(j2, "c3\(tag)a", Self.j2ToT, t, "c3\(tag)t", Self.tAddr)
        } catch {
            remove()
            throw error
        }
    }
}
