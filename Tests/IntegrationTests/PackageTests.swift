import Foundation
import Testing

/// The Debian package built by scripts/package, installed on this machine: it runs without
/// the Swift toolchain, its unit verifies, lintian has no error, purge leaves nothing of it.
/// Needs the .deb (RELAY_DEB=PATH, from scripts/package, about 15 minutes of cold release build)
/// and root: scripts/test (as root, no arguments) and scripts/test-package build it and run this;
/// without them it says so and does nothing.
@Suite("Debian package (scripts/package): install, run without Swift, lintian, purge", .serialized)
struct PackageTests {
    static var deb: String? { ProcessInfo.processInfo.environment["RELAY_DEB"] }

    @Test("install with apt, run both binaries with no toolchain in reach, verify the unit, lintian clean, purge leaves no file of the package",
          .enabled(if: PackageTests.deb != nil && geteuid() == 0, "needs RELAY_DEB (a .deb from scripts/package) and root: scripts/test as root and scripts/test-package build the package and run this"))
    func installAndPurge() throws {
        let deb = try #require(Self.deb)
        let env = ["DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
        let lint = try Proc.run("/usr/bin/lintian", [deb], env: env)
        #expect(lint.status == 0, "lintian: \(lint.output)")
        #expect(!lint.stdout.contains("E: ") && !lint.stdout.contains("W: "), "\(lint.stdout)")
        let install = try Proc.run("/usr/bin/apt-get", ["install", "-y", "-qq", deb], env: env)
        #expect(install.status == 0, "\(install.output)")
        defer { _ = try? Proc.run("/usr/bin/apt-get", ["purge", "-y", "-qq", "borg-relay"], env: env) }
        for exe in ["/usr/bin/relayctl", "/usr/bin/relay-agent"] {
            let v = try Proc.run(exe, ["--version"], env: ["PATH": "/usr/bin:/bin"])
            #expect(v.status == 0 && !v.stdout.isEmpty, "\(exe): \(v.output)")
            let ldd = try Proc.run("/usr/bin/ldd", [exe])
            #expect(ldd.status == 0 && !ldd.stdout.contains("/opt/swift") && !ldd.stdout.contains("not found"), "\(ldd.stdout)")
            #expect(!ldd.stdout.contains("libswift") && !ldd.stdout.contains("libFoundation"), "\(ldd.stdout)")
            // No search path into a toolchain, and full RELRO.
            let dyn = try Proc.run("/usr/bin/readelf", ["-d", exe]).stdout
            #expect(!dyn.contains("/opt/swift") && dyn.contains("BIND_NOW"), "\(dyn)")
        }
        // The packaged config is the example with every client commented out: it parses, and
        // validate names the one thing an operator must do first (the server's key pair).
        let validate = try Proc.run("/usr/bin/relayctl", ["config", "validate"], env: ["PATH": "/usr/bin:/bin"])
        #expect(validate.status == 2 && validate.stderr.contains("ssh-keygen -t ed25519"), "\(validate.output)")
        let clients = try Proc.run("/usr/bin/relayctl", ["config", "show", "--json"], env: ["PATH": "/usr/bin:/bin"])
        #expect(clients.status == 0 && clients.stdout.contains("\"vault\"") && !clients.stdout.contains("web1.example.net"), "\(clients.output)")
        let verify = try Proc.run("/usr/bin/systemd-analyze", ["verify", "/lib/systemd/system/relay-agent.service"], env: env)
        #expect(verify.status == 0, "\(verify.output)")
        #expect(FileManager.default.fileExists(atPath: "/usr/share/man/man1/relayctl.1.gz"))
        #expect(FileManager.default.fileExists(atPath: "/usr/share/bash-completion/completions/relayctl"))
        let files = try Proc.run("/usr/bin/dpkg", ["-L", "borg-relay"]).stdout.split(separator: "\n").map(String.init)
        let purge = try Proc.run("/usr/bin/apt-get", ["purge", "-y", "-qq", "borg-relay"], env: env)
        #expect(purge.status == 0, "\(purge.output)")
        var isDir: ObjCBool = false
        let left = files.filter { FileManager.default.fileExists(atPath: $0, isDirectory: &isDir) && !isDir.boolValue }
        #expect(left.isEmpty, "left after purge: \(left)")
        #expect(!FileManager.default.fileExists(atPath: "/etc/borg-relay"), "/etc/borg-relay is left")
    }
}
