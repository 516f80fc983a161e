import Foundation
import Testing
@testable import RelayCore

@Suite("Config loader")
struct ConfigLoaderTests {
    /// A directory with a readable key file and known_hosts, removed at the end.
    final class Files {
        let dir: String
        init() throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("cfgtest-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: "\(dir)/key", contents: Data("k".utf8), attributes: [.posixPermissions: 0o600])
            _ = FileManager.default.createFile(atPath: "\(dir)/known_hosts", contents: Data())
        }
        deinit { try? FileManager.default.removeItem(atPath: dir) }

        func valid(client extra: String = "", relay relayExtra: String = "") -> String {
            """
            [relay]
            state_dir = "\(dir)/state"
            known_hosts = "\(dir)/known_hosts"
            \(relayExtra)

            [servers.vault]
            host = "backup.example.net"
            user = "borg"
            key = "\(dir)/key"

            [clients.web1]
            host = "web1.example.net"
            port = 2222
            user = "root"
            key = "\(dir)/key"
            server = "vault"
            repository = "/srv/borg/web1"
            paths = ["/etc", "/var/www"]
            exclude = ["/var/www/cache"]
            compression = "zstd,3"
            \(extra)
            """
        }
    }

    func expectError(_ text: String, file: String = "/etc/relay.toml",
                     check: (ConfigError) -> Void) {
        do {
            _ = try ConfigLoader.parse(text, file: file)
            Issue.record("expected a config error")
        } catch {
            check(error)
        }
    }

