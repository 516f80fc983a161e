import CLibSSH
import Foundation
import Logging
import Synchronization

/// A borg command that runs on R itself (init, list, info, key export, prune, compact,
/// check): its repository connection goes through `relay-agent connect` to a private
/// unix socket of this run (in a fresh 0700 directory, removed afterwards), which is
/// spliced into a channel on B opened with the client's key, or with the server's
/// `maintenance_key` for operations that rewrite the repository.
public struct LocalBorgPlan: Sendable, Equatable {
    /// What the run is, for the history and messages: init, list, info, key-export, …
    public var kind: String
    /// borg's arguments after the program name; `LocalBorgPlan.repository` stands for the
    /// repository URL and `LocalBorgPlan.repository + "::NAME"` for an archive.
    public var arguments: [String]
    /// Open B's channel with the server's maintenance key (not append-only).
    public var maintenance: Bool

    public static let repository = "ssh://borg-relay"

    public init(kind: String, arguments: [String], maintenance: Bool) {
        self.kind = kind
        self.arguments = arguments
        self.maintenance = maintenance
    }

    /// The URL borg uses for a client's repository (the same on R as on T).
    public static func url(_ client: ClientConfig) -> String { repository + client.repository }
}

public final class LocalBorgRun: @unchecked Sendable {
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
    private var passphrase: SecretBytes?
    /// init only: a copy for the `borg info` that proves the new repository.
    private var initPassphrase: SecretBytes?

