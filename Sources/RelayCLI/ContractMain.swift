import ArgumentParser
import Foundation
import RelayCore

extension ParsableCommand {
    /// Parses and runs the command with the exit codes of the command contract: usage
    /// errors exit 2 (argument-parser's default is 64), `--help` exits 0, and an
    /// `ExitCode` thrown by a command is passed through.
    public static func mainWithContractExitCodes() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            if exitCode(for: error) == .success { exit(withError: error) }
            CLI.printError(fullMessage(for: error))
            Foundation.exit(CLI.Exit.usage)
        }
    }
}

extension AsyncParsableCommand {
    /// `mainWithContractExitCodes` for a root command with async subcommands.
    public static func asyncMainWithContractExitCodes() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            if exitCode(for: error) == .success { exit(withError: error) }
            CLI.printError(fullMessage(for: error))
            Foundation.exit(CLI.Exit.usage)
        }
    }
}
