import Foundation
import Testing
@testable import RelayCore

@Suite("authorized_keys lines")
struct AuthorizedKeysTests {
    @Test("command=\"…\": shell-quoted, each \" escaped as \\\" (sshd's only escape), backslashes left alone")
    func commandOption() {
        #expect(AuthorizedKeys.commandOption(["borg", "serve", "--append-only"]) == #"command="borg serve --append-only""#)
        #expect(AuthorizedKeys.commandOption(["borg", "serve", "--restrict-to-repository", #"/srv/a "b" c\d"#])
                == #"command="borg serve --restrict-to-repository '/srv/a \"b\" c\d'""#)
        #expect(AuthorizedKeys.commandOption(["x", #"\""#]) == #"command="x '\\"'""#)
        #expect(AuthorizedKeys.serveOptions(appendOnly: true, repository: "/srv/r")
                == #"command="borg serve --append-only --restrict-to-repository /srv/r",restrict"#)
    }

    @Test("the client's line per sshd: OpenSSH's restrict/port-forwarding/permitlisten; Dropbear's no-… options and permitopen, never an option Dropbear 2022.83 refuses")
    func clientOptions() {
        #expect(AuthorizedKeys.clientOptions(transport: .tcp, guardCommand: nil, sshd: .openssh)
                == #"restrict,port-forwarding,permitlisten="127.0.0.1:*",permitopen="127.0.0.1:9""#)
        #expect(AuthorizedKeys.clientOptions(transport: .unix, guardCommand: nil, sshd: .openssh) == "restrict")
        #expect(AuthorizedKeys.clientOptions(transport: .tcp, guardCommand: nil, sshd: .dropbear)
                == #"no-agent-forwarding,no-X11-forwarding,no-pty,permitopen="127.0.0.1:9""#)
        #expect(AuthorizedKeys.clientOptions(transport: .unix, guardCommand: nil, sshd: .dropbear)
                == "no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty")
        let g = ["/usr/local/bin/borg-relay-guard", "--config", "/etc/my guard.conf"]
        #expect(AuthorizedKeys.clientOptions(transport: .tcp, guardCommand: g, sshd: .openssh)
                == #"command="/usr/local/bin/borg-relay-guard --config '/etc/my guard.conf'",restrict,port-forwarding,permitlisten="127.0.0.1:*",permitopen="127.0.0.1:9""#)
        #expect(AuthorizedKeys.clientOptions(transport: .unix, guardCommand: g, sshd: .dropbear)
                == #"command="/usr/local/bin/borg-relay-guard --config '/etc/my guard.conf'",no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty"#)
        // Dropbear copies command="…" verbatim and its scanner ignores \": a " cannot be written.
        #expect(AuthorizedKeys.clientOptions(transport: .tcp, guardCommand: ["/g", #"a"b"#], sshd: .dropbear) == nil)
        #expect(AuthorizedKeys.dropbearCommandOption(["/g", #"c:\d"#]) == #"command="/g 'c:\d'""#)
        for transport in [Transport.tcp, .unix] {
            let line = AuthorizedKeys.clientOptions(transport: transport, guardCommand: g, sshd: .dropbear) ?? ""
            for unknown in ["restrict", "port-forwarding,", "permitlisten"] {
                #expect(!line.replacingOccurrences(of: "no-port-forwarding", with: "").contains(unknown), "\(line)")
            }
        }
    }

    @Test("the server's software from its banner, and which line it takes")
    func banner() {
        #expect(ClientSSHD.software(banner: "SSH-2.0-dropbear_2022.83") == "dropbear_2022.83")
        #expect(ClientSSHD.software(banner: "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n") == "OpenSSH_9.2p1 Debian-2+deb12u3")
        #expect(ClientSSHD.software(banner: "SSH-2.0-\u{1b}[31mx") == "[31mx")
        #expect(ClientSSHD.software(banner: "SSH-2.0-") == nil)
        #expect(ClientSSHD(software: "dropbear_2022.83") == .dropbear)
        #expect(ClientSSHD(software: "dropbear") == .dropbear)
        #expect(ClientSSHD(software: "OpenSSH_9.2p1 Debian-2+deb12u3") == .openssh)
        #expect(ClientSSHD(software: "libssh_0.10.6") == .openssh)
    }
}

