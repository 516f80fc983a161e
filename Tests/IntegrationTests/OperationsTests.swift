import Foundation
import RelayCore
import Testing

/// Operations through the relay (borg on R, its repository connection spliced into B).
@Suite("Operations through the relay (real daemon, real sshd, real borg)", .serialized)
struct OperationsTests {
    @Test("init (maintenance key) → backup → list, list ARCHIVE, info, key-export read back; init twice refused")
    func initBackupListInfoKeyExport() throws {
        let s = try Sandbox(name: "ops", initRepo: false, maintenance: true)
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        try Data("hello from T\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/hello.txt"))
        try s.configure()
        let d = try AgentDaemon(s)

        let created = try d.ctl(["init", "web1"])
        #expect(created.status == 0, "\(created.output)\n\(d.log)")
        #expect(created.stdout.contains("relayctl key-export web1"), "\(created.stdout)")
        // Read back with borg itself: the repository exists and opens with the passphrase.
        #expect(try s.archives().isEmpty)
        let again = try d.ctl(["init", "web1"])
        #expect(again.status == 1, "\(again.output)")
        #expect(again.stderr.contains("already exists"), "\(again.stderr)")

        let backup = try d.ctl(["run", "web1", "--follow"])
        #expect(backup.status == 0, "\(backup.output)")
        let archive = try #require(try s.archives().first)

        let list = try d.ctl(["list", "web1"])
        #expect(list.status == 0, "\(list.output)")
        #expect(list.stdout.contains(archive), "\(list.stdout)")
        let listJSON = try d.ctl(["list", "web1", "--json"])
        #expect(listJSON.status == 0, "\(listJSON.output)")
        let parsed = try JSONSerialization.jsonObject(with: Data(listJSON.stdout.utf8)) as? [String: Any]
        let names = (parsed?["archives"] as? [[String: Any]])?.compactMap { $0["name"] as? String }
        #expect(names == [archive])
        let contents = try d.ctl(["list", "web1", archive])
        #expect(contents.status == 0 && contents.stdout.contains("hello.txt"), "\(contents.output)")
        let info = try d.ctl(["info", "web1", archive, "--json"])
        #expect(info.status == 0, "\(info.output)")
        #expect(info.stdout.contains("\"nfiles\": 1"), "\(info.stdout)")

        let keyFile = "\(s.dir)/web1.key"
        let export = try d.ctl(["key-export", "web1", keyFile])
        #expect(export.status == 0, "\(export.output)")
        let key = try String(contentsOfFile: keyFile, encoding: .utf8)
        #expect(key.hasPrefix("BORG_KEY "), "\(key.prefix(40))")
        var st = stat()
        #expect(stat(keyFile, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(try d.ctl(["key-export", "web1", keyFile]).status == 2)  // never overwritten

        // An unknown archive fails with borg's reason.
        let missing = try d.ctl(["list", "web1", "no-such-archive"])
        #expect(missing.status == 1 && missing.stderr.contains("does not exist"), "\(missing.output)")

        // History shows each operation; nothing secret anywhere; no private socket left.
        let kinds = Set(try d.runs().map(\.kind))
        #expect(kinds.isSuperset(of: ["init", "backup", "list", "info", "key-export"]))
        #expect(d.stop() == 0)
        #expect(!d.log.contains(s.passphrase))
        for r in try HistoryStore(path: "\(s.stateDir)/history.sqlite").recent(limit: 100) {
            let text = (try? String(contentsOfFile: r.logFile ?? "", encoding: .utf8)) ?? ""
            #expect(!text.contains(s.passphrase))
            let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: FileManager.default.temporaryDirectory.path))?
                .filter { $0.hasPrefix("borg-relay-\(r.id)") } ?? []
            #expect(leftovers.isEmpty, "private run directory left: \(leftovers)")
        }
        #expect(s.sessionsLeft(on: [s.b, s.t], within: 5).isEmpty)
    }
}
