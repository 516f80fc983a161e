import CLibSSH
import Foundation
import Logging
import Synchronization

/// Asks a run to stop from any thread: a write to an eventfd that the run's event loop polls.
public final class RunCanceller: Sendable {
    let fd: Int32
    private let requested = Atomic<Bool>(false)

    /// Whether cancel() was called (not consumed by the event loop, unlike the eventfd).
    public var isRequested: Bool { requested.load(ordering: .acquiring) }

    public init() throws(RunError) {
        fd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        if fd < 0 { throw RunError.setup("eventfd failed: \(String(cString: strerror(errno)))") }
    }

    deinit { Glibc.close(fd) }

    public func cancel() {
        requested.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = Glibc.write(fd, &one, 8)
    }

    /// Consumes a pending cancel request, if any (non-blocking).
    func takeRequest() -> Bool {
        var v: UInt64 = 0
        return Glibc.read(fd, &v, 8) == 8
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
    case borg(kind: String, arguments: [String], workDir: String?)

    var kind: String {
        switch self {
        case .backup: return "backup"
        case .raw: return "raw"
        case .borg(let kind, _, _): return kind
        }
    }
}

/// One relayed backup: `borg create` on the client T, its repository connection spliced
/// through the relay into `borg serve` on the backup server B.
///
/// `execute()` runs the whole run on the calling thread: after connecting, one
/// `ssh_event` on that thread polls both sessions, and every libssh call for them and
/// their channels happens there.
public final class BackupRun: @unchecked Sendable {
    // @unchecked: all mutable state is touched only by the thread inside `execute()`;
    // other threads only use `canceller`, which is Sendable.
    public let runID: String
    public let client: ClientConfig
    public let server: ServerConfig
    let options: SessionOptions
    let logger: Logger
    public let canceller: RunCanceller
    /// Live figures of the run, readable from any thread.
    public let progress = ProgressBoard()
    private var passphrase: SecretBytes?
    private let logFile: String?
    public let workload: Workload
    /// Where borg's stdout goes for `.borg` workloads (relayctl prints it).
    public var outputPath: String?

    /// Seconds the splice may go without moving a byte, once borg on the client has
    /// exited, before it is closed.
    var drainGrace: TimeInterval = 120
    /// Seconds borg on the client has to exit once the run is being torn down.
    var exitGrace: TimeInterval = 15
    static let maxStdout = 16 * 1024 * 1024

    /// `passphrase` is wiped as soon as it has been written to borg's stdin.
    public init(runID: String, client: ClientConfig, server: ServerConfig, options: SessionOptions,
                passphrase: SecretBytes?, logger: Logger, logFile: String?,
                workload: Workload = .backup) throws(RunError) {
        self.runID = runID
        self.workload = workload
        self.client = client
        self.server = server
        self.options = options
        self.passphrase = passphrase
        self.logger = logger
        self.logFile = logFile
        self.canceller = try RunCanceller()
    }

    deinit { passphrase?.wipe() }

    // MARK: - State of the event loop (loop thread only)

    private var t: SSHSession?
    private var b: SSHSession?
    private var create: SSHChannel?
    private var splice: Splice?
    private var events: [ChannelEvents] = []
    private var forwardPort: Int32 = 0
    private var forwardActive = false
    private var cancelForwardPending = false
    private var acceptedConnection = false
    private var cancelRequested = false
    private var stdout = Data()
    private var stdoutTruncated = false
    /// The output file of `.borg` workloads while the run writes it.
    private var outputFD: Int32 = -1
    private var clientLog: LineCollector!
    private var serverLog: LineCollector!
    private var failure: Error?
    private var warnings: [String] = []
    /// The splice was closed before it had finished (grace period, cancel, failure).
    private var spliceCut = false
    /// borg (create or the workload's command) was started on the client in this attempt.
    private var borgStarted = false
    /// When the whole run must end ([relay] run_timeout).
    private var runDeadline: Date?
    /// borg on the client asked whether to use a repository it knew under another location.
    private var relocation: RelocationNotice?

    // MARK: - The run

