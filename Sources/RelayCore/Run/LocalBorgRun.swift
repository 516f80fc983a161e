import Foundation
import Logging
import Synchronization

// Longer than 400 lines: a driver keeps its actions, its event loop and the set-up of what
// the actions act on (socket, borg serve, borg on R) together; the decisions are RunMachine's.

/// Runs a `LocalBorgPlan`: borg on R, its connection spliced into a channel on B.
public final class LocalBorgRun: PollingRunDriver, @unchecked Sendable {
    // @unchecked: mutable state is touched only by the thread inside `execute()`;
    // other threads use `canceller` and `progress`, which are Sendable.
    public let runID: String
    public let client: ClientConfig
    public let server: ServerConfig
    public let plan: LocalBorgPlan
    public let canceller: RunCanceller
    public let progress: ProgressBoard
    let options: SessionOptions
    let logger: Logger
    let logFile: String?
    /// Where borg's stdout goes (the run's output file), or nil to drop it.
    let outputPath: String?
    /// BORG_BASE_DIR for borg on R (its cache, config and security files).
    let borgBaseDir: String
    /// The borg executable on R.
    let borgPath: String
    /// The `relay-agent` executable (the connector).
    let connectorPath: String
    /// borg's stdin (e.g. the sealed state bundle in a memory file), or -1 for /dev/null.
    let stdinFD: Int32
    private var passphrase: SecretBytes?
    /// init only: a copy for the `borg info` that proves the new repository.
    private var initPassphrase: SecretBytes?

    /// Keep the text of borg's log messages (`messages`), e.g. prune's "Pruning archive" lines.
    var keepMessages = false
    private let messageBox = MessageBox()
    /// borg's log messages of this run, when `keepMessages` was set (from its JSON log
    /// records, so a message is exactly what borg logged: no line can be forged by a name).
    var messages: [String] { messageBox.items }

    private final class MessageBox {
        var items: [String] = []
    }

    public init(runID: String, client: ClientConfig, server: ServerConfig, plan: LocalBorgPlan,
                options: SessionOptions, passphrase: SecretBytes?, logger: Logger, logFile: String?,
                outputPath: String?, borgBaseDir: String, borgPath: String = "borg",
                connectorPath: String, canceller: RunCanceller? = nil, progress: ProgressBoard? = nil,
                stdinFD: Int32 = -1) throws(RunError) {
        self.stdinFD = stdinFD
        self.runID = runID
        self.client = client
        self.server = server
        self.plan = plan
        self.options = options
        self.passphrase = passphrase
        self.logger = logger
        self.logFile = logFile
        self.outputPath = outputPath
        self.borgBaseDir = borgBaseDir
        self.borgPath = borgPath
        self.connectorPath = connectorPath
        if let canceller {
            self.canceller = canceller
        } else {
            self.canceller = try RunCanceller()
        }
        self.progress = progress ?? ProgressBoard()
    }

    deinit {
        passphrase?.wipe()
        initPassphrase?.wipe()
    }

    // MARK: - State of the run (loop thread only)

    private var b: SSHSession?
    private var channel: SSHChannel?
    private var splice: FdSplice?
    private var events: [ChannelEvents] = []
    private var loop: SSHEventLoop?
    private var workDir: String?
    private var listenFD: Int32 = -1
    private var stderrFD: Int32 = -1
    private var process: LocalProcess?
    private var borgLog: LineCollector!
    private var serverLog: LineCollector!
    /// Events found in callbacks (cancel, borg's connection), for the next wake-up.
    private var pending: [RunMachine.Event] = []
    private var serverCipher: String?
    private var told = Told()
    private struct Told {
        var moved: UInt64 = 0
        var serverClosed = false
        var borgExited = false
        var cancel = false
        var outputClosed = false
        var spliceFinished = false
    }

    // MARK: - The run

