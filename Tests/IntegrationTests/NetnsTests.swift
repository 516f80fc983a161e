import Foundation
import Testing

/// B, R and T in three network namespaces: R reaches both, B and T cannot reach each other.
/// Needs root and `ip netns`; skipped with the reason otherwise.
@Suite("Network namespaces: B and T isolated", .serialized)
struct NetnsTests {
    static let unavailableReason: String? = {
        if geteuid() != 0 { return "not root" }
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") else { return "no /usr/sbin/ip" }
        let probe = "brprobe\(getpid())"
        guard let r = try? Proc.run("/usr/sbin/ip", ["netns", "add", probe]), r.status == 0 else {
            return "ip netns add failed (no CAP_SYS_ADMIN or no netns support)"
        }
        _ = try? Proc.run("/usr/sbin/ip", ["netns", "del", probe])
        return nil
    }()

    @Test("relayed backup succeeds while B and T provably cannot reach each other",
          .enabled(if: unavailableReason == nil, "skipped: \(unavailableReason ?? "")"))
    func isolatedTopology() throws {
        let topo = try Topology()
        defer { topo.remove() }

        let s = try Sandbox(name: "netns", netns: (b: topo.b, bAddr: Topology.bAddr, t: topo.t, tAddr: Topology.tAddr))
        defer { s.close() }
        try Data("inside a namespace\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/file.txt"))
        try writeRandomFile("\(s.dataDir)/blob", count: 3 * 1024 * 1024)
        try s.configure()

        // R reaches both; B and T do not reach each other (no route, no forwarding on R).
        #expect(try topo.canConnect(from: topo.r, to: Topology.bAddr, port: 22))
        #expect(try topo.canConnect(from: topo.r, to: Topology.tAddr, port: 22))
        #expect(try !topo.canConnect(from: topo.t, to: Topology.bAddr, port: 22), "T can reach B")
        #expect(try !topo.canConnect(from: topo.b, to: Topology.tAddr, port: 22), "B can reach T")
        #expect(try !topo.canConnect(from: topo.t, to: Topology.rToB, port: 22), "T can reach R's B-side address")

        let r = try s.runAgent(["--json"], netns: topo.r)
        #expect(r.status == 0, "relayed backup failed: \(r.output)")
        let name = try #require(try s.archives().first)
        let restore = "\(s.dir)/restore"
        try FileManager.default.createDirectory(atPath: restore, withIntermediateDirectories: true)
        try s.borg(["extract", "\(s.repo)::\(name)"], cwd: restore)
        #expect(TreeCompare.differences(s.dataDir, restore + s.dataDir).isEmpty)
        // Still isolated after the run.
        #expect(try !topo.canConnect(from: topo.t, to: Topology.bAddr, port: 22))
    }
}

/// Network namespaces a test creates, joined by veth pairs, and removed by `remove()`.
protocol NamespaceSet: AnyObject {
    /// The namespaces made so far, for `remove()`.
    var created: [String] { get set }
}

extension NamespaceSet {

    /// A namespace with loopback up and IP forwarding off (nothing routes between links).
    func addNamespace(_ ns: String) throws {
        try ip(["netns", "add", ns])
        created.append(ns)
        try ip(["-n", ns, "link", "set", "lo", "up"])
        try ip(["netns", "exec", ns, "/usr/sbin/sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
    }

    func link(_ ns1: String, _ if1: String, _ a1: String, _ ns2: String, _ if2: String, _ a2: String) throws {
        try ip(["link", "add", if1, "type", "veth", "peer", "name", if2])
        try ip(["link", "set", if1, "netns", ns1])
        try ip(["link", "set", if2, "netns", ns2])
        try ip(["-n", ns1, "addr", "add", "\(a1)/24", "dev", if1])
        try ip(["-n", ns2, "addr", "add", "\(a2)/24", "dev", if2])
        try ip(["-n", ns1, "link", "set", if1, "up"])
        try ip(["-n", ns2, "link", "set", if2, "up"])
    }

    func ip(_ args: [String]) throws {
        try Proc.check("/usr/sbin/ip", args)
    }

    /// Takes a veth end down or up inside its namespace (a silent cut: the other side
    /// still has its link and route, its packets just vanish).
    func setLink(_ ns: String, _ dev: String, up: Bool) throws {
        try ip(["-n", ns, "link", "set", dev, up ? "up" : "down"])
    }

    /// Tries a TCP connection from inside `ns` (socat, 2 s timeout).
    func canConnect(from ns: String, to host: String, port: Int) throws -> Bool {
        let r = try Proc.run("/usr/sbin/ip", ["netns", "exec", ns, "/usr/bin/socat", "-u", "OPEN:/dev/null",
                                              "TCP:\(host):\(port),connect-timeout=2"], timeout: 20)
        return r.status == 0
    }

    func remove() {
        for ns in created.reversed() { _ = try? Proc.run("/usr/sbin/ip", ["netns", "del", ns]) }
        created.removeAll()
    }
}

/// Three namespaces joined by two veth pairs: R–B (10.213.1.0/24) and R–T (10.213.2.0/24).
final class Topology: NamespaceSet {
    var created: [String] = []
    static let rToB = "10.213.1.1", bAddr = "10.213.1.2"
    static let rToT = "10.213.2.1", tAddr = "10.213.2.2"
    let r: String, b: String, t: String
    /// The veth ends: R's towards B and T, and B's and T's own.
    let rToBLink: String, bLink: String, rToTLink: String, tLink: String
    nonisolated(unsafe) private static var counter = 0
    private static let counterLock = NSLock()

    init() throws {
        let n = Self.counterLock.withLock { Self.counter += 1; return Self.counter }
        // Names stay within IFNAMSIZ: "vb" + 5 digits + 1 digit + side.
        let tag = String(format: "%05d%d", Int(getpid()) % 100_000, n % 10)
        rToBLink = "vb\(tag)r"; bLink = "vb\(tag)b"
        rToTLink = "vt\(tag)r"; tLink = "vt\(tag)t"
        r = "brl\(tag)r"
        b = "brl\(tag)b"
        t = "brl\(tag)t"
        do {
            for ns in [r, b, t] { try addNamespace(ns) }
            try link(r, rToBLink, Self.rToB, b, bLink, Self.bAddr)
            try link(r, rToTLink, Self.rToT, t, tLink, Self.tAddr)
        } catch {
            remove()
            throw error
        }
    }

    /// Shapes what leaves `dev` in `ns` with a token bucket (netem is not always there).
    func shape(_ ns: String, _ dev: String, rateMbit: Int) throws {
        try ip(["netns", "exec", ns, "/usr/sbin/tc", "qdisc", "add", "dev", dev, "root", "tbf",
                "rate", "\(rateMbit)mbit", "burst", "64kb", "latency", "200ms"])
    }
}
