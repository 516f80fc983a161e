import ArgumentParser
import Foundation
import RelayCore
import RelayDaemon

/// Times a fleet's scheduler and claims against a PostgreSQL database (see
/// docs/performance.md; contrib/bench/fleet starts a throwaway database and runs this).
struct BenchFleetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-fleet",
        abstract: "Benchmark: enqueue N due runs and claim them with 1, 3, 10 … agent processes.",
        shouldDisplay: false
    )

    @Option(name: .long, help: "postgresql://USER@HOST:PORT/DATABASE (a throwaway database: the bench writes bench-* rows).")
    var database: String

    @Option(name: .long, help: "The role's password file (else PGPASSWORD).")
    var passwordFile: String?

    @Option(name: .long, help: "Due runs per round (one per client).")
    var clients: Int = 1000

    @Option(name: .long, parsing: .upToNextOption, help: "Agent processes per round.")
    var agents: [Int] = [1, 3, 10]

    @Option(name: .long, help: "(internal) run as worker N.")
    var worker: Int?

    func validate() throws {
        guard (1...100_000).contains(clients), agents.allSatisfy({ (1...100).contains($0) }) else {
            throw ValidationError("--clients 1…100000, --agents 1…100 each")
        }
    }

    func run() throws {
        var settings: DatabaseSettings
        switch DatabaseSettings.parse(database) {
        case .success(let d): settings = d
        case .failure(let p): throw ValidationError("--database: \(p.reason)")
        }
        settings.passwordFile = passwordFile
        if let worker {
            try FleetBench.worker(settings, index: worker, clients: clients)
            return
        }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        for n in agents {
            let r = try FleetBench.round(settings, agents: n, clients: clients, executable: exe) { i in
                ["bench-fleet", "--database", database, "--clients", "\(clients)", "--worker", "\(i)"]
                    + (passwordFile.map { ["--password-file", $0] } ?? [])
            }
            print(String(format: "fleet bench: %d due runs; scheduler enqueued them in %.3f s; %2d agent(s) claimed them in %.3f s (%.0f claims/s)",
                         r.clients, r.enqueue, r.agents, r.claim, r.claimsPerSecond))
        }
    }
}
