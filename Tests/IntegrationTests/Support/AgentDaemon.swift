import Foundation
import RelayCore
import Testing

/// `relay-agent serve` on a sandbox's config, stopped by PID. Its stderr (the daemon log)
/// goes to `logPath`.
final class AgentDaemon {
    let sandbox: Sandbox
    let process: Spawned
    let logPath: String
    let socket: String

    /// Starts the daemon and waits up to 20 s until it is ready: its socket answers and it
    /// has logged "listening on" (after it gave the socket its mode and group; the socket
    /// accepts connections a moment before that). `wrapper`: a program that execs the daemon
    /// (same PID) after changing something, e.g. `prlimit --nofile=…`. `config` and
    /// `socket`: another config than the sandbox's (one relay of a fleet) and its socket.
    init(_ sandbox: Sandbox, env: [String: String]? = nil, wrapper: [String] = [], config: String? = nil,
         socket: String? = nil) throws {
        self.sandbox = sandbox
        self.socket = socket ?? "\(sandbox.dir)/relay/control.sock"
        logPath = "\(sandbox.dir)/agent-\(UUID().uuidString.prefix(6)).log"
        let argv = wrapper + [try Proc.binary("relay-agent"), "serve", "--config", config ?? sandbox.configPath]
        process = try Spawned(argv[0], Array(argv.dropFirst()), env: env, stdin: "/dev/null", stdout: logPath, stderr: logPath)
        let deadline = Date().addingTimeInterval(20)
        while UnixSocket.probe(self.socket) != 0 || !log.contains("listening on") {
            guard process.isRunning(), Date() < deadline else {
                process.kill(SIGKILL)
                _ = process.wait(timeout: 5)
                throw FixtureError("relay-agent serve did not start listening: \(log)")
            }
            usleep(50_000)
        }
    }

    deinit { stop() }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// `relayctl ARGS --socket S`.
    @discardableResult
    func ctl(_ args: [String], stdin: Data? = nil, timeout: TimeInterval = 300) throws -> ProcessResult {
        // Options go before a "--" (after it everything is passed through).
        var argv = args
        argv.insert(contentsOf: ["--socket", socket], at: args.firstIndex(of: "--") ?? args.count)
        return try Proc.run(try Proc.binary("relayctl"), argv, stdin: stdin, timeout: timeout)
    }

    func status() throws -> StatusView {
        let r = try ctl(["status", "--json"])
        guard r.status == 0 else { throw FixtureError("relayctl status failed: \(r.output)") }
        return try ControlAPI.decoder().decode(StatusView.self, from: Data(r.stdout.utf8))
    }

    func runs(_ client: String? = nil) throws -> [RunView] {
        let r = try ctl(["runs"] + (client.map { [$0] } ?? []) + ["--json", "--limit", "100"])
        guard r.status == 0 else { throw FixtureError("relayctl runs failed: \(r.output)") }
        return try ControlAPI.decoder().decode(RunList.self, from: Data(r.stdout.utf8)).runs
    }

    func run(_ id: String) throws -> RunView? { try runs().first { $0.id == id } }

    /// Starts runs without following; returns their ids.
    func start(_ args: [String]) throws -> [String] {
        let r = try ctl(["run"] + args + ["--json"])
        guard r.status == 0 else { throw FixtureError("relayctl run \(args) failed: \(r.output)") }
        return try ControlAPI.decoder().decode(RunList.self, from: Data(r.stdout.utf8)).runs.map(\.id)
    }

    /// Polls until `predicate` holds for the run, up to `seconds`.
    func waitFor(_ id: String, within seconds: Double, _ predicate: (RunView) -> Bool) throws -> RunView? {
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            if let v = try run(id), predicate(v) { return v }
            usleep(100_000)
        } while Date() < deadline
        return nil
    }

    func waitFinished(_ id: String, within seconds: Double = 120) throws -> RunView? {
        try waitFor(id, within: seconds) { $0.isFinished }
    }

    /// Waits until borg create of some run is running on T.
    func waitForBorgOnT(within seconds: Double = 20) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            if Proc.descendants(of: sandbox.t.process.pid).contains(where: { Proc.commandLine($0).contains("ssh://borg-relay") }) {
                return true
            }
            usleep(50_000)
        } while Date() < deadline
        return false
    }

    /// Sends `signal` and waits for the exit status.
    @discardableResult
    func stop(signal: Int32 = SIGTERM, timeout: TimeInterval = 60) -> Int32? {
        guard process.isRunning() else { return process.wait(timeout: 0) }
        process.kill(signal)
        if let st = process.wait(timeout: timeout) { return st }
        process.kill(SIGKILL)
        _ = process.wait(timeout: 10)
        return nil
    }
}
