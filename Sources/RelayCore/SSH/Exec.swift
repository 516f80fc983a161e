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
    /// Opens this channel as a session and runs `command` (blocking mode).
    func exec(_ command: String, what: String) throws(SSHError) {
        guard let h = handle, ssh_channel_open_session(h) == SSH_OK else {
            throw SSHError.channel(host: host, what: "opening a session channel for \(what)", detail: session.lastError)
        }
        guard ssh_channel_request_exec(h, command) == SSH_OK else {
            throw SSHError.channel(host: host, what: what, detail: session.lastError)
        }
    }

    /// Reads stdout and stderr (blocking mode) until the command ends, `done` says enough
    /// was read (it sees stdout so far), or `timeout` passes.
    func collect(timeout: TimeInterval, until done: (([UInt8]) -> Bool)? = nil) -> ExecOutput {
        var out = [[UInt8]](repeating: [], count: 2)
        var finished = false
        if let h = handle {
            var buf = [UInt8](repeating: 0, count: 16384)
            let deadline = Date().addingTimeInterval(timeout)
            reading: while Date() < deadline {
                var got = false
                for stream: Int32 in [0, 1] {
                    let n = buf.withUnsafeMutableBytes { ssh_channel_read_timeout(h, $0.baseAddress, UInt32($0.count), stream, 200) }
                    if n > 0 {
                        if out[Int(stream)].count < 1 << 20 { out[Int(stream)] += buf[0..<Int(n)] }
                        got = true
                    } else if n == SSH_ERROR {
                        break reading
                    }
                }
                if let done, done(out[0]) { break }
                if !got && ssh_channel_is_eof(h) != 0 { finished = true; break }
            }
        }
        let st = handle.map { ssh_channel_get_exit_status($0) } ?? -1
        return ExecOutput(status: st >= 0 ? st : nil, stdout: String(decoding: out[0], as: UTF8.self),
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
        let s = try require()
        setBlocking(true)
        var bound: Int32 = 0
        try withTimeout(options.channelTimeout, key: "channel_timeout", what: "asking for a remote forward") { () throws(SSHError) in
            if ssh_channel_listen_forward(s, "127.0.0.1", 0, &bound) != SSH_OK {
                throw SSHError.forwardRefused(host: label, detail: lastError)
            }
        }
        _ = ssh_channel_cancel_forward(s, "127.0.0.1", bound)
        return Int(bound)
    }
}
