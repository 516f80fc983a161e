import ArgumentParser
import Foundation
import RelayCore

/// Loads the config for the setup tools (they work without a running daemon).
func loadConfig(_ path: String) throws -> RelayConfig {
    do {
        return try ConfigLoader.load(path: path, checkFiles: false)
    } catch {
        CLI.printError("relayctl: \(error)")
        throw ExitCode(CLI.Exit.usage)
    }
}

struct HostKeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hostkey",
        abstract: "Show a host's SSH host keys and fingerprints (no authentication); --add pins them in the known_hosts file.",
        discussion: """
            Compare the fingerprints with the host's own (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on it) \
            before pinning. Runs never trust a key on first use: an unpinned host stops the run.
            """
    )

    @Argument(help: "HOST, HOST:PORT or [IPv6]:PORT.")
    var target: String

    @Option(name: .long, help: "The config file (for [relay] known_hosts and connect_timeout).")
    var config: String = RelayConfig.defaultPath

    @Flag(name: .long, help: "Append the keys to the configured known_hosts file after confirmation.")
    var add = false

    @Flag(name: .long, help: "With --add: do not ask.")
    var yes = false

    @Option(name: .long, help: "Reach the host through these jumps of the config, in order (repeat, or j1,j2).")
    var via: [String] = []

    func run() throws {
        guard let (host, port) = Self.parse(target) else {
            CLI.printError("relayctl: '\(target)' is not HOST, HOST:PORT or [IPv6]:PORT")
            throw ExitCode(CLI.Exit.usage)
        }
        let jumps = via.flatMap { $0.split(separator: ",").map(String.init) }
        var timeout = 30
        var knownHosts: String?
        var options: SessionOptions?
        if add || !jumps.isEmpty || FileManager.default.fileExists(atPath: config) {
            let cfg = try loadConfig(config)
            timeout = cfg.relay.connectTimeout
            knownHosts = cfg.relay.knownHosts
            options = SessionOptions(cfg)
            if let unknown = jumps.first(where: { cfg.jumps[$0] == nil }) {
                CLI.printError("relayctl: --via \(unknown): \(cfg.file) has no [jumps.\(unknown)] (known: \(cfg.jumps.keys.sorted().joined(separator: ", ")))")
                throw ExitCode(CLI.Exit.usage)
            }
        }
        let keys: [HostKeyInfo]
        do {
            keys = try HostKeyProbe.scan(host: host, port: port, timeout: timeout, via: jumps, options: options)
        } catch {
            CLI.printError("relayctl: \(error)")
            throw ExitCode(CLI.Exit.runFailed)
        }
        let name = HostKeyProbe.pinName(host: host, port: port)
        let entries = knownHosts.map { KnownHosts.entries(for: name, path: $0) } ?? []
        let pinned = entries.filter { $0.marker == nil }.map(\.base64)
        let revoked = entries.filter { $0.marker == .revoked }
        for k in keys {
            print(k.knownHostsLine(name: name))
            var state = pinned.isEmpty ? "" : (pinned.contains(k.base64) ? "  (pinned)" : "  (NOT pinned)")
            if let r = revoked.first(where: { $0.base64 == k.base64 }) { state = "  (REVOKED: line \(r.line) of \(knownHosts ?? ""))" }
            print("  \(k.fingerprint) (\(k.type))\(state)")
        }
        guard add, let file = knownHosts else { return }
        if let r = revoked.first(where: { r in keys.contains { $0.base64 == r.base64 } }) {
            CLI.printError("""
                relayctl: \(name) offers \(r.type) \(r.fingerprint), which line \(r.line) of \(file) marks @revoked; \
                nothing pinned. Give the host a new key, then pin that one.
                """)
            throw ExitCode(CLI.Exit.runFailed)
        }
        if !pinned.isEmpty && !keys.contains(where: { pinned.contains($0.base64) }) {
            CLI.printError("""
                relayctl: \(name) is pinned in \(file) with OTHER keys: its host key has changed, or this is not the \
                same host. Check on the host itself; if the change is expected, remove the old lines for \(name) first.
                """)
            throw ExitCode(CLI.Exit.runFailed)
        }
        let new = keys.filter { !pinned.contains($0.base64) }
        if new.isEmpty {
            print("all keys of \(name) are already pinned in \(file)")
            return
        }
        if !yes {
            guard isatty(0) == 1 else {
                CLI.printError("relayctl: not pinning without confirmation; check the fingerprints on the host, then run again with --yes")
                throw ExitCode(CLI.Exit.usage)
            }
            FileHandle.standardError.write(Data("Pin \(new.count) key(s) for \(name) in \(file)? [y/N] ".utf8))
            let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
            guard answer == "y" || answer == "yes" else {
                CLI.printError("relayctl: nothing pinned")
                throw ExitCode(CLI.Exit.runFailed)
            }
        }
        let text = new.map { $0.knownHostsLine(name: name) + "\n" }.joined()
        let fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else {
            CLI.printError("relayctl: cannot open \(file): \(String(cString: strerror(errno)))")
            throw ExitCode(CLI.Exit.runFailed)
        }
        let bytes = Array(text.utf8)
        let written = write(fd, bytes, bytes.count)
        close(fd)
        guard written == bytes.count else {
            CLI.printError("relayctl: writing \(file) failed")
            throw ExitCode(CLI.Exit.runFailed)
        }
        print("pinned \(new.count) key(s) for \(name) in \(file)")
    }

    /// HOST, HOST:PORT, [V6]:PORT or a bare IPv6 address.
    static func parse(_ s: String) -> (String, Int)? {
        if s.hasPrefix("["), let close = s.firstIndex(of: "]") {
            let host = String(s[s.index(after: s.startIndex)..<close])
            let rest = s[s.index(after: close)...]
            if rest.isEmpty { return host.isEmpty ? nil : (host, 22) }
            guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()), (1...65535).contains(p), !host.isEmpty else { return nil }
            return (host, p)
        }
        let colons = s.filter { $0 == ":" }.count
        if colons == 1, let i = s.firstIndex(of: ":") {
            guard let p = Int(s[s.index(after: i)...]), (1...65535).contains(p), i != s.startIndex else { return nil }
            return (String(s[..<i]), p)
        }
        if s.isEmpty || s.contains(where: { $0 == " " || $0 == "/" }) { return nil }
        return (s, 22)  // a name, or a bare IPv6 address
    }
}

