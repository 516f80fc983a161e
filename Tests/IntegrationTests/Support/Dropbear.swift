import Foundation
import Testing

/// True when Debian's dropbear-bin is installed (scripts/setup installs it).
let dropbearInstalled = FileManager.default.isExecutableFile(atPath: "/usr/sbin/dropbear")

/// A Dropbear server on loopback playing T, stopped by PID. Dropbear reads the
/// authorized_keys of the login (~/.ssh/authorized_keys) and has no option to point
/// elsewhere, so with `login` a throwaway local user is created (useradd) whose home is in
/// `dir`, and removed by `stop()`. The commands it runs get the login's environment (no
/// SetEnv in Dropbear): HOME is in the sandbox, so borg's base directory is too.
final class Dropbear {
    let dir: String
    let address = "127.0.0.1"
    let port: Int
    let process: Spawned
    let logPath: String
    /// The host key's public half ("ssh-rsa AAAA…" or "ssh-ed25519 AAAA…").
    let hostPublicKey: String
    /// The login and its home, when made with `login: true`.
    let user: String?
    let home: String?
    private var removed = false

    /// `keyType`: "ed25519" or "rsa" (an RSA-only Dropbear signs with rsa-sha2-256/ssh-rsa).
    init(name: String, dir: String, keyType: String = "ed25519", login: Bool) throws {
        self.dir = dir
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        chmod(dir, 0o755)
        var keyArgs = ["-t", keyType, "-f", "\(dir)/host_key"]
        if keyType == "rsa" { keyArgs += ["-s", "2048"] }
        try Proc.check("/usr/bin/dropbearkey", keyArgs)
        hostPublicKey = try Proc.check("/usr/bin/dropbearkey", ["-y", "-f", "\(dir)/host_key"]).stdout
            .split(separator: "\n").first { $0.hasPrefix("ssh-") }.map { $0.split(separator: " ").prefix(2).joined(separator: " ") } ?? ""
        if login {
            // A short unique name (useradd allows 32 characters).
            let u = "brdb\(UUID().uuidString.prefix(8).lowercased())"
            let h = "\(dir)/home"
            try Proc.check("/usr/sbin/useradd", ["-M", "-d", h, "-s", "/bin/sh", u])
            user = u
            home = h
            try FileManager.default.createDirectory(atPath: "\(h)/.ssh", withIntermediateDirectories: true)
            try Proc.check("/bin/chown", ["-R", "\(u):\(u)", h])
            chmod(h, 0o700)
            chmod("\(h)/.ssh", 0o700)
        } else {
            user = nil
            home = nil
        }
        logPath = "\(dir)/dropbear.log"
        var started: (Spawned, Int)?
        for _ in 0..<5 where started == nil {
            let p = Proc.freePort()
            let proc = try Spawned("/usr/sbin/dropbear", ["-F", "-E", "-s", "-r", "\(dir)/host_key", "-p", "\(address):\(p)", "-P", "\(dir)/dropbear.pid"],
                                   stdin: "/dev/null", stdout: "/dev/null", stderr: logPath)
            for _ in 0..<200 where proc.isRunning() && !Proc.canConnect(port: p) { usleep(25_000) }
            if proc.isRunning() && Proc.canConnect(port: p) {
                started = (proc, p)
            } else {
                proc.kill(SIGKILL)
                _ = proc.wait(timeout: 5)
            }
        }
        guard let (proc, p) = started else {
            if let u = user { _ = try? Proc.run("/usr/sbin/userdel", [u]) }
            throw FixtureError("dropbear \(name) did not listen: \((try? String(contentsOfFile: "\(dir)/dropbear.log", encoding: .utf8)) ?? "")")
        }
        process = proc
        port = p
    }

    /// Replaces the login's ~/.ssh/authorized_keys (owned by the login, 0600: Dropbear
    /// ignores a file others can write).
    func setAuthorizedKeys(_ text: String) throws {
        guard let u = user, let h = home else { throw FixtureError("this Dropbear has no login") }
        let path = "\(h)/.ssh/authorized_keys"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        try Proc.check("/bin/chown", ["\(u):\(u)", path])
        chmod(path, 0o600)
    }

    /// A directory in the login's home, owned by the login (e.g. a restore target's parent).
    func ownedDirectory(_ name: String) throws -> String {
        guard let u = user, let h = home else { throw FixtureError("this Dropbear has no login") }
        let path = "\(h)/\(name)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try Proc.check("/bin/chown", ["\(u):\(u)", path])
        return path
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// known_hosts line pinning this host.
    var knownHostsLine: String { "[\(address)]:\(port) \(hostPublicKey)" }

    /// Stops Dropbear (its session processes end with their connections) and removes the login.
    func stop() {
        if process.isRunning() {
            process.kill(SIGTERM)
            if process.wait(timeout: 10) == nil {
                process.kill(SIGKILL)
                _ = process.wait(timeout: 10)
            }
        }
        if let u = user, !removed {
            removed = true
            // Session children of Dropbear run as the login; userdel refuses while one lives.
            for _ in 0..<100 {
                if (try? Proc.run("/usr/sbin/userdel", [u]))?.status == 0 { break }
                usleep(100_000)
            }
        }
    }

    deinit { stop() }
}
