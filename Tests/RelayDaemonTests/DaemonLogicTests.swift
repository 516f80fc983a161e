import Foundation
import Logging
import Testing
@testable import RelayCore
@testable import RelayDaemon

@Suite("Daemon logic: borg's JSON log, the API types, the schedule bookkeeping")
struct DaemonLogicTests {
    @Test func borgLogJSONLinesBecomeMessagesAndProgress() {
        #expect(BorgLogLine.parse(#"{"type": "log_message", "levelname": "ERROR", "message": "Repository does not exist."}"#)
                == .message(level: "ERROR", text: "Repository does not exist."))
        #expect(BorgLogLine.parse(#"{"original_size": 1048576, "compressed_size": 10, "deduplicated_size": 7, "nfiles": 12, "path": "data/a", "type": "archive_progress", "finished": false}"#)
                == .archiveProgress(files: 12, originalSize: 1_048_576, deduplicatedSize: 7, path: "data/a"))
        #expect(BorgLogLine.parse(#"{"message": "Initializing cache transaction", "type": "progress_message"}"#)
                == .progressMessage("Initializing cache transaction"))
        // Text outside borg's logger, and JSON of another shape, are kept as they are.
        #expect(BorgLogLine.parse("Traceback (most recent call last):") == .text("Traceback (most recent call last):"))
        #expect(BorgLogLine.parse("{not json") == .text("{not json"))
        #expect(BorgLogLine.parse(#"{"x": 1}"#) == .text(#"{"x": 1}"#))
    }

    @Test func logChunksNeverSplitAUTF8Character() {
        let text = Array("aé€😀".utf8)  // 1 + 2 + 3 + 4 bytes
        for cut in 0...text.count {
            let n = RunFiles.completeUTF8Length(Array(text[0..<cut]))
            #expect(String(validating: text[0..<n], as: UTF8.self) != nil, "cut \(cut) -> \(n)")
            #expect(n <= cut && cut - n < 4)
        }
        #expect(RunFiles.completeUTF8Length(text) == text.count)
    }

    @Test func apiTypesRoundTripWithSnakeCaseKeys() throws {
        var record = RunRecord.starting(runID: "r1", client: "web1", server: "vault", logFile: "/l", state: .running, trigger: "api")
        record.stats = #"{"name":"a","nfiles":3,"original_size":10,"compressed_size":9,"deduplicated_size":8}"#
        var p = RunProgress()
        p.bytesToServer = 4096
        p.files = 7
        let view = RunView(record, progress: p, now: record.startedAt.addingTimeInterval(2))
        #expect(view.bytesToServer == 4096)
        #expect(view.rate == 2048)
        #expect(view.stats?.nfiles == 3)
        let data = try ControlAPI.encoder().encode(view)
        let json = String(decoding: data, as: UTF8.self)
        #expect(json.contains("\"bytes_to_server\":4096") && json.contains("\"started_at\""))
        let back = try ControlAPI.decoder().decode(RunView.self, from: data)
        #expect(abs(back.startedAt.timeIntervalSince(view.startedAt)) < 0.001)
        var same = back
        same.startedAt = view.startedAt
        same.queuedAt = view.queuedAt
        #expect(same == view)
        let req = try ControlAPI.decoder().decode(RunRequest.self, from: Data(#"{"clients":["a"],"queue":true}"#.utf8))
        #expect(req == RunRequest(clients: ["a"], queue: true))
    }

    @Test func newRelayKeysAndTheShippedExampleConfig() throws {
        let cfg = try ConfigLoader.parse("""
            [relay]
            shutdown_grace = 5
            history_keep_runs = 10
            history_keep_days = 0
            [servers.s]
            host = "b"
            user = "u"
            key = "/k"
            [clients.c]
            host = "t"
            user = "u"
            key = "/k"
            server = "s"
            repository = "/r"
            paths = ["/p"]
            """, file: "t.toml", checkFiles: false)
        #expect(cfg.relay.shutdownGrace == 5 && cfg.relay.historyKeepRuns == 10 && cfg.relay.historyKeepDays == 0)
        #expect(throws: ConfigError.self) {
            try ConfigLoader.parse("[relay]\nshutdown_grace = -1\n", file: "t.toml", checkFiles: false)
        }
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../contrib/relay.toml.example").standardized.path
        let ex = try ConfigLoader.load(path: example, checkFiles: false)
        #expect(ex.clients["web1"]?.schedule?.text == "30 2 * * *")
        #expect(ex.relay.socket == RelaySettings.defaultSocket)
    }

    @Test func scheduleBookkeepingWithAFixedClock() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sched-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cfg = try ConfigLoader.parse("""
            [relay]
            state_dir = "\(dir)"
            [servers.s]
            host = "b"
            user = "u"
            key = "/k"
            [clients.c]
            host = "t"
            user = "u"
            key = "/k"
            server = "s"
            repository = "/r"
            paths = ["/p"]
            schedule = "30 2 * * *"
            jitter = 60
            catch_up = true
            [clients.d]
            host = "t"
            user = "u"
            key = "/k"
            server = "s"
            repository = "/r2"
            paths = ["/p"]
            """, file: "t.toml", checkFiles: false)
        let history = try HistoryStore(path: "\(dir)/history.sqlite")
        let m = RunManager(config: cfg, history: history, logger: Logger(label: "test"))
        let utc = TimeZone(identifier: "UTC")!
        let t0 = try Date("2026-11-20T01:00:00Z", strategy: .iso8601)
        await m.planSchedules(now: t0, timeZone: utc)
        var (due, checks, next) = await m.takeDue(now: t0, timeZone: utc)
        #expect(due.isEmpty && checks.isEmpty)
        #expect(next == (try Date("2026-11-20T02:30:00Z", strategy: .iso8601)))
        (due, checks, next) = await m.takeDue(now: t0.addingTimeInterval(5400), timeZone: utc)
        #expect(due.map(\.client) == ["c"] && due.first?.jitter == 60)
        #expect(next == (try Date("2026-11-21T02:30:00Z", strategy: .iso8601)))
        #expect(await m.status().clients.first { $0.name == "c" }?.nextRun == next)
        #expect(await m.status().clients.first { $0.name == "d" }?.nextRun == nil)

        // Catch-up: nothing known, nothing missed; a run before a missed time: missed.
        #expect(await m.missedSchedules(now: t0, timeZone: utc).isEmpty)
        var r = RunRecord.starting(runID: "old", client: "c", server: "s", logFile: nil, state: .succeeded)
        r.startedAt = try Date("2026-11-18T02:30:05Z", strategy: .iso8601)
        r.queuedAt = r.startedAt
        try history.insert(r)
        #expect(await m.missedSchedules(now: t0, timeZone: utc) == ["c"])
        #expect(await m.missedSchedules(now: try Date("2026-11-19T02:00:00Z", strategy: .iso8601), timeZone: utc).isEmpty)
    }
}
