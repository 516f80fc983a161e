import ArgumentParser
import Foundation
import RelayDaemon

/// Times the status page's fleet page for a made-up fleet (see docs/performance.md).
struct BenchStatusPageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-status-page",
        abstract: "Benchmark: build and render the status page's fleet page for N clients with M runs each.",
        shouldDisplay: false
    )

    @Option(name: .long, help: "Clients in the fleet.")
    var clients: Int = 200

    @Option(name: .long, help: "Finished backups per client, over the last 30 days.")
    var runs: Int = 60

    @Option(name: .long, help: "Rounds to time.")
    var rounds: Int = 50

    func validate() throws {
        guard (1...100_000).contains(clients), (0...10_000).contains(runs), (1...10_000).contains(rounds) else {
            throw ValidationError("--clients 1…100000, --runs 0…10000, --rounds 1…10000")
        }
    }

    func run() throws {
        let f = try StatusPageBench.run(clients: clients, runsPerClient: runs, rounds: rounds)
        print(String(format: "fleet page, %d clients × %d runs, %d rounds: build %.2f ms, render %.2f ms, total %.2f ms median, %.2f ms p95; %d bytes of HTML",
                     f.clients, f.runsPerClient, f.rounds, f.buildMedian, f.renderMedian, f.totalMedian, f.totalP95, f.htmlBytes))
    }
}
