import Foundation
import RelayCore
import Testing

/// The status page of a real daemon with real runs (sshd, borg), loaded by headless
/// Chromium (Support/browser.py drives it over the DevTools pipe): the login form, the
/// fleet, client and run pages as the browser built them, screenshots at desktop and phone
/// width, and a run's live progress through the page's own EventSource.
@Suite("Status page in a real browser (headless Chromium, real daemon, sshd, borg)", .serialized)
struct StatusPageTests {
    static let chromium = "/usr/bin/chromium"
    /// WebServer.maxConnections (this target does not import the daemon's module).
    static let webConnectionCap = 256

    /// Where the screenshots and DOMs go: $RELAY_TEST_OUTPUT/status-page, or
    /// .build/test-output/status-page.
    static var outputDir: String {
        let base = ProcessInfo.processInfo.environment["RELAY_TEST_OUTPUT"]
            ?? FileManager.default.currentDirectoryPath + "/.build/test-output"
        return base + "/status-page"
    }

    static func count(_ needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }

    /// The `<tr>` of a client on the fleet page.
    static func row(_ client: String, in html: String) -> String? {
        guard let start = html.range(of: "data-client=\"\(client)\"") else { return nil }
        let rest = html[start.lowerBound...]
        guard let end = rest.range(of: "</tr>") else { return nil }
        return String(rest[..<end.upperBound])
    }

