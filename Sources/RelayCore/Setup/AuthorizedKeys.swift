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
