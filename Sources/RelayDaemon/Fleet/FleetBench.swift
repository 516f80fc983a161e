import Foundation
import Logging
import RelayCore

/// `relay-agent bench-fleet`: how fast a fleet enqueues and claims due runs (see
/// docs/performance.md). The parent enqueues `clients` due runs as the scheduler's leader
/// does (one INSERT each, unique due time), then worker processes (this executable again,
/// one per agent) claim them with the agents' claim statement and mark each ended at once;
/// the time until every run was claimed gives claims per second. Its rows are clients
/// `bench-N` and relays `bench-wN`, removed before and after.
public enum FleetBench {
    public struct Round: Sendable {
        public var agents: Int
        public var clients: Int
        /// Seconds to enqueue every due run (the scheduler's part).
        public var enqueue: Double
        /// Seconds from the start signal until every run was claimed.
        public var claim: Double
        public var claimsPerSecond: Double { Double(clients) / claim }
    }

    static func store(_ settings: DatabaseSettings, name: String) throws -> PostgresStore {
        var quiet = Logger(label: "bench")
        quiet.logLevel = .error
        return try PostgresStore(settings, relayName: name, logger: quiet)
    }

    static func clean(_ store: PostgresStore) throws {
        try store.client.query("DELETE FROM run WHERE client LIKE 'bench-%'")
        try store.client.query("DELETE FROM relay_node WHERE name LIKE 'bench-w%'")
    }

    /// One round: `agents` worker processes started from `executable` with `workerArguments`
    /// (which must reach `worker`), each told to begin by a line on its stdin.
    public static func round(_ settings: DatabaseSettings, agents: Int, clients: Int, executable: String,
                             workerArguments: (Int) -> [String]) throws -> Round {
        let store = try store(settings, name: "bench-parent")
        defer { store.close() }
        try clean(store)
        var workers: [(Process, Pipe, Pipe)] = []
        for i in 0..<agents {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: executable)
            p.arguments = workerArguments(i)
            let input = Pipe(), output = Pipe()
            p.standardInput = input
            p.standardOutput = output
            try p.run()
            workers.append((p, input, output))
        }
        // Each worker says it is connected before the clock starts.
        for (_, _, out) in workers { _ = out.fileHandleForReading.readLine() }
        let slot = Date()
        let t0 = Date()
        for n in 0..<clients {
            let record = RunRecord.starting(runID: "bench-\(n)-\(UUID().uuidString.prefix(8))", client: "bench-\(n)", server: "vault",
                                            logFile: nil, state: .queued, trigger: "schedule")
            try store.insert(record, operation: nil, pinnedRelay: nil, scheduledFor: slot)
        }
        let enqueue = Date().timeIntervalSince(t0)
        let t1 = Date()
        for (_, input, _) in workers { input.fileHandleForWriting.write(Data("go\n".utf8)) }
        for (p, _, _) in workers { p.waitUntilExit() }
        let claim = Date().timeIntervalSince(t1)
        let left = try store.client.query("SELECT count(*) FROM run WHERE client LIKE 'bench-%' AND state = 'queued'")
        let queued = try left.first?.decode(Int64.self) ?? -1
        guard queued == 0 else { throw RunError.setup("bench-fleet: \(queued) runs were left queued") }
        try clean(store)
        return Round(agents: agents, clients: clients, enqueue: enqueue, claim: claim)
    }

    /// A worker: connects, says so, waits for "go", then claims until nothing is queued.
    public static func worker(_ settings: DatabaseSettings, index: Int, clients: Int) throws {
        let store = try store(settings, name: "bench-w\(index)")
        defer { store.close() }
        let names = (0..<clients).map { "bench-\($0)" }
        FileHandle.standardOutput.write(Data("ready\n".utf8))
        _ = readLine()
        while true {
            guard let c = try store.claim(clients: names, lease: 60, pid: getpid(), agentStart: nil, logDir: "/nonexistent") else {
                let left = try store.client.query("SELECT count(*) FROM run WHERE client LIKE 'bench-%' AND state = 'queued'")
                if try left.first?.decode(Int64.self) == 0 { return }
                continue
            }
            try store.markEnded(c.record.id, state: .succeeded, error: nil)
        }
    }
}

extension FileHandle {
    /// One line (without its newline), or nil at the end.
    func readLine() -> String? {
        var bytes: [UInt8] = []
        while true {
            let d = readData(ofLength: 1)
            guard let b = d.first else { return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self) }
            if b == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(b)
        }
    }
}
