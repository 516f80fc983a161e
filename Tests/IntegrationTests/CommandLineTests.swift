import Foundation
import Testing

/// The command contract: exit codes and messages of the real binaries for bad input.
@Suite("Command line contract")
struct CommandLineTests {
    final class Dir {
        let path: String
        init() throws {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("cli-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: "\(path)/key", contents: Data("k".utf8), attributes: [.posixPermissions: 0o600])
            _ = FileManager.default.createFile(atPath: "\(path)/known_hosts", contents: Data())
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }

        func config(_ clientExtra: String = "", port: String = "2222") throws -> String {
            let text = """
                [relay]
                state_dir = "\(path)/state"
                known_hosts = "\(path)/known_hosts"

                [servers.vault]
                host = "127.0.0.1"
                user = "borg"
                key = "\(path)/key"

                [clients.web1]
                host = "127.0.0.1"
                port = \(port)
                user = "root"
                key = "\(path)/key"
                server = "vault"
                repository = "/srv/borg/web1"
                paths = ["/etc"]
                \(clientExtra)
                """
            try text.write(toFile: "\(path)/relay.toml", atomically: true, encoding: .utf8)
            return "\(path)/relay.toml"
        }
    }

    func agent(_ args: [String], stdin: Data? = nil) throws -> ProcessResult {
        try Proc.run(try Proc.binary("relay-agent"), args, stdin: stdin, timeout: 60)
    }

    func ctl(_ args: [String], stdin: Data? = nil) throws -> ProcessResult {
        try Proc.run(try Proc.binary("relayctl"), args, stdin: stdin, timeout: 60)
    }

