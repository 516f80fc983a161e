import ArgumentParser
import Foundation
import RelayCore

// Longer than 400 lines: one small command per operation (init, list, info, key export,
// prune, compact, check, restore, borg), each a few lines around the shared runOperation.

/// Runs an operation through the agent, waits for it, and returns the run and borg's
/// stdout. Operations queue behind a run of the same client (one borg per repository).
func runOperation(_ agent: AgentOptions, client name: String, _ op: OperationRequest,
                  passphraseStdin: Bool = false, streamTo sink: FileHandle? = nil) async throws -> (RunView, String) {
    try await withAgent(agent) { client in
        var request = RunRequest(clients: [name], queue: true, operation: op)
        if passphraseStdin { request.passphrase = try await sealPassphrase(client) }
        let started: RunList = try await client.post("/runs", body: request)
        guard var v = started.runs.first else { throw CtlError.badResponse("no run was started") }
        var told = false
        let tty = isatty(2) == 1
        var collected: [UInt8] = []
        var offset = 0
        // borg's output, as it comes: to `sink` (streamed), else collected for the caller.
        func drain() async throws -> Bool {
            while true {
                let chunk = try await client.rawOutput(run: v.id, offset: offset)
                if !chunk.bytes.isEmpty {
                    if let sink { sink.write(Data(chunk.bytes)) } else { collected += chunk.bytes }
                }
                offset = chunk.next
                if chunk.complete { return true }
                if chunk.bytes.count < ControlAPI.maxRawChunk { return false }
            }
        }
        while !v.isFinished {
            try await Task.sleep(for: .milliseconds(250))
            v = try await client.get("/runs/\(v.id)")
            if v.state == .queued && !told {
                CLI.printError("relayctl: \(op.kind) of \(name) waits for the client's current run to end (run \(v.id))")
                told = true
            }
            // Live progress on a terminal, as for a backup (stdout stays borg's output).
            if tty && v.state == .running && sink == nil {
                FileHandle.standardError.write(Data(("\r\u{1B}[K" + Format.progressLine(v)).utf8))
            }
            if sink != nil && v.state == .running { _ = try await drain() }
        }
        if tty && sink == nil { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        while try await !drain() {}
        return (v, String(decoding: collected, as: UTF8.self))
    }
}

/// Reads a passphrase from stdin into guarded memory and seals it to a fresh one-time
/// key of the agent.
func sealPassphrase(_ client: ControlClient) async throws -> SealedPassphrase {
    let key: EphemeralKey = try await client.post("/keys", body: Optional<RunRequest>.none)
    guard let pk = Data(base64Encoded: key.publicKey), pk.count == Vault.publicKeyBytes else {
        throw CtlError.badResponse("the agent's key is not a public key")
    }
    do {
        let secret = try Vault.readPassphrase(fd: 0, stopAtNewline: true)
        defer { secret.wipe() }
        let sealed = try Vault.seal(secret, publicKey: [UInt8](pk))
        return SealedPassphrase(keyID: key.keyID, sealed: sealed.base64)
    } catch {
        throw fail("\(error)", exit: CLI.Exit.usage)
    }
}

/// Exit 1 with the run's error unless it succeeded; borg's warnings go to stderr (the
/// run's output is still delivered, exit 0).
func requireSuccess(_ v: RunView) throws {
    if v.state == .warning {
        CLI.printError("relayctl: warning: \(v.kind) of \(v.client) succeeded with warnings: \(v.error ?? "see the log") (details: relayctl log \(v.id))")
        return
    }
    guard v.state == .succeeded else {
        throw fail("\(v.kind) of \(v.client) \(v.state): \(v.error ?? "no detail") (details: relayctl log \(v.id))", exit: CLI.Exit.runFailed)
    }
}

struct InitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a client's repository on its server (borg init on the relay, through the maintenance key).",
        discussion: "borg refuses if the repository exists. Export the key afterwards: relayctl key-export CLIENT FILE."
    )

    @OptionGroup var agent: AgentOptions

    @Argument(help: "The client whose repository to create.")
    var client: String

    @Option(name: .long, help: "borg's encryption mode: \(OperationRequest.encryptions.joined(separator: ", ")).")
    var encryption: String = "repokey-blake2"

    @Flag(name: .long, help: "Read the new passphrase from stdin instead of the client's sealed one.")
    var passphraseStdin = false

    func validate() throws {
        if !OperationRequest.encryptions.contains(encryption) {
            throw ValidationError("--encryption must be one of \(OperationRequest.encryptions.joined(separator: ", "))")
        }
    }

    func run() async throws {
        let (v, _) = try await runOperation(agent, client: client, OperationRequest(kind: .initialize, encryption: encryption),
                                            passphraseStdin: passphraseStdin)
        try requireSuccess(v)
        print("repository of \(client) created on server \(v.server) (encryption \(encryption)).")
        if encryption != "none" {
            print("Export its key now and keep the copy away from this host and the server:")
            print("  relayctl key-export \(client) FILE      (or on the server: borg key export REPO FILE)")
        }
    }
}

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List a client's archives, or the contents of one archive (borg list on the relay, read-only key)."
    )

    @OptionGroup var agent: AgentOptions

    @Argument(help: "The client.")
    var client: String

    @Argument(help: "An archive: list its contents.")
    var archive: String?

    @Flag(name: .long, help: "borg's JSON (--json, or --json-lines for an archive's contents).")
    var json = false

    func run() async throws {
        let (v, out) = try await runOperation(agent, client: client,
                                              OperationRequest(kind: .list, archive: archive, json: json))
        try requireSuccess(v)
        FileHandle.standardOutput.write(Data(out.utf8))
    }
}

