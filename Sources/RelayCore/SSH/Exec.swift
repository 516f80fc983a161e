import CLibSSH
import Foundation

/// What an exec channel produced: its exit status (nil when it was killed or is still
/// running) and its output, each stream capped at 1 MiB.
public struct ExecOutput: Sendable, Equatable {
    public var status: Int32?
    public var stdout: String
    public var stderr: String
    /// The remote side closed the channel (the command ended).
    public var finished: Bool
}

extension SSHChannel {
    /// Opens this channel as a session and runs `command` (blocking mode), within `timeout`
    /// seconds ([relay] channel_timeout) when given.
    func exec(_ command: String, what: String, timeout: Int? = nil) throws(SSHError) {
        guard let h = handle else { throw SSHError.channel(host: host, what: what, detail: "channel freed") }
        let open = { [session] () throws(SSHError) in
            guard ssh_channel_open_session(h) == SSH_OK else {
                throw SSHError.channel(host: session.label, what: "\(what): opening a session channel", detail: session.lastError)
            }
            guard ssh_channel_request_exec(h, command) == SSH_OK else {
                throw SSHError.channel(host: session.label, what: what, detail: session.lastError)
            }
        }
        if let timeout {
            try session.withTimeout(timeout, key: "channel_timeout", what: what, open)
        } else {
            try open()
        }
    }

    /// Writes all of `bytes` (blocking mode).
    func writeAll(_ bytes: UnsafeRawBufferPointer, what: String) throws(SSHError) {
        guard let h = handle else { throw SSHError.channel(host: host, what: what, detail: "channel freed") }
        var off = 0
        while off < bytes.count {
            let rc = ssh_channel_write(h, bytes.baseAddress! + off, UInt32(bytes.count - off))
            if rc <= 0 { throw SSHError.channel(host: host, what: what, detail: session.lastError) }
            off += Int(rc)
        }
    }

    /// Reads stdout and stderr (blocking mode) into `sink` until the command's output ends
    /// (true), or `deadline` passes or `giveUp` says so (false).
    func read(until deadline: Date, sink: (UnsafeRawBufferPointer, _ isStderr: Bool) -> Void,
              giveUp: () -> Bool = { false }) -> Bool {
        guard let h = handle else { return true }
        var buf = [UInt8](repeating: 0, count: 16384)
        while Date() < deadline {
            var got = false
            for stream: Int32 in [0, 1] {
                let n = buf.withUnsafeMutableBytes { ssh_channel_read_timeout(h, $0.baseAddress, UInt32($0.count), stream, 200) }
                if n > 0 {
                    buf.withUnsafeBytes { sink(UnsafeRawBufferPointer(rebasing: $0[0..<Int(n)]), stream == 1) }
                    got = true
                } else if n == SSH_ERROR {
                    return true
                }
            }
            if !got && ssh_channel_is_eof(h) != 0 { return true }
            if giveUp() { return false }
        }
        return false
    }

    /// One read for a request/answer protocol: waits up to `waitMs` for stdout, then takes
    /// whatever stderr holds without waiting. `open` is false once stdout is at its end.
    func readSome(waitMs: Int32 = 200) throws(SSHError) -> (stdout: ArraySlice<UInt8>, stderr: ArraySlice<UInt8>, open: Bool) {
        guard let h = handle else { return ([], [], false) }
        var buf = [UInt8](repeating: 0, count: 16384)
        let n = buf.withUnsafeMutableBytes { ssh_channel_read_timeout(h, $0.baseAddress, UInt32($0.count), 0, waitMs) }
        if n == SSH_ERROR {
            throw SSHError.channel(host: host, what: "reading from \(label)", detail: session.lastError)
        }
        let out = n > 0 ? buf[0..<Int(n)] : []
        var err: [UInt8] = []
        var ebuf = [UInt8](repeating: 0, count: 16384)
        while true {
            let e = ebuf.withUnsafeMutableBytes { ssh_channel_read_nonblocking(h, $0.baseAddress, UInt32($0.count), 1) }
            guard e > 0 else { break }
            err += ebuf[0..<Int(e)]
        }
        return (out, err[...], n > 0 || ssh_channel_is_eof(h) == 0)
    }

    /// Sends EOF and waits up to `seconds` for the command to end (reading and dropping its
    /// output), so that what it holds (a repository lock) is released when this returns.
    func finish(within seconds: TimeInterval) {
        sendEOF()
        _ = read(until: Date().addingTimeInterval(seconds), sink: { _, _ in })
    }

    /// The exit status the command reported (nil: none yet, or it was killed).
    var reportedExitStatus: Int32? {
        guard let h = handle else { return nil }
        let st = ssh_channel_get_exit_status(h)
        return st >= 0 ? st : nil
    }

    /// Reads stdout and stderr (blocking mode) until the command ends, `done` says enough
    /// was read (it sees stdout so far), or `timeout` passes.
    func collect(timeout: TimeInterval, until done: (([UInt8]) -> Bool)? = nil) -> ExecOutput {
        var out = [[UInt8]](repeating: [], count: 2)
        let finished = read(until: Date().addingTimeInterval(timeout), sink: { data, isStderr in
            if out[isStderr ? 1 : 0].count < 1 << 20 { out[isStderr ? 1 : 0] += data }
        }, giveUp: { done?(out[0]) ?? false })
        return ExecOutput(status: reportedExitStatus, stdout: String(decoding: out[0], as: UTF8.self),
                          stderr: String(decoding: out[1], as: UTF8.self), finished: finished)
    }
}

extension SSHSession {
    /// Runs `command` in a new exec channel (blocking mode; stdin gets EOF at once) and
    /// returns what it left behind. For short probes.
    func capture(_ command: String, timeout: TimeInterval = 15) throws(SSHError) -> ExecOutput {
        let ch = try startExec(command, label: "probe")
        defer { ch.close(); ch.free() }
        ch.sendEOF()
        return ch.collect(timeout: timeout)
    }

    /// Starts `command` in a new exec channel (blocking mode) and leaves it running; the
    /// caller reads it with `collect` and closes it.
    func startExec(_ command: String, label: String) throws(SSHError) -> SSHChannel {
        _ = try require()
        setBlocking(true)
        let ch = try newChannel(label: label)
        try ch.exec(command, what: "running \(label)")
        return ch
    }

    /// Asks the host for a remote forward on its loopback (port chosen by its sshd), as a
    /// tcp-transport run does, and cancels it at once; returns the port it bound.
    public func probeRemoteForward() throws(SSHError) -> Int {
        let forward = try RemoteForward(on: self, timeout: options.channelTimeout)
        _ = forward.cancel()
        return Int(forward.port)
    }
}
