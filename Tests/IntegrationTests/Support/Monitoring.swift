import Foundation
import Testing

/// An HTTP receiver on loopback (Support/receiver.py) that records every request as a JSON
/// line: the notifiers' real peer. `/hang/…` answers after 60 s, `/fail500/…` with 500.
final class Receiver {
    let process: Spawned
    let port: Int
    let logPath: String

    init(dir: String) throws {
        let portFile = "\(dir)/receiver.port"
        logPath = "\(dir)/receiver.log"
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("receiver.py").path
        process = try Spawned("/usr/bin/python3", [script, portFile, logPath], stdin: "/dev/null",
                              stdout: "\(dir)/receiver.out", stderr: "\(dir)/receiver.out")
        let deadline = Date().addingTimeInterval(10)
        var found: Int?
        while found == nil && Date() < deadline {
            found = (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if found == nil { usleep(50_000) }
        }
        guard let p = found else {
            process.kill(SIGKILL)
            _ = process.wait(timeout: 5)
            throw FixtureError("the HTTP receiver did not start")
        }
        port = p
    }

    deinit { stop() }

    func stop() {
        process.terminate(grace: 5)
    }

    var url: String { "http://127.0.0.1:\(port)" }

    /// Lets every /hang/ request (held until now) be answered.
    func releaseHung() throws {
        try Data().write(to: URL(fileURLWithPath: logPath + ".release"))
    }

    var raw: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The requests received (lines with a method), oldest first.
    var requests: [[String: Any]] {
        raw.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }.filter { $0["method"] != nil }
    }

    /// The paths answered so far, with the time of the answer.
    var answered: [(path: String, at: Double)] {
        raw.split(separator: "\n").compactMap { line in
            guard let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                  let p = o["done"] as? String, let at = o["answered"] as? Double else { return nil }
            return (p, at)
        }
    }

    /// The webhook events received on `path` (their JSON bodies).
    func events(path: String) -> [[String: Any]] {
        requests.filter { ($0["path"] as? String) == path }.compactMap { r in
            (r["body"] as? String).flatMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
        }
    }

    /// Waits until `predicate` holds for the requests, up to `seconds`.
    @discardableResult
    func wait(within seconds: Double, _ predicate: ([[String: Any]]) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            if predicate(requests) { return true }
            usleep(100_000)
        } while Date() < deadline
        return false
    }
}

/// A real Prometheus server on loopback scraping `target` every second.
final class PrometheusServer {
    let process: Spawned
    let port: Int

    static var available: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/prometheus") }

    init(dir: String, target: String) throws {
        try FileManager.default.createDirectory(atPath: "\(dir)/prometheus", withIntermediateDirectories: true)
        let config = """
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: borg-relay
                static_configs:
                  - targets: ["\(target)"]
            """
        try config.write(toFile: "\(dir)/prometheus/prometheus.yml", atomically: true, encoding: .utf8)
        port = Proc.freePort()
        process = try Spawned("/usr/bin/prometheus", [
            "--config.file=\(dir)/prometheus/prometheus.yml", "--storage.tsdb.path=\(dir)/prometheus/data",
            "--web.listen-address=127.0.0.1:\(port)",
        ], stdin: "/dev/null", stdout: "\(dir)/prometheus/log", stderr: "\(dir)/prometheus/log")
    }

    deinit { stop() }

    func stop() {
        process.terminate(grace: 20)
    }

    /// The value of an instant query's first sample, when there is one.
    func query(_ promql: String) -> Double? {
        let q = promql.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? promql
        guard let r = try? Proc.run("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(port)/api/v1/query?query=\(q)"], timeout: 10),
              r.status == 0,
              let o = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any],
              let data = o["data"] as? [String: Any], let result = data["result"] as? [[String: Any]],
              let first = result.first, let value = first["value"] as? [Any], value.count == 2,
              let text = value[1] as? String else { return nil }
        return Double(text)
    }
}

enum Metrics {
    /// GET a URL with curl (stdout), or nil when it fails.
    static func get(_ url: String) -> String? {
        guard let r = try? Proc.run("/usr/bin/curl", ["-sf", "--max-time", "10", url], timeout: 15), r.status == 0 else { return nil }
        return r.stdout
    }

    /// The value of the sample `name{labels}` (labels exactly as exposed, sorted as given) in an exposition.
    static func value(_ exposition: String, _ sample: String) -> Double? {
        for line in exposition.split(separator: "\n") where line.hasPrefix(sample + " ") {
            return Double(line.dropFirst(sample.count + 1).split(separator: " ").first ?? "")
        }
        return nil
    }

    /// `promtool check metrics` on an exposition: nil when accepted, else what it said.
    static func promtoolProblems(_ exposition: String) throws -> String? {
        let r = try Proc.run("/usr/bin/promtool", ["check", "metrics"], stdin: Data(exposition.utf8))
        return r.status == 0 ? nil : r.output
    }
}
