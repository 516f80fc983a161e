import Foundation
import Logging
@testable import RelayCore
import RelayDaemon
import Testing

/// The two stores answer alike: the same sequence of writes against the SQLite history
/// and against a real PostgreSQL gives the same answers to every read.
@Suite("Run stores: SQLite and PostgreSQL alike (real PostgreSQL)", .serialized)
struct FleetStoreTests {
    static let idA = String(repeating: "a1", count: 32)
    static let idB = String(repeating: "b2", count: 32)

    /// What a store answers after `exercise`, with times to the millisecond (SQLite keeps
    /// milliseconds, PostgreSQL microseconds).
    struct Answers: Equatable, CustomStringConvertible {
        var recent: [String]
        var states: [String: String]
        var errors: [String: String]
        var archives: [String]
        var expected: [String]
        var counts: [String: Int]
        var lastFinished: String?
        var lastCheck: String?
        var prunedLogs: [String]
        var backupsSince: [String]
        var finished: [String]
        var proofState: String
        var description: String { "\(recent) \(states) \(archives) \(expected) \(counts) \(prunedLogs) \(backupsSince) \(finished) \(proofState)" }
    }

    func exercise(_ store: any RunStore) throws -> Answers {
        let base = Date(timeIntervalSince1970: 1_780_000_000)
        @discardableResult
        func backup(_ id: String, _ client: String, archive: String?, archiveID: String?, state: RunState = .succeeded,
                    minutes: Double) throws -> RunReport {
            var start = RunRecord.starting(runID: id, client: client, server: "vault", logFile: "/logs/\(id).log")
            start.startedAt = base.addingTimeInterval(minutes * 60)
            try store.insert(start)
            var report = RunReport(runID: id, client: client, server: "vault", started: start.startedAt)
            report.state = state
            report.archive = archive.map { ArchiveSummary(name: $0, id: archiveID, nfiles: 1, originalSize: 1, compressedSize: 1,
                                                          deduplicatedSize: 1, duration: 1) }
            report.finish(at: start.startedAt.addingTimeInterval(30))
            return try store.finish(report)
        }
        for i in 0..<4 {
            try backup("r\(i)", "web1", archive: "web1-\(i)", archiveID: String(repeating: "\(i)", count: 64), minutes: Double(i))
        }
        let proven = try backup("b0", "web2", archive: "web2-0", archiveID: Self.idB.uppercased(), minutes: 10)
        try backup("f0", "web2", archive: nil, archiveID: nil, state: .failed, minutes: 11)
        var check = RunRecord.starting(runID: "c0", client: "web1", server: "vault", kind: .check, logFile: nil)
        check.startedAt = base.addingTimeInterval(20 * 60)
        try store.insert(check)
        try store.markEnded("c0", state: .succeeded, error: nil)
        try store.insert(.starting(runID: "q0", client: "web3", server: "vault", logFile: nil, state: .queued))
        try store.markEnded("q0", state: .cancelled, error: "cancelled before it started")
        #expect(try store.recordPruned(client: "web1", runID: "p0", removed: [PresentArchive(name: "web1-0", id: String(repeating: "0", count: 64))]) == 1)
        #expect(try store.recordPruned(client: "web1", runID: "p0", removed: [PresentArchive(name: "web1-1", id: Self.idA)]) == 0)
        let pruned = try store.prune(keepPerClient: 3, maxAgeDays: 0, now: base.addingTimeInterval(3600))
        var answers = Answers(
            recent: try store.recent(limit: 100).map(\.id),
            states: [:], errors: [:],
            archives: try store.archiveRecords(client: "web1").map { "\($0.name):\($0.id ?? "-"):\($0.prunedByRun ?? "-")" },
            expected: try store.expectedArchives(client: "web1").map(\.name),
            counts: try store.archiveCounts(),
            lastFinished: try store.lastFinished(client: "web2")?.id,
            lastCheck: try store.lastFinished(client: "web1", kind: .check)?.id,
            prunedLogs: pruned.sorted(),
            backupsSince: try store.runs(kind: .backup, since: base.addingTimeInterval(2 * 60), client: nil).map(\.id),
            finished: try store.finishedRuns().map(\.id),
            proofState: proven.state.rawValue)
        for r in try store.recent(limit: 100) {
            answers.states[r.id] = r.state.rawValue
            answers.errors[r.id] = r.error ?? ""
        }
        #expect(try store.get("b0")?.stats?.contains("\"nfiles\":1") == true)
        #expect(try store.get("b0")?.endedAt.map { Int($0.timeIntervalSince(base)) } == 630)
        #expect(try store.get("nope") == nil)
        #expect(try store.lastQueued(client: "web1") != nil)
        return answers
    }

