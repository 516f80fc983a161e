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

    @Test func aReusedPIDDoesNotKeepARunAlive() throws {
        let d = Dir()
        let store = try HistoryStore(path: "\(d.path)/h.sqlite")
        // Same PID as this (live) process, but another start time: the agent that wrote
        // the row is gone and the PID now belongs to someone else.
        var reused = RunRecord.starting(runID: "reused", client: "a", server: "s", logFile: nil)
        reused.agentStart = (reused.agentStart ?? 0) + 12345
        try store.insert(reused)
        var queued = RunRecord.starting(runID: "queued", client: "b", server: "s", logFile: nil, state: "queued")
        queued.agentPID = 999_999_999
        try store.insert(queued)
        #expect(Set(try store.markInterrupted()) == ["reused", "queued"])
        #expect(try store.get("queued")?.error?.contains("before the run started") == true)
        #expect(try store.get("reused")?.state == "interrupted")
    }

    @Test func pruningKeepsTheNewestRunsPerClientAndDropsOldOnes() throws {
        let d = Dir()
        let store = try HistoryStore(path: "\(d.path)/h.sqlite")
        let now = Date()
        func add(_ id: String, _ client: String, daysAgo: Double, state: String = "succeeded") throws {
            var r = RunRecord.starting(runID: id, client: client, server: "s", logFile: "/logs/\(id).log", state: state)
            r.startedAt = now.addingTimeInterval(-daysAgo * 86400)
            try store.insert(r)
        }
        for i in 0..<5 { try add("a\(i)", "a", daysAgo: Double(i)) }
        try add("b-old", "b", daysAgo: 50)
        try add("b-new", "b", daysAgo: 1)
        try add("a-live", "a", daysAgo: 100, state: "running")  // never pruned while unfinished
        let logs = try store.prune(keepPerClient: 3, maxAgeDays: 30, now: now)
        #expect(Set(logs) == ["/logs/a3.log", "/logs/a4.log", "/logs/b-old.log"])
        #expect(Set(try store.recent(limit: 100).map(\.id)) == ["a0", "a1", "a2", "b-new", "a-live"])
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
