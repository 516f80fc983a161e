import ArgumentParser
import Foundation
import RelayCore

/// `relayctl recovery init`: the offline recovery key.
struct RecoveryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recovery",
        abstract: "The offline recovery key that state bundles are sealed to.",
        subcommands: [RecoveryInitCommand.self]
    )
}

struct RecoveryInitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create the recovery key pair: print its secret once, keep only the public key (state_dir/recovery.pub).",
        discussion: """
            The secret is printed once and written nowhere: put it on paper or in a password manager, never \
            on this host or the backup server. Whoever holds it can open every state bundle of this relay \
            (its keys and its vault). Refuses when recovery.pub exists. Run it as the agent's user.
            """
    )

    @OptionGroup var options: ConfigOption

    @Flag(name: .long, help: "Print {\"secret\": …, \"fingerprint\": …}.")
    var json = false

    func run() throws {
        let cfg = try options.load()
        let path = StateManifest.recoveryPublicKeyPath(cfg.relay)
        if FileManager.default.fileExists(atPath: path) {
            throw fail("\(VaultError.recoveryKeyExists(path: path))", exit: CLI.Exit.runFailed)
        }
        do {
            let (sk, pk) = try RecoveryKey.generate()
            defer { sk.wipe() }
            let fingerprint = RecoveryKey.fingerprint(publicKey: pk)
            try RecoveryKey.writePublicKey(pk, path: path)
            let secret = try RecoveryKey.secretText(sk)
            defer { secret.wipe() }
            var ok: Bool
            if json {
                ok = Raw.out("{\"secret\": \"") && RecoveryKey.write(secret, to: 1)
                    && Raw.out("\", \"fingerprint\": \"\(fingerprint)\"}\n")
            } else {
                ok = Raw.out("Recovery secret (shown once; keep it OFF this host and off the backup server: on paper or in a password manager):\n\n    ")
                    && RecoveryKey.write(secret, to: 1)
                    && Raw.out("\n\nFingerprint: \(fingerprint)\nPublic key: \(path)\nState bundles are sealed to it from the next state backup on (relayctl state backup).\n")
            }
            if !ok {
                unlink(path)
                throw fail("the secret could not be printed (stdout: \(String(cString: strerror(errno)))); \(path) was removed again, run it again", exit: CLI.Exit.runFailed)
            }
        } catch let e as ExitCode {
            throw e
        } catch {
            throw fail("\(error)", exit: CLI.Exit.runFailed)
        }
    }
}

/// `relayctl state export|backup`.
struct StateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state",
        abstract: "The relay's own state (config, keys, vault, known_hosts, history), sealed to the recovery key.",
        subcommands: [StateExportCommand.self, StateBackupCommand.self]
    )
}

struct StateExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write the sealed state bundle to FILE (created 0600, never over an existing file).",
        discussion: "Run it as the agent's user (it reads the keys and the vault). The bundle opens only with the recovery secret."
    )

    @OptionGroup var options: ConfigOption

    @Argument(help: "The file to create.")
    var file: String

    func run() throws {
        let cfg = try options.load()
        let sealed: [UInt8]
        do {
            sealed = try StateCollector.sealedBundle(config: cfg)
        } catch {
            throw fail("\(error)", exit: CLI.Exit.runFailed)
        }
        let fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let why = errno == EEXIST ? "it exists already (nothing was overwritten)" : String(cString: strerror(errno))
            throw fail("cannot create \(file): \(why)", exit: CLI.Exit.runFailed)
        }
        var done = 0
        while done < sealed.count {
            let n = sealed.withUnsafeBytes { write(fd, $0.baseAddress! + done, sealed.count - done) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            done += n
        }
        let synced = fsync(fd) == 0
        close(fd)
        guard done == sealed.count, synced else {
            unlink(file)
            throw fail("cannot write \(file): \(String(cString: strerror(errno))) (removed again)", exit: CLI.Exit.runFailed)
        }
        let header = try? StateBundle.header(sealed, source: file)
        print("wrote \(file): the state of relay \(cfg.relay.name), \(sealed.count) bytes, sealed to recovery key \(header?.recoveryKey ?? "?")")
    }
}

struct StateBackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Back the relay's state up to [relay] state_repository now, through the agent, and wait for the result (admin only)."
    )

    @OptionGroup var agent: AgentOptions

    @Flag(name: .long, help: "Print the result as JSON.")
    var json = false

    func run() async throws {
        let client = try agent.connect()
        let response: ControlClient.Response
        do {
            response = try await client.exchange(.POST, ControlAPI.prefix + "/state/backup", body: nil, limit: 1 << 20,
                                                 timeout: .seconds(Int64(StateBackupResult.requestTimeout)))
        } catch {
            throw fail("\(error)", exit: CLI.Exit.runFailed)
        }
        let data = Data(response.body)
        guard response.status == 200, let result = try? ControlAPI.decoder().decode(StateBackupResult.self, from: data) else {
            let e = try? ControlAPI.decoder().decode(APIErrorBody.self, from: data)
            throw fail(e?.error ?? "HTTP \(response.status): \(String(decoding: data.prefix(300), as: UTF8.self))",
                       exit: response.status == 400 ? CLI.Exit.usage : CLI.Exit.runFailed)
        }
        if json {
            print(String(decoding: (try? ControlAPI.encoder().encode(result)) ?? Data(), as: UTF8.self))
            if result.error != nil { throw ExitCode(CLI.Exit.runFailed) }
        } else if result.error != nil {
            throw fail(result.summary, exit: CLI.Exit.runFailed)
        } else {
            print(result.summary)
        }
    }
}

/// Raw writes to stdout (no stdio buffer between them and the secret's raw write).
enum Raw {
    static func out(_ text: String) -> Bool {
        let b = Array(text.utf8)
        var done = 0
        while done < b.count {
            let n = b.withUnsafeBytes { write(1, $0.baseAddress! + done, b.count - done) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            done += n
        }
        return true
    }
}
