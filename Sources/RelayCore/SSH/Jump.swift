import CLibSSH
import Foundation
import Logging
import Synchronization

/// One jump host: an SSH session (reached directly, or through the previous jump's tunnel)
/// that lives on its own thread and serves `direct-tcpip` tunnels. Each tunnel is a socket
/// pair: the jump's thread splices one end into the channel (the same bounded `FdSplice` as
/// the relay's own borg uses), and the next hop's session takes the other end as its
/// connection (`SSH_OPTIONS_FD`). libssh's rule holds: after `connect`, only this thread
/// touches the session and its channels; other threads talk to it through a request queue
/// and an eventfd.
///
/// A jump whose last tunnel has closed ends its session and its thread. Shared jumps (the
/// default, `[relay] share_jumps`) serve every run of the agent that goes through them.
final class JumpHost: @unchecked Sendable {
    let name: String
    /// The chain of jump names that ends here ("j1>j2"): the pool's key.
    let key: String
    private let session: SSHSession
    private let options: SessionOptions
    private let wakeup: Wakeup

    private final class Request: @unchecked Sendable {
        let host: String
        let port: Int
        let done = DispatchSemaphore(value: 0)
        var result: Result<Int32, SSHError>?  // written by the jump thread before `done`
        init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    private struct Shared {
        var requests: [Request] = []
        /// False once the thread is ending: new users must make a new jump.
        var accepting = true
        /// Set by `close()`: the thread ends at its next wake-up.
        var closing = false
    }
    /// Signalled when the jump's thread has ended (its session closed).
    private let ended = DispatchSemaphore(value: 0)
    private let shared = Mutex(Shared())

    /// Thread-only state.
    private struct Tunnel {
        let channel: SSHChannel
        let splice: FdSplice
        let events: ChannelEvents
        let target: String
    }
    private var tunnels: [Tunnel] = []
    private var loop: SSHEventLoop?
    private let logger = Logger(label: "relay.jump")
    /// Seconds a jump without tunnels stays up (long enough for its creator's first request).
    static let idleGrace: TimeInterval = 2
    /// Why the jump ended, when it failed: the next hop's errors name it.
    let failure = Mutex<SSHError?>(nil)

    /// Connects (host key, authentication) on the calling thread, then hands the session
    /// to the jump's own thread. `fd`: the connection through the previous jump, if any.
    init(name: String, key: String, endpoint: HostEndpoint, options: SessionOptions, fd: Int32?) throws(SSHError) {
        self.name = name
        self.key = key
        self.options = options
        var direct = endpoint
        direct.via = []
        session = try SSHSession(label: "jump \(name)", endpoint: direct, options: options, fd: fd)
        try session.open()
        do {
            wakeup = try Wakeup()
        } catch {
            session.close()
            throw error
        }
        logger.info("\(session.label): connected (host key pinned and matching)")
        let t = Thread { [self] in self.run() }
        t.name = "jump \(name)"
        t.start()
    }

    /// Asks the jump's thread to end now (tunnels aborted, session closed).
    func close() {
        shared.withLock { $0.closing = true }
        wakeup.signal()
    }

    /// Waits up to `timeout` seconds for the jump's thread to end.
    func waitEnded(timeout: TimeInterval) -> Bool {
        ended.wait(timeout: .now() + timeout) == .success
    }

    var label: String { session.label }

    /// Opens a tunnel through this jump to `host:port`; returns the local end (a socket).
    /// Blocks until the jump's thread answers. Nil when the jump is ending (make a new one).
    func openTunnel(host: String, port: Int) throws(SSHError) -> Int32? {
        let r = Request(host: host, port: port)
        let queued = shared.withLock { s -> Bool in
            guard s.accepting else { return false }
            s.requests.append(r)
            return true
        }
        guard queued else { return nil }
        wakeup.signal()
        r.done.wait()
        switch r.result! {
        case .success(let fd): return fd
        case .failure(let e): throw e
        }
    }

    // MARK: - The jump's thread

