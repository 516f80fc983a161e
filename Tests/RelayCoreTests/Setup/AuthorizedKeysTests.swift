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
