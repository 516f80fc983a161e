import Foundation
import Logging
import Synchronization

// Longer than 400 lines: the driver of a relayed run keeps its actions, its event loop and
// the set-up of what they act on (forward or listener, borg serve, borg on T, hooks)
// together; every decision is RunMachine's.

/// One relayed run: borg on the client T (`borg create`, or another borg command), its
/// repository connection spliced through the relay into `borg serve` on the backup server B.
///
/// The decisions (phases, timeouts, retries, cancel, the success rule) are
/// `RunMachine`'s; this class is its driver. `execute()` runs the whole run on the
/// calling thread: it carries out the machine's actions with the sessions and channels, and
/// feeds back what happened. After connecting, one `SSHEventLoop` on that thread polls both
/// sessions, and every libssh call for them and their channels happens there.
public final class BackupRun: PollingRunDriver, @unchecked Sendable {
    // @unchecked: all mutable state is touched only by the thread inside `execute()`;
    // other threads only use `canceller` and `progress`, which are Sendable.
    public let runID: String
    public let client: ClientConfig
    public let server: ServerConfig
    let options: SessionOptions
    let policy: RunPolicy
    let logger: Logger
    public let canceller: RunCanceller
    /// Live figures of the run, readable from any thread.
    public let progress = ProgressBoard()
    private var passphrase: SecretBytes?
    private let logFile: String?
    public let workload: Workload
    /// Where borg's stdout goes for `.borg` workloads (relayctl prints it).
    public var outputPath: String?
    static let maxStdout = 16 * 1024 * 1024

    /// `passphrase` is wiped as soon as it has been written to borg's stdin (or, when a
    /// retry may need it again, at the end of the run).
    public init(runID: String, client: ClientConfig, server: ServerConfig, options: SessionOptions, policy: RunPolicy,
                passphrase: SecretBytes?, logger: Logger, logFile: String?,
                workload: Workload = .backup) throws(RunError) {
        self.runID = runID
        self.workload = workload
        self.client = client
        self.server = server
        self.options = options
        self.policy = policy
        self.passphrase = passphrase
        self.logger = logger
        self.logFile = logFile
        self.canceller = try RunCanceller()
    }

    deinit { passphrase?.wipe() }

    // MARK: - State of one attempt (loop thread only)

    private var t: SSHSession?
    private var b: SSHSession?
    private var create: SSHChannel?
    private var splice: Splice?
    private var forward: RemoteForward?
    private var cancellingForward = false
    private var loop: SSHEventLoop?
    private var events: [ChannelEvents] = []
    private var acceptedConnection = false
    /// Events found in callbacks (an accepted connection, the eventfd), for the next wake-up.
    private var pending: [RunMachine.Event] = []
    /// What the machine has been told already (the driver reports changes once).
    private var told = Told()
    private struct Told {
        var moved: UInt64 = 0
        var clientClosed = false
        var serverClosed = false
        var borgExited = false
        var cancel = false
        var spliceFinished = false
    }
    private var stdout = Data()
    private var stdoutTruncated = false
    /// The output file of `.borg` workloads while the run writes it.
    private var outputFD: Int32 = -1
    private var clientLog: LineCollector!
    private var serverLog: LineCollector!
    /// borg on the client asked whether to use a repository it knew under another location.
    private var relocation: RelocationNotice?
    /// The commands of this run, and the ciphers the last attempt negotiated.
    private var plan: BackupPlan?
    private var clientCipher: String?
    private var serverCipher: String?

    // MARK: - The run

    /// Runs to the end and reports what happened. Never throws: every failure is in the
    /// report, and everything opened on the way is closed again.
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

        var machine = RunMachine(policy: .init(
            run: policy, retryCreate: workload == .backup && client.retry, postHook: workload == .backup && client.post != nil,
            keepaliveInterval: options.keepaliveInterval, keepaliveCount: options.keepaliveCount,
            clientLabel: "client \(client.name)", serverLabel: "server \(server.name)"))
        self.plan = plan
        machine.drive(self)
        report.clientCipher = clientCipher
        report.serverCipher = serverCipher
        endOfRun()
        clientLog.finish()
        serverLog.finish()
        teardown()