struct InfoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show a client's repository or one archive (borg info on the relay, read-only key)."
    )

    @OptionGroup var agent: AgentOptions

    @Argument(help: "The client.")
    var client: String

    @Argument(help: "An archive.")
    var archive: String?

    @Flag(name: .long, help: "borg's JSON.")
    var json = false

    func run() async throws {
        let (v, out) = try await runOperation(agent, client: client,
                                              OperationRequest(kind: .info, archive: archive, json: json))
        try requireSuccess(v)
        FileHandle.standardOutput.write(Data(out.utf8))
    }
}

struct KeyExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key-export",
        abstract: "Export a client's repository key (borg key export) into FILE (mode 0600, not overwritten), or - for stdout."
    )

    @OptionGroup var agent: AgentOptions

    @Argument(help: "The client.")
    var client: String

    @Argument(help: "Where to write the key; - for stdout.")
    var file: String

    func run() async throws {
        if file != "-" && FileManager.default.fileExists(atPath: file) {
            throw fail("\(file) exists; not overwriting a key backup", exit: CLI.Exit.usage)
        }
        let (v, out) = try await runOperation(agent, client: client, OperationRequest(kind: .keyExport))
        try requireSuccess(v)
        if file == "-" {
            FileHandle.standardOutput.write(Data(out.utf8))
            return
        }
        let fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw fail("cannot create \(file): \(String(cString: strerror(errno)))", exit: CLI.Exit.runFailed)
        }
        let bytes = Array(out.utf8)
        let written = write(fd, bytes, bytes.count)
        close(fd)
        guard written == bytes.count else {
            unlink(file)
            throw fail("writing \(file) failed", exit: CLI.Exit.runFailed)
        }
        print("key of \(client)'s repository written to \(file)")
    }
}

struct PruneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Apply the client's retention policy (borg prune on the relay, maintenance key), after the tamper check.",
        discussion: "The daemon also does this (and compacts) after every successful backup of a client with 'retention'."
    )

    @OptionGroup var agent: AgentOptions

    @Argument(help: "The client.")
    var client: String

    @Flag(name: .long, help: "Only show what would be pruned.")
    var dryRun = false

    @Flag(name: .long, help: "Compact afterwards, freeing the space of pruned archives.")
    var compact = false

    func run() async throws {
        let (v, _) = try await runOperation(agent, client: client,
                                            OperationRequest(kind: .prune, dryRun: dryRun, compact: compact))
        try requireSuccess(v)
        try await printLog(agent, v, matching: ["Keeping archive", "Would prune", "Pruning archive", "pruned ", "tamper check"])
    }
}

struct CompactCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compact",
        abstract: "Free the space of deleted archives (borg compact on the relay, maintenance key), after the tamper check."
    )

    @OptionGroup var agent: AgentOptions

    @Argument(help: "The client.")
    var client: String

    func run() async throws {
        let (v, _) = try await runOperation(agent, client: client, OperationRequest(kind: .compact))
        try requireSuccess(v)
        try await printLog(agent, v, matching: ["tamper check", "compaction freed", "freed"])
    }
}

struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Preflight: config, key files, vault, host keys, authentication, forced command, borg and socat; optionally borg check.",
        discussion: """
            One line per check: ok, warn or fail, with the fix. Works without the daemon (run it as the agent's user: \
            it reads the keys and connects to every host). --repository also runs borg check on each client's \
            repository through the daemon (borg on the relay, the client's key); --verify-data implies it. \
            Exit status: 0 nothing failed, 1 something failed, 2 usage or a config that does not load.
            """
    )

    @Option(name: .long, help: "The config file.")
    var config: String = RelayConfig.defaultPath

    @Option(name: .long, help: "The agent's control socket (for --repository).")
    var socket: String?

    @Argument(help: "Clients to check (default: all).")
    var clients: [String] = []

    @Flag(name: .long, help: "Also run borg check on each repository (through the daemon).")
    var repository = false

    @Flag(name: .long, help: "With the repository check: read and verify all data (slow).")
    var verifyData = false

    @Flag(name: .long, help: "Print the results as JSON.")
    var json = false

    func run() async throws {
        let cfg: RelayConfig
        do {
            cfg = try ConfigLoader.load(path: config, checkFiles: false)
        } catch {
            if json {
                print(Format.json([PreflightResult(client: nil, check: "config", status: .fail, detail: "\(error)")]))
            } else {
                print("fail  config  \(error)")
            }
            throw ExitCode(CLI.Exit.usage)
        }
        let names = clients.isEmpty ? cfg.clients.keys.sorted() : clients
        var results = Preflight.run(config: cfg, clients: names)
        if repository || verifyData {
            var agent = AgentOptions()
            agent.config = config
            agent.socket = socket
            for name in names where cfg.clients[name] != nil {
                do {
                    let (v, _) = try await runOperation(agent, client: name, OperationRequest(kind: .check, verifyData: verifyData))
                    results.append(PreflightResult(client: name, check: "repository", status: v.state == .succeeded ? .ok : .fail,
                                                   detail: v.state == .succeeded ? "borg check\(verifyData ? " --verify-data" : "") passed" : (v.error ?? v.state.rawValue),
                                                   fix: v.state == .succeeded ? nil : "relayctl log \(v.id)"))
                } catch let e as ExitCode {
                    results.append(PreflightResult(client: name, check: "repository", status: .fail,
                                                   detail: "the check could not run (exit \(e.rawValue))"))
                }
            }
        }
        if json {
            print(Format.json(results))
        } else {
            for r in results {
                let who = r.client.map { "\($0): " } ?? ""
                print("\(r.status.rawValue.padding(toLength: 4, withPad: " ", startingAt: 0))  \(who)\(r.check): \(r.detail)")
                if let f = r.fix, r.status != .ok { print("      fix: \(f)") }
            }
        }
        if results.contains(where: { $0.status == .fail }) { throw ExitCode(CLI.Exit.runFailed) }
    }
}

/// Prints the lines of a run's log that contain one of `needles` (borg's report).
func printLog(_ agent: AgentOptions, _ v: RunView, matching needles: [String]) async throws {
    let text: String = try await withAgent(agent) { client in
        var all = ""
        var offset = 0
        while true {
            let chunk: LogChunk = try await client.get("/runs/\(v.id)/log?offset=\(offset)")
            all += chunk.data
            offset = chunk.nextOffset
            if chunk.complete || chunk.data.isEmpty { break }
        }
        return all
    }
    for line in text.split(separator: "\n") where needles.contains(where: { line.contains($0) }) {
        // Drop the timestamp and level: "2026-… info [R borg] Keeping archive …" → the message.
        if let r = line.range(of: "] ") { print(line[r.upperBound...]) } else { print(line) }
    }
}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore an archive (or paths in it) on the client: borg extract on T through the append-only path.",
        discussion: """
            Files go into a fresh directory on the client (default /var/tmp/borg-relay-restore-CLIENT-RUN, or --to DIR), \
            never over the originals unless --in-place is given. Owners are restored by number (--numeric-ids) \
            unless --names is given.
            """
    )

    @OptionGroup var agent: AgentOptions

    @Argument(help: "The client.")
    var client: String

    @Argument(help: "The archive (see relayctl list CLIENT).")
    var archive: String

    @Argument(help: "Paths inside the archive (default: everything).")
    var paths: [String] = []

    @Option(name: .long, help: "The directory on the client to restore into (absolute).")
    var to: String?

    @Flag(name: .long, help: "Restore over the original paths (extract into /).")
    var inPlace = false

    @Flag(name: .long, help: "Map owners by user and group name instead of numeric ids.")
    var names = false

    @Flag(name: .long, help: "Read the archive and list what would be restored; write nothing.")
    var dryRun = false

    func validate() throws {
        if inPlace && to != nil { throw ValidationError("give --to or --in-place, not both") }
    }

    func run() async throws {
        let op = OperationRequest(kind: .restore, archive: archive, dryRun: dryRun ? true : nil,
                                  paths: paths, to: to, inPlace: inPlace ? true : nil, names: names ? true : nil)
        let (v, _) = try await runOperation(agent, client: client, op)
        try requireSuccess(v)
        if dryRun {
            try await printLog(agent, v, matching: ["[T borg] "])
            print("dry run: nothing was written on \(client)")
        } else {
            print("archive \(archive) restored on \(client) into \(op.restoreTarget(client: client, runID: v.id))")
        }
    }
}

struct BorgCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "borg",
        abstract: "Run a read-only borg command on the client against its repository (list, info, diff, extract --stdout, export-tar -).",
        discussion: "Name archives as ::ARCHIVE. Example: relayctl borg web1 -- export-tar ::a1 - > a1.tar. The output streams to stdout as borg writes it; it passes through the run's output file in state_dir on the relay (mode 0600), which is removed once relayctl has read it to the end."
    )

    @OptionGroup var agent: AgentOptions

    @Argument(help: "The client.")
    var client: String

    @Argument(parsing: .postTerminator, help: "borg's arguments, after --.")
    var args: [String] = []

    func run() async throws {
        // Output streams to stdout as borg writes it (binary-safe: export-tar - works).
        let (v, _) = try await runOperation(agent, client: client, OperationRequest(kind: .borg, args: args),
                                            streamTo: FileHandle.standardOutput)
        try requireSuccess(v)
    }
}
