import CLibSSH
import Foundation

/// Owner of one `ssh_event`: polls sessions (their channels' callbacks run inside `poll`)
/// and file descriptors, on the one thread that made it. Closed explicitly; `deinit` is the
/// backstop.
final class SSHEventLoop {
    private var event: ssh_event?
    private var sessions: [SSHSession] = []
    private var handlers: [Int32: FDHandler] = [:]
    /// Consecutive failed polls.
    private(set) var failedPolls = 0
    /// Inside `ssh_event_dopoll`: a handler that stops watching its own fd must not free the
    /// poll handle libssh is still using (its callbacks return 0, "still there"), so
    /// removals wait until the poll has returned.
    private var polling = false
    private var removeAfterPoll: [Int32] = []

    /// The callback behind one watched fd.
    private final class FDHandler {
        let events: Int16
        let onReady: (Int32, Int32) -> Void
        init(events: Int16, onReady: @escaping (Int32, Int32) -> Void) {
            self.events = events
            self.onReady = onReady
        }
    }

    init() throws(SSHError) {
        guard let e = ssh_event_new() else { throw SSHError.setup(host: "relay", detail: "ssh_event_new failed (out of memory?)") }
        event = e
    }

    deinit { close() }

    /// Polls `session` from now on (it is switched to non-blocking mode).
    func add(_ session: SSHSession) throws(SSHError) {
        guard let e = event else { return }
        let h = try session.require()
        session.setBlocking(false)
        ssh_event_add_session(e, h)
        sessions.append(session)
    }

    /// Calls `onReady(fd, revents)` when `fd` has one of `events`; watching the same fd again
    /// with other events replaces the watch, `events == 0` ends it.
    func watch(_ fd: Int32, events: Int16, onReady: @escaping (Int32, Int32) -> Void) {
        guard let e = event else { return }
        if polling { return }  // only ever called between polls; see unwatch
        if let old = handlers[fd] {
            if old.events == events { return }
            ssh_event_remove_fd(e, fd)
            handlers[fd] = nil
        }
        guard fd >= 0, events != 0 else { return }
        let h = FDHandler(events: events, onReady: onReady)
        handlers[fd] = h
        ssh_event_add_fd(e, fd, events, { fd, revents, user in
            guard let user else { return 0 }
            let handler = Unmanaged<FDHandler>.fromOpaque(user).takeUnretainedValue()
            handler.onReady(fd, Int32(revents))
            return 0
        }, Unmanaged.passUnretained(h).toOpaque())
    }

    /// Stops watching `fd` (before it is closed). From a handler inside `poll`, the removal
    /// takes effect when the poll returns (the fd gets no further callback meanwhile).
    func unwatch(_ fd: Int32) {
        guard let e = event, handlers[fd] != nil else { return }
        if polling {
            if !removeAfterPoll.contains(fd) { removeAfterPoll.append(fd) }
            return
        }
        ssh_event_remove_fd(e, fd)
        handlers[fd] = nil
    }

    /// Waits for sessions and fds until `deadline` (at most an hour) and runs their callbacks.
    /// Returns false when libssh's poll failed (counted in `failedPolls`).
    @discardableResult
    func poll(until deadline: Date) -> Bool {
        guard let e = event else { return false }
        let timeout = Int32(max(0, min(3_600_000, deadline.timeIntervalSinceNow * 1000)) + 1)
        polling = true
        let rc = ssh_event_dopoll(e, timeout)
        polling = false
        for fd in removeAfterPoll where handlers[fd] != nil {
            ssh_event_remove_fd(e, fd)
            handlers[fd] = nil
        }
        removeAfterPoll.removeAll()
        if rc == SSH_ERROR {
            failedPolls += 1
            return false
        }
        failedPolls = 0
        return true
    }

    /// Removes every fd and session and frees the event; the sessions go back to blocking mode.
    func close() {
        guard let e = event else { return }
        for fd in handlers.keys { ssh_event_remove_fd(e, fd) }
        handlers.removeAll()
        // ssh_event_free in 0.10.6 only restores the first session's poll handle: remove
        // every session first.
        for s in sessions {
            if let h = s.handle { ssh_event_remove_session(e, h) }
            s.setBlocking(true)
        }
        sessions.removeAll()
        ssh_event_free(e)
        event = nil
    }
}

/// A remote forward on a host's loopback (the tcp transport): its sshd listens on a port it
/// chooses, the first connection to it is accepted, and it is cancelled again.
final class RemoteForward {
    let session: SSHSession
    let port: Int32
    private(set) var isOpen = true
    private var handler: Handler?