    /// Runs the backup to its end and reports what happened. Never throws: every failure
    /// is in the report, and everything opened on the way is closed again.
    public func execute() -> RunReport {
        var report = RunReport(runID: runID, client: client.name, server: server.name, started: Date())
        report.kind = workload.kind
        report.logFile = logFile
        let plan = BackupPlan(client: client)
        clientLog = LineCollector { [unowned self, logger, progress] line in
            if self.relocation == nil { self.relocation = RelocationNotice.find(in: line) }
            return BorgLogLine.handle(line, logger: logger, origin: "T borg", progress: progress)
        }
        serverLog = LineCollector { [logger] line in
            logger.info("\(line)", metadata: ["relay.origin": "B borg serve"])
            return line
        }
        logger.info("run \(runID): backup of client \(client.name) (\(client.endpoint.display)) to server \(server.name) (\(server.endpoint.display)), repository \(client.repository)")

        runDeadline = options.runTimeout > 0 ? Date().addingTimeInterval(TimeInterval(options.runTimeout)) : nil
        var number = 1
        var createRetried = false
        while true {
            let attemptStarted = Date()
            do {
                try connect()
                report.clientCipher = t?.cipher
                report.serverCipher = b?.cipher
                logger.info("connected; ciphers: client \(report.clientCipher ?? "?"), server \(report.serverCipher ?? "?")")
                if canceller.takeRequest() {
                    cancelRequested = true  // cancelled while connecting: start nothing on T or B
                } else {
                    progress.update { $0.phase = "running" }
                    try start(plan)
                    try loop()
                }
            } catch {
                recordFailure(error)
            }
            // Retry? Connection-level failures before borg started, up to connect_attempts;
            // a create cut off by a dropped link, once, when the client has retry = true.
            guard let f = failure as? SSHError, f.isTransient, !cancelRequested, !canceller.isRequested else { break }
            let again: Bool
            if !borgStarted {
                again = number < options.connectAttempts
            } else {
                again = workload == .backup && client.retry && !createRetried
                if again { createRetried = true }
            }
            guard again else { break }
            let delay = Self.backoff(base: options.retryDelay, attempt: number)
            if let d = runDeadline, Date().addingTimeInterval(delay) >= d { break }
            report.attempts.append(RunAttempt(number: number, started: attemptStarted, ended: Date(), error: "\(f)", retryAfter: delay))
            let resume = borgStarted ? " (borg resumes from its last checkpoint)" : ""
            logger.warning("attempt \(number) failed: \(f); retrying in \(String(format: "%.1f", delay)) s\(resume)")
            teardown()
            resetForRetry()
            progress.update { $0.phase = "retrying" }
            if waitOrCancel(delay) {
                cancelRequested = true
                break
            }
            number += 1
            logger.info("attempt \(number) of run \(runID)")
        }
        passphrase?.wipe()
        passphrase = nil
        progress.update { $0.phase = "finishing" }
        if workload == .backup, let post = client.post, let t, t.isAlive {
            let ok = failure == nil && !cancelRequested && create?.exitSignal == nil && [0, 1].contains(create?.exitStatus ?? -1)
                && ArchiveSummary.parse(borgJSON: stdout)?.id != nil
            do {
                try runHook("post", argv: post, timeout: client.postTimeout, result: ok ? "success" : "failure")
            } catch {
                logger.warning("\(error)")
                warnings.append("\(error)")
            }
        }
        clientLog.finish()
        serverLog.finish()
        teardown()

        report.finish()
        report.bytesToServer = splice?.up.delivered ?? 0
        report.bytesFromServer = splice?.down.delivered ?? 0
        report.borgExitStatus = create?.exitStatus
        if workload == .backup {
            report.archive = ArchiveSummary.parse(borgJSON: stdout)
        }
        if outputFD >= 0 {
            Glibc.close(outputFD)
            outputFD = -1
            if stdoutTruncated { warnings.append("writing borg's output to \(outputPath ?? "the output file") failed (disk full?)") }
        }
        report.warnings = warnings
        finishReport(&report)
        if report.state == .failed, let r = relocation {
            // borg's question, not the traceback that followed it, is the summary.
            report.error = r.message(client: client.name)
        }
        logger.info("run \(runID) \(report.state.rawValue)\(report.error.map { ": \($0)" } ?? "")")
        return report
    }