    @Test func configMistakesExitTwoWithTheLocation() throws {
        let d = try Dir()
        var r = try agent(["run", "web1", "--config", "\(d.path)/missing.toml"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("\(d.path)/missing.toml: cannot read the config file: No such file or directory"))

        r = try agent(["run", "web1", "--config", try d.config(port: "\"22\"")])
        #expect(r.status == 2)
        #expect(r.stderr.contains("[clients.web1] key 'port': expected an integer, found a string"), "\(r.stderr)")

        r = try agent(["run", "web1", "--config", try d.config("colour = \"red\"")])
        #expect(r.status == 2)
        #expect(r.stderr.contains("[clients.web1] key 'colour': unknown key"))

        _ = try d.config()
        let text = try String(contentsOfFile: "\(d.path)/relay.toml", encoding: .utf8)
        try text.replacingOccurrences(of: "server = \"vault\"", with: "server = \"nas\"").write(toFile: "\(d.path)/relay.toml", atomically: true, encoding: .utf8)
        r = try agent(["run", "web1", "--config", "\(d.path)/relay.toml"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("[clients.web1] key 'server': no server named 'nas' (defined: vault)"))

        try text.replacingOccurrences(of: "key = \"\(d.path)/key\"\nserver", with: "key = \"\(d.path)/nokey\"\nserver")
            .write(toFile: "\(d.path)/relay.toml", atomically: true, encoding: .utf8)
        r = try agent(["run", "web1", "--config", "\(d.path)/relay.toml"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("[clients.web1] key 'key': cannot read '\(d.path)/nokey'"))
        #expect(r.stderr.contains("`relayctl add-client` creates a client's key pair"), "\(r.stderr)")

        try text.replacingOccurrences(of: "user = \"borg\"\nkey = \"\(d.path)/key\"", with: "user = \"borg\"\nkey = \"\(d.path)/nokey-b\"")
            .write(toFile: "\(d.path)/relay.toml", atomically: true, encoding: .utf8)
        r = try agent(["run", "web1", "--config", "\(d.path)/relay.toml"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("[servers.vault] key 'key': cannot read '\(d.path)/nokey-b': No such file or directory; create the key pair with ssh-keygen -t ed25519 -N '' -f \(d.path)/nokey-b"), "\(r.stderr)")

        r = try agent(["run", "web2", "--config", try d.config()])
        #expect(r.status == 2)
        #expect(r.stderr.contains("no client named 'web2'"))
    }

    @Test func usageErrorsExitTwo() throws {
        var r = try agent(["run"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("Missing expected argument"))
        r = try agent(["frobnicate"])
        #expect(r.status == 2)
        r = try agent(["--help"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("run"))
        r = try ctl(["seal", "--bogus"])
        #expect(r.status == 2)
    }

    @Test func vaultSealAndTamperedValue() throws {
        let d = try Dir()
        let cfg = try d.config()
        var r = try ctl(["vault", "init", "--config", cfg])
        #expect(r.status == 0, "\(r.output)")
        r = try ctl(["vault", "init", "--config", cfg])
        #expect(r.status == 1)
        #expect(r.stderr.contains("refusing to overwrite"))

        r = try ctl(["seal", "--config", cfg], stdin: Data("my secret\n".utf8))
        #expect(r.status == 0)
        let sealed = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(sealed.hasPrefix("sealed:"))
        #expect(!r.output.contains("my secret"))
        r = try ctl(["seal", "--config", cfg], stdin: Data())
        #expect(r.status == 1)
        #expect(r.stderr.contains("empty"))

        // A value altered by one character cannot be opened: exit 2 before any connection.
        var chars = Array(sealed)
        let i = chars.count - 6
        chars[i] = chars[i] == "A" ? "B" : "A"
        let cfg2 = try d.config("passphrase = \"\(String(chars))\"")
        r = try agent(["run", "web1", "--config", cfg2])
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains("[clients.web1] key 'passphrase'"))
        #expect(r.stderr.contains("cannot be opened"))
    }

    /// A unix socket server that is not the agent, in one of several bad behaviours.
    static let impostor = #"""
        import os, socket, sys
        path, mode = sys.argv[1], sys.argv[2]
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(8)
        while True:
            c, _ = srv.accept()
            c.settimeout(5)
            try:
                c.recv(65536)
                if mode == "garbage":
                    c.sendall(b"SSH-2.0-not-http\r\n\r\n")
                elif mode == "huge":
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20000000\r\n\r\n")
                    chunk = b" " * 65536
                    for _ in range(305):
                        c.sendall(chunk)
                elif mode == "html":
                    c.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 11\r\nConnection: close\r\n\r\n<h1>no</h1>")
                elif mode == "truncated":
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"clients\"")
            except OSError:
                pass
            c.close()
        """#

    @Test("relayctl against a socket that is not the agent: each answer gets exit 1 and a message naming it, within seconds")
    func impostorSocket() throws {
        let dir = try Dir()
        let script = "\(dir.path)/impostor.py"
        try Self.impostor.write(toFile: script, atomically: true, encoding: .utf8)
        let ctl = try Proc.binary("relayctl")
        let cases: [(mode: String, message: String)] = [
            ("close", "closed the connection before it answered"),
            ("garbage", "the answer is not HTTP"),
            ("huge", "an answer larger than"),
            ("html", "HTTP 502: <h1>no</h1>"),
            ("truncated", "closed in the middle of the answer"),
        ]
        for c in cases {
            let sock = "\(dir.path)/\(c.mode).sock"
            let server = try Spawned("/usr/bin/python3", [script, sock, c.mode], stdin: "/dev/null",
                                     stdout: "\(dir.path)/\(c.mode).out", stderr: "\(dir.path)/\(c.mode).err")
            defer { server.terminate(grace: 2) }
            var waited = 0
            while !FileManager.default.fileExists(atPath: sock) && waited < 500 { usleep(10_000); waited += 1 }
            let started = Date()
            let r = try Proc.run(ctl, ["status", "--socket", sock], timeout: 30)
            #expect(r.status == 1, "\(c.mode): \(r.output)")
            #expect(r.stderr.contains(c.message), "\(c.mode): \(r.stderr)")
            #expect(Date().timeIntervalSince(started) < 20, "\(c.mode) took \(Date().timeIntervalSince(started)) s")
        }
    }
}
