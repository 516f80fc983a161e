import Foundation
import Testing
@testable import RelayCore

@Suite("The status page: [web] config, the login form's body, sizes and times, the fleet, client and run pages")
struct StatusPagesTests {
    static let utc = StatusPageValuesTests.utc
    static let now = StatusPageValuesTests.now

    static func config(_ web: String) throws -> RelayConfig {
        let f = try ConfigLoaderTests.Files()
        return try ConfigLoader.parse(f.valid() + "\n[web]\n" + web, file: "relay.toml")
    }

    static func webError(_ web: String) -> String {
        do {
            _ = try config(web)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test("[web]: listen on loopback by default, an explicit address or a unix socket; the proxy header only on a unix socket; each mistake named")
    func webConfig() throws {
        #expect(try Self.config("listen = \":8088\"").web?.listen == .tcp(ListenAddress(text: "127.0.0.1:8088")!))
        #expect(try Self.config("listen = \"0.0.0.0:8088\"").web?.listen == .tcp(ListenAddress(text: "0.0.0.0:8088")!))
        let proxied = try Self.config("""
            listen = "unix:/run/borg-relay/web.sock"
            trust_proxy_user_header = "X-Forwarded-User"
            proxy_group = "www-data"
            read_only = true
            cookie_secure = true
            """).web
        #expect(proxied?.listen == .unix("/run/borg-relay/web.sock"))
        #expect(proxied?.trustProxyUserHeader == "X-Forwarded-User" && proxied?.proxyGroup == "www-data")
        #expect(proxied?.readOnly == true && proxied?.cookieSecure == true)
        let plain = try Self.config("listen = \"127.0.0.1:8088\"").web
        #expect(plain?.readOnly == false && plain?.cookieSecure == false && plain?.trustProxyUserHeader == nil)
        #expect(Self.webError("").contains("[web] key 'listen'"), "\(Self.webError(""))")
        #expect(Self.webError("listen = \"8088x\"").contains("not an address with a port"))
        #expect(Self.webError("listen = \"unix:relative.sock\"").contains("absolute path"))
        // A header on TCP, even loopback: any local user could send it.
        let tcpHeader = Self.webError("listen = \"127.0.0.1:8088\"\ntrust_proxy_user_header = \"X-Forwarded-User\"")
        #expect(tcpHeader.contains("unix:/run/borg-relay/web.sock") && tcpHeader.contains("any local user"), "\(tcpHeader)")
        for bad in ["Cookie", "Sec-Fetch-User", "Accept-Language", "Range", "X-Forwarded-For", "X-Real-IP", "Authorization"] {
            let e = Self.webError("listen = \"unix:/run/w.sock\"\ntrust_proxy_user_header = \"\(bad)\"")
            #expect(e.contains("is not a user header"), "\(bad): \(e)")
        }
        for good in ["Remote-User", "X-Forwarded-User", "X-Auth-Request-User", "x-remote-user"] {
            #expect(Self.webError("listen = \"unix:/run/w.sock\"\ntrust_proxy_user_header = \"\(good)\"") == "no error", "\(good)")
        }
        #expect(Self.webError("listen = \"unix:/run/w.sock\"\ntrust_proxy_user_header = \"X User\"").contains("not a header name"))
        #expect(Self.webError("listen = \":8088\"\nproxy_group = \"www-data\"").contains("needs listen = \"unix:"))
        #expect(Self.webError("listen = \":8088\"\ncolour = \"blue\"").contains("colour"))
        // config show writes it back.
        let c = try Self.config("listen = \"unix:/run/w.sock\"\ntrust_proxy_user_header = \"Remote-User\"\nproxy_group = \"caddy\"")
        let shown = ConfigDocument.toml(c)
        #expect(shown.contains("[web]") && shown.contains("listen = \"unix:/run/w.sock\"") && shown.contains("proxy_group = \"caddy\""), "\(shown)")
    }

    @Test("the login form's body: + and %XX decoded to bytes, empty and valueless fields, broken escapes and too many fields refused, wipe zeroes")
    func formBody() throws {
        var f = try FormBody(Array("password=p%C3%A4ss+word%26%3D&next=%2Fclients%2Fweb1&csrf=&flag".utf8))
        #expect(f.bytes("password") == Array("päss word&=".utf8))
        #expect(f.string("next") == "/clients/web1")
        #expect(f.bytes("csrf") == [] && f.bytes("flag") == [] && f.bytes("nothing") == nil)
        f.wipe()
        #expect(f.bytes("password")?.allSatisfy { $0 == 0 } == true)
        #expect(try FormBody([]).fields.isEmpty)
        #expect(try FormBody(Array("&&a=1&".utf8)).fields.count == 1)
        #expect(throws: FormBody.Problem.badEscape(field: "password")) { try FormBody(Array("password=%G1".utf8)) }
        #expect(throws: FormBody.Problem.badEscape(field: "password")) { try FormBody(Array("password=abc%4".utf8)) }
        let many = (0...FormBody.maxFields).map { "f\($0)=1" }.joined(separator: "&")
        #expect(throws: FormBody.Problem.tooManyFields(limit: FormBody.maxFields)) { try FormBody(Array(many.utf8)) }
    }

    @Test("sizes in IEC units, durations, relative times both ways, ISO and absolute UTC")
    func formats() {
        #expect(WebFormat.bytes(0) == "0 B" && WebFormat.bytes(1023) == "1023 B")
        #expect(WebFormat.bytes(1536) == "1.50 KiB")
        #expect(WebFormat.bytes(25 * 1024 * 1024 + 400 * 1024) == "25.4 MiB")
        #expect(WebFormat.bytes(300 * 1024 * 1024 * 1024) == "300 GiB")
        #expect(WebFormat.bytes(-2048) == "-2.00 KiB")
        #expect(WebFormat.bytes(Int64.min).hasPrefix("-"))
        #expect(WebFormat.duration(0.42) == "0.4 s" && WebFormat.duration(42) == "42 s")
        #expect(WebFormat.duration(185) == "3 min 5 s" && WebFormat.duration(7620) == "2 h 7 min")
        #expect(WebFormat.duration(3 * 86_400 + 4 * 3600) == "3 d 4 h" && WebFormat.duration(.nan) == "–")
        #expect(WebFormat.relative(Self.now.addingTimeInterval(-10), now: Self.now) == "just now")
        #expect(WebFormat.relative(Self.now.addingTimeInterval(-300), now: Self.now) == "5 min ago")
        #expect(WebFormat.relative(Self.now.addingTimeInterval(-3 * 3600 - 5), now: Self.now) == "3 h ago")
        #expect(WebFormat.relative(Self.now.addingTimeInterval(4 * 3600 + 30), now: Self.now) == "in 4 h")
        #expect(WebFormat.relative(Self.now.addingTimeInterval(-2 * 86_400 - 60), now: Self.now) == "2 d ago")
        #expect(WebFormat.iso(Self.now) == "2027-01-15T12:00:00Z")
        #expect(WebFormat.absolute(Self.now) == "2027-01-15 12:00 UTC")
    }

    static func record(_ id: String, client: String = "web1", kind: RunKind = .backup, started: Date) -> RunRecord {
        var r = RunRecord.starting(runID: id, client: client, server: "vault", kind: kind, logFile: nil)
        r.startedAt = started
        r.queuedAt = started
        return r
    }

    static func view(_ id: String, client: String = "web1", kind: RunKind = .backup, state: RunState, startedAgo: TimeInterval,
                     took: TimeInterval = 60, dedup: Int64? = nil, error: String? = nil) -> RunView {
        var r = record(id, client: client, kind: kind, started: now.addingTimeInterval(-startedAgo))
        r.state = state
        if state != .running && state != .queued { r.endedAt = r.startedAt.addingTimeInterval(took) }
        r.error = error
        if let dedup {
            r.archive = "web1-\(id)"
            r.stats = String(decoding: try! JSONEncoder().encode(ArchiveSummary(name: "web1-\(id)", id: nil, nfiles: 10,
                originalSize: dedup * 10, compressedSize: dedup * 5, deduplicatedSize: dedup, duration: took)), as: UTF8.self)
        }
        return RunView(r, now: now)
    }

    static func client(_ name: String, last: RunView?, overdue: Bool = false, tamper: Bool = false, current: RunView? = nil,
                       check: RunView? = nil) -> StatusView.Client {
        var c = StatusView.Client(name: name, server: "vault", state: current == nil ? "idle" : "running", current: current,
                                  last: last, schedule: "0 2 * * *", nextRun: now.addingTimeInterval(3600))
        c.overdue = overdue
        c.tamperAlarm = tamper
        c.lastCheck = check
        c.maxAge = 2 * 86_400
        c.lastSuccess = last?.state.isSuccess == true ? last?.endedAt : nil
        return c
    }

    @Test("the fleet page: worst first, then by name; counts per state; each row's strip, last archive, next run, check and current run")
    func fleetPage() {
        let ok = Self.view("r1", client: "alpha", state: .succeeded, startedAgo: 3600, dedup: 5 * 1024 * 1024)
        let bad = Self.view("r2", client: "beta", state: .failed, startedAgo: 7200, error: "borg create failed: exit 2\nmore")
        let running = Self.view("r3", client: "gamma", state: .running, startedAgo: 90)
        let failedCheck = Self.view("c1", client: "delta", kind: .check, state: .failed, startedAgo: 600)
        let status = StatusView(agent: .init(pid: 1, startedAt: Self.now.addingTimeInterval(-40 * 86_400), config: "x", maxParallel: 4,
                                             running: 1, queued: 0, accepting: true),
                                clients: [Self.client("gamma", last: ok, current: running), Self.client("alpha", last: ok),
                                          Self.client("beta", last: bad), Self.client("zeta", last: ok, tamper: true),
                                          Self.client("delta", last: ok, check: failedCheck), Self.client("eta", last: nil, overdue: true)])
        var records = [RunRecord]()
        for d in 0..<3 {
            var r = Self.record("h\(d)", client: "alpha", started: Self.now.addingTimeInterval(-Double(d) * 86_400 - 3600))
            r.state = .succeeded
            r.endedAt = r.startedAt.addingTimeInterval(60)
            r.stats = #"{"name":"alpha-h\#(d)","nfiles":3,"original_size":\#(1000 - d),"compressed_size":5,"deduplicated_size":7}"#
            records.append(r)
        }
        let page = StatusPages.fleet(status: status, histories: ClientHistory.byClient(records), relay: "r", now: Self.now, calendar: Self.utc)
        #expect(page.rows.map(\.name) == ["zeta", "beta", "eta", "delta", "gamma", "alpha"], "\(page.rows.map(\.name))")
        #expect(page.rows.map(\.healthClass) == ["tamper", "failed", "overdue", "checkfailed", "running", "ok"])
        #expect(page.counts.map(\.count).reduce(0, +) == 6 && page.counts.first?.label == "tamper alarm")
        let alpha = page.rows.last!
        #expect(alpha.strip.isEmpty, "the fleet page writes stripHTML")
        #expect(alpha.stripHTML.components(separatedBy: "<li class=\"day success\"").count - 1 == 3)
        // Watched for 40 days, successes only in the last 3, max_age 2 days: the 27 days before are overdue.
        #expect(alpha.stripSummary == "30 days: 3 with a success, 27 overdue", "\(alpha.stripSummary)")
        #expect(alpha.stripHTML.components(separatedBy: "<li class=\"day ").count - 1 == 30)
        #expect(alpha.stripHTML.hasSuffix("<li class=\"day success\" title=\"15 Jan 2027: success (1 backup)\"></li>"), "\(alpha.stripHTML.suffix(120))")
        #expect(StatusPages.stripHTML([StripCellView(mark: "x\"", label: "<b>&")]) == "<li class=\"day x&quot;\" title=\"&lt;b&gt;&amp;\"></li>")
        #expect(alpha.lastArchive == "alpha-h0" && alpha.lastOriginal == "1000 B" && alpha.lastDeduplicated == "7 B")
        #expect(alpha.nextRun?.relative == "in 1 h" && alpha.lastSuccess != nil)
        let beta = page.rows[1]
        #expect(beta.lastError == "borg create failed: exit 2" && beta.lastRun == "r2")
        #expect(beta.lastArchive == nil)
        #expect(page.rows[3].lastCheck?.hasPrefix("failed") == true && page.rows[3].lastCheckClass == "failed")
        let gamma = page.rows[4]
        #expect(gamma.currentRun == "r3" && gamma.current?.hasPrefix("backup running for 1 min 30 s") == true, "\(gamma.current ?? "")")
        // The strip of a client that was never backed up and is past its threshold: overdue days.
        #expect(page.rows[2].stripHTML.hasSuffix("<li class=\"day overdue\" title=\"15 Jan 2027: overdue\"></li>"))
        #expect(page.rows[2].stripHTML.hasPrefix("<li class=\"day overdue\" title=\"17 Dec 2026: overdue\">"), "\(page.rows[2].stripHTML.prefix(100))")
    }

    @Test("the client page: three charts over the last 60 finished backups, each with a table of its figures; runs and archives newest first")
    func clientPage() {
        var runs: [RunView] = []
        for i in 0..<70 {
            let failed = i % 10 == 3
            let dedup: Int64? = failed ? nil : Int64(1000 * (i + 1))
            runs.append(Self.view("b\(i)", state: failed ? .failed : .succeeded, startedAgo: Double(70 - i) * 3600,
                                  took: Double(30 + i), dedup: dedup))
        }
        runs.append(Self.view("op", kind: .list, state: .succeeded, startedAgo: 10))
        runs.append(Self.view("now", state: .running, startedAgo: 5))
        let charts = StatusPages.charts(runs)
        #expect(charts.map(\.id) == ["chart-added", "chart-duration", "chart-original"])
        #expect(charts[0].rows.count == 60 && charts[1].rows.count == 60)
        #expect(charts[0].svg.components(separatedBy: "<rect").count - 1 == 60)
        #expect(charts[0].svg.contains("class=\"bar failed\""), "a failed backup is a failed bar")
        #expect(charts[1].rows.last?.value == WebFormat.duration(99))
        #expect(charts[2].rows.count == 54, "only archives made: \(charts[2].rows.count)")
        #expect(charts.allSatisfy { $0.svg.contains("<title id=") && $0.svg.contains("role=\"img\"") })
        let archives = [ArchiveRecord(client: "web1", name: "old", id: nil, runID: "b1", createdAt: Self.now.addingTimeInterval(-9000)),
                        ArchiveRecord(client: "web1", name: "new", id: "AB", runID: "b2", createdAt: Self.now.addingTimeInterval(-100)),
                        ArchiveRecord(client: "web1", name: "gone", id: nil, runID: "b0", createdAt: Self.now.addingTimeInterval(-99000),
                                      prunedAt: Self.now.addingTimeInterval(-50), prunedByRun: "p1")]
        let page = StatusPages.client(Self.client("web1", last: runs[0]), history: ClientHistory(backups: []), runs: runs,
                                      archives: archives, watchedSince: Self.now, now: Self.now, calendar: Self.utc)
        #expect(page.archives.map(\.name) == ["new", "old"] && page.pruned.map(\.name) == ["gone"] && page.hasPruned)
        #expect(page.archives.first?.id == "ab")
        #expect(page.runs.count == 72 && page.runs.first?.id == "b0")
        #expect(StatusPages.charts([]).allSatisfy { $0.rows.isEmpty && $0.svg.contains("no data yet") })
        // One backup: a bar 29 units wide at the left, not the whole chart.
        let one = StatusPages.charts([Self.view("solo", state: .succeeded, startedAgo: 60, dedup: 10)])
        #expect(one[0].svg.contains("x=\"0\" y=\"14\" width=\"29\" height=\"146\""), "\(one[0].svg)")
    }

    @Test("the run page: facts, stats, attempts, the error; progress only while running; how much log is left out")
    func runPage() throws {
        var failed = Self.view("x1", state: .failed, startedAgo: 500, took: 125, error: "B: borg serve exited 2")
        failed.attempts = [RunAttempt(number: 1, started: Self.now.addingTimeInterval(-500), ended: Self.now.addingTimeInterval(-490),
                                      error: "connect refused", retryAfter: 30)]
        let p = StatusPages.run(failed, log: "line\n", skipped: 2048, now: Self.now)
        #expect(p.state == "failed" && p.stateClass == "failed" && p.duration == "2 min 5 s" && !p.running && p.progress == nil)
        #expect(p.error == "B: borg serve exited 2" && p.hasAttempts && p.attempts.first?.retryAfter == "30 s")
        #expect(p.logSkipped == "2.00 KiB" && p.log == "line\n")
        var running = Self.view("x2", state: .running, startedAgo: 20)
        var progress = RunProgress()
        progress.phase = "running"
        progress.bytesToServer = 10 * 1024 * 1024
        progress.files = 42
        progress.currentPath = "/etc/<passwd>"
        running = RunView(Self.record("x2", started: Self.now.addingTimeInterval(-20)),
                          progress: progress, now: Self.now)
        let q = StatusPages.run(running, log: "", skipped: 0, now: Self.now)
        #expect(q.running && q.progress?.sent == "10.0 MiB" && q.progress?.files == "42" && q.progress?.currentPath == "/etc/<passwd>")
        #expect(q.progress?.rate == "512 KiB/s" && q.logSkipped == nil && q.ended == nil)
        let ok = StatusPages.run(Self.view("x3", state: .succeeded, startedAgo: 100, dedup: 2048), log: "", skipped: 0, now: Self.now)
        #expect(ok.files == "10" && ok.deduplicated == "2.00 KiB" && ok.original == "20.0 KiB" && ok.archive == "web1-x3")
    }
}
