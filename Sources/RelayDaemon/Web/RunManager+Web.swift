import Foundation
import RelayCore

/// What the status page reads besides the control API's views.
extension RunManager {
    /// Backups since `since` by client: every client's (one query for the fleet page), or
    /// one client's.
    func webHistories(since: Date, client: String? = nil) throws(ControlError) -> [String: ClientHistory] {
        do {
            return ClientHistory.byClient(try history.runs(kind: .backup, since: since, client: client))
        } catch {
            throw .internalError("\(error)")
        }
    }

    /// The archives the relay recorded for a client (kept and pruned).
    func webArchives(client: String) throws(ControlError) -> [ArchiveRecord] {
        do { return try history.archiveRecords(client: client) } catch { throw .internalError("\(error)") }
    }

    /// The end of a run's log (one chunk, at most `ControlAPI.maxLogChunk` bytes, from the
    /// start of a line), and how many bytes come before it.
    func webLogTail(_ id: String) throws(ControlError) -> (text: String, skipped: Int) {
        let r = try run(id)
        var size = 0
        if let path = r.logFile, let attrs = try? FileManager.default.attributesOfItem(atPath: path) {
            size = (attrs[.size] as? Int) ?? 0
        }
        let start = max(0, size - ControlAPI.maxLogChunk)
        var text = try log(id, offset: start).data
        var skipped = start
        if start > 0, let nl = text.firstIndex(of: "\n") {
            skipped += text[...nl].utf8.count
            text = String(text[text.index(after: nl)...])
        }
        return (text, skipped)
    }
}