        report.finish()
        report.bytesToServer = splice?.up.delivered ?? 0
        report.bytesFromServer = splice?.down.delivered ?? 0
        report.borgExitStatus = machine.exit?.status ?? create?.exitStatus
        report.attempts = machine.attempts
        if workload == .backup {
            report.archive = ArchiveSummary.parse(borgJSON: stdout)
        }
        var warnings = machine.warnings
        if outputFD >= 0 {
            Glibc.close(outputFD)
            outputFD = -1
            if stdoutTruncated { warnings.append("writing borg's output to \(outputPath ?? "the output file") failed (disk full?)") }
        }
        report.warnings = warnings
        finishReport(&report, machine)
        if report.state == .failed, let r = relocation {
            // borg's question, not the traceback that followed it, is the summary.
            report.error = r.message(client: client.name)
        }
        logger.info("run \(runID) \(report.state.rawValue)\(report.error.map { ": \($0)" } ?? "")")
        return report
    }

    /// Carries out one of the machine's actions.
    func perform(_ action: RunMachine.Action) -> [RunMachine.Event] {
        switch action {
        case .connect(let n):
            if n > 1 { logger.info("attempt \(n) of run \(runID)") }
            return connectAttempt()
        case .start:
            progress.update { $0.phase = "running" }
            return plan.map(startAttempt) ?? []
        case .sendKeepalive(let side):
            (side == .client ? t : b)?.sendKeepalive()
        case .terminateBorg:
            create?.sendSignal("TERM")
        case .killBorg:
            break  // only local runs ask for it
        case .cutSplice:
            splice?.abort()
        case .cancelForward:
            cancellingForward = true
        case .closeBorgChannel:
            create?.close()
        case .endAttempt:
            teardown()
            resetForRetry()
            progress.update { $0.phase = "retrying" }
        case .runPostHook(let success):
            return [postHook(success: success)]
        case .log(let note):
            logger.warning("\(note)")
        case .finish:
            break
        }
        return []
    }

    /// The run's decisions are made: the passphrase goes, and the progress says so.
    private func endOfRun() {
        passphrase?.wipe()
        passphrase = nil
        progress.update { $0.phase = "finishing" }
    }

    var eventLoop: SSHEventLoop? { loop }
    var packets: (client: UInt64, server: UInt64) { (t?.packetsReceived ?? 0, b?.packetsReceived ?? 0) }

    /// What changed since the machine was last told: moves the splice on, and reports
    /// cancel, bytes, closed sessions, borg's exit and the splice's end.
    func observe() -> [RunMachine.Event] {
        var found = cancelFirst(pending, told: &told.cancel)
        pending.removeAll()
        if cancellingForward, let f = forward, let ok = f.tryCancel() {
            cancellingForward = false
            if ok {
                logger.info("forward on the client closed")
            } else {
                logger.warning("closing the forward on the client failed (\(t?.lastError ?? "?")); it ends with the session")
            }
            found.append(.forwardClosed)
        }
        if let splice {
            splice.pump()
            let moved = splice.up.delivered + splice.down.delivered
            if moved != told.moved {
                told.moved = moved
                let up = splice.up.delivered, down = splice.down.delivered
                progress.update { $0.bytesToServer = up; $0.bytesFromServer = down }
                found.append(.moved(total: moved))
            }
        }
        if let t, !told.clientClosed, !t.isAlive {
            told.clientClosed = true
            found.append(.sessionClosed(.client, detail: t.lastError))
        }
        if let b, !told.serverClosed, !b.isAlive {
            told.serverClosed = true
            found.append(.sessionClosed(.server, detail: b.lastError))
        }
        if let create, create.remoteClosed, !told.borgExited {
            told.borgExited = true
            let archiveID = workload == .backup ? ArchiveSummary.parse(borgJSON: stdout)?.id : nil
            found.append(.borgExited(BorgExit(status: create.exitStatus, signal: create.exitSignal, archiveID: archiveID)))
        }
        if let splice, splice.isFinished, !told.spliceFinished {
            told.spliceFinished = true
            found.append(.spliceFinished)
        }
        if let loop, loop.failedPolls > 1000 {
            found.append(.abandoned(.run(.protocolFailure("polling the SSH sessions keeps failing; giving up"))))
        }
        return found
    }

    /// Forgets the state of a failed attempt (its sessions are closed already).
    private func resetForRetry() {
        t = nil
        b = nil
        create = nil
        splice = nil
        forward = nil
        cancellingForward = false
        events.removeAll()
        acceptedConnection = false
        pending.removeAll()
        told = Told()
        stdout = Data()
        stdoutTruncated = false
        if outputFD >= 0 {
            Glibc.close(outputFD)
            outputFD = -1
        }
    }

    /// The report's state and error from the machine's outcome and borg's words.
    private func finishReport(_ report: inout RunReport, _ m: RunMachine) {
        let status = m.exit?.status ?? create?.exitStatus
        let borgDetail = Self.errorLines(clientLog.tail)
        if m.cancelled {
            report.state = .cancelled
            report.error = RunError.cancelled.description
            return
        }
        if let f = m.failure {
            report.state = m.clientUnreachable ? .skipped : .failed
            report.alarm = f.alarm
            var text = "\(f)"
            if !borgDetail.isEmpty, case .ssh = f { text += " (borg on the client said: \(borgDetail))" }
            report.error = text
            return
        }
        if let sig = m.exit?.signal {
            report.state = .failed
            report.error = RunError.borgKilled(signal: sig, detail: borgDetail, command: borgCommandName).description
            return
        }
        if case .raw = workload, m.spliceCut || (splice?.up.dropped ?? 0) > 0 {
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

    // MARK: - Hooks

    /// The post hook, when T is still there; its failure is a warning of the run.
    private func postHook(success: Bool) -> RunMachine.Event {
        loop?.close()
        loop = nil
        endOfRun()
        guard let post = client.post, let t, t.isAlive else { return .postHookEnded(warning: nil) }
        do {
            try runHook("post", argv: post, timeout: client.postTimeout, result: success ? "success" : "failure")
            return .postHookEnded(warning: nil)
        } catch {
            logger.warning("\(error)")
            return .postHookEnded(warning: "\(error)")
        }
    }

    /// Runs a hook on the client and waits for it, on this thread (blocking mode). The
    /// client's `timeout` (coreutils or BusyBox) kills it at `timeout` seconds; the relay gives up 20 s
    /// later. Its output goes to the run log; a failure throws.
    private func runHook(_ name: String, argv: [String], timeout: Int, result: String?) throws {
        guard let t else { return }
        let command = BackupPlan.hookCommand(argv: argv, timeout: timeout, runID: runID, client: client.name, result: result)
        logger.info("\(name) hook: \(command)")
        t.setBlocking(true)
        let ch = try t.newChannel(label: "\(name) hook")
        defer { ch.close(); ch.free() }
        try ch.exec(command, what: "starting the \(name) hook", timeout: options.channelTimeout)
        let output = LineCollector(keep: 10) { [logger] line in
            logger.info("\(line)", metadata: ["relay.origin": "T \(name)"])
            return line
        }
        let started = Date()
        // A cancel stops the pre hook; the post hook (clean-up) still runs to its end.
        let ended = ch.read(until: started.addingTimeInterval(TimeInterval(timeout + 20)),
                            sink: { data, _ in output.append(data) },
                            giveUp: { [canceller] in result == nil && canceller.isRequested })
        output.finish()
        let status = ended ? ch.reportedExitStatus : nil
        logger.info("\(name) hook ended: \(status.map { "exit status \($0)" } ?? "no exit status")")
        if !ended && result == nil && canceller.isRequested {
            throw RunError.cancelled
        }
        // coreutils' timeout exits 124 (137 after its SIGKILL); BusyBox's execs the hook
        // itself, so the hook ends by the signal (no exit status) at the timeout.
        let atTimeout = Date().timeIntervalSince(started) >= Double(timeout)
        if !ended || status == 124 || status == 137 || (atTimeout && (status == nil || status == 143)) {
            throw RunError.hookTimedOut(hook: name, seconds: timeout)
        }
        if status != 0 { throw RunError.hookFailed(hook: name, status: status, detail: Self.errorLines(output.tail)) }
    }

    // MARK: - Connecting

    private func connectAttempt() -> [RunMachine.Event] {
        do {
            try connect()
            clientCipher = t?.cipher
            serverCipher = b?.cipher
            logger.info("connected; ciphers: client \(clientCipher ?? "?"), server \(serverCipher ?? "?")")
            // Cancelled while connecting: the machine starts nothing on T or B.
            return canceller.takeRequest() ? [.cancelRequested, .connected] : [.connected]
        } catch {
            logger.error("\(error)")
            let cancelled = canceller.isRequested ? [RunMachine.Event.cancelRequested] : []
            return cancelled + [.failed(RunFailure(error))]
        }
    }

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

    // MARK: - Starting

    private func startAttempt(_ plan: BackupPlan) -> [RunMachine.Event] {
        var found: [RunMachine.Event] = []
        do {
            let forwardOpen = try start(plan) { found.append(.borgLaunched) }
            guard let t, let b else { throw RunError.setup("the sessions went away while starting") }
            let loop = try SSHEventLoop()
            self.loop = loop
            try loop.add(t)
            try loop.add(b)
            loop.watch(canceller.fd, events: Int16(POLLIN)) { [unowned self] _, _ in
                if self.canceller.takeRequest() { self.pending.append(.cancelRequested) }
            }
            return found + [.started(forward: forwardOpen)]
        } catch {
            logger.error("\(error)")
            // A cancel that came meanwhile goes first: the machine must not retry it.
            return found + (canceller.isRequested ? [.cancelRequested] : []) + [.failed(RunFailure(error))]
        }
    }

    /// Opens the forward (tcp) or the listener (unix), borg serve on B and borg on T, and
    /// passes the passphrase. `launched` is called once borg runs on T. Returns whether a
    /// tcp forward is open.
    private func start(_ plan: BackupPlan, launched: () -> Void) throws -> Bool {
        guard let t, let b else { return false }
        var useUnix = client.transport == .unix
        if case .raw = workload { useUnix = false }
        t.setBlocking(true)
        b.setBlocking(true)

        // 1. TCP transport: the remote forward on T's loopback, port chosen by T's sshd.
        var port = 0
        if !useUnix {
            let f = try RemoteForward(on: t, timeout: options.channelTimeout)
            forward = f
            port = Int(f.port)
            logger.info("client is listening on 127.0.0.1:\(port) for borg's connection (single use)")
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
        try serve.exec(BackupPlan.serveCommand, what: "starting borg serve", timeout: options.channelTimeout)

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
                    self.pending.append(.borgConnected)
                    self.logger.info("borg connected to the socket on the client; splicing it into borg serve")
                }
                return sp.up.accept(data)
            }
            try listener.exec(BackupPlan.unixListenerCommand(dir: dir), what: "starting the socket listener", timeout: options.channelTimeout)
            sp.attachClient(listener)
            logger.info("client listens on \(dir)/borg.sock (0600, in a fresh 0700 directory; one connection)")
        } else if let forward {
            // 3. Accept exactly one forwarded connection, from the moment borg can start.
            forward.serve(decide: { [unowned self] origin, originPort in
                guard !self.acceptedConnection, self.splice != nil, !self.cancellingForward,
                      self.forward?.isOpen == true else {
                    self.logger.warning("refused a further connection to the forward on the client (from \(origin):\(originPort)); the forward is single-use")
                    return false
                }
                return true
            }, accepted: { [unowned self] channel, origin, originPort in
                guard let channel, let splice = self.splice else {
                    self.pending.append(.failed(.ssh(.channel(host: t.label, what: "accepting borg's forwarded connection", detail: t.lastError))))
                    return
                }
                self.acceptedConnection = true
                self.install(channel) { data, isStderr in
                    isStderr ? data.count : splice.up.accept(data)
                }
                splice.attachClient(channel)
                self.pending.append(.borgConnected)
                self.logger.info("borg connected from \(origin):\(originPort); splicing it into borg serve; closing the forward")
            })
        }

        // 4. borg on T; the passphrase goes to its stdin (BORG_PASSPHRASE_FD=0), then EOF.
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
                ?? plan.createCommand(port: port, withPassphrase: passphrase != nil)
        case .raw(let template):
            command = Shell.anyShell(template.replacingOccurrences(of: "{port}", with: String(port)))
        case .borg(_, let arguments, let workDir):
            command = plan.borgCommand(port: port, withPassphrase: passphrase != nil, arguments: arguments,
                                       workDir: workDir, unixSocket: unixSocket)
        }
        logger.info("client runs: \(command)")
        try e.exec(command, what: "starting borg create", timeout: options.channelTimeout)
        launched()
        if let p = passphrase {
            var failed: SSHError?
            p.withUnsafeBytes { bytes in
                do throws(SSHError) { try e.writeAll(bytes, what: "passing the passphrase to borg") } catch { failed = error }
            }
            if let failed { throw failed }
            // Kept (in guarded memory) only when a retry may need it again.
            if !(workload == .backup && client.retry) {
                p.wipe()
                passphrase = nil
            }
        }
        e.sendEOF()
        return forward != nil
    }

    // MARK: - Teardown

    private func teardown() {
        loop?.close()
        loop = nil
        if let f = forward, f.isOpen, let t, t.isAlive {
            if f.cancel() != true {
                logger.warning("closing the forward on the client failed (\(t.lastError)); it ends with the session")
            }
        }
        for c in [splice?.clientChannel, splice?.serverChannel, create] { c?.free() }
        events.removeAll()
        t?.close()
        b?.close()
    }

    private func install(_ c: SSHChannel, onData: @escaping (UnsafeRawBufferPointer, Bool) -> Int) {
        events.append(ChannelEvents.install(on: c, onData: onData))
    }
}
