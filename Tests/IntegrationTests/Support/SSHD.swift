import Foundation
import Testing

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
        process.terminate(grace: 10)
    }

    deinit { stop() }
}
