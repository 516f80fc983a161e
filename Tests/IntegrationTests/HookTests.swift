import Foundation
import RelayCore
import Testing

@Suite("Hooks on the client (real sshd, real borg)", .serialized)
struct HookTests {
    @Test("pre fails → no archive, post ran with failure; pre ok → archive, post with success; a hanging pre is killed at its timeout")
    func preAndPostHooks() throws {
        let s = try Sandbox(name: "hooks")
        defer { s.close() }
        try Data("data".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        let marker = "\(s.dir)/t/post.txt"
        let post = "post = ['sh', '-c', 'echo \"post:$BORG_RELAY_RESULT\" > \(marker)']"

        // 1. A failing pre hook: no backup, post runs with failure, the output is logged.
        s.clientExtra = ["pre = ['sh', '-c', 'echo pre-says-no; exit 3']", post]
        try s.configure()
        let failed = try s.runAgent(["--json"])
        #expect(failed.status == 1, "\(failed.output)")
        let report = try JSONSerialization.jsonObject(with: Data(failed.stdout.utf8)) as? [String: Any]
        let error = report?["error"] as? String ?? ""
        #expect(error.contains("pre hook") && error.contains("exit status 3") && error.contains("pre-says-no"), "\(error)")
        #expect(try s.archives().isEmpty)
        #expect(try String(contentsOfFile: marker, encoding: .utf8) == "post:failure\n")
        let log = try String(contentsOfFile: report?["log_file"] as? String ?? "", encoding: .utf8)
        #expect(log.contains("[T pre] pre-says-no"), "\(log)")

        // 2. A pre hook that prepares data: it is in the archive; post sees success.
        s.clientExtra = ["pre = ['sh', '-c', 'echo dump > \(s.dataDir)/dump.sql']", post]
        try s.configure()
        let ok = try s.runAgent()
        #expect(ok.status == 0, "\(ok.output)")
        let archive = try #require(try s.archives().first)
        #expect(try s.archivePaths(archive).contains { $0.hasSuffix("/dump.sql") })
        #expect(try String(contentsOfFile: marker, encoding: .utf8) == "post:success\n")

        // 3. A hanging pre hook is killed at pre_timeout, and nothing is left on T.
        s.clientExtra = ["pre = 'sleep 300'", "pre_timeout = 2"]
        try s.configure()
        let started = Date()
        let hung = try s.runAgent()
        #expect(hung.status == 1, "\(hung.output)")
        #expect(hung.stdout.contains("killed at its timeout of 2 s"), "\(hung.stdout)")
        #expect(Date().timeIntervalSince(started) < 30)
        #expect(s.sessionsLeft(on: [s.t, s.b], within: 10).isEmpty)
        #expect(try s.archives().count == 1)
    }

    @Test("run --dry-run shows the exact commands for each host, the passphrase as ***, and connects to nothing")
    func dryRun() throws {
        let s = try Sandbox(name: "dryrun", maintenance: true)
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        s.clientExtra = ["pre = 'echo pre'", "post = ['sh', '-c', 'echo post']", "retention = { daily = 7, weekly = 4 }",
                         "exclude = [\"it's *.tmp\"]"]
        try s.configure()
        for (exe, args) in [("relay-agent", ["run", "web1", "--dry-run", "--config", s.configPath]),
                            ("relayctl", ["run", "web1", "--dry-run", "--config", s.configPath])] {
            let r = try Proc.run(try Proc.binary(exe), args)
            #expect(r.status == 0, "\(exe): \(r.output)")
            let out = r.stdout
            // Exactly what is sent: one exec sh -c 'SCRIPT' any login shell reads alike.
            let plan = BackupPlan(client: try ConfigLoader.load(path: s.configPath).client("web1"))
            let script = plan.createScript(connector: BackupPlan.connector(port: 0), withPassphrase: true)
            #expect(script.contains("borg create --json --log-json --progress --lock-wait=300 --compression=lz4 '--exclude=it'\\''s *.tmp'"), "\(script)")
            #expect(out.contains("client: exec         " + Shell.anyShell(script).replacingOccurrences(of: "127.0.0.1:0", with: "127.0.0.1:PORT")), "\(exe): \(out)")
            #expect(out.contains("BORG_PASSPHRASE_FD=0") && out.contains("*** (the passphrase"), "\(out)")
            #expect(out.contains(BackupPlan.hookCommand(argv: ["echo", "pre"], timeout: 3600, runID: "RUN", client: "web1", result: nil)), "\(out)")
            #expect(out.contains("borg serve --info"), "\(out)")
            #expect(out.contains("--keep-daily=7 --keep-weekly=4"), "\(out)")
            #expect(!out.contains(s.passphrase))
        }
        // Nothing happened: no session on T or B, no archive, no history.
        #expect(s.t.sessionPIDs().isEmpty && s.b.sessionPIDs().isEmpty)
        #expect(try s.archives().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(s.stateDir)/history.sqlite"))
    }

    @Test("hook config: a string is split at spaces, arrays are argv, bad values name the key")
    func hookConfig() throws {
        func parse(_ extra: String) throws -> ClientConfig {
            let cfg = try ConfigLoader.parse("""
                [relay]
                [servers.s]
                host = "b"
                user = "u"
                key = "/k"
                [clients.c]
                host = "t"
                user = "u"
                key = "/k"
                server = "s"
                repository = "/r"
                paths = ["/p"]
                \(extra)
                """, file: "t.toml", checkFiles: false)
            return cfg.clients["c"]!
        }
        #expect(try parse("pre = '/usr/local/sbin/dump --all'").pre == ["/usr/local/sbin/dump", "--all"])
        #expect(try parse("post = ['sh', '-c', 'rm -f /x; echo done']").post == ["sh", "-c", "rm -f /x; echo done"])
        #expect(try parse("pre_timeout = 5").preTimeout == 5)
        for bad in ["pre = ''", "pre = 3", "post = []", "pre_timeout = 0"] {
            do {
                _ = try parse(bad)
                Issue.record("\(bad) was accepted")
            } catch {
                let key = String(bad.split(separator: " ")[0])
                let text = "\(error)"
                #expect(text.contains("[clients.c]") && text.contains(key), "\(text)")
            }
        }
    }
}