    /// Seconds before retry `attempt + 1`: base × 2^(attempt−1), at most 10 minutes, ±25 % jitter.
    static func backoff(base: Int, attempt: Int) -> TimeInterval {
        let raw = min(600, Double(base) * pow(2, Double(max(0, attempt - 1))))
        return raw * Double.random(in: 0.75...1.25)
    }

    /// Sleeps up to `seconds`; true when a cancel request came first.
    private func waitOrCancel(_ seconds: TimeInterval) -> Bool {
        var p = pollfd(fd: canceller.fd, events: Int16(POLLIN), revents: 0)
        let end = Date().addingTimeInterval(seconds)
        while true {
            let left = end.timeIntervalSinceNow
            if left <= 0 { return false }
            let rc = poll(&p, 1, Int32(min(left * 1000, 3_600_000)) + 1)
            if rc > 0 { return canceller.takeRequest() || canceller.isRequested }
            if rc < 0 && errno != EINTR { return canceller.isRequested }
        }
    }

    /// Forgets the state of a failed attempt (its sessions are closed already).
    private func resetForRetry() {
        t = nil
        b = nil
        create = nil
        splice = nil
        events.removeAll()
        forwardPort = 0
        forwardActive = false
        cancelForwardPending = false
        acceptedConnection = false
        borgStarted = false
        stdout = Data()
        stdoutTruncated = false
        failure = nil
        spliceCut = false
    }

    private func recordFailure(_ error: Error) {
        if failure == nil { failure = error }
        logger.error("\(error)")
    }

    private func finishReport(_ report: inout RunReport) {
        let status = create?.exitStatus
        let borgDetail = Self.errorLines(clientLog.tail)
        if cancelRequested {
            report.state = .cancelled
            report.error = RunError.cancelled.description
            return
        }
        if let f = failure {
            report.state = .failed
            var text = "\(f)"
            if !borgDetail.isEmpty && !(f is RunError) { text += " (borg on the client said: \(borgDetail))" }
            report.error = text
            return
        }
        if let sig = create?.exitSignal {
            report.state = .failed
            report.error = RunError.borgKilled(signal: sig, detail: borgDetail, command: borgCommandName).description
            return
        }
        if case .raw = workload, spliceCut || (splice?.up.dropped ?? 0) > 0 {
            report.state = .failed
            report.error = RunError.protocolFailure(
                "the splice did not deliver everything to the server (\(splice?.up.dropped ?? 0) bytes dropped)").description
            return
        }
        switch status {
        case 0?, 1?:
            break
        case let s?:
            report.state = .failed
            var detail = borgDetail
            let serverDetail = Self.errorLines(serverLog.tail)
            if !serverDetail.isEmpty { detail += (detail.isEmpty ? "" : "; ") + "borg serve on the server said: \(serverDetail)" }
            report.error = RunError.borgFailed(status: s, detail: detail, command: borgCommandName).description
            return
        case nil:
            report.state = .failed
            report.error = RunError.protocolFailure("borg \(borgCommandName) on the client ended without an exit status").description
            return
        }
        // borg exited 0 or 1: success only where it is proven.
        switch workload {
        case .backup:
            let proof = BackupProof(exitStatus: status, archive: report.archive, stdoutBytes: stdout.count,
                                    bytesToServer: report.bytesToServer, recording: .pending, borgSaid: borgDetail)
            report.backupProof = proof
            report.apply(proof.verdict)
        case .borg(let kind, let arguments, _):
            report.apply(OperationProof(kind: kind, exitStatus: status, bytesToServer: report.bytesToServer,
                                        dryRun: arguments.contains("--dry-run"), borgSaid: borgDetail).verdict)
        case .raw:
            report.state = .succeeded
        }
    }

