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