    @Test("the same writes give the same answers from SQLite and from PostgreSQL; migrations run once and are known by name")
    func parity() throws {
        let dir = try TempDir("store")
        let pg = try PostgresServer(in: dir.path)
        defer { pg.stop() }
        let sqlite = try HistoryStore(path: "\(dir.path)/history.sqlite")
        let fromSQLite = try exercise(sqlite)

        var settings = try #require(try? DatabaseSettings.parse(pg.url).get())
        settings.passwordFile = pg.passwordFile
        let store = try PostgresStore(settings, relayName: "r1", logger: Logger(label: "test"))
        let fromPostgres = try exercise(store)
        #expect(fromSQLite == fromPostgres)
        #expect(fromPostgres.proofState == "succeeded")
        #expect(fromPostgres.expected == ["web1-1", "web1-2", "web1-3"])
        #expect(fromPostgres.recent == ["q0", "c0", "f0", "b0", "r3", "r2"])
        #expect(fromPostgres.prunedLogs == ["/logs/r0.log", "/logs/r1.log"])
        #expect(fromPostgres.states["q0"] == "cancelled" && fromPostgres.errors["q0"] == "cancelled before it started")
        #expect(fromPostgres.counts == ["web1": 3, "web2": 1])
        #expect(fromPostgres.backupsSince == ["r2", "r3", "b0", "f0", "q0"])
        // A second relay opening the same database applies nothing again.
        let again = try PostgresStore(settings, relayName: "r2", logger: Logger(label: "test"))
        #expect(try pg.psqlCheck("SELECT string_agg(name, ',' ORDER BY name) FROM schema_migrations") == "v1,v2,v3,v4,v5,v6,v7")
        #expect(try again.get("b0")?.relay == "r1")
        // Pruning removes the stored logs of the runs it removes, and only theirs.
        try pg.psqlCheck("INSERT INTO run_log (run_id, relay, body, complete, updated_at) VALUES ('r2', 'r1', 'x', true, now()), ('r3', 'r1', 'y', true, now())")
        let second = try store.prune(keepPerClient: 2, maxAgeDays: 0, now: Date(timeIntervalSince1970: 1_780_003_600))
        #expect(second == ["/logs/r2.log"], "\(second)")
        #expect(try pg.psqlCheck("SELECT string_agg(run_id, ',' ORDER BY run_id) FROM run_log") == "r3")
        store.close()
        again.close()
    }

    @Test("a wrong password, a stopped server, an unreadable password file: errors that name the database and the fix, never the password")
    func connectionErrors() throws {
        let dir = try TempDir("store-errors")
        let pg = try PostgresServer(in: dir.path)
        defer { pg.stop() }
        var settings = try #require(try? DatabaseSettings.parse(pg.url).get())
        let wrong = "\(dir.path)/wrong"
        try "not-the-password\n".write(toFile: wrong, atomically: true, encoding: .utf8)
        chmod(wrong, 0o600)
        settings.passwordFile = wrong
        #expect(throws: HistoryError.self) { try PostgresStore(settings, relayName: "r1", logger: Logger(label: "t")) }
        do {
            _ = try PostgresStore(settings, relayName: "r1", logger: Logger(label: "t"))
        } catch {
            #expect("\(error)".contains("127.0.0.1"))
            #expect(!"\(error)".contains("not-the-password"))
        }
        chmod(wrong, 0o644)
        do {
            _ = try PostgresStore(settings, relayName: "r1", logger: Logger(label: "t"))
            Issue.record("a world-readable password file was accepted")
        } catch {
            #expect("\(error)".contains("chmod 0600"))
        }
        settings.passwordFile = pg.passwordFile
        pg.stop()
        do {
            _ = try PostgresStore(settings, relayName: "r1", logger: Logger(label: "t"))
            Issue.record("a stopped server was reached")
        } catch {
            #expect("\(error)".contains("running and reachable"), "\(error)")
        }
    }
}

/// A temporary directory, removed at the end.
final class TempDir {
    let path: String
    init(_ prefix: String) throws {
        var template = Array("/tmp/borg-relay-\(prefix)-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw FixtureError("mkdtemp failed") }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}