    /// Runs a hook on the client and waits for it, on this thread (blocking mode). The
    /// client's `timeout` (coreutils or BusyBox) kills it at `timeout` seconds; the relay gives up 20 s
    /// later. Its output goes to the run log; a failure throws.
    private func runHook(_ name: String, argv: [String], timeout: Int, result: String?) throws {
        guard let t else { return }
        t.setBlocking(true)
        let command = BackupPlan.hookCommand(argv: argv, timeout: timeout, runID: runID, client: client.name, result: result)
        logger.info("\(name) hook: \(command)")
        let ch = try t.newChannel(label: "\(name) hook")
        defer { ch.close(); ch.free() }
        try openExec(ch, on: t, command: command, what: "starting the \(name) hook")
        guard let h = ch.handle else { return }
        let output = LineCollector(keep: 10) { [logger] line in
            logger.info("\(line)", metadata: ["relay.origin": "T \(name)"])
            return line
        }
        let started = Date()
        let deadline = started.addingTimeInterval(TimeInterval(timeout + 20))
        var buf = [UInt8](repeating: 0, count: 16384)
        var gaveUp = false
        reading: while true {
            var got = false
            for stream: Int32 in [0, 1] {
                let n = buf.withUnsafeMutableBytes { ssh_channel_read_timeout(h, $0.baseAddress, UInt32($0.count), stream, 250) }
                if n > 0 {
                    buf.withUnsafeBytes { output.append(UnsafeRawBufferPointer(rebasing: $0[0..<Int(n)])) }
                    got = true
                } else if n == SSH_ERROR {
                    break reading
                }
            }
            if !got && ssh_channel_is_eof(h) != 0 { break }
            // A cancel stops the pre hook; the post hook (clean-up) still runs to its end.
            if Date() > deadline || (result == nil && canceller.isRequested) { gaveUp = true; break }
        }
        output.finish()
        let status: Int32? = gaveUp ? nil : { let st = ssh_channel_get_exit_status(h); return st >= 0 ? st : nil }()
        logger.info("\(name) hook ended: \(status.map { "exit status \($0)" } ?? "no exit status")")
        if gaveUp && result == nil && canceller.isRequested {
            cancelRequested = true
            throw RunError.cancelled
        }
        // coreutils' timeout exits 124 (137 after its SIGKILL); BusyBox's execs the hook
        // itself, so the hook ends by the signal (no exit status) at the timeout.
        let atTimeout = Date().timeIntervalSince(started) >= Double(timeout)
        if gaveUp || status == 124 || status == 137 || (atTimeout && (status == nil || status == 143)) {
            throw RunError.hookTimedOut(hook: name, seconds: timeout)
        }
        if status != 0 { throw RunError.hookFailed(hook: name, status: status, detail: Self.errorLines(output.tail)) }
    }

    /// What borg runs on the client, for messages: create, extract, list, …
    private var borgCommandName: String {
        if case .borg(_, let args, _) = workload, let first = args.first { return first }
        return workload == .backup ? "create" : "command"
    }

    /// The lines of borg's stderr worth showing in a one-line error.
    /// A Python traceback is never the summary: its exception line is (`BorgErrorSummary`);
    /// the full text is in the run log.
    static func errorLines(_ lines: [String]) -> String {
        BorgErrorSummary.summarize(lines)
    }

    // MARK: Connecting

    private func connect() throws {
        let ts = try SSHSession(label: "client \(client.name)", endpoint: client.endpoint, options: options)
        let bs = try SSHSession(label: "server \(server.name)", endpoint: server.endpoint, options: options)
        t = ts
        b = bs
        // With a pre hook: the client first, the hook, and only then the server (which
        // would sit idle, unpolled, while the hook runs).
        if workload == .backup, let pre = client.pre {
            try ts.open()
            try runHook("pre", argv: pre, timeout: client.preTimeout, result: nil)
            try bs.open()
            return
        }
        // Both in parallel; each session is used by exactly one thread here, then handed
        // to this thread once both are done.
        let errors = Mutex<[Int: Error]>([:])
        let sessions = [ts, bs]
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            do { try sessions[i].open() } catch { errors.withLock { $0[i] = error } }
        }
        let errs = errors.withLock { $0 }
        // Report the server first: its errors (host key, forced command) matter most.
        if let e = errs[1] { throw e }
        if let e = errs[0] { throw e }
    }

    // MARK: Starting

