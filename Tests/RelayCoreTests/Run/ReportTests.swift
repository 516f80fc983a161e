import Foundation
import Testing
@testable import RelayCore

@Suite("Run report")
struct ReportTests {
    static let borgJSON = """
        {"archive": {"command_line": ["borg", "create"], "duration": 1.5, "end": "2026-11-21T23:00:01.000000",
          "id": "abc123", "limits": {"max_archive_size": 0.0001}, "name": "web1-2026",
          "start": "2026-11-21T23:00:00.000000",
          "stats": {"compressed_size": 2048, "deduplicated_size": 1024, "nfiles": 3, "original_size": 4096}},
         "cache": {"path": "/root/.cache/borg/x", "stats": {"total_chunks": 1}},
         "encryption": {"mode": "repokey-blake2"},
         "repository": {"id": "r", "last_modified": "2026-11-21T23:00:01.000000", "location": "ssh://borg-relay/srv"}}
        """

    @Test func parsesBorgCreateJSON() throws {
        let a = try #require(ArchiveSummary.parse(borgJSON: Data(Self.borgJSON.utf8)))
        #expect(a == ArchiveSummary(name: "web1-2026", id: "abc123", nfiles: 3, originalSize: 4096,
                                    compressedSize: 2048, deduplicatedSize: 1024, duration: 1.5))
        #expect(ArchiveSummary.parse(borgJSON: Data("not json".utf8)) == nil)
    }

    @Test func jsonRoundTripsAndSummaryReads() throws {
        var r = RunReport(runID: "id1", client: "web1", server: "vault", started: Date(timeIntervalSince1970: 0))
        r.finish(at: Date(timeIntervalSince1970: 12.5))
        r.state = .succeeded
        r.archive = ArchiveSummary.parse(borgJSON: Data(Self.borgJSON.utf8))
        r.bytesToServer = 3 * 1024 * 1024
        let json = r.jsonString()
        let back = try JSONDecoder.iso.decode(RunReport.self, from: Data(json.utf8))
        #expect(back.state == .succeeded)
        #expect(back.archive?.name == "web1-2026")
        #expect(back.bytesToServer == 3 * 1024 * 1024)
        let obj = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        #expect(obj?["duration_seconds"] as? Double == 12.5)
        let s = r.summary()
        #expect(s.contains("web1 -> vault: backup succeeded in 12.5 s"))
        #expect(s.contains("web1-2026"))
        #expect(s.contains("3.00 MiB to the server"))
    }

    @Test func sizes() {
        #expect(RunReport.size(0) == "0 B")
        #expect(RunReport.size(1536) == "1.50 KiB")
        #expect(RunReport.size(5 * 1024 * 1024 * 1024) == "5.00 GiB")
    }

    @Test func errorLinesKeepTheEnd() {
        let lines = (1...10).map { "line \($0)" } + ["", "  "]
        #expect(BackupRun.errorLines(lines) == "line 5 | line 6 | line 7 | line 8 | line 9 | line 10")
    }
}

extension JSONDecoder {
    static var iso: JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }
}
