import Foundation
import RelayCore
import Testing

/// The control socket under attack: roles (socket_group / admin_group) with real logins,
/// a flood of idle connections, malformed HTTP, client names that climb out of state_dir,
/// and the operation directories a killed agent leaves behind. Real daemon, sshd and borg.
@Suite("Control socket: roles, floods, malformed HTTP, names, stale run directories (real daemon, sshd, borg)", .serialized)
struct ControlSocketTests {
    static let setpriv = "/usr/bin/setpriv"

    /// A login and group made for one test, removed again (useradd/groupadd, userdel/groupdel).
    final class Accounts {
        var users: [String] = []
        var groups: [String] = []

        static func name(_ prefix: String) -> String {
            prefix + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(10).lowercased()
        }

        func group(_ prefix: String) throws -> String {
            let g = Self.name(prefix)
            try Proc.check("/usr/sbin/groupadd", ["--system", g])
            groups.append(g)
            return g
        }

        func user(_ prefix: String, groups: [String]) throws -> (name: String, uid: uid_t, gid: gid_t) {
            let u = Self.name(prefix)
            try Proc.check("/usr/sbin/useradd", ["--system", "--no-create-home", "--home-dir", "/nonexistent",
                                                 "--shell", "/usr/sbin/nologin", "--groups", groups.joined(separator: ","), u])
            users.append(u)
            guard let pw = getpwnam(u) else { throw FixtureError("useradd \(u) made no user") }
            return (u, pw.pointee.pw_uid, pw.pointee.pw_gid)
        }

        deinit {
            for u in users { _ = try? Proc.run("/usr/sbin/userdel", [u]) }
            for g in groups { _ = try? Proc.run("/usr/sbin/groupdel", [g]) }
        }
    }

    /// `relayctl ARGS --socket S` as the login `uid` with its groups from the group database.
    func ctl(as uid: uid_t, gid: gid_t, _ d: AgentDaemon, _ args: [String], stdin: Data? = nil) throws -> ProcessResult {
        var argv = args
        argv.insert(contentsOf: ["--socket", d.socket], at: args.firstIndex(of: "--") ?? args.count)
        return try Proc.run(Self.setpriv, ["--reuid=\(uid)", "--regid=\(gid)", "--init-groups", try Proc.binary("relayctl")] + argv,
                            stdin: stdin, timeout: 300)
    }

