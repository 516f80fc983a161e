import ArgumentParser
import Foundation
import RelayCore

/// `relayctl recover`: a fresh relay from its newest state bundle, in one command.
struct RecoverCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recover",
        abstract: "Rebuild a lost relay from its sealed state: from the state repository on a server, or from a file.",
        discussion: """
            Asks for the recovery secret (without echo on a terminal, else from stdin). From a server: give \
            --server HOST[:PORT] --user U --key NEWKEY --repository PATH, NEWKEY being a key authorized on the \
            server for the state repository, and --host-key-fingerprint SHA256:… (or confirm the key shown). \
            Writes the config (at --config) and state_dir, known_hosts and every key file where the recovered \
            config names them, which must be under the recovered state_dir or the directory of --config (or a \
            directory given with --allow-path): files 0600, new directories 0700, owned by --owner (default: the \
            owner of an existing state_dir; as root with no state_dir yet, --owner is needed). From a server, \
            the newest bundle whose authenticated header matches its archive name is taken; a damaged or \
            renamed one is reported and the next older one tried. Refuses to replace a vault or any file with \
            other contents; when anything fails, nothing is written.
            """
    )

    @Option(name: .long, help: "A bundle file (from relayctl state export).")
    var file: String?

    @Option(name: .long, help: "The server holding the state repository, HOST or HOST:PORT.")
    var server: String?

    @Option(name: .long, help: "The login on the server.")
    var user: String?

    @Option(name: .long, help: "A private key the server accepts for the state repository.")
    var key: String?

    @Option(name: .long, help: "The state repository's path on the server.")
    var repository: String?

    @Option(name: .long, help: "The server's host key fingerprint (SHA256:…, as ssh-keygen -l prints it).")
    var hostKeyFingerprint: String?

    @Flag(name: .long, help: "Accept the server's host key without asking (only with a fingerprint checked some other way).")
    var yes = false

    @Option(name: .long, help: "Recover this relay's state only (its [relay] name); needed when the repository holds several relays' bundles.")
    var relay: String?

    @Option(name: .long, help: "Where to write the config.")
    var config: String = RelayConfig.defaultPath

    @Option(name: .long, help: "The user the files are given to (the agent's user).")
    var owner: String?

    @Option(name: .long, help: ArgumentHelp("A directory besides state_dir and the config's where the recovered config may put files (its keys, known_hosts); repeatable.", valueName: "DIR"))
    var allowPath: [String] = []

    func validate() throws {
        if (file == nil) == (server == nil) { throw ValidationError("give either --file FILE or --server HOST[:PORT] (with --user, --key, --repository)") }
        if server != nil && (user == nil || key == nil || repository == nil) {
            throw ValidationError("--server needs --user, --key and --repository")
        }
        if file != nil && (user != nil || key != nil || repository != nil || hostKeyFingerprint != nil) {
            throw ValidationError("--user, --key, --repository and --host-key-fingerprint are for --server")
        }
        if !config.hasPrefix("/") { throw ValidationError("--config must be an absolute path") }
        if let r = relay, !RelayName.isValid(r) { throw ValidationError("--relay \(r) is not a relay name") }
        if let bad = allowPath.first(where: { !$0.hasPrefix("/") || $0.split(separator: "/").contains { $0 == ".." || $0 == "." } }) {
            throw ValidationError("--allow-path \(bad) must be an absolute path without . or ..")
        }
    }

    func run() throws {
        // The secret first: nothing else needs it, and on a terminal the prompt comes before any wait.
        let secret: SecretBytes
        do {
            secret = try Self.readSecretOrExplain()
        } catch {
            throw fail("\(error) (nothing was written)", exit: CLI.Exit.usage)
        }
        defer { secret.wipe() }
        let outcome: Recovery.Outcome
        if let file {
            guard let d = FileManager.default.contents(atPath: file) else {
                throw fail("cannot read \(file): \(FileCheck.unreadableReason(file) ?? "no such file") (nothing was written)", exit: CLI.Exit.runFailed)
            }
            do {
                outcome = try Recovery.recover(sealed: Array(d), secret: secret, source: file, relay: relay, configPath: config, owner: owner,
                                               allowing: allowPath)
            } catch {
                throw fail("\(error)", exit: CLI.Exit.runFailed)
            }
        } else {
            let (host, port) = try Self.split(server!)
            let fetch = StateFetch(host: host, port: port, user: user!, key: key!, repository: repository!, relay: relay,
                                   connectorPath: Self.connectorPath())
            let keys: [HostKeyInfo]
            do {
                keys = try fetch.hostKeys()
            } catch {
                throw fail("\(error) (nothing was written)", exit: CLI.Exit.runFailed)
            }
            let pins = try confirm(keys, name: HostKeyProbe.pinName(host: host, port: port))
            do {
                outcome = try fetch.firstGoodBundle(pinned: pins, skipped: { name, error in
                    FileHandle.standardError.write(Data("archive \(name) not used: \(error)\n".utf8))
                }) { name, bytes throws(RecoveryError) in
                    FileHandle.standardError.write(Data("fetched \(name) from \(repository!) on \(server!)\n".utf8))
                    return try Recovery.recover(sealed: bytes, secret: secret, source: "archive \(name)", relay: relay, configPath: config,
                                                owner: owner, archive: name, allowing: allowPath)
                }
            } catch {
                throw fail("\(error)", exit: CLI.Exit.runFailed)
            }
        }
        let user = getpwuid(outcome.owner.uid).map { String(cString: $0.pointee.pw_name) } ?? "uid \(outcome.owner.uid)"
        print("recovered relay \(outcome.relay) from its state of \(outcome.created.formatted(.iso8601)):")
        for p in outcome.written { print("  wrote \(p)") }
        for p in outcome.unchanged { print("  kept  \(p) (already the same)") }
        print("files 0600, new directories 0700, owned by \(user)")
        print("next: relayctl check --config \(config), then start the agent (systemctl start relay-agent)")
    }

    /// The secret, without echo on a terminal; otherwise stdin up to EOF.
    static func readSecret() throws -> SecretBytes {
        let text: SecretBytes
        if isatty(0) != 0 {
            text = try Terminal.withoutEcho(prompt: "Recovery secret: ") { try Vault.readPassphrase(fd: 0, stopAtNewline: true) }
        } else {
            text = try Vault.readPassphrase(fd: 0, stopAtNewline: false)
        }
        defer { text.wipe() }
        return try RecoveryKey.parseSecret(text)
    }

    /// The recovery secret; an empty input says that no secret was given.
    static func readSecretOrExplain() throws -> SecretBytes {
        do {
            return try readSecret()
        } catch VaultError.emptyPassphrase {
            throw VaultError.malformedRecoverySecret
        }
    }

    static func split(_ server: String) throws -> (String, Int) {
        if let i = server.lastIndex(of: ":"), !server.hasSuffix("]"), let p = Int(server[server.index(after: i)...]), (1...65535).contains(p) {
            return (String(server[..<i]).trimmingCharacters(in: CharacterSet(charactersIn: "[]")), p)
        }
        if server.isEmpty || server.contains(where: { $0.isWhitespace || $0 == "/" }) {
            throw fail("--server \(server) is not HOST or HOST:PORT", exit: CLI.Exit.usage)
        }
        return (server.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), 22)
    }

    /// relay-agent beside this relayctl (borg's connector), else from PATH.
    static func connectorPath() -> String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let beside = (me as NSString).deletingLastPathComponent + "/relay-agent"
        return FileManager.default.isExecutableFile(atPath: beside) ? beside : "relay-agent"
    }

    /// The server's host key to pin for the fetch (only that one): the one matching
    /// --host-key-fingerprint, or the one shown and confirmed on the terminal (or --yes).
    private func confirm(_ keys: [HostKeyInfo], name: String) throws -> [HostKeyInfo] {
        if let expected = hostKeyFingerprint {
            let want = expected.hasPrefix("SHA256:") ? expected : "SHA256:" + expected
            let pins = StateFetch.pins(keys, fingerprint: want)
            guard !pins.isEmpty else {
                throw fail("\(name) offers no host key with fingerprint \(want) (it offers \(keys.map(\.fingerprint).joined(separator: ", "))): not the server you meant, or a wrong fingerprint; nothing was written", exit: CLI.Exit.runFailed)
            }
            return pins
        }
        let pins = StateFetch.pins(keys, fingerprint: nil)
        guard let shown = pins.first else {
            throw fail("\(name) offered no host key; nothing was written", exit: CLI.Exit.runFailed)
        }
        FileHandle.standardError.write(Data("\(name) host key: \(shown.fingerprint) (\(shown.type))\n".utf8))
        if yes { return pins }
        guard isatty(0) != 0 else {
            throw fail("the server's host key is unconfirmed: give --host-key-fingerprint SHA256:… (check it on the server: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub); nothing was written", exit: CLI.Exit.usage)
        }
        FileHandle.standardError.write(Data("Is this the backup server's key (compare on the server: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)? [y/N] ".utf8))
        let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
        guard answer == "y" || answer == "yes" else { throw fail("host key not confirmed; nothing was written", exit: CLI.Exit.runFailed) }
        return pins
    }
}
