import Foundation
import Testing

/// The result of a finished process.
struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var output: String { stdout + stderr }
}

enum Proc {
    /// Directory holding relay-agent and relayctl: RELAY_BIN_DIR, else next to the test binary.
    static let binDir: String = {
        if let d = ProcessInfo.processInfo.environment["RELAY_BIN_DIR"] { return d }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        while dir.path != "/" && !FileManager.default.fileExists(atPath: dir.appendingPathComponent("relay-agent").path) {
            dir = dir.deletingLastPathComponent()
        }
        return dir.path
    }()

    static func binary(_ name: String) throws -> String {
        let p = binDir + "/" + name
        guard FileManager.default.isExecutableFile(atPath: p) else {
            throw FixtureError("\(p) not found: run `swift build` before `swift test`, or set RELAY_BIN_DIR")
        }
        return p
    }

    /// Runs a program to completion (killed after `timeout` seconds) with output in files,
    /// so large output cannot deadlock a pipe.
    @discardableResult
    static func run(_ exe: String, _ args: [String], env: [String: String]? = nil, stdin: Data? = nil,
                    cwd: String? = nil, timeout: TimeInterval = 600) throws -> ProcessResult {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("proc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let outPath = tmp.appendingPathComponent("out").path, errPath = tmp.appendingPathComponent("err").path
        var inPath = "/dev/null"
        if let stdin {
            inPath = tmp.appendingPathComponent("in").path
            try stdin.write(to: URL(fileURLWithPath: inPath))
        }
        let child = try Spawned(exe, args, env: env, stdin: inPath, stdout: outPath, stderr: errPath, cwd: cwd)
        guard let status = child.wait(timeout: timeout) else {
            child.kill(SIGKILL)
            _ = child.wait(timeout: 10)
            throw FixtureError("\(exe) \(args.joined(separator: " ")) did not finish within \(Int(timeout)) s")
        }
        return ProcessResult(status: status,
                             stdout: String(decoding: try Data(contentsOf: URL(fileURLWithPath: outPath)), as: UTF8.self),
                             stderr: String(decoding: try Data(contentsOf: URL(fileURLWithPath: errPath)), as: UTF8.self))
    }

    /// Runs and requires exit 0.
    @discardableResult
    static func check(_ exe: String, _ args: [String], env: [String: String]? = nil, stdin: Data? = nil,
                      cwd: String? = nil) throws -> ProcessResult {
        let r = try run(exe, args, env: env, stdin: stdin, cwd: cwd)
        guard r.status == 0 else {
            throw FixtureError("\(exe) \(args.joined(separator: " ")) exited \(r.status): \(r.output)")
        }
        return r
    }
}

struct FixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A started sshd playing B or T, stopped by PID.
final class SSHD {
    let name: String
    let dir: String
    let port: Int
    let address: String
    private(set) var process: Spawned
    let logPath: String
    var hostPublicKey: String
    private let argv: [String]

