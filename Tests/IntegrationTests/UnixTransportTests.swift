import Foundation
import RelayCore
import Testing

/// The socket directories of the unix transport on T (this machine plays T).
func unixSocketDirs() -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? [])
        .filter { $0.hasPrefix("borg-relay-sock-") }.map { "/tmp/\($0)" }
}

@Suite("Unix-socket transport (real sshd, real borg)", .serialized)
struct UnixTransportTests {
    @Test("backup over a 0600 socket in a 0700 dir; nothing left after success, failure, or a killed agent plus the next run")
    func unixTransport() throws {
        let s = try Sandbox(name: "unix")
        defer { s.close() }
        s.clientExtra = ["transport = \"unix\""]
        try writeRandomFile("\(s.dataDir)/big.bin", count: 200 * 1024 * 1024)
        try s.configure()
        // T's key as authorized-keys prints it for the unix transport: no forwarding at all.
        let printed = try Proc.check(try Proc.binary("relayctl"), ["authorized-keys", "web1", "--config", s.configPath]).stdout
        let tLine = try #require(printed.split(separator: "\n").first { $0.hasPrefix("restrict ") })
        try (tLine + "\n").write(toFile: "\(s.t.dir)/authorized_keys", atomically: true, encoding: .utf8)
        let before = Set(unixSocketDirs())

        // During the run: one new directory, 0700 and ours, holding a 0600 socket.
        let out = "\(s.dir)/agent.out"
        let (agent, sawBorg) = try s.startAgentUntilBorgRuns(output: out)
        #expect(sawBorg)
        var dirs: [String] = []
        for _ in 0..<100 {
            dirs = unixSocketDirs().filter { !before.contains($0) && FileManager.default.fileExists(atPath: "\($0)/borg.sock") }
            if !dirs.isEmpty { break }
            usleep(50_000)
        }
        // (Other suites may run a unix transport at the same time: every such directory
        // must look like this.)
        #expect(!dirs.isEmpty, "no socket directory appeared during the run")
        for d in dirs {
            var st = stat()
            #expect(lstat(d, &st) == 0 && st.st_mode & 0o777 == 0o700 && st.st_uid == geteuid())
            #expect(lstat("\(d)/borg.sock", &st) == 0 && st.st_mode & S_IFMT == S_IFSOCK && st.st_mode & 0o777 == 0o600)
        }
        #expect(agent.wait(timeout: 120) == 0, "\((try? String(contentsOfFile: out, encoding: .utf8)) ?? "")")
        let log = try String(contentsOfFile: out, encoding: .utf8)
        #expect(!log.contains("listening on 127.0.0.1"), "the TCP forward was used")
        #expect(try s.archives().count == 1)
        #expect(waitForNoNewDirs(before), "left after success: \(unixSocketDirs())")

        // A failed run (wrong passphrase): nothing left either.
        try s.configure(passphrase: "wrong-\(UUID().uuidString)")
        let failed = try s.runAgent()
        #expect(failed.status == 1)
        #expect(waitForNoNewDirs(before), "left after failure: \(unixSocketDirs())")

        // A killed agent; the next run succeeds and nothing is left.
        try s.configure()
        let (killed, saw2) = try s.startAgentUntilBorgRuns(output: "\(s.dir)/agent2.out")
        #expect(saw2)
        killed.kill(SIGKILL)
        _ = killed.wait(timeout: 10)
        #expect(s.sessionsLeft(on: [s.t, s.b], within: 15).isEmpty)
        try s.replaceWithSmallData(removing: "big.bin")
        #expect(try s.runAgent().status == 0)
        #expect(waitForNoNewDirs(before), "left after a killed agent and the next run: \(unixSocketDirs())")
        #expect(try s.archives().count == 2)
    }

    func waitForNoNewDirs(_ before: Set<String>) -> Bool {
        for _ in 0..<200 {
            if Set(unixSocketDirs()).subtracting(before).isEmpty { return true }
            usleep(50_000)
        }
        return false
    }
}