    private final class Handler {
        let port: Int32
        let session: SSHSession
        let decide: (_ origin: String, _ originPort: Int32) -> Bool
        let accepted: (SSHChannel?, String, Int32) -> Void
        init(port: Int32, session: SSHSession, decide: @escaping (String, Int32) -> Bool, accepted: @escaping (SSHChannel?, String, Int32) -> Void) {
            self.port = port
            self.session = session
            self.decide = decide
            self.accepted = accepted
        }
    }

    /// Asks `session`'s host to listen on 127.0.0.1 (blocking, within `timeout` seconds).
    init(on session: SSHSession, timeout: Int) throws(SSHError) {
        let s = try session.require()
        session.setBlocking(true)
        var bound: Int32 = 0
        try session.withTimeout(timeout, key: "channel_timeout", what: "asking for the remote forward") { () throws(SSHError) in
            if ssh_channel_listen_forward(s, "127.0.0.1", 0, &bound) != SSH_OK {
                throw SSHError.forwardRefused(host: session.label, detail: session.lastError)
            }
        }
        self.session = session
        port = bound
    }

    deinit { stopServing() }

    /// Routes the host's channel-open requests to this forward: `decide` sees each connection
    /// to its port and says whether to accept it; `accepted` then gets its channel (nil when
    /// accepting failed) and where it came from. Other requests are refused.
    func serve(decide: @escaping (_ origin: String, _ originPort: Int32) -> Bool,
               accepted: @escaping (_ channel: SSHChannel?, _ origin: String, _ originPort: Int32) -> Void) {
        guard let s = session.handle else { return }
        let h = Handler(port: port, session: session, decide: decide, accepted: accepted)
        handler = h
        ssh_set_message_callback(s, { _, msg, user in
            guard let msg, let user else { return 1 }
            let h = Unmanaged<Handler>.fromOpaque(user).takeUnretainedValue()
            guard ssh_message_type(msg) == Int32(SSH_REQUEST_CHANNEL_OPEN.rawValue),
                  ssh_message_subtype(msg) == Int32(SSH_CHANNEL_FORWARDED_TCPIP.rawValue) else { return 1 }
            let origin = ssh_message_channel_request_open_originator(msg).map { String(cString: $0) } ?? "?"
            let originPort = ssh_message_channel_request_open_originator_port(msg)
            guard ssh_message_channel_request_open_destination_port(msg) == h.port, h.decide(origin, originPort) else { return 1 }
            guard let ch = ssh_message_channel_request_open_reply_accept(msg) else {
                h.accepted(nil, origin, originPort)
                return 0
            }
            h.accepted(h.session.adopt(ch, label: "forwarded connection"), origin, originPort)
            return 0
        }, Unmanaged.passUnretained(h).toOpaque())
    }

    private func stopServing() {
        if handler != nil, let s = session.handle { ssh_set_message_callback(s, nil, nil) }
        handler = nil
    }

    /// One non-blocking try at cancelling: nil while it is still under way, else whether it
    /// succeeded (a failed cancel ends with the session).
    func tryCancel() -> Bool? {
        guard isOpen else { return true }
        guard let s = session.handle else { isOpen = false; return false }
        let rc = ssh_channel_cancel_forward(s, "127.0.0.1", port)
        if rc == SSH_AGAIN { return nil }
        isOpen = false
        return rc == SSH_OK
    }

    /// Cancels in blocking mode (teardown), if the session is still alive.
    func cancel() -> Bool {
        stopServing()
        guard isOpen else { return true }
        isOpen = false
        guard session.isAlive, let s = session.handle else { return false }
        session.setBlocking(true)
        return ssh_channel_cancel_forward(s, "127.0.0.1", port) == SSH_OK
    }
}

/// An eventfd that wakes an event loop from any thread (`signal`), which the loop consumes.
public final class Wakeup: Sendable {
    public let fd: Int32

    public init() throws(SSHError) {
        fd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        if fd < 0 { throw SSHError.setup(host: "relay", detail: "eventfd failed: \(String(cString: strerror(errno)))") }
    }

    deinit { Glibc.close(fd) }

    public func signal() {
        var one: UInt64 = 1
        _ = Glibc.write(fd, &one, 8)
    }

    /// Consumes pending signals (non-blocking); true if there was one.
    public func consume() -> Bool {
        var v: UInt64 = 0
        return Glibc.read(fd, &v, 8) == 8
    }
}
