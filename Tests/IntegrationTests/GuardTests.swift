import Foundation
import RelayCore
import Testing

@Suite("Client guard (contrib/guard/borg-relay-guard) with real sshd and borg", .serialized)
struct GuardTests {
    static let guardPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../contrib/guard/borg-relay-guard").standardized.path

    @Test("the relay's commands pass the guard (tcp and unix, hooks); a shell, borg delete, a path outside the allowlist and shell syntax are refused with 126")
    func guardAllowsTheRelayAndNothingElse() throws {
        let s = try Sandbox(name: "guard")
        defer { s.close() }
        try Data("guarded".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        let conf = "\(s.dir)/t/guard.conf"
        try """
            # test allowlist
            path \(s.dataDir)
            restore-to \(s.dir)/t/restores
            hook sh -c "echo pre-ok"
            """.write(toFile: conf, atomically: true, encoding: .utf8)
        let tPub = try String(contentsOfFile: "\(s.dir)/relay/keys/t.pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        try "command=\"/usr/bin/python3 \(Self.guardPath) --config \(conf)\",restrict,port-forwarding,permitlisten=\"127.0.0.1:*\",permitopen=\"127.0.0.1:9\" \(tPub)\n"
            .write(toFile: "\(s.t.dir)/authorized_keys", atomically: true, encoding: .utf8)

        // Through sshd: a backup with an allowed pre hook, over tcp and over unix.
        s.clientExtra = ["pre = ['sh', '-c', 'echo pre-ok']"]
        try s.configure()
        let tcp = try s.runAgent()
        #expect(tcp.status == 0, "\(tcp.output)")
        s.clientExtra = ["transport = \"unix\""]
        try s.configure()
        let unix = try s.runAgent()
        #expect(unix.status == 0, "\(unix.output)")
        #expect(try s.archives().count == 2)
        // The preflight probe passes too.
        let check = try Proc.run(try Proc.binary("relayctl"), ["check", "--config", s.configPath])
        #expect(check.stdout.contains("ok    web1: socat on the client"), "\(check.stdout)")

        // A path outside the allowlist: the run fails with the guard's reason. (Over tcp: a
        // unix listener whose borg never connects would wait for its listen-timeout.)
        s.clientExtra = []
        s.paths = [s.dataDir, "/etc/hostname"]
        try s.configure()
        let outside = try s.runAgent()
        #expect(outside.status == 1)
        #expect(outside.stdout.contains("refused") && outside.stdout.contains("/etc/hostname"), "\(outside.stdout)")
        s.paths = [s.dataDir]

        // Direct: what anyone with the key could send.
        let cfg = try ConfigLoader.load(path: s.configPath)
        let plan = BackupPlan(client: try cfg.client("web1"))
        let good = plan.createCommand(port: 4711, withPassphrase: true)
        let marker = "\(s.dir)/t/INJECTED"
        let refused: [(String, String)] = [
            ("interactive login", ""),
            ("a shell", "sh"),
            ("a shell command", "bash -c id"),
            ("borg delete", "exec env 'BORG_RSH=sh -c '\\''exec socat STDIO TCP:127.0.0.1:4711'\\''' borg delete -- 'ssh://borg-relay\(s.repo)::a'"),
            ("a path outside the allowlist", good.replacingOccurrences(of: s.dataDir, with: "/root")),
            ("; after the command", good + "; touch \(marker)"),
            ("$() in a word", good.replacingOccurrences(of: s.dataDir, with: "\(s.dataDir)$(touch \(marker))")),
            ("backticks", good + " `touch \(marker)`"),
            ("a newline", good + "\ntouch \(marker)"),
            ("another BORG_RSH", good.replacingOccurrences(of: "exec socat STDIO TCP:127.0.0.1:4711", with: "touch \(marker)")),
            ("a hook not in the config", "exec env BORG_RELAY_RUN=x BORG_RELAY_CLIENT=web1 timeout --kill-after=10 5 touch \(marker)"),
        ]
        for (what, command) in refused {
            var env = ProcessInfo.processInfo.environment
            env["SSH_ORIGINAL_COMMAND"] = command
            let r = try Proc.run("/usr/bin/python3", [Self.guardPath, "--config", conf], env: env, timeout: 30)
            #expect(r.status == 126, "\(what) was not refused: \(r.output)")
            #expect(r.stderr.contains("borg-relay-guard: refused"), "\(what): \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: marker), "an injected command ran")
    }
}
