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
        let line = plan.createCommand(port: 40123, withPassphrase: true)
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
}
