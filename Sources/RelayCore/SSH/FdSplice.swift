import CLibSSH
import Foundation

/// Splices a local stream socket (borg on R, connected through `relay-agent connect`) into
/// a channel on B, on the event-loop thread that owns B's session. Same rules as `Splice`:
/// bounded queues both ways, reads only what fits, EOF passed on only after every byte
/// before it, back-pressure through the channel window and through not polling the
/// socket while its queue is full.
final class FdSplice {
    let fd: Int32
    let channel: SSHChannel
    /// socket → channel (borg → borg serve) and channel → socket.
    let up = SpliceDirection(name: "borg to server", capacity: Splice.queueCapacity)
    let down = SpliceDirection(name: "server to borg", capacity: Splice.queueCapacity)
    /// The socket said EOF (or failed) on reading.
    private(set) var readEOF = false
    /// We shut the socket's writing side (after the channel's EOF).
    private(set) var writeShut = false
    private(set) var closed = false
    /// Set when a read or write failed for good.
    private(set) var socketError: String?

    init(fd: Int32, channel: SSHChannel) {
        self.fd = fd
        self.channel = channel
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    deinit { closeSocket() }

    /// The poll events the socket needs now.
    var wantedEvents: Int16 {
        guard !closed else { return 0 }
        var e: Int16 = 0
        if !readEOF && up.queue.freeSpace > 0 { e |= Int16(POLLIN) }
        if !down.queue.isEmpty && !writeShut { e |= Int16(POLLOUT) }
        return e
    }

    /// Reads what the socket has, as far as the queue has room.
    func readAvailable() {
        while !readEOF && !closed && up.queue.freeSpace > 0 {
            let want = min(up.queue.freeSpace, 256 * 1024)
            let got = up.queue.appendInPlace(want) { p, len in Glibc.read(fd, p, len) }
            if got > 0 { continue }
            if got == 0 { readEOF = true; break }
            if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { break }
            socketError = "reading from borg's connection: \(String(cString: strerror(errno)))"
            readEOF = true
        }
    }

    /// Moves bytes both ways as far as possible without blocking.
    func pump() {
        guard !closed else { return }
        readAvailable()
        // Up: queue → channel window; then EOF once all is out.
        while !up.queue.isEmpty && !up.discarding {
            let r = up.queue.readable
            guard let w = channel.writeSome(r.baseAddress!, r.count) else {
                up.discarding = true
                up.dropped += UInt64(up.queue.count)
                up.queue.removeAll()
                break
            }
            if w == 0 { break }
            up.delivered += UInt64(w)
            up.queue.consume(w)
        }
        if readEOF && up.queue.isEmpty && !up.eofForwarded {
            channel.sendEOF()
            up.eofForwarded = true
        }
        // Down: libssh's leftover (only all at once), then queue → socket.
        if down.backlog {
            let n = channel.buffered()
            if n == 0 {
                down.backlog = false
            } else if n <= down.queue.freeSpace, let h = channel.handle {
                let got = down.queue.appendInPlace(n) { p, len in
                    Int(ssh_channel_read_nonblocking(h, p, UInt32(len), 0))
                }
                if got >= n || channel.buffered() == 0 { down.backlog = false }
            }
        }
        while !down.queue.isEmpty && !writeShut {
            let r = down.queue.readable
            // send with MSG_NOSIGNAL: a peer that closed its end is an error here, never a
            // SIGPIPE that ends the whole process (relayctl does not ignore SIGPIPE).
            let w = Glibc.send(fd, r.baseAddress, r.count, Int32(MSG_NOSIGNAL))
            if w > 0 {
                down.delivered += UInt64(w)
                down.queue.consume(w)
                continue
            }
            if w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { break }
            socketError = "writing to borg's connection: \(w < 0 ? String(cString: strerror(errno)) : "closed")"
            down.discarding = true
            down.dropped += UInt64(down.queue.count)
            down.queue.removeAll()
            break
        }
        // borg serve said EOF (or closed) and everything it said went out: pass it on.
        if channel.remoteEOF && down.drained && !writeShut {
            if channel.buffered() > 0 {
                down.backlog = true
            } else {
                shutdown(fd, Int32(SHUT_WR))
                writeShut = true
            }
        }
        // Done both ways (or borg serve gone): close.
        if (channel.remoteClosed && down.drained && writeShut) || (readEOF && up.eofForwarded && writeShut) {
            channel.close()
            closeSocket()
        }
    }

    var isFinished: Bool { closed && channel.localClosed }

    func abort() {
        channel.close()
        closeSocket()
        up.queue.removeAll()
        down.queue.removeAll()
    }

    private func closeSocket() {
        if !closed {
            closed = true
            Glibc.close(fd)
        }
    }
}
