import Foundation
import RelayCore
import Testing

/// `relayctl config show`, `config validate` and `--version`, run as a user would (the real
/// binaries), on the shipped example and on each class of mistake.
@Suite("relayctl config show / validate and --version (the real binaries)")
struct ConfigCommandTests {
    static var example: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("contrib/relay.toml.example").path
    }

    static func ctl(_ args: [String]) throws -> ProcessResult {
        try Proc.run(try Proc.binary("relayctl"), args, timeout: 60)
    }

    @Test("both binaries print the one version")
    func version() throws {
        for exe in ["relayctl", "relay-agent"] {
            let r = try Proc.run(try Proc.binary(exe), ["--version"], timeout: 30)
            #expect(r.status == 0 && r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == RelayVersion.current, "\(exe): \(r.output)")
        }
    }

    @Test("show on the example: every default filled in, TOML the loader reads back and JSON; validate names the missing key file and exits 2")
    func example() throws {
        let show = try Self.ctl(["config", "show", "--config", Self.example])
        #expect(show.status == 0, "\(show.output)")
        #expect(show.stdout.contains("[clients.web1]") && show.stdout.contains("auth_timeout = 30") && show.stdout.contains("transport = \"tcp\""), "\(show.stdout)")
        let original = try ConfigLoader.load(path: Self.example, checkFiles: false)
        #expect(try ConfigLoader.parse(show.stdout, file: original.file, checkFiles: false) == original)
        let json = try Self.ctl(["config", "show", "--json", "--config", Self.example])
        let o = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], "\(json.output)")
        #expect((o["relay"] as? [String: Any])?["retry_delay"] as? Int == 10)
        // The example names files that exist only on a real R (known_hosts, the keys).
        let v = try Self.ctl(["config", "validate", "--config", Self.example])
        #expect(v.status == 2 && v.stderr.contains("cannot read '/etc/borg-relay/"), "\(v.output)")
    }

    @Test("validate: 0 on a good config; 2 naming the file, the table, the key and the fix for each class of mistake", arguments: [
        ("syntax", "[relay\n", "relay.toml"),
        ("unknown key", "[relay]\nstate_dir = \"/tmp\"\nmax_paralel = 3\n", "max_paralel"),
        ("wrong type", "[relay]\nmax_parallel = \"four\"\n", "max_parallel"),
        ("invalid value", "[relay]\nmax_parallel = 0\n", "max_parallel"),
        ("relative path", "[relay]\nstate_dir = \"state\"\n", "state_dir"),
        ("unknown reference", "[relay]\n[servers.b]\nhost = \"b\"\nuser = \"u\"\nkey = \"KEY\"\n[clients.c]\nhost = \"t\"\nuser = \"u\"\nkey = \"KEY\"\nserver = \"nope\"\nrepository = \"/r\"\npaths = [\"/\"]\n", "nope"),
        ("unreadable key", "[relay]\n[servers.b]\nhost = \"b\"\nuser = \"u\"\nkey = \"/nonexistent/key\"\n", "/nonexistent/key"),
    ])
    func validate(_ kind: String, _ body: String, _ named: String) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key = "\(dir)/key"
        _ = FileManager.default.createFile(atPath: key, contents: Data("k".utf8), attributes: [.posixPermissions: 0o600])
        let known = "\(dir)/known_hosts"
        _ = FileManager.default.createFile(atPath: known, contents: Data())
        let path = "\(dir)/relay.toml"
        try body.replacingOccurrences(of: "KEY", with: key).replacingOccurrences(of: "[relay]\n", with: "[relay]\nknown_hosts = \"\(known)\"\n")
            .write(toFile: path, atomically: true, encoding: .utf8)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let r = try Self.ctl(["config", "validate", "--config", path])
        #expect(r.status == 2, "\(kind): \(r.output)")
        #expect(r.stderr.contains(named) && r.stderr.contains(path), "\(kind): \(r.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == bytes, "validate changed the file")
        // The same config, mended, is valid.
        try "[relay]\nstate_dir = \"\(dir)/state\"\nknown_hosts = \"\(known)\"\n[servers.b]\nhost = \"b\"\nuser = \"u\"\nkey = \"\(key)\"\n".write(toFile: path, atomically: true, encoding: .utf8)
        let ok = try Self.ctl(["config", "validate", "--config", path])
        #expect(ok.status == 0 && ok.stdout.contains("valid (1 server(s), 0 client(s)"), "\(ok.output)")
    }
}
