import ArgumentParser
import Foundation
import RelayCore

struct VaultCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vault",
        abstract: "Manage the passphrase vault.",
        subcommands: [Init.self]
    )

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the vault's X25519 key pair in state_dir (vault.key 0600, vault.pub).",
            discussion: "Run it as the user relay-agent runs as. Refuses to overwrite an existing key."
        )

        @OptionGroup var options: ConfigOption

        func run() throws {
            let cfg = try options.load()
            do {
                try Vault.initialise(secretPath: cfg.relay.vaultSecretKeyPath, publicPath: cfg.relay.vaultPublicKeyPath)
            } catch {
                throw fail("\(error)", exit: CLI.Exit.runFailed)
            }
            print("vault created: \(cfg.relay.vaultSecretKeyPath) (secret, 0600), \(cfg.relay.vaultPublicKeyPath) (public)")
            print("seal passphrases with: relayctl seal --config \(options.config)")
        }
    }
}
