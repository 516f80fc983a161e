import Foundation
import Testing
@testable import RelayCore

@Suite("Proof of success (backup, operations) and borg's error summary")
struct RunProofTests {
    static let archive = ArchiveSummary(name: "web1-2026", id: "ABC123", nfiles: 3, originalSize: 10,
                                        compressedSize: 9, deduplicatedSize: 8, duration: 1)

    static func backup(_ status: Int32?, archive: ArchiveSummary? = RunProofTests.archive, stdout: Int = 500,
                       bytes: UInt64 = 4096, recording: BackupProof.Recording = .recorded(id: "abc123"),
                       said: String = "") -> RunVerdict {
        BackupProof(exitStatus: status, archive: archive, stdoutBytes: stdout, bytesToServer: bytes,
                    recording: recording, borgSaid: said).verdict
    }

    static func failure(_ v: RunVerdict) -> String? {
        if case .failed(let m) = v { return m }
        return nil
    }

    @Test func aBackupSucceedsOnlyWhenEverythingIsProven() {
        #expect(Self.backup(0) == .succeeded)
        #expect(Self.backup(0, recording: .pending) == .succeeded)
        // Ids compare in lower case (the history stores them normalised).
        #expect(Self.backup(0, recording: .recorded(id: "abc123")) == .succeeded)
    }

    @Test func aBorgThatPrintedNothingDidNotBackUp() throws {
        // The fish + unix transport case of issue 14: exit 0, no output, nothing spliced.
        let m = try #require(Self.failure(Self.backup(0, archive: nil, stdout: 0, bytes: 0)))
        #expect(m.contains("borg create exited 0 but printed no archive: no archive was created"))
        #expect(m.contains("no byte reached the server"))
        #expect(m.contains("relayctl check"))
        let junk = try #require(Self.failure(Self.backup(0, archive: nil, stdout: 12)))
        #expect(junk.contains("12 bytes that are not borg's JSON"))
    }

    @Test func eachMissingPieceIsNamed() throws {
        var noID = Self.archive
        noID.id = nil
        #expect(try #require(Self.failure(Self.backup(0, archive: noID))).contains("no archive id"))
        #expect(try #require(Self.failure(Self.backup(0, bytes: 0))).contains("no byte reached the server"))
        #expect(try #require(Self.failure(Self.backup(0, recording: .failed("disk full")))).contains("could not be recorded in the history"))
        #expect(try #require(Self.failure(Self.backup(0, recording: .recorded(id: "other")))).contains("read back id other"))
        #expect(try #require(Self.failure(Self.backup(nil))).contains("without an exit status"))
        let two = try #require(Self.failure(Self.backup(2, said: "Repository /x does not exist.")))
        #expect(two == "borg create on the client failed (exit status 2): Repository /x does not exist.")
    }

    @Test func exitStatusOneIsAWarningOnlyWithAProvenArchive() throws {
        guard case .warning(let w) = Self.backup(1, said: "/data/f: file changed while we backed it up") else {
            Issue.record("exit 1 with a recorded archive is a warning")
            return
        }
        #expect(w.contains("archive web1-2026 was created"))
        #expect(w.contains("file changed while we backed it up"))
        #expect(Self.backup(1).state == .warning)
        // Exit 1 without an archive is a failure, not a warning.
        let m = try #require(Self.failure(Self.backup(1, archive: nil, stdout: 0)))
        #expect(m.contains("borg create exited 1 but printed no archive"))
        #expect(Self.backup(1, recording: .failed("locked")).state == .failed)
    }

    static func op(_ kind: RunKind, _ status: Int32?, bytes: UInt64 = 100, output: String? = nil,
                   json: OperationProof.JSONShape = .none, dryRun: Bool = false, info: Bool? = nil) -> RunVerdict {
        OperationProof(kind: kind, exitStatus: status, bytesToServer: bytes, output: output.map { Data($0.utf8) },
                       json: json, dryRun: dryRun, infoAfterInit: info).verdict
    }