    /// `GET path` on the socket as `uid`, with curl: (HTTP status, body).
    func get(as uid: uid_t, gid: gid_t, _ d: AgentDaemon, _ path: String) throws -> (Int, String) {
        let r = try Proc.run(Self.setpriv, ["--reuid=\(uid)", "--regid=\(gid)", "--init-groups", "/usr/bin/curl", "-s",
                                            "--unix-socket", d.socket, "-w", "\n%{http_code}", "http://relay\(path)"], timeout: 30)
        let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    @Test("a socket_group member (real login, not in admin_group) may see status, back up, list and read its own output; restore, borg, key-export and others' output get 403 naming the group, and nothing ran; an admin_group member restores",
          .enabled(if: geteuid() == 0, "needs root: creates logins and groups"))
    func rolesWithRealLogins() throws {
        let accounts = Accounts()
        let socketGroup = try accounts.group("brs")
        let adminGroup = try accounts.group("brg")
        let member = try accounts.user("brm", groups: [socketGroup])
        let admin = try accounts.user("bra", groups: [socketGroup, adminGroup])

        let s = try daemonSandbox("roles", relay: ["socket_group = \"\(socketGroup)\"", "admin_group = \"\(adminGroup)\""])
        defer { s.close() }
        chmod("\(s.dir)/relay", 0o755)
        try Data("role data".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.configure()
        let d = try AgentDaemon(s)
        defer { d.stop() }

        // The socket belongs to socket_group, mode 0660.
        var st = stat()
        #expect(stat(d.socket, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o660)
        #expect(getgrnam(socketGroup).map { $0.pointee.gr_gid } == st.st_gid)

        // The member: status, a backup (the archive is in the repository), list, its own output.
        let status = try ctl(as: member.uid, gid: member.gid, d, ["status"])
        #expect(status.status == 0 && status.stdout.contains("web1"), "\(status.output)")
        let backup = try ctl(as: member.uid, gid: member.gid, d, ["run", "web1", "--follow"])
        #expect(backup.status == 0, "\(backup.output)\n\(d.log)")
        let archive = try #require(try s.archives().first)
        let list = try ctl(as: member.uid, gid: member.gid, d, ["list", "web1"])
        #expect(list.status == 0 && list.stdout.contains(archive), "\(list.output)")
        let memberList = try #require(try d.runs().first { $0.kind == .list })
        // relayctl list above read the member's own output (through /output); asked again, the
        // member is still allowed, and the output is gone: it is delivered once.
        let own = try get(as: member.uid, gid: member.gid, d, "/v1/runs/\(memberList.id)/output")
        #expect(own.0 == 200 && !own.1.contains(archive), "\(own)")
        #expect(try ctl(as: member.uid, gid: member.gid, d, ["runs"]).status == 0)
        let runsBefore = try d.runs().count
        chmod(s.configPath, 0o644)

        // Refused, naming the admin group; nothing ran: no run recorded, no restore target,
        // no canary from the --rsh payload (which, if borg ever ran it, would create it).
        let target = "\(s.dir)/restore-member"
        let canary = "\(s.dir)/CANARY-role"
        let refusals: [(String, [String])] = [
            ("restore", ["restore", "web1", archive, "--to", target]),
            ("borg", ["borg", "web1", "--", "list", "--rsh=sh -c 'touch \(canary); eval exec $BORG_RSH'", "::\(archive)"]),
            ("key-export", ["key-export", "web1", "-"]),
            ("compact", ["compact", "web1"]),
            // (check also runs the preflight, whose key-file checks fail for this login too)
            ("check --repository", ["check", "web1", "--repository", "--config", s.configPath]),
        ]
        for (what, args) in refusals {
            let r = try ctl(as: member.uid, gid: member.gid, d, args)
            #expect(r.status == 1, "\(what): \(r.output)")
            #expect(r.stderr.contains("\(what) needs membership in group \(adminGroup) ([relay] admin_group)"), "\(what): \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: target), "the refused restore wrote its target")
        #expect(!FileManager.default.fileExists(atPath: canary), "the refused borg command ran")
        let runsAfter = try d.runs()
        #expect(runsAfter.count == runsBefore, "a refused request left a run: \(runsAfter.map { "\($0.kind) \($0.state)" })")
        #expect(d.log.contains("refused a request from uid \(member.uid) (pid"), "\(d.log)")
        #expect(d.log.contains("POST /v1/runs: restore needs membership in group \(adminGroup)"), "\(d.log)")

        // The admin: restore works (the file comes back), and the admin's output is not the member's.
        let adminTarget = "\(s.dir)/restore-admin"
        let restore = try ctl(as: admin.uid, gid: admin.gid, d, ["restore", "web1", archive, "--to", adminTarget])
        #expect(restore.status == 0, "\(restore.output)\n\(d.log)")
        #expect(FileManager.default.contents(atPath: "\(adminTarget)\(s.dataDir)/f") == Data("role data".utf8))
        #expect(try ctl(as: admin.uid, gid: admin.gid, d, ["list", "web1"]).status == 0)
        let adminList = try #require(try d.runs().first { $0.kind == .list && $0.id != memberList.id })
        let other = try get(as: member.uid, gid: member.gid, d, "/v1/runs/\(adminList.id)/output/raw")
        #expect(other.0 == 403 && other.1.contains("not yours") && !other.1.contains(archive), "\(other)")
        #expect(try get(as: admin.uid, gid: admin.gid, d, "/v1/runs/\(memberList.id)/output").0 == 200)

        // Someone in neither group: the socket's mode stops them.
        let stranger = try accounts.user("brx", groups: [adminGroup])  // admin group alone cannot reach a 0660 socket
        let refused = try ctl(as: stranger.uid, gid: stranger.gid, d, ["status"])
        #expect(refused.status == 1 && refused.stderr.contains("permission denied"), "\(refused.output)")
        #expect(d.stop() == 0)
    }

    @Test("3000 idle connections held open: the agent (soft fd limit raised to the hard 1024) keeps under its cap, relayctl status answers and a backup succeeds")
    func floodOfIdleConnections() throws {
        let s = try daemonSandbox("flood")
        defer { s.close() }
        try writeRandomFile("\(s.dataDir)/f.bin", count: 4 * 1024 * 1024)
        try s.configure()
        // The agent starts with a soft limit of 512 under a hard one of 1024: without the cap,
        // 3000 connections would take every descriptor it has.
        let d = try AgentDaemon(s, wrapper: ["/usr/bin/prlimit", "--nofile=512:1024"])
        defer { d.stop() }
        let limits = try String(contentsOfFile: "/proc/\(d.process.pid)/limits", encoding: .utf8)
        let nofile = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max open files") })
        #expect(nofile.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).prefix(2) == ["1024", "1024"], "\(nofile)")

        // This process needs 3000 descriptors too.
        var lim = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
        lim.rlim_cur = lim.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
        try #require(lim.rlim_max >= 3500, "the hard fd limit \(lim.rlim_max) is too low for 3000 connections")
        var fds: [Int32] = []
        defer { fds.forEach { close($0) } }
        for _ in 0..<3000 { fds.append(try openRaw(d.socket)) }
        func agentFDs() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(d.process.pid)/fd").count) ?? -1 }
        var held = agentFDs()
        for _ in 0..<50 where held > 400 {
            usleep(100_000)
            held = agentFDs()
        }
        #expect(held > 0 && held <= 400, "the agent holds \(held) descriptors with 3000 connections open")

        let status = try d.status()
        #expect(status.clients.map(\.name) == ["web1"])
        if geteuid() == 0 {
            // Another user (a member of the socket's group, root's group here) is not held up
            // by root's flood: the per-user cap leaves room.
            let other = try Proc.run(Self.setpriv, ["--reuid=65534", "--regid=65534", "--groups=0", try Proc.binary("relayctl"),
                                                    "status", "--socket", d.socket], timeout: 30)
            #expect(other.status == 0, "\(other.output)")
        }
        let run = try d.ctl(["run", "web1", "--follow"])
        #expect(run.status == 0, "\(run.output)\n\(d.log)")
        #expect(try s.archives().count == 1)
        #expect(d.log.contains("closed by the cap"), "\(d.log)")
        #expect(!d.log.contains("Too many open files"), "\(d.log)")
        fds.forEach { close($0) }
        fds = []
        #expect(try d.status().agent.pid == d.process.pid)
        #expect(d.stop() == 0, "\(d.log)")
    }

    @Test("malformed HTTP gets 400 with a JSON error body, and the agent still answers")
    func malformedHTTP() throws {
        let s = try daemonSandbox("badhttp")
        defer { s.close() }
        try s.configure()
        let d = try AgentDaemon(s)
        defer { d.stop() }
        let cases: [(String, String)] = [
            ("a garbage request line", "GARBAGE GARBAGE GARBAGE\r\n\r\n"),
            ("a bad HTTP version", "GET /v1/status HTTP/9.9x\r\nHost: x\r\n\r\n"),
            ("a header without a colon", "GET /v1/status HTTP/1.1\r\nHost x\r\n\r\n"),
        ]
        for (what, text) in cases {
            let answer = try rawExchange(d.socket, Array(text.utf8))
            #expect(answer.hasPrefix("HTTP/1.1 400"), "\(what): \(answer.prefix(200))")
            #expect(answer.lowercased().contains("content-type: application/json"), "\(what): \(answer.prefix(300))")
            let body = answer.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
            let e = try? ControlAPI.decoder().decode(APIErrorBody.self, from: Data(body.utf8))
            #expect(e?.code == "bad_request" && e?.error.contains("malformed HTTP") == true, "\(what): \(body)")
            #expect(try d.status().clients.count == 1, "the agent stopped answering after \(what)")
        }
        #expect(d.stop() == 0)
    }

    @Test("a client named ../x: relay-agent run, serve and relayctl check exit 2 naming the rule; nothing is created outside state_dir")
    func clientNameClimbingOutOfStateDir() throws {
        let s = try daemonSandbox("names")
        defer { s.close() }
        try s.configure()
        let good = try String(contentsOfFile: s.configPath, encoding: .utf8)
        try good.replacingOccurrences(of: "[clients.web1]", with: "[clients.\"../x\"]")
            .write(toFile: s.configPath, atomically: true, encoding: .utf8)
        func tree() -> [String] {
            (FileManager.default.enumerator(atPath: s.dir)?.allObjects as? [String] ?? []).filter { !$0.hasPrefix("b/") && !$0.hasPrefix("t/") }.sorted()
        }
        let before = tree()
        let agent = try Proc.binary("relay-agent")
        for (what, r) in [
            ("relay-agent run", try Proc.run(agent, ["run", "../x", "--config", s.configPath], timeout: 60)),
            ("relay-agent serve", try Proc.run(agent, ["serve", "--config", s.configPath], timeout: 60)),
            ("relayctl check", try Proc.run(try Proc.binary("relayctl"), ["check", "--config", s.configPath], timeout: 60)),
        ] {
            #expect(r.status == 2, "\(what): \(r.output)")
            #expect(r.output.contains("'../x'") && r.output.contains("[A-Za-z0-9._-]+") && r.output.contains("[clients]"), "\(what): \(r.output)")
        }
        #expect(tree() == before)
        #expect(!FileManager.default.fileExists(atPath: "\(s.stateDir)/x"))
        #expect(!FileManager.default.fileExists(atPath: "\(s.dir)/relay/x"))
    }

    @Test("an operation's /tmp/borg-relay-RUN-* directory left by a SIGKILLed agent is removed at the next start; another's stays")
    func staleOperationDirectory() throws {
        let s = try daemonSandbox("stale")
        defer { s.close() }
        try s.configure()
        // B's read-only key answers with a long sleep instead of borg serve: borg list on R
        // waits with its directory in place.
        let keys = "\(s.b.dir)/authorized_keys"
        let lines = try String(contentsOfFile: keys, encoding: .utf8).split(separator: "\n").map(String.init)
        let slow = lines.map { $0.contains("--append-only") ? $0.replacing(#/command="[^"]*"/#, with: "command=\"exec sleep 40\"") : $0 }
        try (slow.joined(separator: "\n") + "\n").write(toFile: keys, atomically: true, encoding: .utf8)
        defer { for p in Proc.descendants(of: s.b.process.pid) { kill(p, SIGKILL) } }

        let tmp = FileManager.default.temporaryDirectory.path
        let foreign = "\(tmp)/borg-relay-20200101T000000-abcdef-QQQQQQ"  // not a run of this agent
        try FileManager.default.createDirectory(atPath: foreign, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: foreign) }

        var d = try AgentDaemon(s)
        let listing = try Spawned(try Proc.binary("relayctl"), ["list", "web1", "--socket", d.socket],
                                  stdin: "/dev/null", stdout: "\(s.dir)/list.out", stderr: "\(s.dir)/list.out")
        defer { listing.kill(SIGKILL); _ = listing.wait(timeout: 10) }
        var dir: String?
        var runID = ""
        for _ in 0..<400 where dir == nil {
            if let r = try? d.runs().first(where: { $0.kind == .list }) {
                runID = r.id
                dir = ((try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? [])
                    .first { $0.hasPrefix("borg-relay-\(r.id)-") }.map { "\(tmp)/\($0)" }
            }
            if dir == nil { usleep(50_000) }
        }
        let stale = try #require(dir, "no operation directory appeared\n\(d.log)")
        let children = Proc.descendants(of: d.process.pid)
        d.process.kill(SIGKILL)
        _ = d.process.wait(timeout: 10)
        // borg and its connector on R end once the agent's end of the socket is gone.
        let deadline = Date().addingTimeInterval(30)
        while children.contains(where: { kill($0, 0) == 0 }) && Date() < deadline { usleep(100_000) }
        for p in children where kill(p, 0) == 0 { kill(p, SIGKILL) }
        #expect(FileManager.default.fileExists(atPath: stale), "the directory went with the agent; nothing to test")

        d = try AgentDaemon(s)
        #expect(!FileManager.default.fileExists(atPath: stale), "\(stale) survived the restart\n\(d.log)")
        #expect(FileManager.default.fileExists(atPath: foreign), "another agent's directory was removed")
        #expect(try d.run(runID)?.state == .interrupted)
        #expect(d.log.contains("removed \(stale)"), "\(d.log)")
        #expect(d.stop() == 0)
    }
}
