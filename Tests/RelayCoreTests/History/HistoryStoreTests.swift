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
        #expect(try store.recent().map(\.state) == [.running])

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
        #expect(r.state == .succeeded)
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
        #expect(byID["dead"]?.state == .interrupted)
        #expect(byID["dead"]?.error?.contains("999999999") == true)
        #expect(byID["alive"]?.state == .running)
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
        var queued = RunRecord.starting(runID: "queued", client: "b", server: "s", logFile: nil, state: .queued)
        queued.agentPID = 999_999_999
        try store.insert(queued)
        #expect(Set(try store.markInterrupted()) == ["reused", "queued"])
        #expect(try store.get("queued")?.error?.contains("before the run started") == true)
        #expect(try store.get("reused")?.state == .interrupted)
    }

    @Test func pruningKeepsTheNewestRunsPerClientAndDropsOldOnes() throws {
        let d = Dir()
        let store = try HistoryStore(path: "\(d.path)/h.sqlite")
        let now = Date()
        func add(_ id: String, _ client: String, daysAgo: Double, state: RunState = .succeeded) throws {
            var r = RunRecord.starting(runID: id, client: client, server: "s", logFile: "/logs/\(id).log", state: state)
            r.startedAt = now.addingTimeInterval(-daysAgo * 86400)
            try store.insert(r)
        }
        for i in 0..<5 { try add("a\(i)", "a", daysAgo: Double(i)) }
        try add("b-old", "b", daysAgo: 50)
        try add("b-new", "b", daysAgo: 1)
        try add("a-live", "a", daysAgo: 100, state: .running)  // never pruned while unfinished
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

    // MARK: - Archive records (the tamper alarm's reference)

    static let idA = String(repeating: "a1", count: 32)
    static let idB = String(repeating: "b2", count: 32)
    static let idX = String(repeating: "ee", count: 32)

    /// A finished backup run of `client` that created archive `name` with `id`.
    func backup(_ store: HistoryStore, _ runID: String, client: String = "web1", archive name: String?, id: String?,
                state: RunState = .succeeded, daysAgo: Double = 0) throws {
        var start = RunRecord.starting(runID: runID, client: client, server: "vault", logFile: nil)
        start.startedAt = Date().addingTimeInterval(-daysAgo * 86400)
        try store.insert(start)
        var report = RunReport(runID: runID, client: client, server: "vault", started: start.startedAt)
        report.state = state
        report.archive = name.map { ArchiveSummary(name: $0, id: id, nfiles: 1, originalSize: 1, compressedSize: 1,
                                                   deduplicatedSize: 1, duration: 1) }
        report.finish(at: start.startedAt.addingTimeInterval(1))
        try store.finish(report)
    }

    @Test func everyCreatedArchiveIsRecordedByIdAndSurvivesHistoryPruning() throws {
        let d = Dir()
        let store = try HistoryStore(path: "\(d.path)/h.sqlite")
        for i in 0..<5 {
            try backup(store, "r\(i)", archive: "web1-\(i)", id: String(repeating: "\(i)", count: 64), daysAgo: Double(40 - i))
        }
        try backup(store, "other", client: "web2", archive: "web2-0", id: Self.idB)
        try backup(store, "noarchive", archive: nil, id: nil, state: .failed)
        // A run that is not a backup never records an archive.
        var restore = RunReport(runID: "restore", client: "web1", server: "vault", started: Date())
        restore.kind = .restore
        restore.archive = ArchiveSummary(name: "web1-0", id: Self.idX, nfiles: 1, originalSize: 1, compressedSize: 1,
                                         deduplicatedSize: 1, duration: 1)
        try store.insert(.starting(runID: "restore", client: "web1", server: "vault", kind: .restore, logFile: nil))
        try store.finish(restore)

        _ = try store.prune(keepPerClient: 1, maxAgeDays: 30)
        #expect(try store.recent(client: "web1", limit: 100).count == 1)
        let expected = try store.expectedArchives(client: "web1")
        #expect(expected.map(\.name) == (0..<5).map { "web1-\($0)" })
        #expect(expected.map(\.id) == (0..<5).map { String(repeating: "\($0)", count: 64) })
        #expect(expected.map(\.runID) == (0..<5).map { "r\($0)" })
        #expect(try store.expectedArchives(client: "web2").map(\.id) == [Self.idB])
    }

    @Test func pruneMarksByIdNotByName() throws {
        let d = Dir()
        let store = try HistoryStore(path: "\(d.path)/h.sqlite")
        try backup(store, "r1", archive: "A", id: Self.idA.uppercased())
        try backup(store, "r2", archive: "B", id: Self.idB)
        // An archive under A's name with another id (not the relay's) goes: A's record stays.
        #expect(try store.recordPruned(client: "web1", runID: "p1", removed: [PresentArchive(name: "A", id: Self.idX)]) == 0)
        #expect(try store.expectedArchives(client: "web1").map(\.name) == ["A", "B"])
        // Another client's prune of the same id does not touch web1.
        #expect(try store.recordPruned(client: "web2", runID: "p2", removed: [PresentArchive(name: "A", id: Self.idA)]) == 0)
        // The relay's prune of A by its id.
        #expect(try store.recordPruned(client: "web1", runID: "p3", removed: [PresentArchive(name: "A", id: Self.idA)]) == 1)
        #expect(try store.expectedArchives(client: "web1").map(\.name) == ["B"])
        let a = try #require(try store.archiveRecords(client: "web1").first { $0.name == "A" })
        #expect(a.prunedByRun == "p3" && a.prunedAt != nil && a.id == Self.idA)
        // A new archive under a pruned name is expected again.
        try backup(store, "r4", archive: "A", id: Self.idX)
        #expect(try store.expectedArchives(client: "web1").map(\.id) == [Self.idB, Self.idX])
        #expect(try store.archiveRecords(client: "web1").count == 3)
    }

    @Test func version3HistoryIsMigratedRunsToArchiveRows() throws {
        let d = Dir()
        let path = "\(d.path)/h.sqlite"
        do {
            let old = try HistoryStore(path: path, migrateUpTo: "v4")
            func run(_ id: String, _ archive: String, _ when: String, stats: String?, state: RunState = .succeeded,
                     kind: String = "backup") throws {
                try old.execute(sql: """
                    INSERT INTO run (id, client, server, kind, state, started_at, ended_at, bytes_to_server,
                                     bytes_from_server, archive, stats, agent_pid)
                    VALUES ('\(id)', 'web1', 'vault', '\(kind)', '\(state)', '\(when)', '\(when)', 0, 0, '\(archive)',
                            \(stats.map { "'\($0)'" } ?? "NULL"), 1)
                    """)
            }
            // With an id in its stats (borg create --json), without one, pruned, pruned and re-created.
            try run("r1", "with-id", "2026-11-01 10:00:00.000", stats: #"{"name":"with-id","id":"\#(Self.idA)","nfiles":1,"original_size":1,"compressed_size":1,"deduplicated_size":1}"#)
            try run("r2", "no-id", "2026-11-02 10:00:00.000", stats: nil)
            try run("r3", "gone", "2026-11-03 10:00:00.000", stats: nil)
            try run("r4", "again", "2026-11-04 10:00:00.000", stats: nil)
            try run("r5", "again", "2026-11-06 10:00:00.000", stats: nil)
            try run("r6", "failed", "2026-11-07 10:00:00.000", stats: nil, state: .failed)
            try run("r7", "listed", "2026-11-07 11:00:00.000", stats: nil, kind: "list")
            try old.execute(sql: """
                INSERT INTO pruned_archive (client, archive, run_id, pruned_at) VALUES
                ('web1', 'gone', 'p1', '2026-11-05 10:00:00.000'), ('web1', 'again', 'p1', '2026-11-05 10:00:00.000')
                """)
        }
        let store = try HistoryStore(path: path)
        let rows = try store.archiveRecords(client: "web1")
        #expect(rows.map(\.name) == ["with-id", "no-id", "gone", "again", "again"])
        #expect(rows.map(\.id) == [Self.idA, nil, nil, nil, nil])
        #expect(rows.map(\.prunedByRun) == [nil, nil, "p1", "p1", nil])
        #expect(try store.expectedArchives(client: "web1").map(\.runID) == ["r1", "r2", "r5"])
        // Name-only rows are marked pruned by name.
        #expect(try store.recordPruned(client: "web1", runID: "p2", removed: [PresentArchive(name: "no-id", id: Self.idX)]) == 1)
        #expect(try store.expectedArchives(client: "web1").map(\.runID) == ["r1", "r5"])
    }

    @Test func theDatabaseIsPrivateEvenUnderAWideUmask() throws {
        let d = Dir()
        try FileManager.default.createDirectory(atPath: d.path, withIntermediateDirectories: true)
        let old = umask(0o022)
        defer { umask(old) }
        let path = "\(d.path)/state/history.sqlite"
        let store = try HistoryStore(path: path)
        try store.insert(.starting(runID: "r", client: "a", server: "s", logFile: nil))
        func mode(_ p: String) -> mode_t? {
            var st = stat()
            return stat(p, &st) == 0 ? st.st_mode & 0o777 : nil
        }
        #expect(mode(path) == 0o600)
        #expect(mode("\(d.path)/state") == 0o700)
        for suffix in ["-wal", "-shm", "-journal"] {
            if let m = mode(path + suffix) { #expect(m == 0o600, "\(suffix): \(String(m, radix: 8))") }
        }
        // An existing, wider one is narrowed when opened.
        #expect(chmod(path, 0o644) == 0)
        _ = try HistoryStore(path: path)
        #expect(mode(path) == 0o600)
    }
}
