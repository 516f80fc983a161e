import CLibSSH

/// Owner of one `ssh_channel`. Holds its session strongly, so the session outlives it;
/// when the session is freed first (which frees its channels) the handle is dropped.
final class SSHChannel {
    let session: SSHSession
    let label: String
    private(set) var handle: ssh_channel?
    private var callbacks: UnsafeMutablePointer<ssh_channel_callbacks_struct>?

    /// Remote side sent EOF / CLOSE; set by the event callbacks.
    var remoteEOF = false
    var remoteClosed = false
    /// We sent EOF / CLOSE.
    private(set) var localEOF = false
    private(set) var localClosed = false
    var exitStatus: Int32?
    var exitSignal: String?

    init(session: SSHSession, handle: ssh_channel, label: String) {
        self.session = session
        self.handle = handle
        self.label = label
    }

    deinit { free() }

    var host: String { session.label }

    /// Installs C callbacks whose userdata is `userdata` (kept alive by the caller).
    func setCallbacks(_ configure: (inout ssh_channel_callbacks_struct) -> Void, userdata: UnsafeMutableRawPointer) {
        guard let h = handle else { return }
        let cb = callbacks ?? UnsafeMutablePointer<ssh_channel_callbacks_struct>.allocate(capacity: 1)
        relay_channel_callbacks_init(cb)
        configure(&cb.pointee)
        cb.pointee.userdata = userdata
        callbacks = cb
        ssh_set_channel_callbacks(h, cb)
    }

    /// Data remote wrote that libssh holds but nobody consumed yet (stdout or stderr).
    func buffered(stderr: Bool = false) -> Int {
        guard let h = handle else { return 0 }
        let n = ssh_channel_poll(h, stderr ? 1 : 0)
        return n > 0 ? Int(n) : 0
    }

    /// Writes up to the peer's window; returns bytes accepted (maybe 0), or nil if the
    /// channel can no longer be written.
    func writeSome(_ p: UnsafeRawPointer, _ n: Int) -> Int? {
        guard let h = handle, !localEOF, !localClosed else { return nil }
        let win = Int(ssh_channel_window_size(h))
        if win == 0 { return 0 }
        let len = min(n, win)
        let rc = ssh_channel_write(h, p, UInt32(len))
        if rc < 0 { return nil }
        return Int(rc)
    }

    func sendEOF() {
        guard let h = handle, !localEOF, !localClosed else { return }
        localEOF = true
        _ = ssh_channel_send_eof(h)
    }

    func close() {
        guard let h = handle, !localClosed else { return }
        localEOF = true
        localClosed = true
        _ = ssh_channel_close(h)
    }

    func sendSignal(_ name: String) {
        guard let h = handle, !localClosed, !remoteClosed else { return }
        _ = ssh_channel_request_send_signal(h, name)
    }

    /// True once both sides are closed (or the channel is gone).
    var isFinished: Bool { handle == nil || (localClosed && remoteClosed) }

    /// Frees the channel (closing it first if still open).
    func free() {
        if let h = handle {
            ssh_remove_channel_callbacks(h, callbacks)
            ssh_channel_free(h)
            handle = nil
        }
        if let cb = callbacks {
            cb.deallocate()
            callbacks = nil
        }
    }

    /// Called by the session just before `ssh_free`, which frees this channel.
    func sessionWillFree() {
        handle = nil
        if let cb = callbacks {
            cb.deallocate()
            callbacks = nil
        }
    }
}
