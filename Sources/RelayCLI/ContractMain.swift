import ArgumentParser
import Foundation
import RelayCore

extension ParsableCommand {
    /// Parses and runs the command with the exit codes of the command contract: usage
    /// errors exit 2 (argument-parser's default is 64), `--help` exits 0, and an
    /// `ExitCode` thrown by a command is passed through.
    public static func mainWithContractExitCodes() {
        defer { JumpPool.closeAll() }
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            JumpPool.closeAll()
            Foundation.exit(code.rawValue)
        } catch {
            JumpPool.closeAll()
            if exitCode(for: error) == .success { exit(withError: error) }
            CLI.printError(fullMessage(for: error))
            Foundation.exit(CLI.Exit.usage)
        }
    }
}

extension AsyncParsableCommand {
    /// `mainWithContractExitCodes` for a root command with async subcommands.
    public static func asyncMainWithContractExitCodes() async {
        // Jump threads end before the process does (see JumpPool.closeAll).
        defer { JumpPool.closeAll() }
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let code as ExitCode {
            JumpPool.closeAll()
            Foundation.exit(code.rawValue)
        } catch {
            JumpPool.closeAll()
            if exitCode(for: error) == .success { exit(withError: error) }
            CLI.printError(fullMessage(for: error))
            Foundation.exit(CLI.Exit.usage)
        }
    }
}