    /// `port` nil: a free port; if another process takes it before sshd binds (suites run
    /// in parallel), sshd is started again on another one.
    init(name: String, dir: String, address: String = "127.0.0.1", port fixedPort: Int?, authorizedKeys: String,
         allowForwarding: Bool, extraEnv: String, netns: String? = nil, forwarding: String? = nil) throws {
        self.name = name
        self.dir = dir
        self.address = address
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Proc.check("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "\(name)-host", "-f", "\(dir)/host_key"])
        hostPublicKey = try String(contentsOfFile: "\(dir)/host_key.pub", encoding: .utf8)
            .split(separator: " ").prefix(2).joined(separator: " ")
        try authorizedKeys.write(toFile: "\(dir)/authorized_keys", atomically: true, encoding: .utf8)
        try? FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        logPath = "\(dir)/sshd.log"
        var argv = ["/usr/sbin/sshd", "-D", "-e", "-f", "\(dir)/sshd_config"]
        if let ns = netns { argv = ["/usr/sbin/ip", "netns", "exec", ns] + argv }
        self.argv = argv
        var attempt = 0
        while true {
            attempt += 1
            let port = fixedPort ?? Proc.freePort()
            try Self.writeConfig(dir: dir, port: port, address: address, forwarding: forwarding ?? (allowForwarding ? "remote" : "no"), extraEnv: extraEnv)
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
            do {
                process = try Self.launch(argv, name: name, logPath: logPath)
                self.port = port
                return
            } catch let e as FixtureError where fixedPort == nil && attempt < 5 && e.description.contains("Address already in use") {
                continue
            }
        }
    }

    private static func writeConfig(dir: String, port: Int, address: String, forwarding: String, extraEnv: String) throws {
        let config = """
            Port \(port)
            ListenAddress \(address)
            HostKey \(dir)/host_key
            PidFile \(dir)/sshd.pid
            AuthorizedKeysFile \(dir)/authorized_keys
            UsePAM no
            StrictModes no
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin prohibit-password
            AllowTcpForwarding \(forwarding)
            AllowAgentForwarding no
            X11Forwarding no
            LogLevel VERBOSE
            ClientAliveInterval 5
            ClientAliveCountMax 3
            SetEnv \(extraEnv)

            """
        try config.write(toFile: "\(dir)/sshd_config", atomically: true, encoding: .utf8)
    }

    private static func launch(_ argv: [String], name: String, logPath: String) throws -> Spawned {
        let before = ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").components(separatedBy: "Server listening").count
        let p = try Spawned(argv[0], Array(argv.dropFirst()), stdin: "/dev/null", stdout: "/dev/null", stderr: logPath)
        let deadline = Date().addingTimeInterval(10)
        while true {
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            if log.components(separatedBy: "Server listening").count > before { return p }
            if !p.isRunning() || Date() > deadline {
                p.kill(SIGKILL)
                _ = p.wait(timeout: 5)
                throw FixtureError("sshd \(name) did not start: \(log)")
            }
            usleep(20_000)
        }
    }

    /// Starts sshd again (same port, host key and config) after `stop()`.
    func restart() throws {
        stop()
        process = try Self.launch(argv, name: name, logPath: logPath)
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// known_hosts line pinning this host.
    var knownHostsLine: String { "[\(address)]:\(port) \(hostPublicKey)" }

    /// PIDs of this sshd's session processes (children of the listener).
    func sessionPIDs() -> [Int32] {
        Proc.descendants(of: process.pid).filter { Proc.commandLine($0).hasPrefix("sshd:") && !Proc.commandLine($0).contains("[listener]") }
    }

    func stop() {
        guard process.isRunning() else { return }
        process.kill(SIGTERM)
        if process.wait(timeout: 10) == nil {
            process.kill(SIGKILL)
            _ = process.wait(timeout: 10)
        }
    }

    deinit { stop() }
}

/// A child process started with posix_spawn and reaped with waitpid by this object alone.
final class Spawned {
    let pid: pid_t
    private var status: Int32?

    init(_ exe: String, _ args: [String], env: [String: String]? = nil, stdin: String, stdout: String,
         stderr: String, cwd: String? = nil) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, stdin, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // Default signal dispositions and an empty mask in the child.
        var all = sigset_t()
        sigfillset(&all)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        let environment = (env ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        // A working directory through coreutils' env -C (posix_spawn has no portable chdir).
        let argv = cwd.map { ["/usr/bin/env", "-C", $0, exe] } ?? [exe]
        let program = argv[0]
        var cArgs = (argv + args).map { strdup($0) } + [nil]
        var cEnv = environment.map { strdup($0) } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var p: pid_t = 0
        let rc = posix_spawn(&p, program, &actions, &attr, &cArgs, &cEnv)
        guard rc == 0 else { throw FixtureError("cannot start \(exe): \(String(cString: strerror(rc)))") }
        pid = p
    }

    func isRunning() -> Bool {
        if status != nil { return false }
        var st: Int32 = 0
        if waitpid(pid, &st, WNOHANG) == pid { status = Self.decode(st); return false }
        return true
    }

    /// Exit status (128+signal when killed), or nil on timeout.
    func wait(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning() {
            if Date() > deadline { return nil }
            usleep(10_000)
        }
        return status
    }

    func kill(_ sig: Int32) {
        if status == nil { Glibc.kill(pid, sig) }
    }

    private static func decode(_ st: Int32) -> Int32 {
        let sig = st & 0x7f
        return sig == 0 ? (st >> 8) & 0xff : 128 + sig
    }

    deinit {
        if isRunning() {
            kill(SIGKILL)
            _ = wait(timeout: 5)
        }
    }
}

extension Proc {
    static func commandLine(_ pid: Int32) -> String {
        guard let d = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "" }
        return String(decoding: d.map { $0 == 0 ? 32 : $0 }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
    }

    /// Direct children of `pid`, from /proc.
    static func children(of pid: Int32) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var out: [Int32] = []
        for e in entries {
            guard let p = Int32(e),
                  let stat = try? String(contentsOfFile: "/proc/\(e)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, Int32(fields[1]) == pid { out.append(p) }
        }
        return out
    }

    /// All descendants of `pid`.
    static func descendants(of pid: Int32) -> [Int32] {
        var all: [Int32] = []
        var queue = [pid]
        while let p = queue.popLast() {
            let c = children(of: p)
            all += c
            queue += c
        }
        return all
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// True if something accepts TCP connections on 127.0.0.1:port.
    static func canConnect(port: Int, host: String = "127.0.0.1") -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr(host)
        addr.sin_port = UInt16(port).bigEndian
        let rc = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return rc == 0
    }
}

/// A relay setup on this machine: B and T as two sshd on loopback, a repository on B,
/// keys and known_hosts for R, a sealed passphrase and a config. Removed by `close()`.
final class Sandbox {
    let dir: String
    let user: String
    let b: SSHD
    let t: SSHD
    let repo: String
    let passphrase: String
    let configPath: String
    var clientExtra: [String] = []
    /// The client's `borg_path` (nil: not written).
    var tBorg: String?
    /// The borg `borg(_:)` runs on this machine.
    var localBorg: String
    var relayExtra: [String] = []
    /// Lines for [servers.vault].
    var serverExtra: [String] = []
    /// Raw TOML appended to the config (more clients, say).
    var extraTables: [String] = []
    var paths: [String]
    /// The login on T, when not the user running the tests.
    var clientUser: String?
    /// Jump hosts made by `addJump` (stopped with the sandbox).
    var jumps: [SSHD] = []

    /// `netns`: names of namespaces for B and T (sshd runs inside them) and the addresses
    /// R uses to reach them; nil for plain loopback.
    /// `multiRepo`: B's key may serve any repository under `dir/b` (for several clients).
    /// `maintenance`: B also has a maintenance key (borg serve without --append-only).
    /// `tPath`: PATH for sessions on T (e.g. one without socat).
    /// `bBorg`: the borg B's forced commands run (`Borgs.v14` for borg 1.4); `tBorg`: the
    /// client's `borg_path` on T (nil: the key is not written, T runs `borg`); `localBorg`:
    /// the test's own borg that creates the repository and reads it back.
    init(name: String, netns: (b: String, bAddr: String, t: String, tAddr: String)? = nil,
         initRepo: Bool = true, multiRepo: Bool = false, maintenance: Bool = false, tPath: String? = nil,
         bBorg: String = "borg", tBorg: String? = nil, localBorg: String = Borgs.system) throws {
        self.tBorg = tBorg
        self.localBorg = localBorg
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("borg-relay-it-\(name)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        chmod(dir, 0o755)
        user = String(cString: getpwuid(geteuid())!.pointee.pw_name)
        // A passphrase unique to this sandbox, so a match anywhere can only be a leak.
        passphrase = "pp-" + UUID().uuidString.replacingOccurrences(of: "-", with: "") + "-zQ"
        repo = "\(dir)/b/repo"
        let keys = "\(dir)/relay/keys"
        try FileManager.default.createDirectory(atPath: keys, withIntermediateDirectories: true)
        try Proc.check("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "relay-to-b", "-f", "\(keys)/b"])
        try Proc.check("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "relay-to-t", "-f", "\(keys)/t"])
        let bPub = try String(contentsOfFile: "\(keys)/b.pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        var maintLine = ""
        var extraServer: [String] = []
        if maintenance {
            try Proc.check("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "relay-to-b-maint", "-f", "\(keys)/b-maint"])
            let mPub = try String(contentsOfFile: "\(keys)/b-maint.pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            maintLine = "command=\"\(bBorg) serve --restrict-to-repository \(dir)/b/repo\",restrict \(mPub)\n"
            extraServer.append("maintenance_key = \"\(keys)/b-maint\"")
        }
        let tPub = try String(contentsOfFile: "\(keys)/t.pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        b = try SSHD(name: "b", dir: "\(dir)/b", address: netns?.bAddr ?? "127.0.0.1", port: netns == nil ? nil : 22,
                     authorizedKeys: "command=\"\(bBorg) serve --append-only \(multiRepo ? "--restrict-to-path \(dir)/b" : "--restrict-to-repository \(repo)")\",restrict \(bPub)\n" + maintLine,
                     allowForwarding: false, extraEnv: "BORG_BASE_DIR=\(dir)/b/borg-base", netns: netns?.b)
        t = try SSHD(name: "t", dir: "\(dir)/t", address: netns?.tAddr ?? "127.0.0.1", port: netns == nil ? nil : 22,
                     authorizedKeys: "restrict,port-forwarding,permitlisten=\"127.0.0.1:*\",permitopen=\"127.0.0.1:9\" \(tPub)\n",
                     allowForwarding: true, extraEnv: "BORG_BASE_DIR=\(dir)/t/borg-base" + (tPath.map { " PATH=\($0)" } ?? ""), netns: netns?.t)
        configPath = "\(dir)/relay/relay.toml"
        paths = ["\(dir)/t/data"]
        try (b.knownHostsLine + "\n" + t.knownHostsLine + "\n").write(toFile: knownHosts, atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: "\(dir)/t/data", withIntermediateDirectories: true)
        serverExtra = extraServer
        if initRepo {
            try borg(["init", "--encryption=repokey-blake2", repo])
        }
        try Proc.check(try Proc.binary("relayctl"), ["vault", "init", "--config", try writeConfig(sealed: nil)])
    }

    var knownHosts: String { "\(dir)/relay/known_hosts" }
    var stateDir: String { "\(dir)/relay/state" }
    var dataDir: String { "\(dir)/t/data" }

    /// Writes the config; `sealed` is the client's passphrase value.
    @discardableResult
    func writeConfig(sealed: String?, extraClient: [String] = []) throws -> String {
        func q(_ s: String) -> String {
            "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n") + "\""
        }
        var text = """
            [relay]
            state_dir = \(q(stateDir))
            known_hosts = \(q(knownHosts))
            connect_timeout = 20
            \(relayExtra.joined(separator: "\n"))

            [servers.vault]
            host = \(q(b.address))
            port = \(b.port)
            user = \(q(user))
            key = \(q(dir + "/relay/keys/b"))
            \(serverExtra.joined(separator: "\n"))

            [clients.web1]
            host = \(q(t.address))
            port = \(t.port)
            user = \(q(clientUser ?? user))
            key = \(q(dir + "/relay/keys/t"))
            server = "vault"
            repository = \(q(repo))
            paths = [\(paths.map(q).joined(separator: ", "))]
            compression = "lz4"
            archive = "test-{now:%Y-%m-%dT%H:%M:%S.%f}"

            """
        if let s = sealed { text += "passphrase = \(q(s))\n" }
        if let b = tBorg { text += "borg_path = \(q(b))\n" }
        for line in clientExtra + extraClient { text += line + "\n" }
        for table in extraTables { text += "\n" + table + "\n" }
        try FileManager.default.createDirectory(atPath: "\(dir)/relay", withIntermediateDirectories: true)
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
        return configPath
    }

    /// Seals `passphrase` (default: the sandbox's) with relayctl and writes the config.
    func configure(passphrase p: String? = nil) throws {
        let r = try Proc.check(try Proc.binary("relayctl"), ["seal", "--config", configPath],
                               stdin: Data((p ?? passphrase).utf8))
        try writeConfig(sealed: r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Runs `relay-agent run web1`.
    func runAgent(_ extra: [String] = [], netns: String? = nil) throws -> ProcessResult {
        let agent = try Proc.binary("relay-agent")
        if let ns = netns {
            return try Proc.run("/usr/sbin/ip", ["netns", "exec", ns, agent, "run", "web1", "--config", configPath] + extra)
        }
        return try Proc.run(agent, ["run", "web1", "--config", configPath] + extra)
    }

    /// Local borg against B's repository; the passphrase goes in on stdin (BORG_PASSPHRASE_FD=0).
    @discardableResult
    func borg(_ args: [String], cwd: String? = nil, passphrase p: String? = nil) throws -> ProcessResult {
        var env = ProcessInfo.processInfo.environment
        env["BORG_BASE_DIR"] = "\(dir)/check-borg-base"
        env["BORG_PASSPHRASE_FD"] = "0"
        env.removeValue(forKey: "BORG_PASSPHRASE")
        return try Proc.check(localBorg, args, env: env, stdin: Data((p ?? passphrase).utf8), cwd: cwd)
    }

    /// Archive names in the repository.
    func archives() throws -> [String] {
        try borg(["list", "--short", repo]).stdout.split(separator: "\n").map(String.init)
    }

    /// Every file of the repository on B (lock files aside) with its size and mtime, to
    /// prove that something wrote nothing.
    func repositoryFiles() throws -> [String: String] {
        var files: [String: String] = [:]
        let e = FileManager.default.enumerator(atPath: repo)
        while let rel = e?.nextObject() as? String {
            guard !rel.hasPrefix("lock") else { continue }
            var st = stat()
            guard lstat("\(repo)/\(rel)", &st) == 0 else { continue }
            files[rel] = "\(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
        }
        return files
    }

    /// Paths in an archive, exactly as stored (NUL-separated, so newlines survive).
    func archivePaths(_ archive: String) throws -> [String] {
        let out = try borg(["list", "--format", "{path}{NUL}", "\(repo)::\(archive)"]).stdout
        return out.split(separator: "\0").map(String.init)
    }

    /// Starts `relay-agent run web1` in the background (output to `output`) and waits up to
    /// 20 s until borg create runs on T; `sawBorg` tells whether it did.
    func startAgentUntilBorgRuns(output: String) throws -> (agent: Spawned, sawBorg: Bool) {
        let agent = try Spawned(try Proc.binary("relay-agent"), ["run", "web1", "--config", configPath],
                                stdin: "/dev/null", stdout: output, stderr: output)
        for _ in 0..<400 {
            if Proc.descendants(of: t.process.pid).contains(where: { Proc.commandLine($0).contains("ssh://borg-relay") }) {
                return (agent, true)
            }
            usleep(50_000)
        }
        return (agent, false)
    }

    /// Waits up to `seconds` until the given hosts have no session process; returns the
    /// PIDs still left per host name (empty when all are gone).
    func sessionsLeft(on hosts: [SSHD], within seconds: Double) -> [String: [Int32]] {
        var left: [String: [Int32]] = [:]
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            left = [:]
            for h in hosts {
                let pids = h.sessionPIDs()
                if !pids.isEmpty { left[h.name] = pids }
            }
            if left.isEmpty { break }
            usleep(50_000)
        } while Date() < deadline
        return left
    }

    /// A second client on the same T, with its own repository on B (needs `multiRepo`)
    /// and data directory; returns its data directory.
    @discardableResult
    func addClient(_ name: String, sealed: String?) throws -> String {
        let repo2 = "\(dir)/b/repo-\(name)"
        let data = "\(dir)/t/data-\(name)"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        try borg(["init", "--encryption=repokey-blake2", repo2])
        extraTables.append("""
            [clients.\(name)]
            host = "\(t.address)"
            port = \(t.port)
            user = "\(user)"
            key = "\(dir)/relay/keys/t"
            server = "vault"
            repository = "\(repo2)"
            paths = ["\(data)"]
            compression = "lz4"
            archive = "\(name)-{now:%Y-%m-%dT%H:%M:%S.%f}"
            \(sealed.map { "passphrase = \"\($0)\"" } ?? "")
            """)
        return data
    }

    /// A jump host: its own sshd (TCP forwarding "local" only) whose authorized_keys lets
    /// the relay's key `keys/NAME` open tunnels to `permitOpen` ("HOST:PORT") only; pinned
    /// in known_hosts. Add it to the config with `jumpTable`.
    func addJump(_ name: String, permitOpen: String, netns: String? = nil, address: String = "127.0.0.1") throws -> SSHD {
        let keys = "\(dir)/relay/keys"
        try Proc.check("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "relay-to-\(name)", "-f", "\(keys)/\(name)"])
        let pub = try String(contentsOfFile: "\(keys)/\(name).pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let j = try SSHD(name: name, dir: "\(dir)/\(name)", address: address, port: netns == nil ? nil : 22,
                         authorizedKeys: "restrict,port-forwarding,permitopen=\"\(permitOpen)\" \(pub)\n",
                         allowForwarding: false, extraEnv: "X=1", netns: netns, forwarding: "local")
        jumps.append(j)
        let pinned = (try? String(contentsOfFile: knownHosts, encoding: .utf8)) ?? ""
        try (pinned + j.knownHostsLine + "\n").write(toFile: knownHosts, atomically: true, encoding: .utf8)
        return j
    }

    /// `[jumps.NAME]` for a jump made by `addJump`.
    func jumpTable(_ j: SSHD, via: [String] = []) -> String {
        """
        [jumps.\(j.name)]
        host = "\(j.address)"
        port = \(j.port)
        user = "\(user)"
        key = "\(dir)/relay/keys/\(j.name)"
        \(via.isEmpty ? "" : "via = [\(via.map { "\"\($0)\"" }.joined(separator: ", "))]")
        """
    }

    /// The sealed value of the sandbox's passphrase.
    func sealed() throws -> String {
        try Proc.check(try Proc.binary("relayctl"), ["seal", "--config", configPath],
                       stdin: Data(passphrase.utf8)).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Replaces the data file `name` by a small file (for a quick follow-up run).
    func replaceWithSmallData(removing name: String) throws {
        try FileManager.default.removeItem(atPath: "\(dataDir)/\(name)")
        try Data("small".utf8).write(to: URL(fileURLWithPath: "\(dataDir)/small"))
    }

    func close() {
        t.stop()
        b.stop()
        jumps.forEach { $0.stop() }
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// The borg executables a test can put on B, on T and on this machine.
enum Borgs {
    /// Debian 12's borg (1.2.4).
    static let system = "/usr/bin/borg"

    /// The release scripts/borg14 builds (BORG14_VERSION, default 1.4.5).
    static let v14Version = ProcessInfo.processInfo.environment["BORG14_VERSION"] ?? "1.4.5"

    /// borg 1.4 in the venv scripts/borg14 builds and caches: RELAY_BORG14 (scripts/test sets
    /// it), else the script's cache for this user (BORG_RELAY_CACHE, /var/cache/borg-relay-tests
    /// as root, ~/.cache/borg-relay otherwise); nil when it is not there or its build did not finish.
    static let v14: String? = {
        let env = ProcessInfo.processInfo.environment
        if let p = env["RELAY_BORG14"], !p.isEmpty {
            return FileManager.default.isExecutableFile(atPath: p) ? p : nil
        }
        let cache = env["BORG_RELAY_CACHE"]
            ?? (geteuid() == 0 ? "/var/cache/borg-relay-tests"
                : (env["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")) + "/borg-relay")
        let venv = "\(cache)/borg-\(v14Version)"
        guard FileManager.default.fileExists(atPath: "\(venv)/.complete"),
              FileManager.default.isExecutableFile(atPath: "\(venv)/bin/borg") else { return nil }
        return "\(venv)/bin/borg"
    }()

    /// Why the borg 1.4 tests are skipped when `v14` is nil.
    static let v14Missing = "borg \(v14Version) venv not found: scripts/borg14 builds it (scripts/test runs it unless SKIP_BORG14=1)"
}

/// Compares two trees: names, types, file bytes, symlink targets.
enum TreeCompare {
    static func differences(_ a: String, _ b: String) -> [String] {
        var diffs: [String] = []
        let fm = FileManager.default
        func walk(_ rel: String) {
            let pa = a + rel, pb = b + rel
            var sa = stat(), sb = stat()
            guard lstat(pa, &sa) == 0 else { diffs.append("missing in original: \(rel)"); return }
            guard lstat(pb, &sb) == 0 else { diffs.append("missing in copy: \(rel)"); return }
            let ta = sa.st_mode & S_IFMT, tb = sb.st_mode & S_IFMT
            guard ta == tb else { diffs.append("type differs: \(rel)"); return }
            switch ta {
            case S_IFDIR:
                let ea = Set((try? fm.contentsOfDirectory(atPath: pa)) ?? [])
                let eb = Set((try? fm.contentsOfDirectory(atPath: pb)) ?? [])
                for extra in eb.subtracting(ea) { diffs.append("extra in copy: \(rel)/\(extra)") }
                for e in ea.sorted() { walk(rel + "/" + e) }
            case S_IFLNK:
                if (try? fm.destinationOfSymbolicLink(atPath: pa)) != (try? fm.destinationOfSymbolicLink(atPath: pb)) {
                    diffs.append("symlink target differs: \(rel)")
                }
            case S_IFREG:
                if sa.st_size != sb.st_size || !sameBytes(pa, pb) { diffs.append("content differs: \(rel)") }
            default:
                break
            }
        }
        walk("")
        return diffs
    }

    static func sameBytes(_ a: String, _ b: String) -> Bool {
        guard let ha = FileHandle(forReadingAtPath: a), let hb = FileHandle(forReadingAtPath: b) else { return false }
        defer { try? ha.close(); try? hb.close() }
        while true {
            let da = ha.readData(ofLength: 1 << 20), db = hb.readData(ofLength: 1 << 20)
            if da != db { return false }
            if da.isEmpty { return true }
        }
    }
}

/// Writes `count` random (incompressible) bytes from /dev/urandom to `path`.
func writeRandomFile(_ path: String, count: Int) throws {
    guard FileManager.default.createFile(atPath: path, contents: nil),
          let src = FileHandle(forReadingAtPath: "/dev/urandom") else {
        throw FixtureError("cannot create \(path)")
    }
    let dst = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    defer { try? src.close(); try? dst.close() }
    var left = count
    while left > 0 {
        let chunk = src.readData(ofLength: min(left, 1 << 20))
        guard !chunk.isEmpty else { throw FixtureError("/dev/urandom returned nothing") }
        dst.write(chunk)
        left -= chunk.count
    }
}
