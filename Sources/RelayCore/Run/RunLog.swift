import Foundation
import Logging
import Synchronization

/// Where one run's log lines go: a file under `state_dir/logs` (mode 0600) and,
/// optionally, standard error. Passphrases and keys never reach it: nothing secret
/// is ever passed to a logger.
public final class RunLogSink: Sendable {
    private struct State {
        var fd: Int32
        var echo: Bool
    }
    private let state: Mutex<State>
    public let path: String?

    /// Opens (creates) `path` for appending; nil `path` only echoes.
    public init(path: String?, echoToStderr: Bool) throws {
        var fd: Int32 = -1
        if let p = path {
            let dir = (p as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            fd = Glibc.open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
            if fd < 0 {
                throw RunError.setup("cannot create the run log \(p): \(String(cString: strerror(errno)))")
            }
        }
        self.path = path
        self.state = Mutex(State(fd: fd, echo: echoToStderr))
    }

    deinit { close() }

    func write(_ line: String) {
        var text = line
        text.append("\n")
        state.withLock { s in
            var bytes = Array(text.utf8)
            if s.fd >= 0 { _ = Glibc.write(s.fd, &bytes, bytes.count) }
            if s.echo { _ = Glibc.write(2, &bytes, bytes.count) }
        }
    }

    public func close() {
        state.withLock { s in
            if s.fd >= 0 { Glibc.close(s.fd); s.fd = -1 }
        }
    }

    /// A logger that writes to this sink.
    public func logger(label: String, level: Logger.Level = .info) -> Logger {
        var l = Logger(label: label) { _ in RunLogHandler(sink: self) }
        l.logLevel = level
        return l
    }
}

/// swift-log handler writing `2026-11-21T23:59:01Z info [T] message key=value` lines.
struct RunLogHandler: LogHandler {
    let sink: RunLogSink
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let m = event.metadata { all.merge(m) { $1 } }
        let origin = all.removeValue(forKey: "relay.origin").map { " [\($0)]" } ?? ""
        let extra = all.isEmpty ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let ts = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        sink.write("\(ts) \(event.level)\(origin) \(event.message)\(extra)")
    }
}
