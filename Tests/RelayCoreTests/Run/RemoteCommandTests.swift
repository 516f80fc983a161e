import Foundation
import Testing
@testable import RelayCore

@Suite("Remote commands")
struct RemoteCommandTests {
    /// Runs `printf '%s\0' WORDS` through a real /bin/sh and returns the words it saw.
    func shellWords(_ commandLine: String) throws -> [String] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "printf '%s\\0' " + commandLine]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        var words = data.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        if words.last == "" { words.removeLast() }
        return words
    }

    static let nasty = [
        "plain", "with space", "it's", "\"double\"", "$HOME", "$(touch /tmp/pwned)", "`id`", "a;b", "a|b",
        "a&&b", "new\nline", "tab\there", "ünïcödé", "*", "?", "~", "-dash", "back\\slash", "'", "''", "!bang", "{a,b}",
    ]

    @Test func quoteSurvivesARealShell() throws {
        let words = try shellWords(Shell.join(Self.nasty))
        #expect(words == Self.nasty)
    }

    @Test func emptyWordIsQuoted() throws {
        #expect(Shell.quote("") == "''")
        #expect(try shellWords(Shell.join(["a", "", "b"])) == ["a", "", "b"])
    }

    func client(paths: [String], exclude: [String] = [], compression: String? = "lz4") -> ClientConfig {
        ClientConfig(name: "web1", endpoint: HostEndpoint(host: "h", port: 22, user: "root", key: "/k", via: []),
                     server: "vault", repository: "/srv/borg/web 1", passphrase: nil, paths: paths,
                     exclude: exclude, compression: compression, archive: "{hostname}-{now}", transport: .tcp,
                     borgPath: "borg", schedule: nil, jitter: 0, catchUp: false, retention: nil, pre: nil, post: nil)
    }

    @Test func createArgumentsEndOptionsBeforePaths() {
        let plan = BackupPlan(client: client(paths: ["-weird", "/etc"], exclude: ["-x", "*.tmp"]))
        #expect(plan.createArguments == [
            "create", "--json", "--log-json", "--progress", "--lock-wait=300", "--compression=lz4", "--exclude=-x", "--exclude=*.tmp", "--",
            "ssh://borg-relay/srv/borg/web 1::{hostname}-{now}", "-weird", "/etc",
        ])
    }

    @Test func createCommandParsesBackToTheArgv() throws {
        let paths = Self.nasty.map { "/data/" + $0 }
        let plan = BackupPlan(client: client(paths: paths, exclude: ["*;rm -rf /*"]))
        let line = plan.createScript(connector: BackupPlan.connector(port: 40123), withPassphrase: true)
        #expect(plan.createCommand(port: 40123, withPassphrase: true) == Shell.anyShell(line))
        #expect(line.hasPrefix("exec env "))
        let words = try shellWords(String(line.dropFirst("exec ".count)))
        #expect(words == ["env", "-u", "BORG_PASSPHRASE", "-u", "BORG_PASSCOMMAND", "-u", "BORG_REPO",
                          "BORG_PASSPHRASE_FD=0",
                          "BORG_RSH=sh -c 'exec socat STDIO TCP:127.0.0.1:40123'", "borg"] + plan.createArguments)
    }

    @Test func withoutPassphraseNoFd() {
        let line = BackupPlan(client: client(paths: ["/etc"])).createCommand(port: 1, withPassphrase: false)
        #expect(!line.contains("BORG_PASSPHRASE_FD=0"))
        #expect(line.contains("-u BORG_PASSPHRASE_FD"))
    }

    @Test func serveCommandIsABorgServeLine() {
        #expect(BackupPlan.serveCommand.hasPrefix("borg serve"))
    }

    // MARK: Any login shell

    /// The login shells sshd may run a command through (`SHELL -c COMMAND`); scripts/setup
    /// installs them all.
    static let loginShells: [[String]] = [
        ["/bin/sh"], ["/usr/bin/dash"], ["/bin/bash"], ["/usr/bin/zsh"], ["/usr/bin/fish"],
        ["/usr/bin/tcsh"], ["/usr/bin/csh"], ["/usr/bin/busybox", "ash"],
    ]

    /// What the login shell `shell` hands to the program of `command` (after `exec sh -c`):
    /// the command is run with /usr/bin/printf '%s\0' in place of sh -c.
    func wordsThrough(_ shell: [String], _ command: String) throws -> [String] {
        let prefix = "exec sh -c "
        #expect(command.hasPrefix(prefix))
        let printing = "exec " + Shell.quoteForAnyShell("/usr/bin/printf") + " " + Shell.quoteForAnyShell("%s\\0") + " "
            + command.dropFirst(prefix.count)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: shell[0])
        p.arguments = Array(shell.dropFirst()) + ["-c", printing]
        p.environment = ["PATH": "/usr/bin:/bin", "HOME": "/nonexistent"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(errors.isEmpty, "\(shell): \(errors)")
        var words = data.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        if words.last == "" { words.removeLast() }
        return words
    }

    /// Words that some shell reads specially even inside single quotes (fish: \' and \\;
    /// csh: ! history), or outside them.
    static let anyShellNasty = nasty.filter { !$0.contains("\n") } + [
        "!!", "a!b", "!$", "\\", "\\'", "'\\", "x\\", "%s", "%1", "#c", "^x", "a\rb", "\u{7f}\u{1}", "$0 $1", "${x}",
    ]

    @Test("every login shell (sh, dash, bash, zsh, fish, tcsh, csh, BusyBox ash) passes the script and its arguments to sh unchanged")
    func anyShellQuotingSurvivesEveryLoginShell() throws {
        let script = "printf '%s' " + Shell.join(Self.anyShellNasty)
        let command = Shell.anyShell(script, arguments: Self.anyShellNasty)
        for shell in Self.loginShells {
            try #require(FileManager.default.isExecutableFile(atPath: shell[0]), "\(shell[0]) is missing: run scripts/setup")
            #expect(try wordsThrough(shell, command) == [script] + Self.anyShellNasty, "\(shell)")
        }
    }

    @Test("the relay's commands for a client reach sh intact through every login shell")
    func relayCommandsSurviveEveryLoginShell() throws {
        var c = client(paths: ["/data/it's", "/data/a!b", "/data/back\\slash"], exclude: ["*.tmp"])
        c.relocatedOK = true
        let plan = BackupPlan(client: c)
        let sock = BackupPlan.unixSocketDir(random: String(repeating: "ab", count: 16)) + "/borg.sock"
        let cases: [(String, [String])] = [
            (plan.createCommand(port: 4711, withPassphrase: true),
             [plan.createScript(connector: BackupPlan.connector(port: 4711), withPassphrase: true)]),
            (plan.createCommand(unixSocket: sock, withPassphrase: false),
             [BackupPlan.waitForSocket(sock) + plan.createScript(connector: BackupPlan.unixConnector(socket: sock), withPassphrase: false)]),
            (plan.borgCommand(port: 1, withPassphrase: true, arguments: ["list", "::a!b"], workDir: "/var/tmp/r 1"),
             [plan.borgScript(port: 1, withPassphrase: true, arguments: ["list", "::a!b"], workDir: "/var/tmp/r 1")]),
            (BackupPlan.unixListenerCommand(dir: "/tmp/borg-relay-sock-x"), [BackupPlan.unixListenerScript, "/tmp/borg-relay-sock-x"]),
            (BackupPlan.unixProbeCommand(dir: "/tmp/borg-relay-sock-x"), [BackupPlan.unixProbeScript, "/tmp/borg-relay-sock-x"]),
            (BackupPlan.hookCommand(argv: ["sh", "-c", "echo 'hi!' \"$BORG_RELAY_RUN\""], timeout: 5, runID: "r1", client: "web1", result: "success"),
             [BackupPlan.hookScript, "5", "env", "BORG_RELAY_RUN=r1", "BORG_RELAY_CLIENT=web1", "BORG_RELAY_RESULT=success",
              "sh", "-c", "echo 'hi!' \"$BORG_RELAY_RUN\""]),
            (BackupPlan.probeCommand(borgPath: "/opt/borg 1.4/borg"), ["'/opt/borg 1.4/borg' --version; command -v socat || echo no-socat-found"]),
        ]
        for (command, expected) in cases {
            #expect(!command.contains("\n"))
            for shell in Self.loginShells where FileManager.default.isExecutableFile(atPath: shell[0]) {
                #expect(try wordsThrough(shell, command) == expected, "\(shell): \(command)")
            }
        }
        // The scripts are POSIX sh: the create script still parses back to borg's argv.
        #expect(plan.createScript(connector: "C", withPassphrase: false).contains("BORG_RELOCATED_REPO_ACCESS_IS_OK=yes"))
        #expect(!BackupPlan(client: client(paths: ["/x"])).createScript(connector: "C", withPassphrase: false).contains("RELOCATED"))
    }

    @Test func anyShellQuoteShape() {
        #expect(Shell.quoteForAnyShell("") == "''")
        #expect(Shell.quoteForAnyShell("a b") == "'a b'")
        #expect(Shell.quoteForAnyShell("it's!") == "'it'\\''s'\\!")
        #expect(Shell.quoteForAnyShell("\\") == "\\\\")
        #expect(Shell.anyShell("echo hi", arguments: ["x"]) == "exec sh -c 'echo hi' 'x'")
    }

    @Test("borg's relocation question is found in a --log-json line and as plain text; other lines are not")
    func relocationNotice() throws {
        let json = #"{"type": "question_prompt", "msgid": "BORG_RELOCATED_REPO_ACCESS_IS_OK", "message": "Warning: The repository at location ssh://borg-relay/srv/r was previously located at ssh://b.example/srv/r\nDo you want to continue? [yN] "}"#
        let n = try #require(RelocationNotice.find(in: json))
        #expect(n == RelocationNotice(current: "ssh://borg-relay/srv/r", previous: "ssh://b.example/srv/r"))
        let plain = "Warning: The repository at location ssh://borg-relay/srv/r was previously located at /mnt/r"
        #expect(RelocationNotice.find(in: plain) == RelocationNotice(current: "ssh://borg-relay/srv/r", previous: "/mnt/r"))
        #expect(RelocationNotice.find(in: #"{"type": "log_message", "message": "Repository access aborted"}"#) == nil)
        #expect(RelocationNotice.find(in: "was previously located at") == nil)
        let m = n.message(client: "web1")
        #expect(m.contains("ssh://b.example/srv/r") && m.contains("ssh://borg-relay/srv/r") && m.contains("relocated_ok = true in [clients.web1]"))
        #expect(!m.contains("\n"))
    }
}
