import Foundation
import Testing
@testable import RelayCore

@Suite("Tamper check (the decision)")
struct TamperCheckTests {
    static let idA = String(repeating: "a1", count: 32)
    static let idB = String(repeating: "b2", count: 32)
    static let idC = String(repeating: "c3", count: 32)
    static let idX = String(repeating: "ee", count: 32)

    func record(_ name: String, _ id: String?) -> ArchiveRecord {
        ArchiveRecord(client: "web1", name: name, id: id, runID: "r-\(name)", createdAt: Date(timeIntervalSince1970: 0))
    }

    @Test func everyRecordedArchivePresentByIdIsOK() {
        let expected = [record("A", Self.idA), record("B", Self.idB)]
        let present = [PresentArchive(name: "A", id: Self.idA), PresentArchive(name: "B", id: Self.idB),
                       PresentArchive(name: "foreign", id: Self.idC)]
        #expect(TamperCheck.decide(expected: expected, present: present) == .ok(expected: 2, present: 3))
        #expect(TamperCheck.decide(expected: [], present: []) == .ok(expected: 0, present: 0))
    }

    @Test func aMissingArchiveRaisesTheAlarm() {
        let expected = [record("A", Self.idA), record("B", Self.idB)]
        let present = [PresentArchive(name: "B", id: Self.idB)]
        #expect(TamperCheck.decide(expected: expected, present: present)
                == .alarm([.init(name: "A", expectedID: Self.idA, foundID: nil)]))
    }

    @Test func anArchiveRecreatedUnderTheSameNameRaisesTheAlarmWithBothIds() {
        let expected = [record("A", Self.idA)]
        let present = [PresentArchive(name: "A", id: Self.idX)]
        let verdict = TamperCheck.decide(expected: expected, present: present)
        #expect(verdict == .alarm([.init(name: "A", expectedID: Self.idA, foundID: Self.idX)]))
        guard case .alarm(let findings) = verdict else { return }
        let text = TamperCheck.message(findings, client: "web1", server: "vault")
        #expect(text.hasPrefix("TAMPER ALARM"))
        #expect(text.contains("A (expected id \(Self.idA), found id \(Self.idX))"), "\(text)")
        #expect(text.contains("replaced by another archive under the same name"))
        #expect(text.contains("Nothing was pruned or compacted") && text.contains("roll back"))
        #expect(text.contains("web1") && text.contains("vault"))
    }

    @Test func idsCompareCaseInsensitivelyAndARenameIsNotTakenForADeletion() {
        // borg prints lower-case hex; a record in upper case still matches.
        #expect(TamperCheck.decide(expected: [record("A", Self.idA.uppercased())],
                                   present: [PresentArchive(name: "A", id: Self.idA)]) == .ok(expected: 1, present: 1))
        // Same id under another name: the archive's data is the archive the relay made.
        #expect(TamperCheck.decide(expected: [record("A", Self.idA)],
                                   present: [PresentArchive(name: "A2", id: Self.idA)]) == .ok(expected: 1, present: 1))
    }

    @Test func recordsWithoutAnIdAreCheckedByName() {
        let expected = [record("old1", nil), record("old2", nil)]
        let present = [PresentArchive(name: "old1", id: Self.idX)]
        let verdict = TamperCheck.decide(expected: expected, present: present)
        #expect(verdict == .alarm([.init(name: "old2", expectedID: nil, foundID: nil)]))
        guard case .alarm(let findings) = verdict else { return }
        let text = TamperCheck.message(findings, client: "web1", server: "vault")
        #expect(text.contains("old2 (recorded by name only, missing)"), "\(text)")
        #expect(text.contains("1 missing"))
    }

    @Test func severalFindingsAreAllNamed() {
        let expected = [record("A", Self.idA), record("B", Self.idB), record("C", Self.idC)]
        let present = [PresentArchive(name: "B", id: Self.idX), PresentArchive(name: "C", id: Self.idC)]
        guard case .alarm(let findings) = TamperCheck.decide(expected: expected, present: present) else {
            Issue.record("expected the alarm")
            return
        }
        #expect(findings.map(\.name) == ["A", "B"])
        let text = TamperCheck.message(findings, client: "web1", server: "vault")
        #expect(text.contains("2 archive(s)") && text.contains("1 missing") && text.contains("1 replaced"), "\(text)")
        #expect(text.contains("A (expected id \(Self.idA), missing)") && text.contains("found id \(Self.idX)"))
    }

    @Test func removedIsWhatWasListedBeforeAndNotAfterById() {
        let before = [PresentArchive(name: "A", id: Self.idA), PresentArchive(name: "B", id: Self.idB),
                      PresentArchive(name: "C", id: Self.idC)]
        let after = [PresentArchive(name: "B", id: Self.idB), PresentArchive(name: "C", id: Self.idX)]
        #expect(TamperCheck.removed(before: before, after: after).map(\.name) == ["A", "C"])
        #expect(TamperCheck.removed(before: before, after: before).isEmpty)
    }

    @Test func borgListJSONIsParsedWithIds() throws {
        let json = """
            {"archives": [{"archive": "web1-1", "barchive": "web1-1", "id": "\(Self.idA.uppercased())", "name": "web1-1",
                           "start": "2026-11-21T23:00:00.000000", "time": "2026-11-21T23:00:00.000000"},
                          {"archive": "web1-2", "barchive": "web1-2", "id": "\(Self.idB)", "name": "web1-2",
                           "start": "2026-11-22T23:00:00.000000", "time": "2026-11-22T23:00:00.000000"}],
             "encryption": {"mode": "repokey-blake2"},
             "repository": {"id": "r", "last_modified": "2026-11-22T23:00:01.000000", "location": "ssh://borg-relay/srv"}}
            """
        let archives = try #require(PresentArchive.parse(borgListJSON: Data(json.utf8)))
        #expect(archives == [PresentArchive(name: "web1-1", id: Self.idA), PresentArchive(name: "web1-2", id: Self.idB)])
        #expect(archives[0].id == Self.idA)  // lower-cased
        #expect(PresentArchive.parse(borgListJSON: Data("{\"archives\": [{\"name\": \"x\"}]}".utf8)) == nil)
        #expect(PresentArchive.parse(borgListJSON: Data("not json".utf8)) == nil)
    }

    @Test func onlyWhatBorgPruneSaysItRemovedCountsAsPruned() {
        let a = PresentArchive(name: "A", id: Self.idA), b = PresentArchive(name: "B", id: Self.idB)
        let c = PresentArchive(name: "C", id: Self.idC)
        // borg 1.2's --list messages (format_archive: name padded to 36, time, [id]).
        let messages = [
            "Keeping archive (rule: daily #1):        C                                    Wed, 2026-12-02 09:30:00 [\(Self.idC)]",
            "Pruning archive (1/1):                   A                                    Tue, 2026-12-01 09:30:00 [\(Self.idA.uppercased())]",
        ]
        #expect(TamperCheck.prunedIDs(borgMessages: messages) == [Self.idA])
        // B vanished too, but prune did not remove it: someone else did, it stays expected.
        #expect(TamperCheck.prunedByRelay(before: [a, b, c], after: [c], borgMessages: messages) == [a])
        // A name cannot fake a claim: the id is the last bracket of a "Pruning archive" message only.
        let forged = ["Keeping archive (rule: daily #1):        Pruning archive [\(Self.idB)] x  Wed, 2026-12-02 09:30:00 [\(Self.idC)]",
                      "Would prune:                             B                                    Tue, 2026-12-01 09:30:00 [\(Self.idB)]",
                      "Pruning archive (1/1): B [not-an-id]", "Pruning archives  50%"]
        #expect(TamperCheck.prunedIDs(borgMessages: forged).isEmpty)
        #expect(TamperCheck.prunedByRelay(before: [a, b], after: [], borgMessages: forged).isEmpty)
    }
}
