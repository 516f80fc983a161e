import ArgumentParser
import Foundation
import RelayCore

struct WebCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "web",
        abstract: "The status page ([web] in the config).",
        subcommands: [WebPasswdCommand.self]
    )
}

struct WebPasswdCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passwd",
        abstract: "Set the status page's login password (stored as an Argon2id hash in state_dir/web-password).",
        discussion: """
            On a terminal the password is read twice without echo; otherwise stdin is read up to \
            EOF and one trailing newline is dropped. At least \(PasswordHash.minimumLength) bytes. \
            Run it as root or as the agent's user; the file is 0600 and belongs to the owner of \
            state_dir. The agent reads it at each login, so a new password applies at once (and \
            sessions already open stay open until they end).
            """
    )

    @OptionGroup var options: ConfigOption

    func run() throws {
        do {
            let stateDir = try options.load().relay.stateDir
            let secret = try SealCommand.readPassphrase(prompt: "Password: ")
            defer { secret.wipe() }
            let path = try WebPasswordFile.store(secret, stateDir: stateDir)
            print("password set: \(path) (Argon2id)")
        } catch let e as ExitCode {
            throw e
        } catch {
            throw fail("\(error)", exit: CLI.Exit.runFailed)
        }
    }
}
