/// Builds the command lines the relay sends to remote hosts. Everything is built as an
/// argument vector and quoted for the remote POSIX shell by `Shell.quote`, the one
/// quoting helper: no user value is ever pasted into a command unquoted.
public enum Shell {
    /// Quotes one word for a POSIX shell. Words made only of safe characters stay bare.
    public static func quote(_ word: String) -> String {
        if !word.isEmpty && word.unicodeScalars.allSatisfy({ safe.contains($0) }) {
            return word
        }
        return "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// Quotes and joins an argument vector into one command line.
    public static func join(_ argv: [String]) -> String {
        argv.map(quote).joined(separator: " ")
    }

    private static let safe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%_+=:,./-".unicodeScalars)

    /// Quotes one word so that every login shell sshd may run a command through reads it
    /// back unchanged: POSIX sh, dash, bash, zsh, BusyBox ash, fish, csh and tcsh. Inside
    /// single quotes fish still reads `\'` and `\\` as escapes and csh expands `!`
    /// (history, even in `-c`), so `'`, `\` and `!` are written outside the quotes as `\'`,
    /// `\\` and `\!`, which all of them read as the bare character. csh cannot take a
    /// newline in a word at all: the config loader refuses newlines in every value that
    /// reaches a client, and the relay's own scripts are one line.
    public static func quoteForAnyShell(_ word: String) -> String {
        var out = "", run = ""
        for c in word.unicodeScalars {
            if c == "'" || c == "\\" || c == "!" {
                if !run.isEmpty { out += "'" + run + "'"; run = "" }
                out += "\\" + String(c)
            } else {
                run.unicodeScalars.append(c)
            }
        }
        if !run.isEmpty || out.isEmpty { out += "'" + run + "'" }
        return out
    }

    /// The one shape of every command the relay sends to a client:
    /// `exec sh -c 'SCRIPT' [ARG…]`, each word quoted by `quoteForAnyShell`. sshd runs it
    /// through the login's shell (`$SHELL -c`), which only has to start sh with these
    /// words; the script itself is always POSIX sh (BusyBox ash included).
    public static func anyShell(_ script: String, arguments: [String] = []) -> String {
        (["exec", "sh", "-c"] + ([script] + arguments).map(quoteForAnyShell)).joined(separator: " ")
    }
}

/// The commands of one backup run.
public struct BackupPlan: Sendable, Equatable {
    /// The repository URL borg on the client uses. The host part is a constant: the
    /// connector ignores it, and a constant location keeps borg's "repository moved"
    /// check quiet although the forwarded port changes every run.
    public let repositoryURL: String
    public let archive: String

    public init(client: ClientConfig) {
        self.repositoryURL = "ssh://borg-relay" + client.repository
        self.archive = client.archive
        self.client = client
    }

    let client: ClientConfig

    /// The command the channel on the backup server asks for. B's forced command
    /// replaces it, but borg serve parses it (SSH_ORIGINAL_COMMAND) and rejects anything
    /// that is not a `borg serve` line.
    public static let serveCommand = "borg serve --info"

    /// `BORG_RSH` for the client: a connector to the forwarded port. borg appends the
    /// host and `borg serve …`; they become `$0 $1 …` of sh and are ignored.
    public static func connector(port: Int) -> String {
        "sh -c 'exec socat STDIO TCP:127.0.0.1:\(port)'"
    }

    /// The unix transport's connector: borg's connection goes to the run's socket on T.
    public static func unixConnector(socket: String) -> String {
        "sh -c " + Shell.quote("exec socat STDIO UNIX-CONNECT:" + Shell.quote(socket))
    }

    /// Where the unix transport's socket lives on T: a fresh, unguessable 0700 directory.
    public static func unixSocketDir(random: String) -> String { "/tmp/borg-relay-sock-\(random)" }