struct AuthorizedKeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authorized-keys",
        abstract: "Print the authorized_keys lines (and sshd settings) the client's hosts need for the relay's keys."
    )

    @Argument(help: "The client.")
    var client: String

    @Option(name: .long, help: "The config file.")
    var config: String = RelayConfig.defaultPath

    func run() throws {
        let cfg = try loadConfig(config)
        guard let c = cfg.clients[client] else {
            CLI.printError("relayctl: unknown client '\(client)': \(cfg.file) has no [clients.\(client)] (known: \(cfg.clients.keys.sorted().joined(separator: ", ")))")
            throw ExitCode(CLI.Exit.usage)
        }
        let s = cfg.server(for: c)
        do {
            // Every client that reaches this server with the same key shares one line: an
            // authorized_keys line has one forced command, and borg serve takes several
            // --restrict-to-repository options.
            let sharing = cfg.clients.values.filter { $0.server == s.name }.map(\.repository)
            let repos = Array(Set(sharing)).sorted()
            let serverKey = try HostKeyProbe.publicKey(ofPrivateKey: s.endpoint.key)
            print("# On server \(s.name) (\(s.endpoint.display)), in ~\(s.endpoint.user)/.ssh/authorized_keys:")
            print("# append-only: the relay (and so the client) can add archives, never delete or rewrite them")
            print("\(AuthorizedKeys.commandOption(AuthorizedKeys.serveCommand(appendOnly: true, repositories: repos))),restrict \(serverKey) borg-relay:\(s.name)")
            if let m = s.maintenanceKey {
                let maintKey = try HostKeyProbe.publicKey(ofPrivateKey: m)
                print("# maintenance (init, prune, compact; used only by borg running on the relay itself):")
                print("\(AuthorizedKeys.commandOption(AuthorizedKeys.serveCommand(appendOnly: false, repositories: repos))),restrict \(maintKey) borg-relay-maintenance:\(s.name)")
            }
            if repos.count > 1 {
                print("# (these lines cover every client of \(s.name): \(cfg.clients.values.filter { $0.server == s.name }.map(\.name).sorted().joined(separator: ", ")))")
            }
            print("# sshd_config on \(s.name): ClientAliveInterval 30 and ClientAliveCountMax 4")
            print("# (a cut link then ends borg serve and releases the repository lock within about two minutes)")
            print("")
            let clientKey = try HostKeyProbe.publicKey(ofPrivateKey: c.endpoint.key)
            print("# On client \(c.name) (\(c.endpoint.display)), in ~\(c.endpoint.user)/.ssh/authorized_keys: ONE of the two lines below,")
            print("# the one for the sshd the client runs (relayctl check \(c.name) shows it: \"client sshd\")")
            if c.guardCommand != nil {
                print("# command=: the client guard; it runs only the commands the relay sends, for the paths in its allowlist")
            }
            let openssh = AuthorizedKeys.clientOptions(transport: c.transport, guardCommand: c.guardCommand, sshd: .openssh) ?? ""
            let dropbear = AuthorizedKeys.clientOptions(transport: c.transport, guardCommand: c.guardCommand, sshd: .dropbear)
            if c.transport == .unix {
                print("# OpenSSH: restrict: no forwarding, pty, agent or X11 at all; the unix transport needs only exec")
                print("# (borg's connection goes through a 0600 socket in a fresh 0700 directory under /tmp)")
                print("\(openssh) \(clientKey) borg-relay:\(c.name)")
                print("# Dropbear: the same with its own option names (it knows no port-forwarding or permitlisten)")
                if let dropbear { print("\(dropbear) \(clientKey) borg-relay:\(c.name)") }
                print("# sshd on \(c.name): nothing special; the client needs borg and socat")
            } else {
                print("# OpenSSH: restrict: no pty, agent or X11; port-forwarding with permitlisten: only a remote forward on the")
                print("# client's loopback; permitopen=127.0.0.1:9: no connections through the client")
                print("\(openssh) \(clientKey) borg-relay:\(c.name)")
                print("# Dropbear: no pty, agent or X11; permitopen=127.0.0.1:9: no connections through the client. Dropbear")
                print("# knows no permitlisten, so the key cannot limit which port it listens on: Dropbear binds a remote forward")
                print("# to the client's loopback unless it runs with -a (then on the address asked for): never run it with -a.")
                print("# Dropbear before 2022.82 knows no permitopen: drop that option there and run dropbear with -j instead")
                if let dropbear { print("\(dropbear) \(clientKey) borg-relay:\(c.name)") }
                print("# sshd on \(c.name): OpenSSH: AllowTcpForwarding yes (or remote), the default; Dropbear: without -k;")
                print("# the client needs borg and socat")
            }
            if dropbear == nil {
                print("# (no line for Dropbear: the guard's command contains a \", which Dropbear's authorized_keys cannot carry;")
                print("#  install the guard and its config at paths without \" for a Dropbear client)")
            }
            // Jumps on the way to B or T: each may open tunnels only to its next hop(s).
            let jumps = cfg.jumps.mapValues(\.endpoint)
            var nextHops: [String: [String]] = [:]
            for target in [s.endpoint, c.endpoint] {
                let chain = cfg.hops(to: target)
                for (i, name) in chain.enumerated() {
                    let next = i + 1 < chain.count ? jumps[chain[i + 1]]! : target
                    let hop = next.host.contains(":") ? "[\(next.host)]:\(next.port)" : "\(next.host):\(next.port)"
                    if !(nextHops[name] ?? []).contains(hop) { nextHops[name, default: []].append(hop) }
                }
            }
            for name in nextHops.keys.sorted() {
                guard let j = jumps[name] else { continue }
                let jumpKey = try HostKeyProbe.publicKey(ofPrivateKey: j.key)
                let opens = nextHops[name]!.map { #"permitopen="\#($0)""# }.joined(separator: ",")
                print("")
                print("# On jump \(name) (\(j.display)), in ~\(j.user)/.ssh/authorized_keys:")
                print("# restrict,port-forwarding: no shell, pty or agent; permitopen: tunnels only to the next hop")
                print("restrict,port-forwarding,\(opens) \(jumpKey) borg-relay-jump:\(name)")
                print("# sshd_config on \(name): AllowTcpForwarding local (or yes); nothing is run on the jump itself")
            }
            if c.guardCommand != nil {
                print("# The guard's allowlist on \(c.name) (default /etc/borg-relay-guard.conf, or its --config FILE),")
                print("# from this config (add restore-to DIR for restores, dac-read-search SETPRIV for a non-root login):")
                for line in guardAllowlist(c) { print("#   \(line)") }
            }
        } catch {
            CLI.printError("relayctl: \(error)")
            throw ExitCode(CLI.Exit.runFailed)
        }
    }
}

/// The guard config lines that allow exactly what the relay does for `c`.
func guardAllowlist(_ c: ClientConfig) -> [String] {
    var lines = c.paths.map { "path \($0)" }
    for hook in [c.pre, c.post].compactMap({ $0 }) { lines.append("hook \(Shell.join(hook))") }
    if c.borgPath != "borg" { lines.append("borg \(c.borgPath)") }
    return lines
}
