import Foundation
import RelayCore
import Testing

/// `relayctl add-client` end to end against real sshd and borg: from a config with only
/// [relay] and one server to a successful backup, using only what relayctl printed; and
/// every interrupted enrolment leaves the config byte-identical and no key behind.
@Suite("relayctl add-client (real sshd, real borg)", .serialized)
struct AddClientTests {
    /// A config with [relay] and the sandbox's server only; known_hosts pins B only.
    static func bareConfig(_ s: Sandbox) throws -> String {
        let path = "\(s.dir)/relay/bare.toml"
        let known = "\(s.dir)/relay/bare_known_hosts"
        try (s.b.knownHostsLine + "\n").write(toFile: known, atomically: true, encoding: .utf8)
        try """
            # The relay's config: a comment that must survive.
            [relay]
            state_dir = "\(s.stateDir)"
            known_hosts = "\(known)"   # pinned keys

            [servers.vault]
            host = "\(s.b.address)"
            port = \(s.b.port)
            user = "\(s.user)"
            key = "\(s.dir)/relay/keys/b"
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func addClient(_ s: Sandbox, config: String, name: String = "web2", repository: String? = nil, yes: Bool = true,
                          extra: [String] = []) throws -> ProcessResult {
        try Proc.run(try Proc.binary("relayctl"), [
            "add-client", name, "--host", s.t.address, "--port", "\(s.t.port)", "--user", s.user,
            "--server", "vault", "--repository", repository ?? s.repo, "--paths", s.dataDir, "--config", config,
        ] + (yes ? ["--yes"] : []) + extra, stdin: Data(s.passphrase.utf8), timeout: 120)
    }

    /// The first non-comment line after the comment that starts with `marker`.
    static func line(after marker: String, in output: String) -> String? {
        let lines = output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let i = lines.firstIndex(where: { $0.hasPrefix(marker) }) else { return nil }
        return lines[(i + 1)...].first { !$0.hasPrefix("#") && !$0.isEmpty }
    }

    @Test("from [relay] and one server to a proven backup with only relayctl's output pasted into authorized_keys; comments kept; the key is 0600")
    func endToEnd() throws {
        let s = try Sandbox(name: "addclient")
        defer { s.close() }
        try writeRandomFile("\(s.dataDir)/f.bin", count: 300 * 1024)
        let config = try Self.bareConfig(s)
        let before = try String(contentsOfFile: config, encoding: .utf8)
        let r = try Self.addClient(s, config: config)
        #expect(r.status == 0, "\(r.output)")
        #expect(r.stderr.contains("SHA256:"), "the fingerprints are shown: \(r.stderr)")
        #expect(!r.output.contains(s.passphrase))
        let after = try String(contentsOfFile: config, encoding: .utf8)
        #expect(after.hasPrefix(before), "the rest of the config was touched")
        #expect(after.contains("[clients.web2]") && after.contains("passphrase = \"sealed:"), "\(after)")
        #expect(!after.contains(s.passphrase))
        let key = "\(s.dir)/relay/keys/web2"
        var st = stat()
        #expect(stat(key, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(r.stdout.contains("relayctl check web2"))

        // Paste the printed lines: B's append-only line, T's OpenSSH line.
        let bLine = try #require(r.stdout.split(separator: "\n").map(String.init).first { !$0.hasPrefix("#") && $0.hasSuffix("borg-relay:vault") }, "\(r.stdout)")
        let tLine = try #require(Self.line(after: "# OpenSSH", in: r.stdout), "\(r.stdout)")
        #expect(tLine.hasSuffix("borg-relay:web2"))
        try (bLine + "\n").write(toFile: "\(s.b.dir)/authorized_keys", atomically: true, encoding: .utf8)
        try (tLine + "\n").write(toFile: "\(s.t.dir)/authorized_keys", atomically: true, encoding: .utf8)

        let run = try Proc.run(try Proc.binary("relay-agent"), ["run", "web2", "--config", config, "--json"], timeout: 300)
        #expect(run.status == 0, "\(run.output)")
        let archives = try s.archives()
        #expect(archives.count == 1, "\(archives)")
        let archive = try #require(archives.first)
        #expect(try s.archivePaths(archive).contains { $0.hasSuffix("f.bin") })

        // The name is now taken: refused, nothing changed.
        let again = try Self.addClient(s, config: config, extra: ["--key", "\(s.dir)/relay/keys/other"])
        #expect(again.status == 2 && again.stderr.contains("exists already"), "\(again.output)")
        #expect(try String(contentsOfFile: config, encoding: .utf8) == after)
        #expect(!FileManager.default.fileExists(atPath: "\(s.dir)/relay/keys/other"))
    }

    @Test("interrupted enrolments leave the config byte-identical and no key: no confirmation, a bad repository path, a changed host key, an existing key file")
    func interrupted() throws {
        let s = try Sandbox(name: "addclient-no")
        defer { s.close() }
        let config = try Self.bareConfig(s)
        let known = "\(s.dir)/relay/bare_known_hosts"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: config))
        let knownBytes = try Data(contentsOf: URL(fileURLWithPath: known))
        let key = "\(s.dir)/relay/keys/web2"
        func unchanged(_ what: String) throws {
            #expect(try Data(contentsOf: URL(fileURLWithPath: config)) == bytes, "\(what): the config changed")
            #expect(!FileManager.default.fileExists(atPath: key) && !FileManager.default.fileExists(atPath: key + ".pub"), "\(what): a key was left")
        }

        let noAnswer = try Self.addClient(s, config: config, yes: false)
        #expect(noAnswer.status == 2 && noAnswer.stderr.contains("without confirmation") && noAnswer.stderr.contains("nothing was written"), "\(noAnswer.output)")
        try unchanged("no confirmation")
        #expect(try Data(contentsOf: URL(fileURLWithPath: known)) == knownBytes)

        let badRepo = try Self.addClient(s, config: config, repository: "srv/relative")
        #expect(badRepo.status == 2 && badRepo.stderr.contains("repository"), "\(badRepo.output)")
        try unchanged("a relative repository")

        // T's name pinned with another key: its key "changed".
        let other = try String(contentsOfFile: "\(s.dir)/relay/keys/t.pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
        try (String(decoding: knownBytes, as: UTF8.self) + "[\(s.t.address)]:\(s.t.port) \(other)\n").write(toFile: known, atomically: true, encoding: .utf8)
        let changed = try Self.addClient(s, config: config)
        #expect(changed.status == 1 && changed.stderr.contains("OTHER keys"), "\(changed.output)")
        try unchanged("a changed host key")
        try knownBytes.write(to: URL(fileURLWithPath: known))

        // A key file in the way is never overwritten.
        try FileManager.default.createDirectory(atPath: "\(s.dir)/relay/keys", withIntermediateDirectories: true)
        try Data("mine\n".utf8).write(to: URL(fileURLWithPath: key + ".pub"))
        let taken = try Self.addClient(s, config: config)
        #expect(taken.status == 2 && taken.stderr.contains("exists already"), "\(taken.output)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: config)) == bytes)
        #expect(try String(contentsOfFile: key + ".pub", encoding: .utf8) == "mine\n")
        #expect(!FileManager.default.fileExists(atPath: key))
    }
}