    @Test func everyOperationHasItsProof() throws {
        // Nothing reached the repository: nothing was done, whatever the exit status.
        for kind: RunKind in [.restore, .borg, .list, .info, .check, .prune, .compact] {
            #expect(Self.failure(Self.op(kind, 0, bytes: 0))?.contains("never reached the repository") == true, "\(kind)")
        }
        #expect(Self.op(.restore, 0) == .succeeded)
        #expect(Self.op(.restore, 1).state == .warning)
        #expect({ if case .warning(let w) = Self.op(.restore, 1) { return w.contains("some files may not have been restored") }; return false }())
        #expect(Self.op(.list, 0, output: #"{"archives": []}"#, json: .document) == .succeeded)
        #expect(Self.failure(Self.op(.list, 0, output: "", json: .document))?.contains("is empty") == true)
        #expect(Self.failure(Self.op(.info, 0, output: "Traceback", json: .document))?.contains("does not parse") == true)
        #expect(Self.op(.list, 0, output: "{\"path\": \"a\"}\n{\"path\": \"b\"}\n", json: .lines) == .succeeded)
        #expect(Self.failure(Self.op(.list, 0, output: "{\"path\": \"a\"}\nnope\n", json: .lines))?.contains("line (2)") == true)
        #expect(Self.op(.list, 0, output: "plain text listing") == .succeeded)
        #expect(Self.op(.keyExport, 0, output: "BORG_KEY 0123abcd\nhqlhbGdvcml0aG2mc2hhMjU2\n") == .succeeded)
        #expect(Self.failure(Self.op(.keyExport, 0, output: ""))?.contains("no borg key block") == true)
        #expect(Self.op(.initialize, 0, info: true) == .succeeded)
        #expect(Self.failure(Self.op(.initialize, 0, info: false))?.contains("borg info cannot read the new repository") == true)
        #expect(Self.failure(Self.op(.initialize, 0, info: nil)) != nil)
        // check: exit 1 means it found problems: never a warning.
        #expect(Self.op(.check, 0) == .succeeded)
        #expect(Self.failure(Self.op(.check, 1))?.contains("found problems") == true)
        #expect(Self.op(.prune, 1).state == .warning)
        #expect(Self.failure(Self.op(.compact, 2))?.contains("exited with status 2") == true)
    }

    static let vectors = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Vectors/borg").standardized.path

    /// Lines as the run keeps them: `--log-json` records through BorgLogLine (one record
    /// may hold a whole traceback), or plain stderr lines.
    static func kept(_ file: String) throws -> [String] {
        let text = try String(contentsOfFile: vectors + "/" + file, encoding: .utf8)
        return text.split(separator: "\n").map { line in
            switch BorgLogLine.parse(String(line)) {
            case .text(let t): return t
            case .message(_, let t): return t
            default: return ""
            }
        }
    }

    @Test func aTracebackIsNeverTheSummary() throws {
        // Real borg 1.2.4 output: a relocated repository, stdin closed (Tests/Vectors/borg).
        for file in ["relocated-traceback-1.2.4.jsonl", "relocated-traceback-1.2.4.txt"] {
            let lines = try Self.kept(file)
            #expect(lines.joined(separator: "\n").contains("Traceback (most recent call last):"), "\(file)")
            let s = BorgErrorSummary.summarize(lines)
            #expect(s.hasPrefix("OSError: [Errno 9] Bad file descriptor"), "\(file): \(s)")
            #expect(!s.contains("Traceback") && !s.contains("File \"") && !s.contains("Platform:") && !s.contains("sys.argv"), "\(file): \(s)")
            #expect(!s.contains("\n"))
        }
        // With --log-json, borg's question is part of the summary.
        let s = BorgErrorSummary.summarize(try Self.kept("relocated-traceback-1.2.4.jsonl"))
        #expect(s.contains("after borg asked: Warning: The repository at location /tmp/tbtest/repo2 was previously located at /tmp/tbtest/repo1 Do you want to continue? [yN]"), "\(s)")
        #expect(s.contains("the full traceback is in the run log"))
    }

    @Test func borgsOwnErrorLinesStayTheSummary() {
        #expect(BorgErrorSummary.summarize(["Repository /srv/x does not exist."]) == "Repository /srv/x does not exist.")
        #expect(BorgErrorSummary.summarize(["", "  a  ", "b"]) == "a | b")
        #expect(BorgErrorSummary.summarize((1...9).map { "line \($0)" }) == "line 4 | line 5 | line 6 | line 7 | line 8 | line 9")
        // A chained traceback: the last exception is the summary.
        let chained = ["Traceback (most recent call last):", "  File \"a.py\", line 1, in f", "KeyError: 'x'", "",
                       "During handling of the above exception, another exception occurred:", "",
                       "Traceback (most recent call last):", "  File \"b.py\", line 2, in g", "borg.locking.LockTimeout: /repo/lock"]
        #expect(BorgErrorSummary.summarize(chained).hasPrefix("borg.locking.LockTimeout: /repo/lock"))
    }