    private func run() {
        defer { ended.signal() }
        let loop: SSHEventLoop
        do {
            loop = try SSHEventLoop()
            try loop.add(session)
        } catch {
            finish(error: error)
            return
        }
        self.loop = loop
        // Every wake-up runs one turn of the loop below: the callbacks have nothing to do.
        loop.watch(wakeup.fd, events: Int16(POLLIN)) { _, _ in }
        var keepalive = KeepaliveWatch(interval: options.keepaliveInterval, count: options.keepaliveCount)
        var nextKeepalive = Date()
        var lastUsed = Date()
        var failure: SSHError?
        while true {
            if shared.withLock({ $0.closing }) { break }
            serveRequests()
            for t in tunnels {
                t.splice.pump()
                loop.watch(t.splice.fd, events: t.splice.closed ? 0 : t.splice.wantedEvents) { _, _ in }
            }
            // Finished tunnels go (their channel is closed; the next hop closed its end).
            tunnels.removeAll { t in
                guard t.splice.isFinished || (t.channel.remoteClosed && t.splice.closed) else { return false }
                loop.unwatch(t.splice.fd)
                t.channel.close()
                t.channel.free()
                logger.debug("\(session.label): tunnel to \(t.target) closed")
                return true
            }
            if !tunnels.isEmpty { lastUsed = Date() }
            if Date() >= nextKeepalive {
                switch session.check(&keepalive, probing: true) {
                case .alive(let at, _): nextKeepalive = at
                case .dead(let silent):
                    failure = SSHError.connectionLost(host: session.label, detail: "no answer to SSH keepalives for \(Int(silent)) s")
                }
            }
            if failure == nil && !session.isAlive {
                failure = SSHError.connectionLost(host: session.label, detail: session.lastError)
            }
            if failure != nil { break }
            // Unused for a moment: end, unless a request is waiting.
            if tunnels.isEmpty && Date().timeIntervalSince(lastUsed) >= Self.idleGrace {
                let idle = shared.withLock { s -> Bool in
                    if s.requests.isEmpty { s.accepting = false; return true }
                    return false
                }
                if idle { break }
            }
            var wake = nextKeepalive
            if tunnels.isEmpty { wake = min(wake, lastUsed.addingTimeInterval(Self.idleGrace)) }
            loop.poll(until: wake)
        }
        finish(error: failure)
    }

    /// Opens the queued tunnels (blocking for at most channel_timeout each).
    private func serveRequests() {
        // Consume the wake-up first: a request queued after this read writes it again.
        _ = wakeup.consume()
        let pending = shared.withLock { s -> [Request] in
            defer { s.requests.removeAll() }
            return s.requests
        }
        for r in pending {
            r.result = Result { () throws(SSHError) -> Int32 in try openForward(r.host, r.port) }
            r.done.signal()
        }
    }

    private func openForward(_ host: String, _ port: Int) throws(SSHError) -> Int32 {
        let target = "\(host):\(port)"
        let ch = try session.newChannel(label: "tunnel to \(target)")
        session.setBlocking(true)
        defer { session.setBlocking(false) }
        try session.withTimeout(options.channelTimeout, key: "channel_timeout", what: "opening a tunnel to \(target)") { () throws(SSHError) in
            if ssh_channel_open_forward(ch.handle, host, Int32(port), "127.0.0.1", 0) != SSH_OK {
                let detail = session.lastError
                ch.free()
                throw SSHError.tunnelRefused(host: session.label, target: target, detail: detail)
            }
        }
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            let e = String(cString: strerror(errno))
            ch.close(); ch.free()
            throw SSHError.setup(host: session.label, detail: "socketpair failed: \(e)")
        }
        let splice = FdSplice(fd: fds[0], channel: ch)
        let events = ChannelEvents.install(on: ch) { data, isStderr in
            isStderr ? data.count : splice.down.accept(data)
        }
        tunnels.append(Tunnel(channel: ch, splice: splice, events: events, target: target))
        logger.debug("\(session.label): tunnel to \(target) opened (\(tunnels.count) open)")
        return fds[1]
    }

    /// Ends every tunnel (the next hops see their connection close), the session and
    /// the thread; answers requests that came too late.
    private func finish(error: SSHError?) {
        if let e = error { failure.withLock { $0 = e } }
        let late = shared.withLock { s -> [Request] in
            s.accepting = false
            defer { s.requests.removeAll() }
            return s.requests
        }
        for r in late {
            r.result = .failure(error ?? SSHError.connectionLost(host: session.label, detail: "the jump was closing"))
            r.done.signal()
        }
        loop?.close()
        loop = nil
        for t in tunnels { t.splice.abort() }
        tunnels.removeAll()
        session.close()
        if let e = error {
            logger.warning("\(session.label): closed: \(e)")
        } else {
            logger.info("\(session.label): closed (unused)")
        }
        JumpPool.ended(self)
    }
}