    @Test("one failed, one overdue, one running client: the fleet, client and run pages in Chromium after a login through the form; screenshots at 1280 px (light and dark) and 390 px; two or more live progress events with growing bytes")
    func pagesInChromium() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.chromium), "chromium is missing: scripts/setup installs it")
        let s = try Sandbox(name: "web", multiRepo: true)
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        // web1's borg uploads at 2 MiB/s at most, so that a run lasts long enough to watch.
        let slowBorg = "\(s.dir)/t/slow-borg"
        try """
            #!/bin/sh
            for a in "$@"; do [ "$a" = create ] && exec borg --upload-ratelimit 2048 "$@"; done
            exec borg "$@"
            """.write(toFile: slowBorg, atomically: true, encoding: .utf8)
        chmod(slowBorg, 0o755)
        s.tBorg = slowBorg
        try writeRandomFile("\(s.dataDir)/first.bin", count: 1024 * 1024)
        let sealed = try s.sealed()
        try s.addClient("web2", sealed: sealed)
        try s.addClient("web3", sealed: sealed)
        s.extraTables[s.extraTables.count - 1] += "\nmax_age = \"3s\""
        let port = Proc.freePort()
        s.extraTables.append("[web]\nlisten = \"127.0.0.1:\(port)\"")
        try s.configure()
        let password = "pw-" + UUID().uuidString
        let passwd = try Proc.run(try Proc.binary("relayctl"), ["web", "passwd", "--config", s.configPath], stdin: Data(password.utf8))
        #expect(passwd.status == 0 && passwd.stdout.contains("web-password"), "\(passwd.output)")
        let hashFile = try String(contentsOfFile: "\(s.stateDir)/web-password", encoding: .utf8)
        #expect(hashFile.hasPrefix("$argon2id$") && !hashFile.contains(password))
        // web2 fails: its repository is gone.
        try FileManager.default.removeItem(atPath: "\(s.dir)/b/repo-web2")

        let d = try AgentDaemon(s)
        defer { d.stop() }
        let good = try d.ctl(["run", "web1", "--follow"])
        #expect(good.status == 0, "\(good.output)")
        #expect(try d.ctl(["run", "web2", "--follow"]).status != 0)
        #expect(try d.ctl(["run", "web3", "--follow"]).status == 0)
        let failedRun = try #require(try d.runs("web2").first)
        let firstArchive = try #require(try d.runs("web1").first?.archive)
        // web3 becomes overdue 3 s after its backup.
        var overdue = false
        for _ in 0..<60 where !overdue {
            overdue = try d.status().clients.first { $0.name == "web3" }?.overdue == true
            if !overdue { usleep(500_000) }
        }
        #expect(overdue, "web3 did not become overdue")

        // A run of web1 with 40 MiB of new data: about 20 s at 2 MiB/s, so it is still running
        // when Chromium, slow to start on a loaded machine, opens its page (with 12 MiB the run
        // once ended before the browser saw two progress events).
        try writeRandomFile("\(s.dataDir)/second.bin", count: 40 * 1024 * 1024)
        let live = try #require(try d.start(["web1"]).first)
        #expect(d.waitForBorgOnT(within: 30), "borg create did not start on T")

        try? FileManager.default.removeItem(atPath: Self.outputDir)
        try FileManager.default.createDirectory(atPath: Self.outputDir, withIntermediateDirectories: true)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Support/browser.py").path
        let browser = try Proc.run("/usr/bin/python3", [script, Self.chromium, "http://127.0.0.1:\(port)", Self.outputDir,
                                                        "--watch", "live", "live=/runs/\(live)", "fleet=/",
                                                        "client=/clients/web1", "failed=/runs/\(failedRun.id)"],
                                   stdin: Data(password.utf8), timeout: 300)
        try #require(browser.status == 0, "browser.py: \(browser.output)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(browser.stdout.utf8)) as? [String: Any])
        let login = result["login"] as? [String: Any]
        #expect(login?["url"] as? String == "http://127.0.0.1:\(port)/", "after the login form: \(String(describing: login))")

        // Live progress: the page's EventSource got at least two events, with growing bytes.
        let seen = (result["watch"] as? [Any])?.compactMap { ($0 as? NSNumber)?.int64Value } ?? []
        print("status page: progress events seen by the browser (bytes to the server): \(seen)")
        #expect(seen.count >= 2 && seen.last! > seen.first!, "\(seen)")

        // The fleet, as the browser built it.
        let fleet = try String(contentsOfFile: "\(Self.outputDir)/fleet.html", encoding: .utf8)
        let web1 = try #require(Self.row("web1", in: fleet), "no row for web1: \(fleet)")
        let web2 = try #require(Self.row("web2", in: fleet))
        let web3 = try #require(Self.row("web3", in: fleet))
        #expect(web2.contains("data-state=\"failed\"") && web2.contains("class=\"day failure\""), "\(web2)")
        #expect(web3.contains("data-state=\"overdue\"") && web3.contains("class=\"day success\""), "\(web3)")
        #expect(web1.contains("data-state=\"running\"") || web1.contains("data-state=\"ok\""), "\(web1)")
        #expect(web1.contains(firstArchive), "the last archive's name: \(web1)")
        for r in [web1, web2, web3] { #expect(Self.count("<li class=\"day ", in: r) == 30) }
        // Worst first.
        let order = ["web2", "web3", "web1"].compactMap { fleet.range(of: "data-client=\"\($0)\"")?.lowerBound }
        #expect(order.count == 3 && order == order.sorted(), "the failed client first, then the overdue one")
        // Times are shown in the browser's zone by the page's script (no "UTC" text left).
        #expect(!fleet.contains(" UTC</time>"), "the script did not run")

        let client = try String(contentsOfFile: "\(Self.outputDir)/client.html", encoding: .utf8)
        for chart in ["chart-added", "chart-duration", "chart-original"] {
            #expect(client.contains("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"\(chart)\""), "\(chart)")
        }
        #expect(Self.count("<rect class=\"bar ok\"", in: client) >= 2, "bars of the good backups")
        #expect(client.contains(firstArchive) && client.contains("Run a backup now"))

        let failed = try String(contentsOfFile: "\(Self.outputDir)/failed.html", encoding: .utf8)
        #expect(failed.contains("What went wrong") && failed.contains("id=\"run-state\">failed<"), "\(failed)")
        #expect(!failed.contains(s.passphrase) && !fleet.contains(s.passphrase) && !client.contains(s.passphrase))
        #expect(!fleet.contains(password))

        // Screenshots: PNGs of the whole page, desktop and phone; no sideways scrolling on a phone.
        for name in ["fleet", "client", "failed", "live"] {
            for width in ["desktop", "dark", "phone"] {
                let png = try Data(contentsOf: URL(fileURLWithPath: "\(Self.outputDir)/\(name)-\(width).png"))
                #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]) && png.count > 5_000, "\(name)-\(width).png: \(png.count) bytes")
            }
            let page = (result["pages"] as? [String: Any])?[name] as? [String: Any]
            #expect(page?["phone_overflow"] as? Bool == false, "\(name) scrolls sideways at 390 px")
            // Dark mode follows the system's setting.
            #expect(page?["background"] as? String == "rgb(251, 251, 250)" && page?["dark_background"] as? String == "rgb(21, 23, 26)",
                    "\(name): \(String(describing: page))")
        }
        print("status page: screenshots and DOMs in \(Self.outputDir)")

        #expect(try d.waitFinished(live, within: 120)?.state == .succeeded)
        #expect(d.stop() == 0)
    }

    /// A config with [web] (and [metrics]) on the given ports; hosts on a closed loopback port.
    static func plainConfig(_ dir: String, web: String, extra: String = "") throws -> String {
        _ = FileManager.default.createFile(atPath: "\(dir)/key", contents: Data("k".utf8), attributes: [.posixPermissions: 0o600])
        _ = FileManager.default.createFile(atPath: "\(dir)/known_hosts", contents: Data())
        let path = "\(dir)/relay.toml"
        try """
            [relay]
            state_dir = "\(dir)/state"
            known_hosts = "\(dir)/known_hosts"
            socket = "\(dir)/control.sock"

            [servers.vault]
            host = "127.0.0.1"
            port = 1
            user = "borg"
            key = "\(dir)/key"

            [clients.web1]
            host = "127.0.0.1"
            port = 1
            user = "root"
            key = "\(dir)/key"
            server = "vault"
            repository = "/srv/borg/web1"
            paths = ["/etc"]

            [web]
            \(web)
            \(extra)
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// A listening TCP socket on 127.0.0.1 (closed by the caller).
    static func holdPort() -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        listen(fd, 1)
        return (fd, Int(UInt16(bigEndian: addr.sin_port)))
    }

    @Test("relayctl web passwd: the hash file is 0600 and holds no password; a short password and a missing state_dir are refused naming the fix; a [web] or [metrics] port in use stops the agent naming the key")
    func passwdAndPortInUse() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("web-cli-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let held = Self.holdPort()
        defer { close(held.fd) }
        let config = try Self.plainConfig(dir, web: "listen = \"127.0.0.1:\(held.port)\"")
        let ctl = try Proc.binary("relayctl")
        // No state_dir yet.
        let early = try Proc.run(ctl, ["web", "passwd", "--config", config], stdin: Data("long enough password".utf8))
        #expect(early.status != 0 && early.stderr.contains("does not exist") && early.stderr.contains("start relay-agent once"), "\(early.output)")
        try FileManager.default.createDirectory(atPath: "\(dir)/state", withIntermediateDirectories: true)
        let short = try Proc.run(ctl, ["web", "passwd", "--config", config], stdin: Data("short\n".utf8))
        #expect(short.status != 0 && short.stderr.contains("shorter than 10 bytes"), "\(short.output)")
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/state/web-password"))
        let good = try Proc.run(ctl, ["web", "passwd", "--config", config], stdin: Data("a long enough password\n".utf8))
        #expect(good.status == 0, "\(good.output)")
        let attrs = try FileManager.default.attributesOfItem(atPath: "\(dir)/state/web-password")
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        let hash = try String(contentsOfFile: "\(dir)/state/web-password", encoding: .utf8)
        #expect(hash.hasPrefix("$argon2id$") && !hash.contains("long enough") && !good.output.contains("long enough"))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/state").filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty, "\(leftovers)")

        // The [web] port is taken: the agent stops at once, naming [web] listen.
        let agent = try Proc.binary("relay-agent")
        let busy = try Proc.run(agent, ["serve", "--config", config], timeout: 60)
        #expect(busy.status != 0 && busy.stderr.contains("[web] listen = \"127.0.0.1:\(held.port)\"")
                && busy.stderr.contains("in use"), "\(busy.output)")
        // The same for [metrics].
        let free = Proc.freePort()
        let metrics = try Self.plainConfig(dir, web: "listen = \"127.0.0.1:\(free)\"", extra: "\n[metrics]\nlisten = \"127.0.0.1:\(held.port)\"")
        let busyMetrics = try Proc.run(agent, ["serve", "--config", metrics], timeout: 60)
        #expect(busyMetrics.status != 0 && busyMetrics.stderr.contains("[metrics] listen") && busyMetrics.stderr.contains("in use"),
                "\(busyMetrics.output)")
    }

    /// A TCP connection to 127.0.0.1:port that has sent the start of a login form and then
    /// nothing (non-blocking, so a full backlog cannot hang the test); -1 when refused.
    static func slowLogin(port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return -1 }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        usleep(2_000)
        let head = Array("POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 16000\r\n\r\npassword=".utf8)
        _ = head.withUnsafeBufferPointer { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        return fd
    }

    @Test("a flood of slow login forms without a password (600 connections): the agent's descriptors stay bounded, the control socket answers, and the page works again once they are gone")
    func slowRequestFlood() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("web-flood-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = Proc.freePort()
        let config = try Self.plainConfig(dir, web: "listen = \"127.0.0.1:\(port)\"")
        let agent = try Spawned(try Proc.binary("relay-agent"), ["serve", "--config", config], stdin: "/dev/null",
                                stdout: "\(dir)/agent.log", stderr: "\(dir)/agent.log")
        defer {
            agent.kill(SIGTERM)
            if agent.wait(timeout: 30) == nil { agent.kill(SIGKILL); _ = agent.wait(timeout: 10) }
        }
        let deadline = Date().addingTimeInterval(20)
        while UnixSocket.probe("\(dir)/control.sock") != 0 && Date() < deadline { usleep(50_000) }
        let baseline = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(agent.pid)/fd").count) ?? 0
        var held: [Int32] = []
        defer { for fd in held where fd >= 0 { close(fd) } }
        for _ in 0..<600 { held.append(Self.slowLogin(port: port)) }
        usleep(1_500_000)
        let during = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(agent.pid)/fd").count) ?? 0
        print("status page flood: the agent had \(baseline) descriptors, \(during) with 600 slow connections held")
        #expect(during - baseline <= Self.webConnectionCap + 8, "descriptors grew by \(during - baseline)")
        let status = try Proc.run(try Proc.binary("relayctl"), ["status", "--socket", "\(dir)/control.sock"], timeout: 30)
        #expect(status.status == 0, "the control socket did not answer during the flood: \(status.output)")
        // The form deadline (10 s) lets the held connections go; the page answers again.
        for fd in held where fd >= 0 { close(fd) }
        held = []
        var answered = false
        for _ in 0..<60 where !answered {
            let page = try Proc.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                                                      "http://127.0.0.1:\(port)/login"], timeout: 10)
            answered = page.stdout == "200"
            if !answered { usleep(500_000) }
        }
        #expect(answered, "the login page did not come back after the flood")
        #expect(agent.isRunning(), "the agent died: \((try? String(contentsOfFile: "\(dir)/agent.log", encoding: .utf8)) ?? "")")
    }
}
