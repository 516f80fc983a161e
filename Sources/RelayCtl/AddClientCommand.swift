import ArgumentParser
import Foundation
import RelayCore

/// `relayctl add-client`: a new client in one command. Everything that can fail or needs an
/// answer (the config with the new table, the host keys, the passphrase) happens before
/// anything is written; then the key pair, the known_hosts lines and the config, undone in
/// that order if a later write fails.
struct AddClientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add-client",
        abstract: "Enrol a client: its key pair, its pinned host keys, its sealed passphrase and its [clients.NAME] table; prints the authorized_keys lines for it and its server.",
        discussion: """
            The passphrase is read twice without echo on a terminal, else from stdin up to EOF. The host \
            keys are shown for confirmation (compare them with ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub \
            on the client); --yes accepts them. Nothing is written when a step fails.
            """
    )

    @Argument(help: "The client's name ([A-Za-z0-9._-]).")
    var name: String

    @Option(name: .long, help: "The client's host name or address, as the relay reaches it.")
    var host: String

    @Option(name: .long, help: "Its SSH port.")
    var port: Int = 22

    @Option(name: .long, help: "The login on the client.")
    var user: String = "root"

    @Option(name: .long, help: "The server (a [servers.NAME] of the config) its repository is on.")
    var server: String

    @Option(name: .long, help: "The repository's path on the server.")
    var repository: String

    @Option(name: .long, parsing: .upToNextOption, help: "The paths to back up on the client.")
    var paths: [String]

    @Option(name: .long, help: "The new private key's path (default: keys/NAME beside the config).")
    var key: String?

    @Flag(name: .long, help: "Accept the client's host keys without asking.")
    var yes = false

    @OptionGroup var options: ConfigOption

    func run() throws {
        let path = options.config
        guard let original = FileManager.default.contents(atPath: path) else {
            throw fail("cannot read \(path): \(FileCheck.unreadableReason(path) ?? "no such file") (give --config)", exit: CLI.Exit.usage)
        }
        let text = String(decoding: original, as: UTF8.self)
        if let problem = ConfigLoader.nameProblem(name) {
            throw fail("the client name '\(name)' is not allowed: \(problem)", exit: CLI.Exit.usage)
        }
        let keyPath = key ?? ((path as NSString).deletingLastPathComponent + "/keys/\(name)")
        for p in [keyPath, keyPath + ".pub"] where FileManager.default.fileExists(atPath: p) {
            throw fail("\(p) exists already; nothing was overwritten (give --key PATH for a new key, or remove it)", exit: CLI.Exit.usage)
        }
        var enrolment = Enrolment(name: name, host: host, port: port, user: user, key: keyPath, server: server,
                                  repository: repository, paths: paths)
        // 1. The config with the new table (a sealed value stands in for the passphrase).
        let cfg: RelayConfig
        do {
            cfg = try ConfigLoader.parse(text, file: path, checkFiles: false)
            var probe = enrolment
            probe.passphrase = SealedValue(base64: "AA==")
            _ = try probe.validated(in: text, file: path)
        } catch {
            throw fail("\(error)\n(nothing was written)", exit: CLI.Exit.usage)
        }
        // 2. The client's host keys, confirmed.
        let pins = try hostKeyLines(cfg)
        // 3. The passphrase, sealed to the vault.
        let sealed: SealedValue
        do {
            let pk = try Vault.readPublicKey(path: cfg.relay.vaultPublicKeyPath)
            let secret = try SealCommand.readPassphrase()
            defer { secret.wipe() }
            sealed = try Vault.seal(secret, publicKey: pk)
        } catch let e as ExitCode {
            throw e
        } catch {
            throw fail("\(error)\n(nothing was written)", exit: CLI.Exit.runFailed)
        }
        enrolment.passphrase = sealed
        let final: RelayConfig
        do {
            final = try enrolment.validated(in: text, file: path)
        } catch {
            throw fail("\(error)\n(nothing was written)", exit: CLI.Exit.usage)
        }
        // 4. Writes: the key pair, the pins, the config; each undone if a later one fails.
        let keyDir = (keyPath as NSString).deletingLastPathComponent
        if !FileManager.default.fileExists(atPath: keyDir) {
            guard mkdir(keyDir, 0o700) == 0 else { throw fail("cannot create \(keyDir): \(String(cString: strerror(errno)))", exit: CLI.Exit.runFailed) }
        }
        do {
            _ = try KeyPair.createEd25519(path: keyPath, comment: "borg-relay:\(name)")
        } catch {
            throw fail("\(error)\n(the config was not changed)", exit: CLI.Exit.runFailed)
        }
        let knownHosts = cfg.relay.knownHosts
        let knownBefore = FileManager.default.contents(atPath: knownHosts)
        do {
            if !pins.isEmpty { try KnownHosts.append(pins, to: knownHosts) }
            try FileCheck.replace(path, with: Array(enrolment.appended(to: text).utf8))
        } catch {
            unlink(keyPath)
            unlink(keyPath + ".pub")
            if !pins.isEmpty {
                if let k = knownBefore { try? FileCheck.replace(knownHosts, with: Array(k)) } else { unlink(knownHosts) }
            }
            throw fail("\(error)\n(the key pair and the pins were removed again; the config was not changed)", exit: CLI.Exit.runFailed)
        }
        print("client \(name) added to \(path) (key \(keyPath), \(pins.count) host key(s) pinned in \(knownHosts))")
        print("")
        do {
            for line in try AuthorizedKeys.document(config: final, client: final.clients[name]!) { print(line) }
        } catch {
            throw fail("\(error)", exit: CLI.Exit.runFailed)
        }
        print("")
        print("Then check it: relayctl check \(name) --config \(path)   (and reload the agent: systemctl reload relay-agent)")
    }

    /// The known_hosts lines to add for the client (none when its keys are pinned already),
    /// after the operator confirmed the fingerprints.
    private func hostKeyLines(_ cfg: RelayConfig) throws -> [String] {
        let keys: [HostKeyInfo]
        do {
            keys = try HostKeyProbe.scan(host: host, port: port, timeout: cfg.relay.connectTimeout, options: SessionOptions(cfg))
        } catch {
            throw fail("\(error)\n(nothing was written)", exit: CLI.Exit.runFailed)
        }
        let pinName = HostKeyProbe.pinName(host: host, port: port)
        FileHandle.standardError.write(Data("Host keys of \(pinName):\n".utf8))
        for k in keys { FileHandle.standardError.write(Data("  \(k.fingerprint) (\(k.type))\n".utf8)) }
        return try confirmedPins(name: pinName, offered: keys, knownHosts: cfg.relay.knownHosts, yes: yes,
                                 refusal: "\n(nothing was written)")
    }
}
