import Foundation
import Logging
import Synchronization

/// What a run has done so far, for live status (`relayctl run --follow`, `status`).
public struct RunProgress: Codable, Sendable, Equatable {
    /// connecting, running, finishing
    public var phase: String = "connecting"
    public var bytesToServer: UInt64 = 0
    public var bytesFromServer: UInt64 = 0
    /// From borg's `--log-json --progress` lines, when borg printed them.
    public var files: Int?
    public var originalSize: Int64?
    public var deduplicatedSize: Int64?
    public var currentPath: String?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case phase, files
        case bytesToServer = "bytes_to_server"
        case bytesFromServer = "bytes_from_server"
        case originalSize = "original_size"
        case deduplicatedSize = "deduplicated_size"
        case currentPath = "current_path"
    }
}

/// A run's progress, written by its event-loop thread and read by any other.
public final class ProgressBoard: Sendable {
    private let state = Mutex(RunProgress())

    public init() {}

    public var snapshot: RunProgress { state.withLock { $0 } }

    func update(_ body: (inout RunProgress) -> Void) {
        state.withLock { body(&$0) }
    }
}

/// One line of borg's stderr under `--log-json`: a log message, a progress report, or
/// text borg printed outside its logger (kept as it is).
enum BorgLogLine: Equatable {
    case message(level: String, text: String)
    case archiveProgress(files: Int?, originalSize: Int64?, deduplicatedSize: Int64?, path: String?)
    case progressMessage(String)
    case text(String)

    /// Logs a stderr line of borg (`origin`: "T borg", "R borg") or turns it into progress;
    /// returns the text worth keeping for error messages.
    static func handle(_ line: String, logger: Logger, origin: String, progress: ProgressBoard) -> String? {
        switch parse(line) {
        case .text(let text):
            logger.info("\(text)", metadata: ["relay.origin": "\(origin)"])
            return text
        case .message(let level, let text):
            let prefix = level == "INFO" ? "" : "\(level): "
            logger.info("\(prefix)\(text)", metadata: ["relay.origin": "\(origin)"])
            return text
        case .archiveProgress(let files, let size, let dedup, let path):
            progress.update { p in
                p.files = files ?? p.files
                p.originalSize = size ?? p.originalSize
                p.deduplicatedSize = dedup ?? p.deduplicatedSize
                if let path, !path.isEmpty { p.currentPath = path }
            }
            return nil
        case .progressMessage:
            return nil
        }
    }

    static func parse(_ line: String) -> BorgLogLine {
        guard line.hasPrefix("{"),
              let obj = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
              let type = obj["type"] as? String else {
            return .text(line)
        }
        func int64(_ key: String) -> Int64? { (obj[key] as? NSNumber)?.int64Value }
        switch type {
        case "log_message":
            return .message(level: (obj["levelname"] as? String) ?? "INFO", text: (obj["message"] as? String) ?? "")
        case "archive_progress":
            return .archiveProgress(files: (obj["nfiles"] as? NSNumber)?.intValue, originalSize: int64("original_size"),
                                    deduplicatedSize: int64("deduplicated_size"), path: obj["path"] as? String)
        case "progress_message", "progress_percent":
            return .progressMessage((obj["message"] as? String) ?? "")
        case "question_prompt":
            // borg asks (relocated repository, unknown unencrypted repository, …); its
            // stdin never answers, so the answer is no. One line, for the summary.
            let text = ((obj["message"] as? String) ?? "").split(whereSeparator: \.isNewline)
                .map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
            return .text("borg asked: \(text)")
        case "file_status":
            return .text("\(obj["status"] as? String ?? "?") \(obj["path"] as? String ?? "")")
        default:
            return .text(line)
        }
    }
}