    /// Runs borg on R to its end; the decisions are `RunMachine`'s (kind `.local`: no retry,
    /// no hooks, SIGKILL after SIGTERM). Never throws: every failure is in the report.
    public func execute() -> RunReport {
        var report = RunReport(runID: runID, client: client.name, server: server.name, started: Date())
        report.kind = plan.kind
        report.logFile = logFile
        let box: MessageBox? = keepMessages ? messageBox : nil
        borgLog = LineCollector { [logger, progress] line in
            if let box, case .message(_, let text) = BorgLogLine.parse(line) { box.items.append(text) }
            return BorgLogLine.handle(line, logger: logger, origin: "R borg", progress: progress)
        }
        serverLog = LineCollector { [logger] line in
            logger.info("\(line)", metadata: ["relay.origin": "B borg serve"])
            return line
        }
        let key = plan.maintenance ? "maintenance key" : "key"
        logger.info("run \(runID): borg \(plan.kind) on the relay for client \(client.name)'s repository \(client.repository) on server \(server.name) (\(server.endpoint.display), \(key))")
        let policy = RunMachine.Policy(kind: .local, run: RunPolicy(idleTimeout: 0, runTimeout: 0, connectAttempts: 1, retryDelay: 0),
                                       retryCreate: false, postHook: false,
                                       keepaliveInterval: options.keepaliveInterval, keepaliveCount: options.keepaliveCount,
                                       clientLabel: "relay", serverLabel: "server \(server.name)")
        var machine = RunMachine(policy: policy)
        machine.drive(self)
        report.serverCipher = serverCipher
        passphrase?.wipe()
        passphrase = nil
        progress.update { $0.phase = "finishing" }
        borgLog.finish()
        serverLog.finish()
        teardown()
        report.finish()
        report.bytesToServer = splice?.up.delivered ?? 0
        report.bytesFromServer = splice?.down.delivered ?? 0
        let exitStatus = machine.exit?.status ?? process?.exitStatus
        report.borgExitStatus = exitStatus
        report.warnings = machine.warnings
        if machine.cancelled {
            report.state = .cancelled
            report.error = RunError.cancelled.description
        } else if let f = machine.failure {
            report.state = .failed
            report.alarm = f.alarm
            let detail = BackupRun.errorLines(borgLog.tail)
            var isRunError = false
            if case .run = f { isRunError = true }
            report.error = "\(f)" + (detail.isEmpty || isRunError ? "" : " (borg said: \(detail))")
        } else if let sig = machine.exit?.signal {
            report.state = .failed
            report.error = "borg \(plan.kind) on the relay was killed by signal \(sig)"
        } else if exitStatus == 0 || exitStatus == 1 {
            // borg exited 0 or 1: success only where this kind's proof holds.
            report.apply(proof(exitStatus: exitStatus, bytesToServer: report.bytesToServer).verdict)
        } else {
            report.state = .failed
            var detail = BackupRun.errorLines(borgLog.tail)
            let serverDetail = BackupRun.errorLines(serverLog.tail)
            if !serverDetail.isEmpty { detail += (detail.isEmpty ? "" : "; ") + "borg serve on the server said: \(serverDetail)" }
            report.error = "borg \(plan.kind) exited with status \(exitStatus.map(String.init) ?? "?")\(detail.isEmpty ? "" : ": \(detail)")"
        }
        initPassphrase?.wipe()
        initPassphrase = nil
        logger.info("run \(runID) \(report.state.rawValue)\(report.error.map { ": \($0)" } ?? "")")
        return report
    }

    /// The inputs of this kind's proof of success: the output it printed, and for init a
    /// `borg info` of the new repository.
    private func proof(exitStatus: Int32?, bytesToServer: UInt64) -> OperationProof {
        let args = plan.arguments
        let shape: OperationProof.JSONShape = args.contains("--json-lines") ? .lines : args.contains("--json") ? .document : .none
        var output: Data?
        if shape != .none || plan.kind == .keyExport, let path = outputPath {
            output = FileManager.default.contents(atPath: path) ?? Data()
        }
        var infoAfterInit: Bool?
        if plan.kind == .initialize && bytesToServer > 0 {
            infoAfterInit = readsNewRepository()
        }
        return OperationProof(kind: plan.kind, exitStatus: exitStatus, bytesToServer: bytesToServer, output: output,
                              json: shape, infoAfterInit: infoAfterInit, borgSaid: BackupRun.errorLines(borgLog.tail))
    }

