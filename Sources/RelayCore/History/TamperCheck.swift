import Foundation

/// An archive as `borg list --json` shows it: its name and borg's archive id.
public struct PresentArchive: Sendable, Equatable, Decodable {
    public var name: String
    public var id: String

    public init(name: String, id: String) {
        self.name = name
        self.id = ArchiveSummary.normalizedID(id)
    }

    enum CodingKeys: String, CodingKey { case name, id }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(name: try c.decode(String.self, forKey: .name), id: try c.decode(String.self, forKey: .id))
    }

    /// The archives in the JSON document `borg list --json` prints; nil if it is not one.
    public static func parse(borgListJSON data: Data) -> [PresentArchive]? {
        struct Listing: Decodable { var archives: [PresentArchive] }
        return (try? JSONDecoder().decode(Listing.self, from: data))?.archives
    }
}

/// The tamper alarm's decision: the archives the relay created and did not prune (its
/// records) against what the repository holds. Does no I/O.
///
/// A record with an id is satisfied only by an archive with that id: deleting an archive
/// through the append-only key and creating another under the same name does not hide
/// the deletion. A record without an id (recorded before the relay kept ids) is checked
/// by name.
public enum TamperCheck {
    /// One archive the relay expects and did not find as it recorded it.
    public struct Finding: Sendable, Equatable, CustomStringConvertible {
        public var name: String
        /// The id the relay recorded; nil for a record known by name only.
        public var expectedID: String?
        /// The id of the archive now in the repository under that name; nil: missing.
        public var foundID: String?

        public init(name: String, expectedID: String?, foundID: String?) {
            self.name = name
            self.expectedID = expectedID
            self.foundID = foundID
        }

        public var description: String {
            let expected = expectedID.map { "expected id \($0)" } ?? "recorded by name only"
            let found = foundID.map { "found id \($0)" } ?? "missing"
            return "\(name) (\(expected), \(found))"
        }
    }

    public enum Verdict: Sendable, Equatable {
        /// Every expected archive is there.
        case ok(expected: Int, present: Int)
        /// Some are missing or were replaced: nothing may be pruned or compacted.
        case alarm([Finding])
    }

    public static func decide(expected: [ArchiveRecord], present: [PresentArchive]) -> Verdict {
        let ids = Set(present.map(\.id))
        var byName: [String: String] = [:]
        for a in present { byName[a.name] = a.id }
        var findings: [Finding] = []
        for r in expected {
            if let id = r.id {
                if ids.contains(ArchiveSummary.normalizedID(id)) { continue }
                findings.append(Finding(name: r.name, expectedID: ArchiveSummary.normalizedID(id), foundID: byName[r.name]))
            } else if byName[r.name] == nil {
                findings.append(Finding(name: r.name, expectedID: nil, foundID: nil))
            }
        }
        return findings.isEmpty ? .ok(expected: expected.count, present: present.count) : .alarm(findings)
    }

    /// The archives a prune removed: those listed before and not after (by id).
    public static func removed(before: [PresentArchive], after: [PresentArchive]) -> [PresentArchive] {
        let kept = Set(after.map(\.id))
        return before.filter { !kept.contains($0.id) }
    }

    /// The ids of the archives borg prune says it removed: its `--list` messages
    /// "Pruning archive (N/M): NAME TIME [ID]" (the id always comes last; a message is one
    /// JSON log record of borg, so an archive name cannot fake one).
    public static func prunedIDs(borgMessages: [String]) -> Set<String> {
        var ids = Set<String>()
        for m in borgMessages where m.hasPrefix("Pruning archive") {
            let text = m.trimmingCharacters(in: .whitespaces)
            guard text.hasSuffix("]"), let open = text.lastIndex(of: "[") else { continue }
            let id = text[text.index(after: open)..<text.index(before: text.endIndex)]
            if id.count == 64, id.allSatisfy(\.isHexDigit) { ids.insert(ArchiveSummary.normalizedID(String(id))) }
        }
        return ids
    }

    /// What a prune run may mark as pruned: archives gone after it (by id) that borg prune
    /// says it removed. Anything else that vanished meanwhile was deleted by someone else
    /// and stays expected, so the check after the prune raises the alarm.
    public static func prunedByRelay(before: [PresentArchive], after: [PresentArchive], borgMessages: [String]) -> [PresentArchive] {
        let claimed = prunedIDs(borgMessages: borgMessages)
        return removed(before: before, after: after).filter { claimed.contains($0.id) }
    }

    /// The alarm for a person: each archive with its ids, and how to get the data back.
    public static func message(_ findings: [Finding], client: String, server: String) -> String {
        let missing = findings.filter { $0.foundID == nil }.count
        let replaced = findings.count - missing
        var what: [String] = []
        if missing > 0 { what.append("\(missing) missing") }
        if replaced > 0 { what.append("\(replaced) replaced by another archive under the same name") }
        return """
            TAMPER ALARM: \(findings.count) archive(s) the relay created and never pruned are not in \
            \(client)'s repository on \(server) as the relay recorded them (\(what.joined(separator: ", "))): \
            \(findings.map(\.description).joined(separator: "; ")). Someone deleted them through the \
            append-only key (e.g. from the client). Nothing was pruned or compacted, so their data is still \
            in the repository: stop compacting this repository, inspect the transactions with `borg check` \
            and the repository's transaction log, and roll back to the last good transaction as borg's \
            append-only documentation describes (remove the newer segments and hints/index/integrity files \
            on the server).
            """
    }
}