@Suite("relayctl authorized-keys: the whole document, from a config with a jump and a guard")
struct AuthorizedKeysDocumentTests {
    @Test("B's line covers every client of the server; T gets one line per sshd; each jump may open tunnels only to its next hop; the guard's allowlist follows")
    func document() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("akdoc-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var publics: [String: String] = [:]
        for name in ["b", "t", "j"] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/ssh-keygen")
            p.arguments = ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", "\(dir)/\(name)"]
            try p.run()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
            let pub = try String(contentsOfFile: "\(dir)/\(name).pub", encoding: .utf8).split(separator: " ")
            publics[name] = pub[0] + " " + pub[1]
        }
        _ = FileManager.default.createFile(atPath: "\(dir)/known_hosts", contents: Data())
        let cfg = try ConfigLoader.parse("""
            [relay]
            state_dir = "\(dir)/state"
            known_hosts = "\(dir)/known_hosts"

            [jumps.j1]
            host = "jump.example.net"
            user = "relay"
            key = "\(dir)/j"

            [servers.vault]
            host = "10.0.0.5"
            port = 2222
            user = "borg"
            key = "\(dir)/b"

            [clients.web1]
            host = "web1.internal"
            user = "root"
            key = "\(dir)/t"
            server = "vault"
            repository = "/srv/borg/web1"
            paths = ["/etc"]
            via = ["j1"]
            guard = ["/usr/local/bin/borg-relay-guard"]
            pre = ["sh", "-c", "echo pre"]

            [clients.web2]
            host = "web2.internal"
            user = "root"
            key = "\(dir)/t"
            server = "vault"
            repository = "/srv/borg/web2"
            paths = ["/var/www"]
            """, file: "\(dir)/relay.toml")
        let lines = try AuthorizedKeys.document(config: cfg, client: try cfg.client("web1"))
        let keyLines = lines.filter { !$0.hasPrefix("#") && !$0.isEmpty }
        #expect(keyLines.count == 4, "\(lines.joined(separator: "\n"))")
        #expect(keyLines[0] == #"command="borg serve --append-only --restrict-to-repository /srv/borg/web1 --restrict-to-repository /srv/borg/web2",restrict \#(publics["b"]!) borg-relay:vault"#,
                "\(keyLines[0])")
        #expect(keyLines[1] == #"command="/usr/local/bin/borg-relay-guard",restrict,port-forwarding,permitlisten="127.0.0.1:*",permitopen="127.0.0.1:9" \#(publics["t"]!) borg-relay:web1"#)
        #expect(keyLines[2].hasPrefix(#"command="/usr/local/bin/borg-relay-guard",no-agent-forwarding"#) && keyLines[2].hasSuffix("borg-relay:web1"))
        // Only web1's path goes through the jump; B is reached directly.
        #expect(keyLines[3] == #"restrict,port-forwarding,permitopen="web1.internal:22" \#(publics["j"]!) borg-relay-jump:j1"#, "\(keyLines[3])")
        #expect(lines.contains("#   path /etc") && lines.contains("#   hook sh -c 'echo pre'"))
        #expect(lines.contains { $0.hasPrefix("# On server vault (borg@10.0.0.5:2222)") || $0.hasPrefix("# On server vault (") })

        // With the relay's state repository on this server, the append-only line allows it too.
        var withState = cfg
        withState.relay.stateServer = "vault"
        withState.relay.stateRepository = "/srv/borg/relay-state"
        let stateLines = try AuthorizedKeys.document(config: withState, client: try cfg.client("web1")).filter { !$0.hasPrefix("#") && !$0.isEmpty }
        #expect(stateLines[0] == #"command="borg serve --append-only --restrict-to-repository /srv/borg/web1 --restrict-to-repository /srv/borg/web2 --restrict-to-repository /srv/borg/relay-state",restrict \#(publics["b"]!) borg-relay:vault"#,
                "\(stateLines[0])")
    }
}