/// The jumps of this agent, shared between runs (unless `[relay] share_jumps = false`).
public enum JumpPool {
    private static let live = Mutex<[String: JumpHost]>([:])

    /// The hops to `endpoint`, in order: `via` with its first jump's own `via` in front.
    static func hops(to endpoint: HostEndpoint, jumps: [String: HostEndpoint]) -> [String] {
        guard let first = endpoint.via.first, let j = jumps[first] else { return endpoint.via }
        return hops(to: j, jumps: jumps) + endpoint.via
    }

    /// A socket connected (through the jumps) to `endpoint`'s host and port.
    static func connection(to endpoint: HostEndpoint, options: SessionOptions) throws(SSHError) -> (fd: Int32, jump: JumpHost) {
        let chain = hops(to: endpoint, jumps: options.jumps)
        for _ in 0..<3 {
            let last = try jump(chain, options: options)
            if let fd = try last.openTunnel(host: endpoint.host, port: endpoint.port) { return (fd, last) }
        }
        throw SSHError.setup(host: "jump \(chain.last ?? "?")", detail: "the jump kept closing while a tunnel was asked for")
    }

    /// The live jump at the end of `chain`, connected (with the ones before it) if needed.
    static func jump(_ chain: [String], options: SessionOptions) throws(SSHError) -> JumpHost {
        let key = chain.joined(separator: ">")
        guard options.shareJumps else { return try connect(chain, key: key, options: options) }
        // One connection attempt per jump at a time: concurrent runs wait and share it.
        let lock = creating.withLock { locks -> NSLock in
            if let l = locks[key] { return l }
            let l = NSLock()
            locks[key] = l
            return l
        }
        lock.lock()
        defer { lock.unlock() }
        if let j = live.withLock({ $0[key] }) { return j }
        let j = try connect(chain, key: key, options: options)
        live.withLock { $0[key] = j }
        return j
    }

    private static let creating = Mutex<[String: NSLock]>([:])

    private static func connect(_ chain: [String], key: String, options: SessionOptions) throws(SSHError) -> JumpHost {
        guard let name = chain.last, let endpoint = options.jumps[name] else {
            throw SSHError.setup(host: "jump \(chain.last ?? "?")", detail: "no [jumps.\(chain.last ?? "?")] in the config")
        }
        var fd: Int32?
        if chain.count > 1 {
            let before = Array(chain.dropLast())
            for _ in 0..<3 where fd == nil {
                fd = try jump(before, options: options).openTunnel(host: endpoint.host, port: endpoint.port)
            }
            guard fd != nil else {
                throw SSHError.setup(host: "jump \(name)", detail: "the jump before it kept closing")
            }
        }
        let j = try JumpHost(name: name, key: key, endpoint: endpoint, options: options, fd: fd)
        running.withLock { $0.append(j) }
        return j
    }

    /// Every jump whose thread may still run, in the order they were connected.
    private static let running = Mutex<[JumpHost]>([])

    static func ended(_ j: JumpHost) {
        live.withLock { if $0[j.key] === j { $0[j.key] = nil } }
        running.withLock { $0.removeAll { $0 === j } }
    }

    /// Ends every jump (the last connected first, so none loses the one it runs through) and
    /// waits for their threads. A process calls it before it exits: a jump thread still inside
    /// libssh while the process's exit handlers tear down libcrypto would crash it.
    public static func closeAll(timeout: TimeInterval = 5) {
        let jumps = running.withLock { all -> [JumpHost] in
            defer { all.removeAll() }
            return all
        }
        for j in jumps.reversed() {
            j.close()
            _ = j.waitEnded(timeout: timeout)
        }
    }

    /// Live shared jumps (for tests and status).
    static var liveCount: Int { live.withLock { $0.count } }
}

extension RelayConfig {
    /// The jumps on the way to `endpoint`, in the order the relay crosses them.
    public func hops(to endpoint: HostEndpoint) -> [String] {
        JumpPool.hops(to: endpoint, jumps: jumps.mapValues(\.endpoint))
    }
}