    /// After init: `borg info --json` of the new repository (same key) succeeds and names it.
    private func readsNewRepository() -> Bool {
        let path = FileManager.default.temporaryDirectory.path + "/borg-relay-\(runID)-\(UInt32.random(in: 0...UInt32.max)).info"
        defer { unlink(path) }
        let info = LocalBorgPlan(kind: .info, arguments: ["info", "--json", "--", LocalBorgPlan.repository], maintenance: plan.maintenance)
        logger.info("proving the init: borg info of the new repository")
        guard let run = try? LocalBorgRun(runID: runID, client: client, server: server, plan: info, options: options,
                                          passphrase: try? initPassphrase?.copy(), logger: logger, logFile: logFile,
                                          outputPath: path, borgBaseDir: borgBaseDir, borgPath: borgPath,
                                          connectorPath: connectorPath, progress: progress) else { return false }
        let r = run.execute()
        guard r.isSuccess, let data = FileManager.default.contents(atPath: path),
              let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return false }
        return obj["repository"] != nil
    }

    private func connect() throws {
        var endpoint = server.endpoint
        if plan.maintenance {
            guard let mk = server.maintenanceKey else {
                throw RunError.setup("[servers.\(server.name)] has no 'maintenance_key'; borg \(plan.kind) rewrites the repository and needs one (B's authorized_keys: command=\"borg serve --restrict-to-repository REPO\",restrict KEY)")
            }
            endpoint.key = mk
        }
        let s = try SSHSession(label: "server \(server.name)", endpoint: endpoint, options: options)
        b = s
        try s.open()
    }

    /// Carries out one of the machine's actions.
    func perform(_ action: RunMachine.Action) -> [RunMachine.Event] {
        switch action {
        case .connect:
            return connectAttempt()
        case .start:
            progress.update { $0.phase = "running" }
            return startAttempt()
        case .sendKeepalive:
            b?.sendKeepalive()
        case .terminateBorg:
            process?.signal(SIGTERM)
        case .killBorg:
            process?.signal(SIGKILL)
        case .cutSplice:
            splice?.abort()
            channel?.close()
        case .cancelForward, .closeBorgChannel:
            break  // no forward and no borg channel: borg is a process here
        case .endAttempt:
            teardown()
        case .runPostHook:
            return [.postHookEnded(warning: nil)]
        case .log(let note):
            logger.warning("\(note)")
        case .finish:
            break
        }
        return []
    }

    private func connectAttempt() -> [RunMachine.Event] {
        do {
            try connect()
            serverCipher = b?.cipher
            return canceller.takeRequest() ? [.cancelRequested, .connected] : [.connected]
        } catch {
            logger.error("\(error)")
            return (canceller.isRequested ? [.cancelRequested] : []) + [.failed(RunFailure(error))]
        }
    }

    private func startAttempt() -> [RunMachine.Event] {
        do {
            try start()
            guard let b, let process else { throw RunError.setup("borg on the relay did not start") }
            let loop = try SSHEventLoop()
            self.loop = loop
            try loop.add(b)
            loop.watch(canceller.fd, events: Int16(POLLIN)) { [unowned self] _, _ in
                if self.canceller.takeRequest() { self.pending.append(.cancelRequested) }
            }
            loop.watch(listenFD, events: Int16(POLLIN)) { [unowned self] _, _ in self.acceptBorg() }
            loop.watch(stderrFD, events: Int16(POLLIN)) { [unowned self] fd, _ in self.readStderr(fd) }
            // borg's end wakes the loop; observe() reaps it.
            loop.watch(process.pidFD, events: Int16(POLLIN)) { [unowned self] fd, _ in self.loop?.unwatch(fd) }
            return [.borgLaunched, .started(forward: false)]
        } catch {
            logger.error("\(error)")
            return (canceller.isRequested ? [.cancelRequested] : []) + [.failed(RunFailure(error))]
        }
    }

    private func start() throws {
        guard let b else { return }
        // 1. The private socket borg's connector connects to.
        var template = Array((FileManager.default.temporaryDirectory.path + "/borg-relay-\(runID)-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw RunError.setup("cannot create a private directory for the run: \(String(cString: strerror(errno)))")
        }
        let dir = String(cString: made)
        workDir = dir
        let sockPath = dir + "/borg.sock"
        listenFD = try UnixSocket.listen(on: sockPath)

        // 2. borg serve on B, waiting for borg's connection.
        let ch = try b.newChannel(label: "borg serve")
        channel = ch
        install(ch) { [unowned self] data, isStderr in
            if isStderr {
                self.serverLog.append(data)
                return data.count
            }
            guard let sp = self.splice else { return 0 }  // nothing to say before borg connects
            return sp.down.accept(data)
        }
        try ch.exec(BackupPlan.serveCommand, what: "starting borg serve", timeout: options.channelTimeout)

        // 3. borg on R.
        let rsh = Shell.join([connectorPath, "connect", sockPath])
        var env: [String: String] = [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": borgBaseDir,
            "BORG_BASE_DIR": borgBaseDir,
            "BORG_RSH": rsh,
            "BORG_HOST_ID": "borg-relay@" + (ProcessInfo.processInfo.hostName),
        ]
        env.merge(plan.environment) { _, new in new }
        var passFD: Int32 = -1
        if let p = passphrase {
            let (readEnd, writeEnd) = try LocalProcess.pipe()
            // The passphrase fits in the pipe's buffer: write it all and close, then borg reads it.
            if plan.kind == .initialize { initPassphrase = try? p.copy() }
            let expected = p.count
            let written = p.withUnsafeBytes { Glibc.write(writeEnd, $0.baseAddress, $0.count) }
            Glibc.close(writeEnd)
            p.wipe()
            passphrase = nil
            guard written == expected else {
                Glibc.close(readEnd)
                throw RunError.setup("handing the passphrase to borg failed")
            }
            passFD = readEnd
            env["BORG_PASSPHRASE_FD"] = "3"
        }
        defer { if passFD >= 0 { Glibc.close(passFD) } }
        try FileManager.default.createDirectory(atPath: borgBaseDir, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let (errRead, errWrite) = try LocalProcess.pipe()
        stderrFD = errRead
        _ = fcntl(stderrFD, F_SETFL, fcntl(stderrFD, F_GETFL) | O_NONBLOCK)
        defer { Glibc.close(errWrite) }
        let argv = [borgPath, "--log-json"] + plan.arguments.map { Self.expand($0, client) }
        logger.info("relay runs: \(Shell.join(argv)) (BORG_RSH=\(rsh))")
        process = try LocalProcess(argv, env: env, stdinFD: stdinFD, stdoutPath: outputPath, stderrFD: errWrite, extraFD: passFD)
    }

    static func expand(_ arg: String, _ client: ClientConfig) -> String {
        arg.hasPrefix(LocalBorgPlan.repository) && !arg.hasPrefix(LocalBorgPlan.repository + "/")
            ? LocalBorgPlan.url(client) + arg.dropFirst(LocalBorgPlan.repository.count)
            : arg
    }

    // MARK: - Waiting

    var eventLoop: SSHEventLoop? { loop }
    var packets: (client: UInt64, server: UInt64) { (0, b?.packetsReceived ?? 0) }

    /// What changed since the machine was last told.
    func observe() -> [RunMachine.Event] {
        var found = cancelFirst(pending, told: &told.cancel)
        pending.removeAll()
        if let sp = splice {
            sp.pump()
            let moved = sp.up.delivered + sp.down.delivered
            if moved != told.moved {
                told.moved = moved
                let up = sp.up.delivered, down = sp.down.delivered
                progress.update { $0.bytesToServer = up; $0.bytesFromServer = down }
                found.append(.moved(total: moved))
            }
            if sp.closed {
                loop?.unwatch(sp.fd)
            } else {
                loop?.watch(sp.fd, events: sp.wantedEvents) { [unowned self] _, _ in self.splice?.readAvailable() }
            }
            if sp.isFinished && !told.spliceFinished {
                told.spliceFinished = true
                found.append(.spliceFinished)
            }
        }
        if let b, !told.serverClosed, !b.isAlive {
            told.serverClosed = true
            found.append(.sessionClosed(.server, detail: b.lastError))
        }
        if let p = process, !told.borgExited, p.reap() {
            told.borgExited = true
            loop?.unwatch(p.pidFD)
            logger.info("borg on the relay exited: \(p.exitStatus.map { "status \($0)" } ?? "signal \(p.exitSignal ?? 0)")")
            found.append(.borgExited(BorgExit(status: p.exitStatus, signal: p.exitSignal.map { String($0) })))
        }
        if !told.outputClosed && stderrFD < 0 {
            told.outputClosed = true
            found.append(.outputClosed)
        }
        if let loop, loop.failedPolls > 1000 {
            found.append(.abandoned(.run(.protocolFailure("polling the SSH session keeps failing; giving up"))))
        }
        return found
    }

    /// borg connected to the run's socket: the one connection is spliced, the socket closed.
    private func acceptBorg() {
        guard listenFD >= 0, let conn = UnixSocket.accept(listenFD) else { return }
        guard splice == nil, let ch = channel else {
            Glibc.close(conn)  // single use
            return
        }
        logger.info("borg on the relay connected; splicing it into borg serve on the server")
        splice = FdSplice(fd: conn, channel: ch)
        pending.append(.borgConnected)
        // One connection only: stop listening at once.
        loop?.unwatch(listenFD)
        Glibc.close(listenFD)
        listenFD = -1
    }

    /// borg's stderr (its JSON log) into the run log, to its end.
    private func readStderr(_ fd: Int32) {
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                buf.withUnsafeBytes { borgLog.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                continue
            }
            if n == 0 || (errno != EAGAIN && errno != EINTR) {
                loop?.unwatch(fd)
                Glibc.close(fd)
                stderrFD = -1
            }
            break
        }
    }

    // MARK: - Teardown

    private func teardown() {
        loop?.close()
        loop = nil
        process?.close()
        splice?.abort()
        channel?.free()
        events.removeAll()
        b?.close()
        for fd in [listenFD, stderrFD] where fd >= 0 { Glibc.close(fd) }
        listenFD = -1
        stderrFD = -1
        if let d = workDir {
            unlink(d + "/borg.sock")
            rmdir(d)
            workDir = nil
        }
    }

    private func install(_ c: SSHChannel, onData: @escaping (UnsafeRawBufferPointer, Bool) -> Int) {
        events.append(ChannelEvents.install(on: c, onData: onData))
    }
}