    /// A new socket directory for one run (or one check): 128 random bits in hex.
    static func newUnixSocketDir() -> String {
        unixSocketDir(random: (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined())
    }

    /// The listener of the unix transport, run in its own exec channel on T: removes stale
    /// socket directories of this user (their listener is gone), creates the run's 0700
    /// directory (`$0`), and accepts one connection on a 0600 socket with socat, whose stdio
    /// is the channel: the relay splices that channel into borg serve on B. The directory is
    /// removed when socat ends (and by the next run if the listener was killed). The umask
    /// (177) makes bind() create the socket 0600 at once: socat's `mode=` is a chmod after
    /// bind, and under a 077 umask the socket was 0700 until then. One line
    /// (csh cannot take a newline in a quoted word); the client guard matches it byte for byte.
    public static let unixListenerScript = [
        "for d in /tmp/borg-relay-sock-*; do",
        "[ -d \"$d\" ] && [ -O \"$d\" ] || continue;",
        "if [ -f \"$d/pid\" ]; then kill -0 \"$(cat \"$d/pid\")\" 2>/dev/null && continue;",
        "elif [ -z \"$(find \"$d\" -maxdepth 0 -mmin +1)\" ]; then continue; fi;",
        "rm -rf -- \"$d\";",
        "done;",
        "umask 177;",
        "mkdir -m 0700 -- \"$0\" || exit 97;",
        "echo $$ > \"$0/pid\";",
        "trap 'rm -rf -- \"$0\"' EXIT;",
        "trap 'exit 143' HUP INT TERM;",
        "socat UNIX-LISTEN:\"$0/borg.sock\",mode=0600,listen-timeout=120 STDIO",
    ].joined(separator: " ")

    public static func unixListenerCommand(dir: String) -> String {
        Shell.anyShell(unixListenerScript, arguments: [dir])
    }

    /// What `check` sends through a listener on T (in `$0`): waits for its socket as a run's
    /// borg create does, connects with socat as borg's connector does and sends
    /// `unixProbeMarker`, which the relay must read from the listener's channel. socat ends
    /// both sides half a second after the marker. The client guard matches it byte for byte.
    public static let unixProbeScript = [
        "i=0; while [ ! -S \"$0/borg.sock\" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done;",
        "echo \(unixProbeMarker) | socat STDIO UNIX-CONNECT:\"$0/borg.sock\"",
    ].joined(separator: " ")

    public static let unixProbeMarker = "borg-relay-unix-probe"

    public static func unixProbeCommand(dir: String) -> String {
        Shell.anyShell(unixProbeScript, arguments: [dir])
    }

    /// borg create's argument vector (after the program name).
    public var createArguments: [String] {
        // --log-json --progress: borg's log and progress as JSON lines on stderr, which
        // the relay turns into the run log and the live progress of `relayctl run --follow`.
        var args = ["create", "--json", "--log-json", "--progress", "--lock-wait=\(client.lockWait)"]
        if let c = client.checkpointInterval { args.append("--checkpoint-interval=\(c)") }
        if let c = client.compression { args.append("--compression=\(c)") }
        for e in client.exclude { args.append("--exclude=\(e)") }
        args.append("--")
        args.append("\(repositoryURL)::\(archive)")
        args.append(contentsOf: client.paths)
        return args
    }

    /// Runs `"$@"` (env, the hook's variables, the hook's argv) under `timeout` with `$0`
    /// seconds: `timeout -k 10 SECS` where it exists (coreutils, BusyBox 1.36 and the
    /// Debian BusyBox), else BusyBox's older `timeout SECS` or oldest `timeout -t SECS`
    /// (which cannot send the later SIGKILL). The client guard matches it byte for byte.
    public static let hookScript = [
        "if timeout -k 1 1 true >/dev/null 2>&1; then exec timeout -k 10 \"$0\" \"$@\";",
        "elif timeout -t 1 true >/dev/null 2>&1; then exec timeout -t \"$0\" \"$@\";",
        "else exec timeout \"$0\" \"$@\"; fi",
    ].joined(separator: " ")

    /// A hook's command line on the client: argv as given, under `timeout` (`hookScript`),
    /// with BORG_RELAY_RUN, BORG_RELAY_CLIENT and (post) BORG_RELAY_RESULT in its environment.
    public static func hookCommand(argv: [String], timeout: Int, runID: String, client: String, result: String?) -> String {
        var env = ["env", "BORG_RELAY_RUN=\(runID)", "BORG_RELAY_CLIENT=\(client)"]
        if let r = result { env.append("BORG_RELAY_RESULT=\(r)") }
        return Shell.anyShell(hookScript, arguments: [String(timeout)] + env + argv)
    }

    /// `check`'s probe on the client: the client's borg (`borg_path`) and socat.
    public static func probeCommand(borgPath: String) -> String {
        Shell.anyShell(probeScript(borgPath: borgPath))
    }

    static func probeScript(borgPath: String) -> String {
        Shell.quote(borgPath) + " --version; command -v socat || echo no-socat-found"
    }

    /// What a backup run would do, command by command, without connecting anywhere
    /// (`run --dry-run`). The passphrase never appears in a command; where it goes (borg's
    /// stdin) is shown as ***.
    public static func dryRun(client c: ClientConfig, server s: ServerConfig, runID: String = "RUN") -> String {
        let plan = BackupPlan(client: c)
        var lines = ["dry run: backup of client \(c.name) (\(c.endpoint.display)) to server \(s.name) (\(s.endpoint.display)), repository \(c.repository); nothing is connected or run"]
        if let pre = c.pre {
            lines.append("client: pre hook:    \(hookCommand(argv: pre, timeout: c.preTimeout, runID: runID, client: c.name, result: nil))")
        }
        if c.transport == .unix {
            let dir = unixSocketDir(random: "RANDOM")
            lines.append("server: exec         \(serveCommand)   (the key's forced command decides what runs)")
            lines.append("client: exec         \(unixListenerCommand(dir: dir))")
            lines.append("client: exec         \(plan.createCommand(unixSocket: dir + "/borg.sock", withPassphrase: c.passphrase != nil))")
        } else {
            lines.append("client: remote forward on 127.0.0.1:PORT (PORT chosen by the client's sshd; one connection, then cancelled)")
            lines.append("server: exec         \(serveCommand)   (the key's forced command decides what runs)")
            lines.append("client: exec         \(plan.createCommand(port: 0, withPassphrase: c.passphrase != nil).replacingOccurrences(of: "127.0.0.1:0", with: "127.0.0.1:PORT"))")
        }
        if c.passphrase != nil {
            lines.append("client: stdin        *** (the passphrase, then EOF)")
        }
        if let post = c.post {
            lines.append("client: post hook:   \(hookCommand(argv: post, timeout: c.postTimeout, runID: runID, client: c.name, result: "success|failure"))")
        }
        if let r = c.retention {
            let keep = r.keepArguments.joined(separator: " ")
            if s.maintenanceKey != nil {
                lines.append("relay:  after success (daemon): borg list --json, tamper check, borg prune --list \(keep) \(LocalBorgPlan.url(c)), borg list --json, tamper check, borg compact (maintenance key)")
            } else {
                lines.append("relay:  retention is set but [servers.\(s.name)] has no maintenance_key: nothing would be pruned")
            }
        }
        return lines.joined(separator: "\n")
    }

    /// Another borg command on the client, with BORG_REPO set to the repository (so that
    /// `::ARCHIVE` works), run in `workDir` (created 0700 when missing) if given.
    public func borgCommand(port: Int, withPassphrase: Bool, arguments: [String], workDir: String?,
                            unixSocket: String? = nil) -> String {
        Shell.anyShell(borgScript(port: port, withPassphrase: withPassphrase, arguments: arguments,
                                  workDir: workDir, unixSocket: unixSocket))
    }

    /// The POSIX script of `borgCommand`.
    func borgScript(port: Int, withPassphrase: Bool, arguments: [String], workDir: String?,
                    unixSocket: String? = nil) -> String {
        var argv = ["env", "-u", "BORG_PASSPHRASE", "-u", "BORG_PASSCOMMAND"]
        argv += withPassphrase ? ["BORG_PASSPHRASE_FD=0"] : ["-u", "BORG_PASSPHRASE_FD"]
        argv.append("BORG_REPO=\(repositoryURL)")
        argv.append("BORG_RSH=\(unixSocket.map(Self.unixConnector) ?? Self.connector(port: port))")
        argv += relocationEnvironment
        argv.append(client.borgPath)
        argv += arguments
        var run = "exec " + Shell.join(argv)
        if let dir = workDir {
            // borg runs only if the directory could be made and entered.
            run = "mkdir -p -m 0700 -- \(Shell.quote(dir)) && cd -- \(Shell.quote(dir)) && " + run
        }
        if let sock = unixSocket {
            run = Self.waitForSocket(sock) + run
        }
        return run
    }

    /// `relocated_ok = true`: borg on the client accepts that it knew the repository under
    /// another location (it answers borg's "was previously located at" question with yes).
    var relocationEnvironment: [String] {
        client.relocatedOK ? ["\(Self.relocatedVariable)=yes"] : []
    }

    public static let relocatedVariable = "BORG_RELOCATED_REPO_ACCESS_IS_OK"

    /// The full command line for the client's exec channel. The passphrase is not in
    /// it: borg reads it from fd 0 (`BORG_PASSPHRASE_FD=0`), which is the channel's stdin.
    /// Variables that would override the fd (BORG_PASSPHRASE, BORG_PASSCOMMAND) are unset.
    public func createCommand(port: Int, withPassphrase: Bool) -> String {
        Shell.anyShell(createScript(connector: Self.connector(port: port), withPassphrase: withPassphrase))
    }

    /// The shell prefix that waits (up to 10 s) for the unix transport's socket on T. The
    /// client guard matches it byte for byte.
    static func waitForSocket(_ socket: String) -> String {
        "i=0; while [ ! -S \(Shell.quote(socket)) ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; "
    }

    /// borg create with the unix transport: waits (up to 10 s) for the listener's socket.
    public func createCommand(unixSocket: String, withPassphrase: Bool) -> String {
        Shell.anyShell(Self.waitForSocket(unixSocket)
                       + createScript(connector: Self.unixConnector(socket: unixSocket), withPassphrase: withPassphrase))
    }

    /// The POSIX script of `createCommand` (what the client guard checks, after unquoting).
    public func createScript(connector: String, withPassphrase: Bool) -> String {
        var argv = ["exec", "env", "-u", "BORG_PASSPHRASE", "-u", "BORG_PASSCOMMAND", "-u", "BORG_REPO"]
        if withPassphrase {
            argv.append("BORG_PASSPHRASE_FD=0")
        } else {
            argv += ["-u", "BORG_PASSPHRASE_FD"]
        }
        argv.append("BORG_RSH=\(connector)")
        argv += relocationEnvironment
        argv.append(client.borgPath)
        argv += createArguments
        // `exec` must stay a bare shell word.
        return "exec " + Shell.join(Array(argv.dropFirst()))
    }
}
