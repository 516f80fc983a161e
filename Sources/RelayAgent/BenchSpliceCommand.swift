import ArgumentParser
import Foundation
import RelayCore
import Synchronization

/// For contrib/bench: K relayed runs at once through this one agent process, each running
/// a raw command on the client instead of borg create, with the agent's own CPU, memory,
/// thread and descriptor figures. Same connect, forward and splice code as `run`.
struct BenchSpliceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-splice",
        abstract: "Benchmark helper: K concurrent relayed runs of a raw command (see contrib/bench).",
        shouldDisplay: false
    )

    @Argument(help: "The client whose host, key and server are used.")
    var client: String

    @Option(name: .long, help: "The config file.")
    var config: String = RelayConfig.defaultPath

    @Option(name: .long, help: "Command run on the client; {port} becomes the forwarded port.")
    var command: String

    @Option(name: .long, help: "How many runs at once.")
    var parallel: Int = 1

    @Option(name: .long, help: "Seconds between samples of the thread and descriptor counts (the idle test samples rarely: listing /proc/self/fd with thousands of descriptors costs CPU the agent itself does not spend).")
    var sampleSeconds: Int = 1

    func validate() throws {
        guard (1...1000).contains(parallel) else { throw ValidationError("--parallel must be 1…1000") }
        guard command.contains("{port}") else { throw ValidationError("--command must contain {port}") }
        guard (1...3600).contains(sampleSeconds) else { throw ValidationError("--sample-seconds must be 1…3600") }
    }

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let cfg: RelayConfig
        let c: ClientConfig
        do {
            cfg = try ConfigLoader.load(path: config)
            c = try cfg.client(client)
        } catch {
            CLI.printError("relay-agent: \(error)")
            throw ExitCode(CLI.Exit.usage)
        }
        let server = cfg.server(for: c)
        let stamp = CLI.newRunID()
        let sampler = ResourceSampler(interval: sampleSeconds)
        sampler.start()
        let started = Date()
        let reports = Mutex<[RunReport]>([])
        let runs = try (0..<parallel).map { i in
            let path = "\(cfg.relay.logDir)/bench/\(stamp)-\(i).log"
            let sink = try RunLogSink(path: path, echoToStderr: false)
            return try BackupRun(runID: "bench-\(i)", client: c, server: server, options: SessionOptions(cfg), policy: RunPolicy(cfg.relay),
                                 passphrase: nil, logger: sink.logger(label: "borg-relay.bench"), logFile: path,
                                 workload: .raw(commandTemplate: command))
        }
        // One thread per run: each run's event loop owns its two sessions.
        let done = DispatchSemaphore(value: 0)
        let threads = runs.map { run in
            Thread {
                let r = run.execute()
                reports.withLock { $0.append(r) }
                done.signal()
            }
        }
        for t in threads {
            t.stackSize = 512 * 1024
            t.start()
        }
        // Cancel every run on SIGINT/SIGTERM (the idle benchmark ends runs this way).
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let sources = [SIGINT, SIGTERM].map { sig in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { runs.forEach { $0.canceller.cancel() } }
            s.resume()
            return s
        }
        for _ in 0..<parallel { done.wait() }
        sources.forEach { $0.cancel() }
        let wall = Date().timeIntervalSince(started)
        let peak = sampler.stop()
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let all = reports.withLock { $0 }
        let failed = all.filter { $0.state != .succeeded }
        let out: [String: Any] = [
            "runs": parallel,
            "succeeded": all.count - failed.count,
            "bytes": all.reduce(UInt64(0)) { $0 + $1.bytesToServer },
            "wall_seconds": wall,
            "cpu_user_seconds": Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6,
            "cpu_system_seconds": Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6,
            "max_rss_kib": usage.ru_maxrss,
            "max_threads": peak.threads,
            "max_fds": peak.fds,
            "client_cipher": all.first?.clientCipher ?? "",
            "server_cipher": all.first?.serverCipher ?? "",
            "errors": Array(Set(failed.compactMap { $0.error })).sorted(),
        ]
        let data = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        if !failed.isEmpty { throw ExitCode(CLI.Exit.runFailed) }
    }
}

/// Samples the process's thread and descriptor counts in the background, every second
/// until stopped. `stop` returns at once (it does not wait out the sampling interval, which
/// would add up to a second to the wall time the bench measures).
final class ResourceSampler: Sendable {
    struct Peak: Sendable { var threads = 0; var fds = 0 }
    private let peak = Mutex(Peak())
    private let stopRequested = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let interval: Int

    init(interval: Int) {
        self.interval = interval
    }

    /// Entries of a /proc folder, without "." and "..", read with readdir (no Foundation).
    private static func entries(_ path: String) -> Int {
        guard let d = opendir(path) else { return 0 }
        defer { closedir(d) }
        var n = 0
        while let e = readdir(d) {
            if e.pointee.d_name.0 != CChar(UInt8(ascii: ".")) { n += 1 }
        }
        return n
    }

    func start() {
        let t = Thread { [self] in
            repeat {
                let threads = Self.entries("/proc/self/task")
                let fds = Self.entries("/proc/self/fd")
                peak.withLock { $0.threads = max($0.threads, threads); $0.fds = max($0.fds, fds) }
            } while stopRequested.wait(timeout: .now() + .seconds(interval)) == .timedOut
            finished.signal()
        }
        t.start()
    }

    func stop() -> Peak {
        stopRequested.signal()
        finished.wait()
        return peak.withLock { $0 }
    }
}
