/// Lines for sshd's authorized_keys files, as `relayctl authorized-keys` prints them and
/// `check` quotes them in its fixes.
public enum AuthorizedKeys {
    /// `command="…"` for an argument vector: quoted for the login's POSIX shell by
    /// `Shell.join`, then each `"` written as `\"`, the one escape sshd reads inside an
    /// option's quotes (a backslash before anything else stays a backslash, so none is added).
    public static func commandOption(_ argv: [String]) -> String {
        "command=\"" + Shell.join(argv).replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    /// B's forced command for the relay's key: `borg serve`, append-only unless it is the
    /// maintenance key, restricted to each repository.
    public static func serveCommand(appendOnly: Bool, repositories: [String]) -> [String] {
        ["borg", "serve"] + (appendOnly ? ["--append-only"] : []) + repositories.flatMap { ["--restrict-to-repository", $0] }
    }

    /// B's line options for one repository, for messages (`command="…",restrict`).
    public static func serveOptions(appendOnly: Bool, repository: String) -> String {
        commandOption(serveCommand(appendOnly: appendOnly, repositories: [repository])) + ",restrict"
    }
}

extension AuthorizedKeys {
    /// The options of the client's line for the relay's key (everything before the key),
    /// for the given sshd; nil when that sshd cannot express it (Dropbear and a `"` in the
    /// guard's command). `guardCommand`: the forced command (the client guard), if any.
    ///
    /// OpenSSH: `restrict` plus, for tcp, `port-forwarding,permitlisten="127.0.0.1:*"`
    /// (only a remote forward on loopback) and `permitopen="127.0.0.1:9"` (no connection
    /// through the client). Dropbear knows neither `port-forwarding` nor `permitlisten`
    /// (and `restrict` only since 2022.82): the `no-…` options one by one, forwarding left
    /// on for tcp with `permitopen` limiting local forwards; a remote forward cannot be
    /// limited by the key, Dropbear binds it to loopback unless it runs with `-a`.
    public static func clientOptions(transport: Transport, guardCommand: [String]?, sshd: ClientSSHD) -> String? {
        var options: [String] = []
        if let g = guardCommand {
            switch sshd {
            case .openssh: options.append(commandOption(g))
            case .dropbear:
                guard let c = dropbearCommandOption(g) else { return nil }
                options.append(c)
            }
        }
        switch (sshd, transport) {
        case (.openssh, .unix):
            options.append("restrict")
        case (.openssh, .tcp):
            options.append(#"restrict,port-forwarding,permitlisten="127.0.0.1:*",permitopen="127.0.0.1:9""#)
        case (.dropbear, .unix):
            options.append("no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty")
        case (.dropbear, .tcp):
            options.append(#"no-agent-forwarding,no-X11-forwarding,no-pty,permitopen="127.0.0.1:9""#)
        }
        return options.joined(separator: ",")
    }

    /// `command="…"` as Dropbear reads it: Dropbear copies the text between the quotes
    /// verbatim (it unescapes nothing, so `\"` would reach the shell as `\"`), and its
    /// line scanner does not honour `\"` at all; a command containing `"` cannot be
    /// written, so nil. Backslashes pass unchanged, as in OpenSSH.
    public static func dropbearCommandOption(_ argv: [String]) -> String? {
        let command = Shell.join(argv)
        guard !command.contains("\"") else { return nil }
        return "command=\"" + command + "\""
    }
}

extension AuthorizedKeys {
    /// What `relayctl authorized-keys CLIENT` prints: the lines for B's, T's and every
    /// jump's authorized_keys, each with comments that say where it goes and what it allows,
    /// and the guard's allowlist when the client has a guard.
    public static func document(config cfg: RelayConfig, client c: ClientConfig) throws(SSHError) -> [String] {
        let s = cfg.server(for: c)
        var out: [String] = []
        // Every client that reaches this server with the same key shares one line: an
        // authorized_keys line has one forced command, and borg serve takes several
        // --restrict-to-repository options.
        let sharing = cfg.clients.values.filter { $0.server == s.name }.map(\.repository)
        let repos = Array(Set(sharing)).sorted()
        let serverKey = try HostKeyProbe.publicKey(ofPrivateKey: s.endpoint.key)
        out.append("# On server \(s.name) (\(s.endpoint.display)), in ~\(s.endpoint.user)/.ssh/authorized_keys:")
        out.append("# append-only: the relay (and so the client) can add archives, never delete or rewrite them")
        // The relay's own state repository (recovery.md) goes through the append-only key too.
        var appendOnly = repos
        if cfg.relay.stateServer == s.name, let state = cfg.relay.stateRepository, !appendOnly.contains(state) {
            appendOnly.append(state)
            out.append("# (with [relay] state_repository \(state): the relay's sealed state backups)")
        }
        out.append("\(AuthorizedKeys.commandOption(AuthorizedKeys.serveCommand(appendOnly: true, repositories: appendOnly))),restrict \(serverKey) borg-relay:\(s.name)")
        if let m = s.maintenanceKey {
            let maintKey = try HostKeyProbe.publicKey(ofPrivateKey: m)
            out.append("# maintenance (init, prune, compact; used only by borg running on the relay itself):")
            out.append("\(AuthorizedKeys.commandOption(AuthorizedKeys.serveCommand(appendOnly: false, repositories: repos))),restrict \(maintKey) borg-relay-maintenance:\(s.name)")
        }
        if repos.count > 1 {
            out.append("# (these lines cover every client of \(s.name): \(cfg.clients.values.filter { $0.server == s.name }.map(\.name).sorted().joined(separator: ", ")))")
        }
        out.append("# sshd_config on \(s.name): ClientAliveInterval 30 and ClientAliveCountMax 4")
        out.append("# (a cut link then ends borg serve and releases the repository lock within about two minutes)")
        out.append("")
        let clientKey = try HostKeyProbe.publicKey(ofPrivateKey: c.endpoint.key)
        out.append("# On client \(c.name) (\(c.endpoint.display)), in ~\(c.endpoint.user)/.ssh/authorized_keys: ONE of the two lines below,")
        out.append("# the one for the sshd the client runs (relayctl check \(c.name) shows it: \"client sshd\")")
        if c.guardCommand != nil {
            out.append("# command=: the client guard; it runs only the commands the relay sends, for the paths in its allowlist")
        }
        let openssh = AuthorizedKeys.clientOptions(transport: c.transport, guardCommand: c.guardCommand, sshd: .openssh) ?? ""
        let dropbear = AuthorizedKeys.clientOptions(transport: c.transport, guardCommand: c.guardCommand, sshd: .dropbear)
        if c.transport == .unix {
            out.append("# OpenSSH: restrict: no forwarding, pty, agent or X11 at all; the unix transport needs only exec")
            out.append("# (borg's connection goes through a 0600 socket in a fresh 0700 directory under /tmp)")
            out.append("\(openssh) \(clientKey) borg-relay:\(c.name)")
            out.append("# Dropbear: the same with its own option names (it knows no port-forwarding or permitlisten)")
            if let dropbear { out.append("\(dropbear) \(clientKey) borg-relay:\(c.name)") }
            out.append("# sshd on \(c.name): nothing special; the client needs borg and socat")
        } else {
            out.append("# OpenSSH: restrict: no pty, agent or X11; port-forwarding with permitlisten: only a remote forward on the")
            out.append("# client's loopback; permitopen=127.0.0.1:9: no connections through the client")
            out.append("\(openssh) \(clientKey) borg-relay:\(c.name)")
            out.append("# Dropbear: no pty, agent or X11; permitopen=127.0.0.1:9: no connections through the client. Dropbear")
            out.append("# knows no permitlisten, so the key cannot limit which port it listens on: Dropbear binds a remote forward")
            out.append("# to the client's loopback unless it runs with -a (then on the address asked for): never run it with -a.")
            out.append("# Dropbear before 2022.82 knows no permitopen: drop that option there and run dropbear with -j instead")
            if let dropbear { out.append("\(dropbear) \(clientKey) borg-relay:\(c.name)") }
            out.append("# sshd on \(c.name): OpenSSH: AllowTcpForwarding yes (or remote), the default; Dropbear: without -k;")
            out.append("# the client needs borg and socat")
        }
        if dropbear == nil {
            out.append("# (no line for Dropbear: the guard's command contains a \", which Dropbear's authorized_keys cannot carry;")
            out.append("#  install the guard and its config at paths without \" for a Dropbear client)")
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
            out.append("")
            out.append("# On jump \(name) (\(j.display)), in ~\(j.user)/.ssh/authorized_keys:")
            out.append("# restrict,port-forwarding: no shell, pty or agent; permitopen: tunnels only to the next hop")
            out.append("restrict,port-forwarding,\(opens) \(jumpKey) borg-relay-jump:\(name)")
            out.append("# sshd_config on \(name): AllowTcpForwarding local (or yes); nothing is run on the jump itself")
        }
        if c.guardCommand != nil {
            out.append("# The guard's allowlist on \(c.name) (default /etc/borg-relay-guard.conf, or its --config FILE),")
            out.append("# from this config (add restore-to DIR for restores, dac-read-search SETPRIV for a non-root login):")
            for line in guardAllowlist(c) { out.append("#   \(line)") }
        }
        return out
    }

    /// The guard config lines that allow exactly what the relay does for `c`.
    static func guardAllowlist(_ c: ClientConfig) -> [String] {
        var lines = c.paths.map { "path \($0)" }
        for hook in [c.pre, c.post].compactMap({ $0 }) { lines.append("hook \(Shell.join(hook))") }
        if c.borgPath != "borg" { lines.append("borg \(c.borgPath)") }
        return lines
    }
}