    @Test func theReportCarriesTheWarningState() throws {
        var r = RunReport(runID: "id1", client: "web1", server: "vault", started: Date(timeIntervalSince1970: 0))
        r.apply(.warning("borg create finished with warnings"))
        r.archive = Self.archive
        #expect(r.state == .warning && r.isSuccess)
        #expect(r.summary().contains("backup succeeded WITH WARNINGS"))
        let back = try JSONDecoder.iso.decode(RunReport.self, from: Data(r.jsonString().utf8))
        #expect(back.state == .warning)
        let obj = try JSONSerialization.jsonObject(with: Data(r.jsonString().utf8)) as? [String: Any]
        #expect(obj?["state"] as? String == "warning")
        // Recording failed: a warning backup becomes a failure that says so.
        r.backupProof = BackupProof(exitStatus: 1, archive: Self.archive, stdoutBytes: 10, bytesToServer: 10, recording: .pending)
        r.recordingFailed("database is locked")
        #expect(r.state == .failed)
        #expect(r.error?.contains("could not be recorded in the history") == true)
    }

    @Test func theHistoryRecordsAndReadsBackTheArchive() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("proof-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try HistoryStore(path: dir + "/history.sqlite")
        for (id, status) in [("w", Int32(1)), ("s", Int32(0))] {
            try store.insert(.starting(runID: id, client: "web1", server: "vault", logFile: nil))
            var r = RunReport(runID: id, client: "web1", server: "vault", started: Date())
            r.borgExitStatus = status
            r.archive = Self.archive
            r.bytesToServer = 10
            let proof = BackupProof(exitStatus: status, archive: Self.archive, stdoutBytes: 10, bytesToServer: 10, recording: .pending)
            r.backupProof = proof
            r.apply(proof.verdict)
            r.finish()
            let final = try store.finish(r)
            #expect(final.backupProof?.recording == .recorded(id: "abc123"))
            #expect(final.state == (status == 1 ? .warning : .succeeded))
            #expect(final.warnings.count == (status == 1 ? 1 : 0))
            let rec = try #require(try store.get(id))
            #expect(rec.state == (status == 1 ? .warning : .succeeded))
            #expect((rec.error != nil) == (status == 1))
        }
        #expect(try store.expectedArchives(client: "web1").map(\.runID) == ["w", "s"])
    }
}

@Suite("Run kinds and states in the API and the history")
struct RunKindTests {
    @Test("kinds and states travel as their raw values; an unknown kind is refused naming the known ones")
    func rawValues() throws {
        let enc = try JSONEncoder().encode([RunKind.keyExport, .initialize, .backup])
        #expect(String(decoding: enc, as: UTF8.self) == #"["key-export","init","backup"]"#)
        #expect("\(RunKind.keyExport)" == "key-export" && "\(RunKind.initialize)" == "init")
        #expect(try JSONDecoder().decode([RunState].self, from: Data(#"["interrupted","warning"]"#.utf8)) == [.interrupted, .warning])
        do {
            _ = try JSONDecoder().decode(OperationRequest.self, from: Data(#"{"kind":"delete"}"#.utf8))
            Issue.record("an unknown kind was decoded")
        } catch let DecodingError.dataCorrupted(context) {
            #expect(context.debugDescription.hasPrefix("unknown operation 'delete' (known: init, list, info, key-export, prune"), "\(context.debugDescription)")
        }
        #expect(RunState.allCases.filter { !$0.isFinished } == [.queued, .running])
        #expect(RunState.allCases.filter(\.isSuccess) == [.succeeded, .warning])
    }

    @Test("borg's error text from a client or server reaches logs and terminals without control characters: an escape sequence is shown as ?, non-ASCII stays")
    func summaryWithoutControlCharacters() {
        let s = BorgErrorSummary.summarize(["\u{1b}[2K\u{1b}[1Arecovered relay r1", "Error: d\u{e9}j\u{e0} vu\u{7}\u{9b}31m\tend\u{7f}"])
        #expect(!s.unicodeScalars.contains { $0.value < 0x20 || (0x7f...0x9f).contains($0.value) }, "\(s.debugDescription)")
        #expect(s == "?[2K?[1Arecovered relay r1 | Error: d\u{e9}j\u{e0} vu??31m end?")
    }
}
