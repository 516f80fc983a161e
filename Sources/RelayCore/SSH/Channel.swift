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
/// The userdata behind one channel's C callbacks; kept alive by the run.
final class ChannelEvents {
    weak var channel: SSHChannel?
    let onData: (UnsafeRawBufferPointer, Bool) -> Int

    init(channel: SSHChannel, onData: @escaping (UnsafeRawBufferPointer, Bool) -> Int) {
        self.channel = channel
        self.onData = onData
    }

    /// Routes a channel's C callbacks to `onData` and the channel's flags; the caller keeps
    /// the returned object alive as long as the channel.
    static func install(on c: SSHChannel, onData: @escaping (UnsafeRawBufferPointer, Bool) -> Int) -> ChannelEvents {
        let ev = ChannelEvents(channel: c, onData: onData)
        c.setCallbacks({ cb in
            cb.channel_data_function = { _, _, data, len, isStderr, user in
                guard let user, let data else { return 0 }
                let ev = Unmanaged<ChannelEvents>.fromOpaque(user).takeUnretainedValue()
                return Int32(ev.onData(UnsafeRawBufferPointer(start: data, count: Int(len)), isStderr != 0))
            }
            cb.channel_eof_function = { _, _, user in
                guard let user else { return }
                Unmanaged<ChannelEvents>.fromOpaque(user).takeUnretainedValue().channel?.remoteEOF = true
            }
            cb.channel_close_function = { _, _, user in
                guard let user else { return }
                let ch = Unmanaged<ChannelEvents>.fromOpaque(user).takeUnretainedValue().channel
                ch?.remoteEOF = true
                ch?.remoteClosed = true
            }
            cb.channel_exit_status_function = { _, _, status, user in
                guard let user else { return }
                Unmanaged<ChannelEvents>.fromOpaque(user).takeUnretainedValue().channel?.exitStatus = status
            }
            cb.channel_exit_signal_function = { _, _, signal, _, _, _, user in
                guard let user else { return }
                Unmanaged<ChannelEvents>.fromOpaque(user).takeUnretainedValue().channel?.exitSignal =
                    signal.map { String(cString: $0) } ?? "?"
            }
        }, userdata: Unmanaged.passUnretained(ev).toOpaque())
        return ev
    }
}
