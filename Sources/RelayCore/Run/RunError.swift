/// Failures of a run that are not SSH, vault or config errors.
public enum RunError: Error, CustomStringConvertible, Equatable, Sendable {
    case setup(String)
    case notSupported(String)
    case cancelled
    case borgFailed(status: Int32, detail: String)
    case borgKilled(signal: String, detail: String)
    case protocolFailure(String)

    public var description: String {
        switch self {
        case .setup(let s): return s
        case .notSupported(let s): return s
        case .cancelled: return "the run was cancelled"
        case .borgFailed(let status, let detail):
            return "borg create on the client failed (exit status \(status))" + (detail.isEmpty ? "" : ": \(detail)")
        case .borgKilled(let signal, let detail):
            return "borg create on the client was killed by SIG\(signal)" + (detail.isEmpty ? "" : ": \(detail)")
        case .protocolFailure(let s): return s
        }
    }
}
