import CLibSSH

/// One direction of a splice: bytes that arrived on `source` waiting for `sink`'s window.
final class SpliceDirection {
    let name: String
    let queue: ByteQueue
    /// libssh still holds bytes of `source` that did not fit in `queue`.
    var backlog = false
    /// EOF has been passed on to the sink.
    var eofForwarded = false
    /// The sink is gone: bytes from the source are counted and dropped.
    var discarding = false
    /// Bytes delivered to the sink.
    var delivered: UInt64 = 0
    /// Bytes dropped because the sink had closed.
    var dropped: UInt64 = 0

    init(name: String, capacity: Int) {
        self.name = name
        self.queue = ByteQueue(capacity: capacity)
    }

    /// Called from the source channel's data callback; returns how many bytes were taken.
    /// Bytes not taken stay in libssh's buffer, which then stops re-opening the source's
    /// window: that is the back-pressure that keeps memory bounded.
    func accept(_ data: UnsafeRawBufferPointer) -> Int {
        if discarding {
            dropped += UInt64(data.count)
            return data.count
        }
        let n = queue.append(data)
        if n < data.count { backlog = true }
        return n
    }

    /// Everything received from the source has been handled.
    var drained: Bool { queue.isEmpty && !backlog }
}

/// Splices a forwarded connection on the client (T side) into a `borg serve` channel on
/// the backup server (B side), both ways, on the event-loop thread that owns both sessions.
///
/// Rules (found with a splice prototype on libssh 0.10.6): take from a source only
/// what fits in the direction's queue; after every poll push queues as far as the sink's
/// window allows and keep whatever a short write left; read libssh's leftover buffer only
/// when all of it fits (a partial read would make libssh re-open the window without
/// counting what it still holds); forward EOF only when the source is at EOF and both
/// libssh's buffer and the queue are empty.
final class Splice {
    static let queueCapacity = 2 * 1024 * 1024

    /// T → B (borg client → borg serve) and B → T.
    let up = SpliceDirection(name: "client to server", capacity: queueCapacity)
    let down = SpliceDirection(name: "server to client", capacity: queueCapacity)
    /// The channel on B running `borg serve`.
    let serverChannel: SSHChannel
    /// The accepted forwarded connection on T; nil until borg connects.
    private(set) var clientChannel: SSHChannel?
    /// borg serve's stderr (its log lines), line by line.
    let serverLog: LineCollector

    init(serverChannel: SSHChannel, serverLog: LineCollector) {
        self.serverChannel = serverChannel
        self.serverLog = serverLog
    }

    func attachClient(_ c: SSHChannel) {
        clientChannel = c
    }

    /// Moves bytes, EOFs and closes as far as possible without blocking.
    func pump() {
        let b = serverChannel
        if let t = clientChannel {
            move(up, from: t, to: b)
            move(down, from: b, to: t)
            // borg serve exited: drain what it said to T, then close both ends.
            if b.remoteClosed && down.drained {
                if !down.eofForwarded { t.sendEOF(); down.eofForwarded = true }
                up.discarding = true
                up.queue.removeAll()
                b.close()
                t.close()
            }
            // borg on T closed the connection: pass EOF to B (done by `move`) and wait for
            // borg serve to exit and close, so it can commit; drop what it still says.
            if t.remoteClosed && up.drained {
                down.discarding = true
                down.queue.removeAll()
                t.close()
            }
        } else if b.remoteClosed {
            // borg serve ended before borg on T connected (e.g. bad repository path).
            b.close()
        }
    }

    private func move(_ d: SpliceDirection, from src: SSHChannel, to dst: SSHChannel) {
        // 1. Flush the queue into the sink's window.
        while !d.queue.isEmpty && !d.discarding {
            let r = d.queue.readable
            guard let w = dst.writeSome(r.baseAddress!, r.count) else {
                // The sink cannot take bytes any more (closed or failed): drop them.
                d.discarding = true
                d.dropped += UInt64(d.queue.count)
                d.queue.removeAll()
                break
            }
            if w == 0 { break }
            d.delivered += UInt64(w)
            d.queue.consume(w)
        }
        // 2. Pull what libssh kept back, but only all of it at once.
        if d.backlog {
            let n = src.buffered()
            if n == 0 {
                d.backlog = false
            } else if d.discarding {
                drop(n, from: src, d)
            } else if n <= d.queue.freeSpace, let h = src.handle {
                let got = d.queue.appendInPlace(n) { p, len in
                    Int(ssh_channel_read_nonblocking(h, p, UInt32(len), 0))
                }
                if got >= n || src.buffered() == 0 { d.backlog = false }
                if got > 0 { move(d, from: src, to: dst) }
            }
        }
        // 3. EOF only once everything before it has gone out.
        if src.remoteEOF && !d.eofForwarded && d.queue.isEmpty {
            if src.buffered() > 0 {
                d.backlog = true
            } else {
                d.backlog = false
                dst.sendEOF()
                d.eofForwarded = true
            }
        }
    }

    private func drop(_ n: Int, from src: SSHChannel, _ d: SpliceDirection) {
        guard let h = src.handle else { d.backlog = false; return }
        var scratch = [UInt8](repeating: 0, count: min(n, 65536))
        var left = n
        while left > 0 {
            let r = scratch.withUnsafeMutableBytes {
                ssh_channel_read_nonblocking(h, $0.baseAddress, UInt32(min(left, $0.count)), 0)
            }
            if r <= 0 { break }
            d.dropped += UInt64(r)
            left -= Int(r)
        }
        d.backlog = false
    }

    /// Both ends closed (or T never connected and B is closed).
    var isFinished: Bool {
        guard let t = clientChannel else { return serverChannel.localClosed }
        return t.localClosed && serverChannel.localClosed
    }

    /// Closes both ends at once (failure, cancel, timeout).
    func abort() {
        clientChannel?.close()
        serverChannel.close()
        up.queue.removeAll()
        down.queue.removeAll()
    }
}

/// Splits a byte stream into lines and hands complete ones to `emit`; keeps the last
/// lines for error messages.
final class LineCollector {
    private var partial: [UInt8] = []
    private(set) var tail: [String] = []
    private let keep: Int
    /// Handles a complete line; returns the text to keep in `tail` (nil: keep nothing).
    private let emit: (String) -> String?
    private static let maxLine = 64 * 1024

    init(keep: Int = 50, emit: @escaping (String) -> String?) {
        self.keep = keep
        self.emit = emit
    }

    func append(_ data: UnsafeRawBufferPointer) {
        for byte in data {
            if byte == UInt8(ascii: "\n") {
                flushLine()
            } else if partial.count < Self.maxLine {
                partial.append(byte)
            }
        }
    }

    func finish() {
        if !partial.isEmpty { flushLine() }
    }

    private func flushLine() {
        var line = String(decoding: partial, as: UTF8.self)
        partial.removeAll(keepingCapacity: true)
        if line.hasSuffix("\r") { line.removeLast() }
        if let kept = emit(line) {
            tail.append(kept)
            if tail.count > keep { tail.removeFirst(tail.count - keep) }
        }
    }
}
