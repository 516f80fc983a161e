import Foundation

/// How a run ended, as decided from what it can prove (no I/O here).
public enum RunVerdict: Equatable, Sendable {
    case succeeded
    /// borg exited 1 ("succeeded with warnings") and everything else was proven: the
    /// text says what borg warned about.
    case warning(String)
    /// The message says what was missing or what failed.
    case failed(String)

    public var state: RunState {
        switch self {
        case .succeeded: return .succeeded
        case .warning: return .warning
        case .failed: return .failed
        }
    }
}

/// The proof a backup needs: borg create exited 0 (or 1, warnings), its `--json` output
/// names the new archive (name and id), the splice carried bytes to the server, and the
/// archive's id was recorded in the history (`archive` table, the tamper alarm's reference).
/// Anything less is a failure whose message says what was missing.
public struct BackupProof: Equatable, Sendable {
    /// Whether the archive's id was recorded in the history.
    public enum Recording: Equatable, Sendable {
        /// Not yet: the run judges everything else; the history records and judges again.
        case pending
        /// Read back from the `archive` table.
        case recorded(id: String)
        /// Recording failed (the reason).
        case failed(String)
    }

    public var exitStatus: Int32?
    /// The archive `borg create --json` named, if its stdout parsed.
    public var archive: ArchiveSummary?
    /// Bytes borg create printed on stdout (0: it printed nothing).
    public var stdoutBytes: Int
    /// Bytes the splice delivered to borg serve on the server.
    public var bytesToServer: UInt64
    public var recording: Recording
    /// borg's last meaningful line (`BorgErrorSummary`), for the messages.
    public var borgSaid: String

    public init(exitStatus: Int32?, archive: ArchiveSummary?, stdoutBytes: Int, bytesToServer: UInt64,
                recording: Recording, borgSaid: String = "") {
        self.exitStatus = exitStatus
        self.archive = archive
        self.stdoutBytes = stdoutBytes
        self.bytesToServer = bytesToServer
        self.recording = recording
        self.borgSaid = borgSaid
    }

    public var verdict: RunVerdict {
        let said = borgSaid.isEmpty ? "" : " (borg said: \(borgSaid))"
        guard let status = exitStatus else {
            return .failed("borg create on the client ended without an exit status: no archive is known to exist\(said)")
        }
        guard status == 0 || status == 1 else {
            return .failed("borg create on the client failed (exit status \(status))\(borgSaid.isEmpty ? "" : ": \(borgSaid)")")
        }
        let exited = "borg create exited \(status)"
        guard let a = archive else {
            let printed = stdoutBytes == 0 ? "printed no archive" : "printed no archive in its --json output (\(stdoutBytes) bytes that are not borg's JSON)"
            let sent = bytesToServer == 0 ? "; no byte reached the server" : ""
            return .failed("\(exited) but \(printed): no archive was created\(sent)\(said); check that the client's login shell runs POSIX sh scripts and that borg_path is borg (relayctl check CLIENT)")
        }
        guard let id = a.id, !id.isEmpty else {
            return .failed("\(exited) and named archive \(a.name) but no archive id: the relay cannot record it, so it does not count it as created; update borg on the client (1.2 or newer)")
        }
        guard bytesToServer > 0 else {
            return .failed("\(exited) and named archive \(a.name), but no byte reached the server: that archive is not in this repository")
        }
        switch recording {
        case .pending, .recorded(id: ArchiveSummary.normalizedID(id)):
            break
        case .recorded(let other):
            return .failed("archive \(a.name) (id \(id)) was created, but the history read back id \(other) for it: the record is wrong, so the tamper alarm would not know this archive; see the run log")
        case .failed(let why):
            return .failed("archive \(a.name) (id \(id)) was created, but its id could not be recorded in the history, so the tamper alarm would not know it: \(why)")
        }
        if status == 1 {
            return .warning("borg create finished with warnings (exit status 1); archive \(a.name) was created\(borgSaid.isEmpty ? "; see the run log" : ": \(borgSaid)")")
        }
        return .succeeded
    }
}

/// The proof of success of every other operation, one per kind.
public struct OperationProof: Equatable, Sendable {
    public var kind: RunKind
    public var exitStatus: Int32?
    /// Bytes that went to borg serve on the server: a borg that never reached the
    /// repository proved nothing.
    public var bytesToServer: UInt64
    /// What borg printed on stdout (list/info --json, key-export), when it matters.
    public var output: Data?
    /// list/info: JSON was asked for; `lines`: list of an archive (--json-lines).
    public var json: JSONShape
    /// restore: `--dry-run` (nothing is written).
    public var dryRun: Bool
    /// init: `borg info` of the new repository afterwards succeeded (nil: not tried).
    public var infoAfterInit: Bool?
    public var borgSaid: String

    public enum JSONShape: Equatable, Sendable { case none, document, lines }

    public init(kind: RunKind, exitStatus: Int32?, bytesToServer: UInt64, output: Data? = nil, json: JSONShape = .none,
                dryRun: Bool = false, infoAfterInit: Bool? = nil, borgSaid: String = "") {
        self.kind = kind
        self.exitStatus = exitStatus
        self.bytesToServer = bytesToServer
        self.output = output
        self.json = json
        self.dryRun = dryRun
        self.infoAfterInit = infoAfterInit
        self.borgSaid = borgSaid
    }

