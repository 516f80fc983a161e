import Foundation
import Testing

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