    private func start(_ plan: BackupPlan) throws {
        guard let t, let b else { return }
        let th = try t.require()
        var useUnix = client.transport == .unix
        if case .raw = workload { useUnix = false }

        // 1. TCP transport: the remote forward on T's loopback, port chosen by T's sshd.
        var bound: Int32 = 0
        if !useUnix {
            try t.withTimeout(options.channelTimeout, key: "channel_timeout", what: "asking for the remote forward") { () throws(SSHError) in
                if ssh_channel_listen_forward(th, "127.0.0.1", 0, &bound) != SSH_OK {
                    throw SSHError.forwardRefused(host: t.label, detail: t.lastError)
                }
            }
            forwardPort = bound
            forwardActive = true
            logger.info("client is listening on 127.0.0.1:\(bound) for borg's connection (single use)")
        }

        // 2. borg serve on B, waiting for the connection. B's forced command decides
        //    what really runs; the string only has to be a valid borg serve line.
        let serve = try b.newChannel(label: "borg serve")
        let sp = Splice(serverChannel: serve, serverLog: serverLog)
        splice = sp
        install(serve) { data, isStderr in
            if isStderr {
                sp.serverLog.append(data)
                return data.count
            }
            return sp.down.accept(data)
        }
        try openExec(serve, on: b, command: BackupPlan.serveCommand, what: "starting borg serve")

        var unixSocket: String?
        if useUnix {
            // 3u. Unix transport: a listener on T whose stdio is its channel (libssh 0.10
            //     cannot ask for streamlocal forwarding): socat accepts one connection on a
            //     0600 socket in a fresh 0700 directory; the channel is the client end.
            let dir = BackupPlan.newUnixSocketDir()
            unixSocket = dir + "/borg.sock"
            let listener = try t.newChannel(label: "socket listener")
            let listenerLog = LineCollector { [logger] line in
                logger.info("\(line)", metadata: ["relay.origin": "T listener"])
                return line
            }
            install(listener) { [unowned self] data, isStderr in
                if isStderr {
                    listenerLog.append(data)
                    return data.count
                }
                if !self.acceptedConnection {
                    self.acceptedConnection = true
                    self.logger.info("borg connected to the socket on the client; splicing it into borg serve")
                }
                return sp.up.accept(data)
            }
            try openExec(listener, on: t, command: BackupPlan.unixListenerCommand(dir: dir), what: "starting the socket listener")
            sp.attachClient(listener)
            logger.info("client listens on \(unixSocket!) (0600, in a fresh 0700 directory; one connection)")
        } else {
            // 3. Accept exactly one forwarded connection, from the moment borg can start.
            ssh_set_message_callback(th, { _, msg, user in
                guard let msg, let user else { return 1 }
                return Unmanaged<BackupRun>.fromOpaque(user).takeUnretainedValue().handleMessage(msg)
            }, Unmanaged.passUnretained(self).toOpaque())
        }

        // 4. borg create on T; the passphrase goes to its stdin (BORG_PASSPHRASE_FD=0), then EOF.
        let e = try t.newChannel(label: "borg create")
        create = e
        if case .borg = workload, let out = outputPath {
            outputFD = Glibc.open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
            if outputFD < 0 { throw RunError.setup("cannot create the run's output file \(out): \(String(cString: strerror(errno)))") }
        }
        install(e) { [unowned self] data, isStderr in
            if isStderr {
                self.clientLog.append(data)
            } else if self.outputFD >= 0 {
                // Streamed to the output file as it comes (relayctl reads it while the run goes on).
                var off = 0
                while off < data.count {
                    let w = Glibc.write(self.outputFD, data.baseAddress! + off, data.count - off)
                    if w < 0 && errno == EINTR { continue }
                    if w <= 0 { self.stdoutTruncated = true; break }
                    off += w
                }
            } else if self.stdout.count + data.count <= Self.maxStdout {
                self.stdout.append(data.bindMemory(to: UInt8.self))
            } else {
                self.stdoutTruncated = true
            }
            return data.count
        }
        let command: String
        switch workload {
        case .backup:
            command = unixSocket.map { plan.createCommand(unixSocket: $0, withPassphrase: passphrase != nil) }
                ?? plan.createCommand(port: Int(bound), withPassphrase: passphrase != nil)
        case .raw(let template):
            command = Shell.anyShell(template.replacingOccurrences(of: "{port}", with: String(bound)))
        case .borg(_, let arguments, let workDir):
            command = plan.borgCommand(port: Int(bound), withPassphrase: passphrase != nil, arguments: arguments,
                                       workDir: workDir, unixSocket: unixSocket)
        }
        logger.info("client runs: \(command)")
        try openExec(e, on: t, command: command, what: "starting borg create")
        borgStarted = true
        if let p = passphrase {
            try writeAll(p, to: e, on: t)
            // Kept (in guarded memory) only when a retry may need it again.
            if !(workload == .backup && client.retry) {
                p.wipe()
                passphrase = nil
            }
        }
        e.sendEOF()
    }

