import ArgumentParser
import Foundation
import RelayCore

struct SealCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seal",
        abstract: "Seal a passphrase read from stdin; prints sealed:<base64> for the config.",
        discussion: """
            Only the vault's public key is used: sealing does not need (or allow) reading other \
            passphrases. On a terminal the passphrase is read twice without echo; otherwise stdin \
            is read up to EOF and one trailing newline is dropped.
            """
    )

    @OptionGroup var options: ConfigOption

    @Option(name: .long, help: "Seal to this public key file instead of state_dir/vault.pub.")
    var publicKey: String?

    func run() throws {
        do {
            let path: String
            if let p = publicKey {
                path = p
            } else {
                path = try options.load().relay.vaultPublicKeyPath
            }
            let pk = try Vault.readPublicKey(path: path)
            let secret = try Self.readPassphrase()
            defer { secret.wipe() }
            let sealed = try Vault.seal(secret, publicKey: pk)
            print(sealed.description)
        } catch let e as ExitCode {
            throw e
        } catch {
            throw fail("\(error)", exit: CLI.Exit.runFailed)
        }
    }

    /// Twice without echo on a terminal; otherwise stdin up to EOF, one trailing newline dropped.
    static func readPassphrase(prompt: String = "Passphrase: ") throws -> SecretBytes {
        guard isatty(0) != 0 else {
            return try Vault.readPassphrase(fd: 0, stopAtNewline: false)
        }
        let first = try Terminal.withoutEcho(prompt: prompt) {
            try Vault.readPassphrase(fd: 0, stopAtNewline: true)
        }
        do {
            let second = try Terminal.withoutEcho(prompt: "Again: ") {
                try Vault.readPassphrase(fd: 0, stopAtNewline: true)
            }
            defer { second.wipe() }
            guard first.equals(second) else { throw VaultError.confirmationMismatch }
        } catch {
            first.wipe()
            throw error
        }
        return first
    }
}

enum Terminal {
    /// Runs `body` with echo off on stdin's terminal, prompting on stderr.
    static func withoutEcho<T>(prompt: String, _ body: () throws -> T) throws -> T {
        FileHandle.standardError.write(Data(prompt.utf8))
        var saved = termios()
        let haveTTY = tcgetattr(0, &saved) == 0
        if haveTTY {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(0, TCSAFLUSH, &quiet)
        }
        defer {
            if haveTTY { tcsetattr(0, TCSAFLUSH, &saved) }
            FileHandle.standardError.write(Data("\n".utf8))
        }
        return try body()
    }
}
