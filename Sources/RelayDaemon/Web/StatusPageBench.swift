import Foundation
import RelayCore

/// `relay-agent bench-status-page`: the fleet page of a made-up fleet (N clients, M finished
/// backups each over the last 30 days, a tenth of them running, a few failed or overdue),
/// built from the status and history values and rendered with the real template, timed
/// over many rounds. The figures exclude the database read (one query for the fleet).
public enum StatusPageBench {
    public struct Figures: Sendable {
        public var clients: Int
        public var runsPerClient: Int
        public var rounds: Int
        /// Milliseconds: building the page's values, rendering the template, both (median and p95).
        public var buildMedian: Double
        public var renderMedian: Double
        public var totalMedian: Double
        public var totalP95: Double
        public var htmlBytes: Int
    }

    public static func run(clients: Int, runsPerClient: Int, rounds: Int) throws -> Figures {
        let now = Date()
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        var status = StatusView(agent: .init(pid: getpid(), startedAt: now.addingTimeInterval(-90 * 86_400), config: "bench",
                                             maxParallel: 8, running: clients / 10, queued: 0, accepting: true), clients: [])
        var records: [RunRecord] = []
        let span = 30 * 86_400.0
        for c in 0..<clients {
            let name = String(format: "host%03d.example.net", c)
            var last: RunView?
            for i in 0..<runsPerClient {
                let started = now.addingTimeInterval(-span + span * Double(i) / Double(max(1, runsPerClient)))
                var r = RunRecord.starting(runID: "\(c)-\(i)", client: name, server: "vault", logFile: nil)
                r.startedAt = started
                r.endedAt = started.addingTimeInterval(120 + Double(i % 7) * 30)
                r.state = (c % 17 == 3 && i % 9 == 0) ? .failed : (i % 23 == 5 ? .warning : .succeeded)
                if r.state.isSuccess {
                    r.archive = "\(name)-\(i)"
                    r.stats = #"{"name":"\#(name)-\#(i)","nfiles":\#(10_000 + i),"original_size":\#(50_000_000_000 + i * 1_000_000),"compressed_size":\#(30_000_000_000),"deduplicated_size":\#(200_000_000 + (i % 11) * 10_000_000)}"#
                }
                records.append(r)
                last = RunView(r, now: now)
            }
            var client = StatusView.Client(name: name, server: "vault", state: "idle", current: nil, last: last,
                                           schedule: "30 2 * * *", nextRun: now.addingTimeInterval(3600 * Double(c % 20)))
            client.lastSuccess = last?.endedAt
            client.maxAge = 26 * 3600
            client.overdue = c % 29 == 7
            if c % 10 == 4 {
                var cur = RunRecord.starting(runID: "cur-\(c)", client: name, server: "vault", logFile: nil)
                cur.startedAt = now.addingTimeInterval(-300)
                var p = RunProgress()
                p.bytesToServer = 123_456_789
                client.current = RunView(cur, progress: p, now: now)
            }
            status.clients.append(client)
        }
        let histories = ClientHistory.byClient(records)
        let renderer = try WebRenderer()
        var build: [Double] = [], render: [Double] = [], total: [Double] = []
        var bytes = 0
        for _ in 0..<max(1, rounds) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let view = StatusPages.fleet(status: status, histories: histories, relay: "bench", now: now, calendar: cal)
            let t1 = DispatchTime.now().uptimeNanoseconds
            var frame = PageFrame(title: "Fleet", relay: "bench", user: "operator", csrf: "x", canAct: true, refresh: 5)
            frame.fleet = view
            let html = renderer.render(frame)
            let t2 = DispatchTime.now().uptimeNanoseconds
            bytes = html.utf8.count
            build.append(Double(t1 - t0) / 1e6)
            render.append(Double(t2 - t1) / 1e6)
            total.append(Double(t2 - t0) / 1e6)
        }
        func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
        let sorted = total.sorted()
        return Figures(clients: clients, runsPerClient: runsPerClient, rounds: total.count, buildMedian: median(build),
                       renderMedian: median(render), totalMedian: median(total),
                       totalP95: sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.95))], htmlBytes: bytes)
    }
}