    @Test("relocated_ok is a per-client boolean, off by default; a newline in paths, exclude or repository is refused (csh on T could not be sent it)")
    func relocatedOKAndNewlines() throws {
        let f = try Files()
        #expect(try ConfigLoader.parse(f.valid(), file: "relay.toml").client("web1").relocatedOK == false)
        #expect(try ConfigLoader.parse(f.valid(client: "relocated_ok = true"), file: "relay.toml").client("web1").relocatedOK == true)
        expectError(f.valid(client: "relocated_ok = \"yes\"")) { #expect($0.key == "relocated_ok") }
        for (key, from, to) in [("paths", #"paths = ["/etc", "/var/www"]"#, #"paths = ["/etc", "/var/a\nb"]"#),
                                ("exclude", #"exclude = ["/var/www/cache"]"#, #"exclude = ["/x\ny"]"#),
                                ("repository", #"repository = "/srv/borg/web1""#, #"repository = "/srv/borg/a\nb""#)] {
            let text = f.valid().replacingOccurrences(of: from, with: to)
            #expect(text != f.valid())
            expectError(text) { e in
                #expect(e.key == key && "\(e)".contains("newline"), "\(e)")
            }
        }
    }

    @Test func validConfigLoads() throws {
        let f = try Files()
        let c = try ConfigLoader.parse(f.valid(client: "archive = \"{hostname}-{now:%Y}\""), file: "relay.toml")
        let web1 = try c.client("web1")
        #expect(web1.endpoint.port == 2222)
        #expect(web1.endpoint.knownHostsName == "[web1.example.net]:2222")
        #expect(web1.paths == ["/etc", "/var/www"])
        #expect(web1.compression == "zstd,3")
        #expect(web1.archive == "{hostname}-{now:%Y}")
        #expect(web1.transport == .tcp)
        #expect(c.server(for: web1).endpoint.port == 22)
        #expect(c.server(for: web1).endpoint.knownHostsName == "backup.example.net")
        #expect(c.relay.maxParallel == 4)
        #expect(c.relay.vaultSecretKeyPath == "\(f.dir)/state/vault.key")
    }

    @Test func unknownKeyNamesTableAndKey() throws {
        let f = try Files()
        expectError(f.valid(client: "pathz = [\"/x\"]")) { e in
            #expect(e.kind == .unknownKey)
            #expect(e.description == "/etc/relay.toml: [clients.web1] key 'pathz': unknown key (check its spelling against the config reference, docs/configuration.md)")
        }
        expectError(f.valid(relay: "colour = 1")) { e in
            #expect(e.table == "relay")
            #expect(e.key == "colour")
        }
        expectError(f.valid() + "\n[bogus]\nx = 1\n") { e in
            #expect(e.key == "bogus")
            #expect(e.kind == .unknownKey)
        }
    }

    @Test func missingKeyAndTable() throws {
        let f = try Files()
        expectError(f.valid().replacingOccurrences(of: "repository = \"/srv/borg/web1\"", with: "")) { e in
            #expect(e.kind == .missingKey)
            #expect(e.table == "clients.web1")
            #expect(e.key == "repository")
            #expect(e.description.contains("[clients.web1] key 'repository': required key is missing"))
        }
        expectError("[servers.x]\nhost = \"h\"\n") { e in
            #expect(e.kind == .missingKey)
            #expect(e.table == "relay")
        }
    }

    @Test func wrongType() throws {
        let f = try Files()
        expectError(f.valid().replacingOccurrences(of: "port = 2222", with: "port = \"2222\"")) { e in
            #expect(e.kind == .wrongType(expected: "an integer", found: "a string"))
            #expect(e.description.contains("[clients.web1] key 'port': expected an integer, found a string"))
        }
        expectError(f.valid().replacingOccurrences(of: "paths = [\"/etc\", \"/var/www\"]", with: "paths = \"/etc\"")) { e in
            #expect(e.kind == .wrongType(expected: "an array of strings", found: "a string"))
        }
        expectError(f.valid().replacingOccurrences(of: "paths = [\"/etc\", \"/var/www\"]", with: "paths = [\"/etc\", 3]")) { e in
            #expect(e.key == "paths")
        }
        expectError(f.valid().replacingOccurrences(of: "port = 2222", with: "port = 70000")) { e in
            #expect(e.description.contains("out of range"))
        }
    }

    @Test func unknownServer() throws {
        let f = try Files()
        expectError(f.valid().replacingOccurrences(of: "server = \"vault\"", with: "server = \"vualt\"")) { e in
            #expect(e.kind == .unknownReference(kind: "server", name: "vualt", known: ["vault"]))
            #expect(e.description.contains("no server named 'vualt' (defined: vault)"))
        }
    }

    @Test func relativePaths() throws {
        let f = try Files()
        expectError(f.valid().replacingOccurrences(of: "repository = \"/srv/borg/web1\"", with: "repository = \"borg/web1\"")) { e in
            #expect(e.kind == .relativePath(value: "borg/web1"))
            #expect(e.description.contains("[clients.web1] key 'repository': 'borg/web1' is a relative path; an absolute path is required"))
        }
        expectError(f.valid(relay: "socket = \"run/x.sock\"")) { e in
            #expect(e.key == "socket")
        }
    }

    @Test func unreadableKeyFile() throws {
        let f = try Files()
        expectError(f.valid().replacingOccurrences(of: "key = \"\(f.dir)/key\"\nserver", with: "key = \"\(f.dir)/nokey\"\nserver")) { e in
            #expect(e.kind == .unreadablePath(path: "\(f.dir)/nokey", reason: "No such file or directory; `relayctl add-client` creates a client's key pair (or ssh-keygen -t ed25519 -N '' -f \(f.dir)/nokey)"))
            #expect(e.table == "clients.web1")
            #expect(e.key == "key")
        }
        // Without file checks (relayctl seal needs only state_dir) the same config loads.
        let text = f.valid().replacingOccurrences(of: "key = \"\(f.dir)/key\"\nserver", with: "key = \"\(f.dir)/nokey\"\nserver")
        #expect(throws: Never.self) { _ = try ConfigLoader.parse(text, file: "x", checkFiles: false) }
    }

    @Test func syntaxErrorHasLine() {
        expectError("[relay]\nstate_dir = \n") { e in
            guard case .syntax(let line, _, _) = e.kind else { Issue.record("not a syntax error: \(e)"); return }
            #expect(line == 2)
            #expect(e.description.hasPrefix("/etc/relay.toml:2:"))
        }
    }

    @Test func plainPassphraseRefused() throws {
        let f = try Files()
        expectError(f.valid(client: "passphrase = \"hunter2\"")) { e in
            #expect(e.key == "passphrase")
            #expect(e.description.contains("relayctl seal"))
            #expect(!e.description.contains("hunter2"))
        }
    }

    @Test func viaMustNameJumpsWithoutLoops() throws {
        let f = try Files()
        expectError(f.valid(client: "via = [\"gw\"]")) { e in
            #expect(e.kind == .unknownReference(kind: "jump", name: "gw", known: []))
        }
        let loop = f.valid(client: "via = [\"a\"]") + """

            [jumps.a]
            host = "a"
            user = "u"
            key = "\(f.dir)/key"
            via = ["b"]

            [jumps.b]
            host = "b"
            user = "u"
            key = "\(f.dir)/key"
            via = ["a"]
            """
        expectError(loop) { e in
            #expect(e.description.contains("loops"))
        }
    }

    @Test func unknownClientListsConfigured() throws {
        let f = try Files()
        let c = try ConfigLoader.parse(f.valid(), file: "r.toml")
        #expect(throws: ConfigError.self) { _ = try c.client("web2") }
        do { _ = try c.client("web2") } catch {
            #expect(error.description == "r.toml: no client named 'web2' ([clients.web2] is missing; configured clients: web1)")
        }
    }

    @Test func missingFile() {
        do {
            _ = try ConfigLoader.load(path: "/nonexistent/relay.toml")
            Issue.record("expected an error")
        } catch {
            #expect(error.description == "/nonexistent/relay.toml: cannot read the config file: No such file or directory")
        }
    }

    @Test func transportIsTcpOrUnix() throws {
        let f = try Files()
        let c = try ConfigLoader.parse(f.valid(client: "transport = \"unix\""), file: "r.toml")
        #expect(c.clients["web1"]?.transport == .unix)
        expectError(f.valid(client: "transport = \"udp\"")) { e in
            #expect(e.description.contains("must be \"tcp\" or \"unix\""))
        }
    }

    @Test func scheduleIsValidated() throws {
        let f = try Files()
        let c = try ConfigLoader.parse(f.valid(client: "schedule = \"30 2 * * *\"\njitter = 600\ncatch_up = true"), file: "r.toml")
        let web1 = try c.client("web1")
        #expect(web1.schedule?.text == "30 2 * * *")
        #expect(web1.jitter == 600)
        #expect(web1.catchUp)
        expectError(f.valid(client: "schedule = \"30 25 * * *\"")) { e in
            #expect(e.key == "schedule")
            #expect(e.description.contains("hour '25' is not in 0…23"))
        }
        expectError(f.valid(client: "catch_up = \"yes\"")) { e in
            #expect(e.kind == .wrongType(expected: "true or false", found: "a string"))
        }
    }

    @Test func guardIsAnAbsoluteCommand() throws {
        let f = try Files()
        let c = try ConfigLoader.parse(f.valid(client: "guard = \"/usr/local/sbin/borg-relay-guard --config /etc/g.conf\""), file: "r.toml")
        #expect(try c.client("web1").guardCommand == ["/usr/local/sbin/borg-relay-guard", "--config", "/etc/g.conf"])
        #expect(try ConfigLoader.parse(f.valid(), file: "r.toml").client("web1").guardCommand == nil)
        expectError(f.valid(client: "guard = \"borg-relay-guard\"")) { e in
            #expect(e.key == "guard")
            #expect(e.description.contains("absolute path"))
        }
        expectError(f.valid(client: "guard = 7")) { e in
            #expect(e.key == "guard")
        }
    }
}
