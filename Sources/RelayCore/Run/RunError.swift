/// Failures of a run that are not SSH, vault or config errors.
public enum RunError: Error, CustomStringConvertible, Equatable, Sendable {
    case setup(String)
    case notSupported(String)
    case cancelled
    case borgFailed(status: Int32, detail: String, command: String = "create")
    case borgKilled(signal: String, detail: String, command: String = "create")
    case protocolFailure(String)
    case hookFailed(hook: String, status: Int32?, detail: String)
    case hookTimedOut(hook: String, seconds: Int)
    case timedOut(what: String, seconds: Int, key: String)

    public var description: String {
        switch self {
        case .setup(let s): return s
        case .notSupported(let s): return s
        case .cancelled: return "the run was cancelled"
        case .borgFailed(let status, let detail, let command):
            return "borg \(command) on the client failed (exit status \(status))" + (detail.isEmpty ? "" : ": \(detail)")
        case .borgKilled(let signal, let detail, let command):
            return "borg \(command) on the client was killed by SIG\(signal)" + (detail.isEmpty ? "" : ": \(detail)")
        case .protocolFailure(let s): return s
        case .hookFailed(let hook, let status, let detail):
            return "the \(hook) hook on the client failed (\(status.map { "exit status \($0)" } ?? "no exit status"))"
                + (detail.isEmpty ? "" : ": \(detail)") + (hook == "pre" ? "; the backup was skipped" : "")
        case .timedOut(let what, let seconds, let key):
            return "\(what) timed out after \(seconds) s ([relay] \(key))"
        case .hookTimedOut(let hook, let seconds):
            return "the \(hook) hook on the client was killed at its timeout of \(seconds) s (\(hook)_timeout)"
                + (hook == "pre" ? "; the backup was skipped" : "")
        }
    }
}
