import Foundation
import RelayCore
import Testing

@Suite("state_dir holds nothing others can read (real sshd, real borg, the real binaries)", .serialized)
struct StateDirTests {
    /// Every path under `dir` whose mode lets group or others in (files must be 0600 or
    /// stricter, directories 0700), with its mode.
    static func tooOpen(_ dir: String) -> [String] {
        var found: [String] = []
        var st = stat()
        if lstat(dir, &st) == 0 && st.st_mode & 0o077 != 0 { found.append(String(format: "%@ %04o", dir, st.st_mode & 0o7777)) }
        for rel in (try? FileManager.default.subpathsOfDirectory(atPath: dir)) ?? [] {
            let p = dir + "/" + rel
            guard lstat(p, &st) == 0, (st.st_mode & S_IFMT) != S_IFLNK, (st.st_mode & S_IFMT) != S_IFSOCK else { continue }
            if st.st_mode & 0o077 != 0 { found.append(String(format: "%@ %04o", rel, st.st_mode & 0o7777)) }
        }
        return found
    }

    @Test("after a foreground run (which creates the history), a daemon backup, list and extract --stdout, every file under state_dir is 0600 and every directory 0700 (the tests run with umask 022)")
    func modes() throws {
        let s = try Sandbox(name: "statedir")
        defer { s.close() }
        try Data("modes".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        try s.configure()
        // The foreground run is the first to touch state_dir's history.
        try? FileManager.default.removeItem(atPath: "\(s.stateDir)/history.sqlite")
        let r = try s.runAgent()
        #expect(r.status == 0, "\(r.output)")
        #expect(Self.tooOpen(s.stateDir).isEmpty, "after a foreground run: \(Self.tooOpen(s.stateDir))")
        let d = try AgentDaemon(s)
        let run = try d.ctl(["run", "web1", "--follow"])
        #expect(run.status == 0, "\(run.output)")
        let archive = try #require(try s.archives().last)
        let list = try d.ctl(["list", "web1"])
        #expect(list.status == 0 && list.stdout.contains(archive), "\(list.output)")
        let cat = try d.ctl(["borg", "web1", "--", "extract", "--stdout", "::\(archive)", String(s.dataDir.dropFirst()) + "/f"])
        #expect(cat.status == 0 && cat.stdout == "modes", "\(cat.output)")
        #expect(d.stop() == 0)
        #expect(Self.tooOpen(s.stateDir).isEmpty, "after the daemon's runs: \(Self.tooOpen(s.stateDir))")
    }
}