    private func openExec(_ c: SSHChannel, on s: SSHSession, command: String, what: String) throws {
        guard let h = c.handle else { throw SSHError.channel(host: s.label, what: what, detail: "channel freed") }
        try s.withTimeout(options.channelTimeout, key: "channel_timeout", what: what) { () throws(SSHError) in
            if ssh_channel_open_session(h) != SSH_OK {
                throw SSHError.channel(host: s.label, what: "\(what): opening a session channel", detail: s.lastError)
            }
            if ssh_channel_request_exec(h, command) != SSH_OK {
                throw SSHError.channel(host: s.label, what: what, detail: s.lastError)
            }
        }
    }

    private func writeAll(_ secret: SecretBytes, to c: SSHChannel, on s: SSHSession) throws {
        guard let h = c.handle else { return }
        var failed = false
        secret.withUnsafeBytes { buf in
            var off = 0
            while off < buf.count {
                let rc = ssh_channel_write(h, buf.baseAddress! + off, UInt32(buf.count - off))
                if rc <= 0 { failed = true; return }
                off += Int(rc)
            }
        }
        if failed {
            throw SSHError.channel(host: s.label, what: "passing the passphrase to borg", detail: s.lastError)
        }
    }

    /// Channel-open requests from T: the first connection to our forward is accepted and
    /// spliced; anything else is refused.
    fileprivate func handleMessage(_ msg: ssh_message) -> Int32 {
        guard ssh_message_type(msg) == Int32(SSH_REQUEST_CHANNEL_OPEN.rawValue),
              ssh_message_subtype(msg) == Int32(SSH_CHANNEL_FORWARDED_TCPIP.rawValue) else {
            return 1
        }
        let port = ssh_message_channel_request_open_destination_port(msg)
        let origin = ssh_message_channel_request_open_originator(msg).map { String(cString: $0) } ?? "?"
        let originPort = ssh_message_channel_request_open_originator_port(msg)
        guard port == forwardPort, !acceptedConnection, forwardActive, let t, let splice else {
            logger.warning("refused a further connection to the forward on the client (from \(origin):\(originPort)); the forward is single-use")
            return 1
        }
        guard let ch = ssh_message_channel_request_open_reply_accept(msg) else {
            recordFailure(SSHError.channel(host: t.label, what: "accepting borg's forwarded connection", detail: t.lastError))
            return 0
        }
        acceptedConnection = true
        cancelForwardPending = true
        let fwd = t.adopt(ch, label: "forwarded connection")
        install(fwd) { data, isStderr in
            isStderr ? data.count : splice.up.accept(data)
        }
        splice.attachClient(fwd)
        logger.info("borg connected from \(origin):\(originPort); splicing it into borg serve; closing the forward")
        return 0
    }

    // MARK: The loop