    var exitGrace: TimeInterval = 15
    var drainGrace: TimeInterval = 60
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
                connectorPath: String, canceller: RunCanceller? = nil, progress: ProgressBoard? = nil) throws(RunError) {
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

    // MARK: - Loop state (loop thread only)

    private var b: SSHSession?
    private var channel: SSHChannel?
    private var splice: FdSplice?
    private var events: [ChannelEvents] = []
    private var workDir: String?
    private var listenFD: Int32 = -1
    private var stderrFD: Int32 = -1
    private var pidFD: Int32 = -1
    private var pid: pid_t = 0
    private var exitStatus: Int32?
    private var exitSignal: Int32?
    private var stderrEOF = false
    private var cancelRequested = false
    private var failure: Error?
    private var borgLog: LineCollector!
    private var serverLog: LineCollector!
    private var registered: [Int32: Int16] = [:]

    // MARK: - The run

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
        do {
            try connect()
            report.serverCipher = b?.cipher
            if canceller.takeRequest() {
                cancelRequested = true
            } else {
                progress.update { $0.phase = "running" }
                try start()
                try loop()
            }
        } catch {
            record(error)
        }
        passphrase?.wipe()
        passphrase = nil
        progress.update { $0.phase = "finishing" }
        borgLog.finish()
        serverLog.finish()
        teardown()
        report.finish()
        report.bytesToServer = splice?.up.delivered ?? 0
        report.bytesFromServer = splice?.down.delivered ?? 0
        report.borgExitStatus = exitStatus
        if cancelRequested {
            report.state = .cancelled
            report.error = RunError.cancelled.description
        } else if let f = failure {
            report.state = .failed
            let detail = BackupRun.errorLines(borgLog.tail)
            report.error = "\(f)" + (detail.isEmpty || f is RunError ? "" : " (borg said: \(detail))")
        } else if let sig = exitSignal {
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
        if shape != .none || plan.kind == "key-export", let path = outputPath {
            output = FileManager.default.contents(atPath: path) ?? Data()
        }
        var infoAfterInit: Bool?
        if plan.kind == "init" && bytesToServer > 0 {
            infoAfterInit = readsNewRepository()
        }
        return OperationProof(kind: plan.kind, exitStatus: exitStatus, bytesToServer: bytesToServer, output: output,
                              json: shape, infoAfterInit: infoAfterInit, borgSaid: BackupRun.errorLines(borgLog.tail))
    }

    /// After init: `borg info --json` of the new repository (same key) succeeds and names it.
    private func readsNewRepository() -> Bool {
        let path = FileManager.default.temporaryDirectory.path + "/borg-relay-\(runID)-\(UInt32.random(in: 0...UInt32.max)).info"
        defer { unlink(path) }
        let info = LocalBorgPlan(kind: "info", arguments: ["info", "--json", "--", LocalBorgPlan.repository], maintenance: plan.maintenance)
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

    private func record(_ error: Error) {
        if failure == nil { failure = error }
        logger.error("\(error)")
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
        listenFD = try Self.listen(on: sockPath)

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
        if ssh_channel_open_session(ch.handle) != SSH_OK {
            throw SSHError.channel(host: b.label, what: "opening a session channel", detail: b.lastError)
        }
        if ssh_channel_request_exec(ch.handle, BackupPlan.serveCommand) != SSH_OK {
            throw SSHError.channel(host: b.label, what: "starting borg serve", detail: b.lastError)
        }

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
        var passFD: Int32 = -1
        if let p = passphrase {
            var fds: [Int32] = [0, 0]
            guard relay_pipe_cloexec(&fds) == 0 else { throw RunError.setup("pipe failed: \(String(cString: strerror(errno)))") }
            // The passphrase fits in the pipe's buffer: write it all and close, then borg reads it.
            if plan.kind == "init" { initPassphrase = try? p.copy() }
            let expected = p.count
            let written = p.withUnsafeBytes { Glibc.write(fds[1], $0.baseAddress, $0.count) }
            Glibc.close(fds[1])
            p.wipe()
            passphrase = nil
            guard written == expected else {
                Glibc.close(fds[0])
                throw RunError.setup("handing the passphrase to borg failed")
            }
            passFD = fds[0]
            env["BORG_PASSPHRASE_FD"] = "3"
        }
        defer { if passFD >= 0 { Glibc.close(passFD) } }
        try FileManager.default.createDirectory(atPath: borgBaseDir, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        var errPipe: [Int32] = [0, 0]
        guard relay_pipe_cloexec(&errPipe) == 0 else { throw RunError.setup("pipe failed: \(String(cString: strerror(errno)))") }
        stderrFD = errPipe[0]
        _ = fcntl(stderrFD, F_SETFL, fcntl(stderrFD, F_GETFL) | O_NONBLOCK)
        defer { Glibc.close(errPipe[1]) }
        let argv = [borgPath, "--log-json"] + plan.arguments.map { Self.expand($0, client) }
        logger.info("relay runs: \(Shell.join(argv)) (BORG_RSH=\(rsh))")
        pid = try Self.spawn(argv, env: env, stdoutPath: outputPath, stderrFD: errPipe[1], passphraseFD: passFD)
        pidFD = relay_pidfd_open(pid)
        if pidFD < 0 { throw RunError.setup("pidfd_open failed: \(String(cString: strerror(errno))) (Linux 5.3 or newer is needed)") }
    }

    static func expand(_ arg: String, _ client: ClientConfig) -> String {
        arg.hasPrefix(LocalBorgPlan.repository) && !arg.hasPrefix(LocalBorgPlan.repository + "/")
            ? LocalBorgPlan.url(client) + arg.dropFirst(LocalBorgPlan.repository.count)
            : arg
    }

    // MARK: - Event loop

    private func loop() throws {
        guard let b, let ch = channel else { return }
        guard let event = ssh_event_new() else { throw RunError.setup("ssh_event_new failed") }
        let bh = try b.require()
        b.setBlocking(false)
        ssh_event_add_session(event, bh)
        let me = Unmanaged.passUnretained(self).toOpaque()
        func watch(_ fd: Int32, _ events: Int16) {
            if registered[fd] == events { return }
            if registered[fd] != nil { ssh_event_remove_fd(event, fd); registered[fd] = nil }
            guard fd >= 0, events != 0 else { return }
            ssh_event_add_fd(event, fd, events, { fd, revents, user in
                guard let user else { return 0 }
                Unmanaged<LocalBorgRun>.fromOpaque(user).takeUnretainedValue().ready(fd, revents)
                return 0
            }, me)
            registered[fd] = events
        }
        defer {
            for fd in registered.keys { ssh_event_remove_fd(event, fd) }
            registered.removeAll()
            ssh_event_remove_session(event, bh)
            ssh_event_free(event)
            b.setBlocking(true)
        }
        watch(canceller.fd, Int16(POLLIN))
        watch(listenFD, Int16(POLLIN))
        watch(stderrFD, Int16(POLLIN))
        watch(pidFD, Int16(POLLIN))

        var deadline: Date?
        var tearingDown = false
        var killed = false
        var watchB = KeepaliveWatch(interval: options.keepaliveInterval, count: options.keepaliveCount)
        var nextKeepalive = Date()
        var lastMoved: UInt64 = 0
        var lastProgress = Date()
        while true {
            if cancelRequested && !tearingDown {
                logger.warning("cancel requested: stopping borg on the relay and closing the splice")
                tearingDown = true
                kill(pid, SIGTERM)
                splice?.abort()
                ch.close()
                deadline = Date().addingTimeInterval(exitGrace)
            }
            if Date() >= nextKeepalive {
                switch watchB.check(b, probing: true) {
                case .alive(let at): nextKeepalive = at
                case .dead(let silent):
                    record(SSHError.connectionLost(host: b.label, detail: "no answer to SSH keepalives for \(Int(silent)) s"))
                    nextKeepalive = Date().addingTimeInterval(3600)
                }
            }
            if !b.isAlive && failure == nil {
                record(SSHError.connectionLost(host: b.label, detail: b.lastError))
            }
            if failure != nil && !tearingDown {
                tearingDown = true
                splice?.abort()
                ch.close()
                kill(pid, SIGTERM)
                deadline = Date().addingTimeInterval(exitGrace)
            }
            if let sp = splice {
                sp.pump()
                let moved = sp.up.delivered + sp.down.delivered
                if moved != lastMoved {
                    lastMoved = moved
                    lastProgress = Date()
                    let up = sp.up.delivered, down = sp.down.delivered
                    progress.update { $0.bytesToServer = up; $0.bytesFromServer = down }
                }
                watch(sp.fd, sp.wantedEvents)
                if sp.closed { registered[sp.fd] = nil }  // closed fds leave the event with ssh_event_remove_fd below
            }
            let borgDone = exitStatus != nil || exitSignal != nil
            if borgDone {
                if splice == nil && !ch.localClosed { ch.close() }  // borg never connected
                let spliceDone = splice?.isFinished ?? true
                if spliceDone && stderrEOF { return }
                if !spliceDone && !tearingDown {
                    let until = lastProgress.addingTimeInterval(drainGrace)
                    if deadline.map({ $0 < until }) ?? true { deadline = until }
                }
                if !stderrEOF && deadline == nil { deadline = Date().addingTimeInterval(exitGrace) }
            }
            if let d = deadline, Date() >= d {
                if !borgDone && !killed {
                    logger.warning("borg on the relay did not exit; killing it")
                    kill(pid, SIGKILL)
                    killed = true
                    deadline = Date().addingTimeInterval(exitGrace)
                } else {
                    if !(splice?.isFinished ?? true) { logger.warning("closing the splice: no progress after borg exited") }
                    splice?.abort()
                    ch.close()
                    if borgDone { return }
                    throw RunError.protocolFailure("borg on the relay (pid \(pid)) did not end after SIGKILL")
                }
            }
            let wake = min(deadline ?? nextKeepalive, nextKeepalive)
            let timeout = Int32(max(0, min(3_600_000, wake.timeIntervalSinceNow * 1000)) + 1)
            _ = ssh_event_dopoll(event, timeout)
            if let sp = splice, sp.closed, registered[sp.fd] != nil {
                ssh_event_remove_fd(event, sp.fd)
                registered[sp.fd] = nil
            }
        }
    }

    /// An fd of the loop is ready (called from ssh_event_dopoll on the loop thread).
    private func ready(_ fd: Int32, _ revents: Int32) {
        if fd == canceller.fd {
            _ = canceller.takeRequest()
            cancelRequested = true
        } else if fd == listenFD {
            let conn = relay_accept_cloexec(listenFD)
            guard conn >= 0 else { return }
            if splice != nil {
                Glibc.close(conn)  // single use
                return
            }
            guard let ch = channel else { Glibc.close(conn); return }
            logger.info("borg on the relay connected; splicing it into borg serve on the server")
            splice = FdSplice(fd: conn, channel: ch)
            // One connection only: stop listening at once.
            Glibc.close(listenFD)
            registered[listenFD] = nil  // closed; removed from the event below
            listenFD = -1
        } else if fd == stderrFD {
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    buf.withUnsafeBytes { borgLog.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                    continue
                }
                if n == 0 || (errno != EAGAIN && errno != EINTR) {
                    stderrEOF = true
                    Glibc.close(stderrFD)
                    stderrFD = -1
                }
                break
            }
        } else if fd == pidFD {
            var st: Int32 = 0
            if waitpid(pid, &st, WNOHANG) == pid {
                if st & 0x7f == 0 { exitStatus = (st >> 8) & 0xff } else { exitSignal = st & 0x7f }
                logger.info("borg on the relay exited: \(exitStatus.map { "status \($0)" } ?? "signal \(exitSignal ?? 0)")")
                Glibc.close(pidFD)
                pidFD = -1
            }
        } else if let sp = splice, fd == sp.fd {
            sp.readAvailable()
        }
    }

    // MARK: - Teardown

    private func teardown() {
        if pid > 0 && exitStatus == nil && exitSignal == nil {
            kill(pid, SIGKILL)
            var st: Int32 = 0
            waitpid(pid, &st, 0)
        }
        splice?.abort()
        channel?.free()
        events.removeAll()
        b?.close()
        for fd in [listenFD, stderrFD, pidFD] where fd >= 0 { Glibc.close(fd) }
        listenFD = -1; stderrFD = -1; pidFD = -1
        if let d = workDir {
            unlink(d + "/borg.sock")
            rmdir(d)
        }
    }

    private func install(_ c: SSHChannel, onData: @escaping (UnsafeRawBufferPointer, Bool) -> Int) {
        events.append(ChannelEvents.install(on: c, onData: onData))
    }

    // MARK: - Helpers

    /// A listening unix socket at `path`, mode 0600, non-blocking.
    static func listen(on path: String) throws(RunError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw RunError.setup("socket failed: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            Glibc.close(fd)
            throw RunError.setup("the socket path \(path) is too long; set TMPDIR to a shorter directory")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0, chmod(path, 0o600) == 0, Glibc.listen(fd, 1) == 0 else {
            let e = String(cString: strerror(errno))
            Glibc.close(fd)
            throw RunError.setup("cannot listen on \(path): \(e)")
        }
        return fd
    }

    /// posix_spawn with a clean signal state: stdin /dev/null, stdout to `stdoutPath`
    /// (0600) or /dev/null, stderr to `stderrFD`, and the passphrase pipe as fd 3.
    static func spawn(_ argv: [String], env: [String: String], stdoutPath: String?, stderrFD: Int32,
                      passphraseFD: Int32) throws(RunError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if let out = stdoutPath {
            posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0o600)
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, stderrFD, 2)
        var passFD = passphraseFD
        if passFD == 3 { passFD = fcntl(3, F_DUPFD_CLOEXEC, 10) }  // dup2 onto itself would keep CLOEXEC
        defer { if passFD != passphraseFD { Glibc.close(passFD) } }
        if passFD >= 0 { posix_spawn_file_actions_adddup2(&actions, passFD, 3) }
        // Nothing else of the agent's (SSH sockets of other runs, the control socket) leaks into borg.
        relay_spawn_closefrom(&actions, passFD >= 0 ? 4 : 3)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var all = sigset_t()
        sigfillset(&all)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var cArgs = argv.map { strdup($0) } + [nil]
        var cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, &attr, &cArgs, &cEnv)
        guard rc == 0 else {
            throw RunError.setup("cannot start \(argv[0]) on the relay: \(String(cString: strerror(rc))) (is borg installed on R?)")
        }
        return pid
    }
}
