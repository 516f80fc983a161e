import Foundation
import Logging

/// Small helpers shared by the two executables.
public enum CLI {
    /// Writes a line to standard error.
    public static func printError(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    /// A run identifier: UTC time plus randomness, sortable and unique per run.
    public static func newRunID(now: Date = Date()) -> String {
        var f = Date.ISO8601FormatStyle(timeZone: .gmt)
        f = f.year().month().day().dateSeparator(.omitted).time(includingFractionalSeconds: false).timeSeparator(.omitted)
        let stamp = now.formatted(f)
        let rand = (0..<3).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        return "\(stamp)-\(rand)"
    }

    /// Exit codes of the command contract.
    public enum Exit {
        public static let success: Int32 = 0
        public static let runFailed: Int32 = 1
        public static let usage: Int32 = 2
        /// The run succeeded with warnings (borg exited 1; for a backup the archive was
        /// created and recorded).
        public static let warning: Int32 = 3
    }
}

extension CLI {
    /// Library log lines (jumps opening, say) go to stderr, warnings and above only, so
    /// that a command's stdout stays its output (`--json`).
    public static func quietLogging() {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .warning
            return h
        }
    }
}
