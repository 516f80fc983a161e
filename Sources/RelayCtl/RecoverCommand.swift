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
            config names them: files 0600, new directories 0700, owned by --owner (default: the owner of an \
            existing state_dir, else you). Refuses to replace a vault or any file with other contents; when \
            anything fails, nothing is written.
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
        let sealed: [UInt8]
        let source: String
        if let file {
            guard let d = FileManager.default.contents(atPath: file) else {
                throw fail("cannot read \(file): \(FileCheck.unreadableReason(file) ?? "no such file") (nothing was written)", exit: CLI.Exit.runFailed)
            }
            sealed = Array(d)
            source = file
        } else {
            let (host, port) = try Self.split(server!)
            do {
                let fetch = StateFetch(host: host, port: port, user: user!, key: key!, repository: repository!, relay: relay,
                                       connectorPath: Self.connectorPath())
                let keys = try fetch.hostKeys()
                try confirm(keys, name: HostKeyProbe.pinName(host: host, port: port))
                let found = try fetch.newestBundle(pinned: keys)
                FileHandle.standardError.write(Data("fetched \(found.archive) from \(repository!) on \(server!)\n".utf8))
                sealed = found.bytes
                source = "archive \(found.archive)"
            } catch let e as ExitCode {
                throw e
            } catch {
                throw fail("\(error) (nothing was written)", exit: CLI.Exit.runFailed)
            }
        }
        let outcome: Recovery.Outcome
        do {
            outcome = try Recovery.recover(sealed: sealed, secret: secret, source: source, relay: relay, configPath: config, owner: owner)
        } catch {
            throw fail("\(error)", exit: CLI.Exit.runFailed)
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

    /// The server's host key: matching --host-key-fingerprint, or confirmed on the terminal.
    private func confirm(_ keys: [HostKeyInfo], name: String) throws {
        for k in keys { FileHandle.standardError.write(Data("\(name) host key: \(k.fingerprint) (\(k.type))\n".utf8)) }
        if let expected = hostKeyFingerprint {
            let want = expected.hasPrefix("SHA256:") ? expected : "SHA256:" + expected
            guard keys.contains(where: { $0.fingerprint == want }) else {
                throw fail("\(name) offers no host key with fingerprint \(want) (it offers \(keys.map(\.fingerprint).joined(separator: ", "))): not the server you meant, or a wrong fingerprint; nothing was written", exit: CLI.Exit.runFailed)
            }
            return
        }
        if yes { return }
        guard isatty(0) != 0 else {
            throw fail("the server's host key is unconfirmed: give --host-key-fingerprint SHA256:… (check it on the server: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub); nothing was written", exit: CLI.Exit.usage)
        }
        FileHandle.standardError.write(Data("Is this the backup server's key (compare on the server: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)? [y/N] ".utf8))
        let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
        guard answer == "y" || answer == "yes" else { throw fail("host key not confirmed; nothing was written", exit: CLI.Exit.runFailed) }
    }
}
