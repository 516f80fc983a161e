import Foundation
import RelayCore
import Testing

/// Success is proven, never assumed (issue 14): real sshd, real borg, the real binaries;
/// borg on T is replaced by a `borg_path` wrapper script that lies about the outcome.
@Suite("Proof of success (real sshd, real borg)", .serialized)
struct ProofTests {
    /// A `borg_path` script on T.
    static func wrapper(_ s: Sandbox, _ name: String, _ body: String) throws -> String {
        let path = "\(s.dir)/t/\(name)"
        try ("#!/bin/sh\n" + body + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return path
    }

    /// Runs real borg, then claims a warning (exit 1) where borg succeeded.
    static func warningWrapper(_ s: Sandbox) throws -> String {
        try wrapper(s, "borg-warns", "/usr/bin/borg \"$@\"; rc=$?; [ $rc -eq 0 ] && exit 1; exit $rc")
    }

    static func sealed(_ s: Sandbox) throws -> String {
        try Proc.check(try Proc.binary("relayctl"), ["seal", "--config", s.configPath],
                       stdin: Data(s.passphrase.utf8)).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("a borg that exits 0 and prints nothing: failed, exit 1, 'no archive was created', nothing in the repository")
    func silentBorgIsAFailure() throws {
        let s = try Sandbox(name: "proof-silent")
        defer { s.close() }
        try Data("x".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/x"))
        let fake = try Self.wrapper(s, "borg-silent", "exit 0")
        try s.writeConfig(sealed: try Self.sealed(s), extraClient: ["borg_path = \"\(fake)\""])
        let before = try s.repositoryFiles()

        let r = try s.runAgent(["--json"])
        #expect(r.status == 1, "\(r.output)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r.output)")
        #expect(report["state"] as? String == "failed")
        #expect(report["borg_exit_status"] as? Int == 0)
        let error = report["error"] as? String ?? ""
        #expect(error.contains("borg create exited 0 but printed no archive: no archive was created"), "\(error)")
        #expect(report["archive"] == nil)

        // The text summary says so too.
        let text = try s.runAgent()
        #expect(text.status == 1)
        #expect(text.stdout.contains("backup FAILED") && text.stdout.contains("no archive was created"), "\(text.output)")

        // Nothing in the repository, nothing recorded as created.
        #expect(try s.archives().isEmpty)
        #expect(try s.repositoryFiles() == before)
        let history = try HistoryStore(path: s.stateDir + "/history.sqlite")
        let runs = try history.recent(client: "web1")
        #expect(runs.count == 2 && runs.allSatisfy { $0.state == .failed && $0.archive == nil }, "\(runs.map(\.state))")
        #expect(try history.archiveRecords(client: "web1").isEmpty)
    }

    @Test("borg exits 1 after creating the archive: state warning, exit 3, archive present and recorded by id")
    func warningRunKeepsItsArchive() throws {
        let s = try Sandbox(name: "proof-warning")
        defer { s.close() }
        try Data("hello".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.writeConfig(sealed: try Self.sealed(s), extraClient: ["borg_path = \"\(try Self.warningWrapper(s))\""])

        let r = try s.runAgent(["--json"])
        #expect(r.status == CLI.Exit.warning, "\(r.output)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r.output)")
        #expect(report["state"] as? String == "warning")
        #expect(report["borg_exit_status"] as? Int == 1)
        let archive = try #require(report["archive"] as? [String: Any])
        let name = try #require(archive["name"] as? String)
        #expect((report["warnings"] as? [String])?.contains { $0.contains("finished with warnings") && $0.contains(name) } == true, "\(report)")

        // The archive is in the repository, and the history recorded borg's id for it.
        #expect(try s.archives() == [name])
        let info = try JSONSerialization.jsonObject(with: Data(try s.borg(["info", "--json", "\(s.repo)::\(name)"]).stdout.utf8)) as? [String: Any]
        let id = try #require(((info?["archives"] as? [[String: Any]])?.first?["id"]) as? String)
        let history = try HistoryStore(path: s.stateDir + "/history.sqlite")
        let run = try #require(try history.recent(client: "web1").first)
        #expect(run.state == .warning)
        #expect(run.archive == name)
        #expect(run.error?.contains("finished with warnings") == true)
        #expect(try history.expectedArchives(client: "web1").map(\.id) == [id.lowercased()])

        let text = try s.runAgent()
        #expect(text.status == CLI.Exit.warning)
        #expect(text.stdout.contains("backup succeeded WITH WARNINGS"), "\(text.stdout)")
    }

    @Test("daemon: a warning run is 'warning' in relayctl runs, run --follow and --json; exit 3")
    func daemonShowsTheWarningState() throws {
        let s = try daemonSandbox("proof-daemon")
        defer { s.close() }
        try Data("hello".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/f"))
        try s.writeConfig(sealed: try Self.sealed(s), extraClient: ["borg_path = \"\(try Self.warningWrapper(s))\""])
        let d = try AgentDaemon(s)

        let r = try d.ctl(["run", "web1", "--follow"])
        #expect(r.status == CLI.Exit.warning, "\(r.output)\n\(d.log)")
        #expect(r.stdout.contains("backup succeeded WITH WARNINGS"), "\(r.stdout)")
        #expect(r.stdout.contains("warning       borg create finished with warnings"), "\(r.stdout)")

        let run = try #require(try d.runs("web1").first)
        #expect(run.state == .warning)
        let name = try #require(run.archive)
        #expect(try s.archives() == [name])
        let table = try d.ctl(["runs", "web1"])
        #expect(table.status == 0)
        #expect(table.stdout.split(separator: "\n").contains { $0.contains(run.id) && $0.contains("warning") }, "\(table.stdout)")
        let status = try d.ctl(["status"])
        #expect(status.stdout.contains("ago warning"), "\(status.stdout)")
        #expect(try d.status().clients.first?.last?.state == .warning)
    }
}