    private func loop() throws {
        guard let t, let b, let create, let splice else { return }
        guard let event = ssh_event_new() else { throw RunError.setup("ssh_event_new failed") }
        let th = try t.require(), bh = try b.require()
        t.setBlocking(false)
        b.setBlocking(false)
        ssh_event_add_session(event, th)
        ssh_event_add_session(event, bh)
        let cancelFD = canceller.fd
        ssh_event_add_fd(event, cancelFD, Int16(POLLIN), { fd, _, user in
            var v: UInt64 = 0
            _ = Glibc.read(fd, &v, 8)
            if let user { Unmanaged<BackupRun>.fromOpaque(user).takeUnretainedValue().cancelRequested = true }
            return 0
        }, Unmanaged.passUnretained(self).toOpaque())
        defer {
            ssh_event_remove_fd(event, cancelFD)
            // ssh_event_free in 0.10.6 only restores the first session's poll handle;
            // remove every session first.
            ssh_event_remove_session(event, th)
            ssh_event_remove_session(event, bh)
            ssh_event_free(event)
            t.setBlocking(true)
            b.setBlocking(true)
        }

        var deadline: Date?
        var tearingDown = false
        var pollErrors = 0
        var lastMoved: UInt64 = 0
        var lastProgress = Date()
        var exitedAt: Date?
        var tWatch = KeepaliveWatch(interval: options.keepaliveInterval, count: options.keepaliveCount)
        var bWatch = KeepaliveWatch(interval: options.keepaliveInterval, count: options.keepaliveCount)
        var nextKeepaliveCheck = Date()
        while true {
            // Decide what to do with what the last poll brought.
            if cancelRequested && !tearingDown {
                logger.warning("cancel requested: stopping borg on the client and closing the splice")
                tearingDown = true
                create.sendSignal("TERM")
                splice.abort()
                deadline = Date().addingTimeInterval(exitGrace)
            }
            // SSH keepalives; none on T while its forward is open (one global request at a time).
            var tDead: TimeInterval?, bDead: TimeInterval?
            if Date() >= nextKeepaliveCheck {
                var next = Date().addingTimeInterval(3600)
                switch tWatch.check(t, probing: !forwardActive && !cancelForwardPending) {
                case .alive(let at): next = min(next, at)
                case .dead(let silent): tDead = silent
                }
                switch bWatch.check(b, probing: true) {
                case .alive(let at): next = min(next, at)
                case .dead(let silent): bDead = silent
                }
                nextKeepaliveCheck = next
            }
            if !t.isAlive || tDead != nil {
                let detail = tDead.map { "no answer to SSH keepalives for \(Int($0)) s" } ?? t.lastError
                recordFailure(SSHError.connectionLost(host: t.label, detail: detail))
                splice.abort()  // borg serve on B sees EOF at once and releases its lock
                return
            }
            if (!b.isAlive || bDead != nil) && !tearingDown {
                let detail = bDead.map { "no answer to SSH keepalives for \(Int($0)) s" } ?? b.lastError
                recordFailure(SSHError.connectionLost(host: b.label, detail: detail))
                tearingDown = true
                splice.abort()  // borg on T sees its connection close and exits
                deadline = Date().addingTimeInterval(exitGrace)
            }
            if failure != nil && !tearingDown {
                tearingDown = true
                splice.abort()
                create.sendSignal("TERM")
                deadline = Date().addingTimeInterval(exitGrace)
            }
            if cancelForwardPending {
                let rc = ssh_channel_cancel_forward(th, "127.0.0.1", forwardPort)
                if rc != SSH_AGAIN {
                    cancelForwardPending = false
                    forwardActive = false
                    if rc == SSH_OK {
                        logger.info("forward on the client closed")
                    } else {
                        logger.warning("closing the forward on the client failed (\(t.lastError)); it ends with the session")
                    }
                }
            }
            splice.pump()
            let moved = splice.up.delivered + splice.down.delivered
            if moved != lastMoved {
                lastMoved = moved
                lastProgress = Date()
                let up = splice.up.delivered, down = splice.down.delivered
                progress.update { $0.bytesToServer = up; $0.bytesFromServer = down }
            }
            if !tearingDown && failure == nil {
                let now = Date()
                if let d = runDeadline, now >= d {
                    recordFailure(RunError.timedOut(what: "the run", seconds: options.runTimeout, key: "run_timeout"))
                    continue
                }
                if options.idleTimeout > 0 && !create.remoteClosed
                    && now.timeIntervalSince(lastProgress) >= TimeInterval(options.idleTimeout) {
                    recordFailure(RunError.timedOut(what: "the splice (no byte either way while borg ran)",
                                                    seconds: options.idleTimeout, key: "idle_timeout"))
                    continue
                }
            }
            if create.remoteClosed {
                if !acceptedConnection {
                    splice.abort()  // borg never connected: let borg serve on B go
                    if forwardActive && !cancelForwardPending { cancelForwardPending = true; continue }
                }
                // The splice may still be draining (it can hold bytes the client's command
                // had already handed to its socket): wait while it makes progress.
                if !splice.isFinished && !tearingDown {
                    if exitedAt == nil { exitedAt = Date() }
                    let idleUntil = max(lastProgress, exitedAt!).addingTimeInterval(drainGrace)
                    if deadline.map({ $0 < idleUntil }) ?? true { deadline = idleUntil }
                }
                create.close()
            }
            if create.remoteClosed && splice.isFinished && !cancelForwardPending {
                return
            }
            if let d = deadline, Date() >= d {
                let what = create.remoteClosed
                    ? "the splice moved no byte for \(Int(drainGrace)) s after the client's command exited"
                    : "borg on the client did not exit"
                logger.warning("\(what); closing everything")
                if failure == nil && !cancelRequested {
                    warnings.append("\(what); channels were closed")
                }
                if !splice.isFinished { spliceCut = true }
                splice.abort()
                create.close()
                return
            }

            // Wait for the next event or timer (a deadline, the next keepalive check, the
            // idle or run timeout).
            var wake = min(deadline ?? nextKeepaliveCheck, nextKeepaliveCheck)
            if !tearingDown {
                if let d = runDeadline { wake = min(wake, d) }
                if options.idleTimeout > 0 { wake = min(wake, lastProgress.addingTimeInterval(TimeInterval(options.idleTimeout))) }
            }
            let timeout = Int32(max(0, min(3_600_000, wake.timeIntervalSinceNow * 1000)) + 1)
            let rc = ssh_event_dopoll(event, timeout)
            if rc == SSH_ERROR {
                pollErrors += 1
                if pollErrors > 1000 {
                    throw RunError.protocolFailure("polling the SSH sessions keeps failing; giving up")
                }
            } else {
                pollErrors = 0
            }
        }
    }