    public var verdict: RunVerdict {
        let command = Self.borgCommand[kind] ?? kind.rawValue
        guard let status = exitStatus else {
            return .failed("borg \(command) ended without an exit status\(borgSaid.isEmpty ? "" : ": \(borgSaid)")")
        }
        // check: exit status 1 means it found problems: a failure, never a warning.
        if kind == .check && status == 1 {
            return .failed("borg check found problems in the repository (exit status 1)\(borgSaid.isEmpty ? "" : ": \(borgSaid)"); see relayctl log RUN, then borg check --repair on the server")
        }
        guard status == 0 || status == 1 else {
            return .failed("borg \(command) exited with status \(status)\(borgSaid.isEmpty ? "" : ": \(borgSaid)")")
        }
        guard bytesToServer > 0 else {
            return .failed("borg \(command) exited \(status) but never reached the repository (no byte went to the server): nothing was done; check that the client's login shell runs POSIX sh scripts and that borg_path is borg")
        }
        switch kind {
        case .list, .info:
            if json != .none, let problem = Self.jsonProblem(output ?? Data(), json) {
                return .failed("borg \(command) exited \(status) but its --json output \(problem)")
            }
        case .keyExport:
            let text = String(decoding: output ?? Data(), as: UTF8.self)
            if !text.contains("BORG_KEY ") {
                return .failed("borg key export exited \(status) but printed no borg key block (BORG_KEY …): no key was exported")
            }
        case .initialize:
            if infoAfterInit != true {
                return .failed("borg init exited \(status) but borg info cannot read the new repository: it was not created as expected\(borgSaid.isEmpty ? "" : " (\(borgSaid))")")
            }
        default:
            break
        }
        if status == 1 {
            let what = kind == .restore && !dryRun ? "; some files may not have been restored" : ""
            return .warning("borg \(command) finished with warnings (exit status 1)\(what)\(borgSaid.isEmpty ? "; see the run log" : ": \(borgSaid)")")
        }
        return .succeeded
    }

    static let borgCommand: [RunKind: String] = [.restore: "extract", .keyExport: "key export", .borg: "command"]

    /// Why `data` is not the JSON asked for; nil when it is.
    static func jsonProblem(_ data: Data, _ shape: JSONShape) -> String? {
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if text.isEmpty { return "is empty" }
        switch shape {
        case .none:
            return nil
        case .document:
            guard (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] != nil else {
                return "does not parse as a JSON object"
            }
        case .lines:
            for (i, line) in text.split(separator: "\n").enumerated() where
                (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] == nil {
                return "has a line (\(i + 1)) that does not parse as a JSON object"
            }
        }
        return nil
    }
}

/// borg's last meaningful line for a one-line summary: the exception line of a Python
/// traceback ("OSError: [Errno 9] Bad file descriptor"), after the question borg asked if
/// it asked one, or borg's own error lines; never the traceback itself (that stays in the
/// run log).
public enum BorgErrorSummary {
    /// `lines`: what borg printed (a kept line may hold several, e.g. a traceback logged as
    /// one `--log-json` record). `maxLines`: how many trailing lines to keep when there is
    /// no traceback.
    public static func summarize(_ lines: [String], maxLines: Int = 6) -> String {
        sanitized(summary(lines, maxLines: maxLines))
    }

    /// `text` with control characters (C0 but tab, which becomes a space; DEL; C1) shown as
    /// `?`: the summary comes from a client's or a server's borg, and goes to logs, terminals,
    /// the status page and notifiers, where an escape sequence could rewrite what is shown.
    public static func sanitized(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.map { c -> Unicode.Scalar in
            if c == "\t" { return " " }
            return c.value < 0x20 || (0x7f...0x9f).contains(c.value) ? "?" : c
        }))
    }

    private static func summary(_ lines: [String], maxLines: Int) -> String {
        let all = lines.flatMap { $0.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) }
        if let tb = all.lastIndex(where: { $0.hasPrefix("Traceback (most recent call last):") }) {
            // The exception line: the first line after the frames that is not indented.
            var exception: String?
            for line in all[(tb + 1)...] where !line.isEmpty && !line.hasPrefix(" ") && !line.hasPrefix("\t") {
                exception = line.trimmingCharacters(in: .whitespaces)
                break
            }
            let question = all[..<tb].last { $0.hasPrefix("borg asked: ") }
            let text = exception ?? "borg crashed (a Python traceback without an exception line)"
            return text + (question.map { " (after \($0); its stdin has no answer)" } ?? "") + "; the full traceback is in the run log"
        }
        let useful = all.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !isNoise($0) }
        return useful.suffix(maxLines).joined(separator: " | ")
    }

    /// Lines of borg's crash report around a traceback that say nothing about the error.
    static func isNoise(_ line: String) -> Bool {
        line == "Local Exception" || line == "Remote Exception (see remote log for the traceback)"
            || ["Platform: ", "Linux: ", "Borg: ", "PID: ", "sys.argv: ", "SSH_ORIGINAL_COMMAND: "].contains { line.hasPrefix($0) }
    }
}
