import Foundation
import Logging
import Synchronization

/// Asks a run to stop from any thread: a write to an eventfd that the run's event loop polls.
public final class RunCanceller: Sendable {
    private let wakeup: Wakeup
    private let requested = Atomic<Bool>(false)

    /// The fd an event loop polls for cancel requests.
    var fd: Int32 { wakeup.fd }

    /// Whether cancel() was called (not consumed by the event loop, unlike the eventfd).
    public var isRequested: Bool { requested.load(ordering: .acquiring) }

    public init() throws(RunError) {
        do {
            wakeup = try Wakeup()
        } catch {
            throw RunError.setup("\(error)")
        }
    }

    public func cancel() {
        requested.store(true, ordering: .releasing)
        wakeup.signal()
    }

    /// Consumes a pending cancel request, if any (non-blocking).
    func takeRequest() -> Bool { wakeup.consume() }

    /// Sleeps until `until`; true when a cancel request came first.
    func wait(until: Date) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let left = until.timeIntervalSinceNow
            if left <= 0 { return false }
            let rc = poll(&p, 1, Int32(min(left * 1000, 3_600_000)) + 1)
            if rc > 0 { return takeRequest() || isRequested }
            if rc < 0 && errno != EINTR { return isRequested }
        }
    }
}

/// What runs on the client during a relayed run.
public enum Workload: Sendable, Equatable {
    /// `borg create` of the client's paths (the normal run).
    case backup
    /// A command of the caller's (benchmarks): `{port}` in it becomes the forwarded port.
    /// It should connect to 127.0.0.1:{port} once and write to it.
    case raw(commandTemplate: String)
    /// Another borg command on the client (restore, read-only commands): `arguments` after
    /// the program name, `BORG_REPO` set to the client's repository URL; run in `workDir`
    /// (created 0700 if missing) when given.
    case borg(kind: RunKind, arguments: [String], workDir: String?)

    var kind: RunKind {
        switch self {
        case .backup: return .backup
        case .raw: return .raw
        case .borg(let kind, _, _): return kind
        }
    }
}