    // MARK: Teardown

    private func teardown() {
        cancelForwardIfNeeded()
        for c in [splice?.clientChannel, splice?.serverChannel, create] { c?.free() }
        events.removeAll()
        t?.close()
        b?.close()
    }

    private func cancelForwardIfNeeded() {
        guard forwardActive, let t, t.isAlive, let th = t.handle else { return }
        t.setBlocking(true)
        if ssh_channel_cancel_forward(th, "127.0.0.1", forwardPort) != SSH_OK {
            logger.warning("closing the forward on the client failed (\(t.lastError)); it ends with the session")
        }
        forwardActive = false
    }

    // MARK: Callbacks

    private func install(_ c: SSHChannel, onData: @escaping (UnsafeRawBufferPointer, Bool) -> Int) {
        events.append(ChannelEvents.install(on: c, onData: onData))
    }
}

/// SSH-level liveness of one session: probes after `interval` seconds of silence, and
/// declares the peer dead after `interval × count` seconds without any packet.
struct KeepaliveWatch {
    let interval: TimeInterval
    let count: Int
    private var lastPackets: UInt64 = 0
    private var lastHeard = Date()
    private var lastProbe: Date?

    init(interval: Int, count: Int) {
        self.interval = TimeInterval(interval)
        self.count = count
    }

    enum Verdict { case alive(nextCheck: Date), dead(silentFor: TimeInterval) }

    /// `probing`: whether keepalives may be sent now (and so silence can be judged).
    mutating func check(_ session: SSHSession, probing: Bool, now: Date = Date()) -> Verdict {
        let n = session.packetsReceived
        if n != lastPackets {
            lastPackets = n
            lastHeard = now
            lastProbe = nil
        }
        guard probing else {
            lastHeard = max(lastHeard, now.addingTimeInterval(-interval))
            return .alive(nextCheck: now.addingTimeInterval(interval))
        }
        let silent = now.timeIntervalSince(lastHeard)
        if silent >= interval * Double(count) { return .dead(silentFor: silent) }
        if silent >= interval && lastProbe.map({ now.timeIntervalSince($0) >= interval }) ?? true {
            session.sendKeepalive()
            lastProbe = now
        }
        let nextProbe = (lastProbe ?? lastHeard).addingTimeInterval(interval)
        let deadAt = lastHeard.addingTimeInterval(interval * Double(count))
        return .alive(nextCheck: min(max(nextProbe, now.addingTimeInterval(0.01)), deadAt))
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
