import Foundation
import Logging

/// Files an operation leaves in the temporary directory while it runs: its private
/// directory `borg-relay-RUNID-XXXXXX` (the socket borg's connector dials, `LocalBorgRun`)
/// and `borg-relay-RUNID.list` (the tamper check's listing). A SIGKILLed agent cannot
/// remove them; `relay-agent serve` removes those of its own finished runs at start.
public enum StaleRunFiles {
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var isDirectory: Bool
        public var uid: uid_t

        public init(name: String, isDirectory: Bool, uid: uid_t) {
            self.name = name
            self.isDirectory = isDirectory
            self.uid = uid
        }
    }

    /// The run id in an entry's name, if it is one of the run's files.
    public static func runID(of entry: Entry) -> String? {
        let pattern = entry.isDirectory
            ? /borg-relay-([0-9]{8}T[0-9]{6}Z?-[0-9a-f]{6})-[A-Za-z0-9]{6}/
            : /borg-relay-([0-9]{8}T[0-9]{6}Z?-[0-9a-f]{6})\.list/
        return entry.name.wholeMatch(of: pattern).map { String($0.1) }
    }

    /// The entries to remove: the agent's own (owner `agentUID`) whose run `isStale` says
    /// is one of this agent's runs and not running.
    public static func select(_ entries: [Entry], agentUID: uid_t, isStale: (String) -> Bool) -> [String] {
        entries.filter { e in
            e.uid == agentUID && runID(of: e).map(isStale) == true
        }.map(\.name).sorted()
    }

    /// Removes the stale entries of `directory` (default: the temporary directory); returns
    /// the paths removed. Symlinks are never followed or counted as directories.
    @discardableResult
    public static func remove(in directory: String = FileManager.default.temporaryDirectory.path,
                              agentUID: uid_t = geteuid(), isStale: (String) -> Bool, logger: Logger) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var entries: [Entry] = []
        for n in names where n.hasPrefix("borg-relay-") {
            var st = stat()
            guard lstat(directory + "/" + n, &st) == 0 else { continue }
            let type = st.st_mode & S_IFMT
            guard type == S_IFDIR || type == S_IFREG else { continue }
            entries.append(Entry(name: n, isDirectory: type == S_IFDIR, uid: st.st_uid))
        }
        var removed: [String] = []
        for n in select(entries, agentUID: agentUID, isStale: isStale) {
            let path = directory + "/" + n
            do {
                try FileManager.default.removeItem(atPath: path)
                removed.append(path)
                logger.info("removed \(path), left by an earlier agent's run")
            } catch {
                logger.warning("cannot remove \(path), left by an earlier agent's run: \(error); remove it by hand")
            }
        }
        return removed
    }
}
