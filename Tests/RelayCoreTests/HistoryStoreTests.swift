import Foundation
import Testing
@testable import RelayCore

@Suite("Run history")
struct HistoryStoreTests {
    final class Dir {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("hist-\(UUID().uuidString)").path
        deinit { try? FileManager.default.removeItem(atPath: path) }
    }

    @Test func recordsARunFromStartToEnd() throws {
        let d = Dir()
        let store = try HistoryStore(path: "\(d.path)/state/history.sqlite")
        let start = RunRecord.starting(runID: "r1", client: "web1", server: "vault", logFile: "/l/r1.log")
        try store.insert(start)
        #expect(try store.recent().map(\.state) == ["running"])

        var report = RunReport(runID: "r1", client: "web1", server: "vault", started: start.startedAt)
        report.state = .succeeded
        report.bytesToServer = 1234
        report.borgExitStatus = 0
        report.archive = ArchiveSummary(name: "web1-1", id: "x", nfiles: 3, originalSize: 10, compressedSize: 9,
                                        deduplicatedSize: 8, duration: 1)
        report.finish()
        try store.finish(report)

        // Reopened from disk: the record is complete.
        let again = try HistoryStore(path: "\(d.path)/state/history.sqlite")
        let r = try #require(try again.recent(client: "web1").first)
        #expect(r.state == "succeeded")
        #expect(r.bytesToServer == 1234)
        #expect(r.archive == "web1-1")
        #expect(r.borgExitStatus == 0)
        #expect(r.stats?.contains("\"nfiles\":3") == true)
        #expect(r.endedAt != nil)
        #expect(try again.recent(client: "web2").isEmpty)
    }

    @Test func runsOfDeadAgentsBecomeInterrupted() throws {
        let d = Dir()
        let store = try HistoryStore(path: "\(d.path)/h.sqlite")
        var dead = RunRecord.starting(runID: "dead", client: "a", server: "s", logFile: nil)
        dead.agentPID = 999_999_999
        try store.insert(dead)
        try store.insert(.starting(runID: "alive", client: "b", server: "s", logFile: nil))  // this process
        #expect(try store.markInterrupted() == ["dead"])
        let byID = Dictionary(uniqueKeysWithValues: try store.recent().map { ($0.id, $0) })
        #expect(byID["dead"]?.state == "interrupted")
        #expect(byID["dead"]?.error?.contains("999999999") == true)
        #expect(byID["alive"]?.state == "running")
        #expect(try store.markInterrupted().isEmpty)
    }

    @Test func unwritableLocationIsAClearError() {
        do {
            _ = try HistoryStore(path: "/proc/borg-relay-test/history.sqlite")
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("/proc/borg-relay-test/history.sqlite"))
            #expect(error.description.contains("state_dir"))
        }
    }
}
