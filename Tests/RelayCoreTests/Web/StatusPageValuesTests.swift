import Foundation
import Testing
@testable import RelayCore

@Suite("The status page's values: the 30-day strip, the fleet's order, the login throttle, the SVG charts")
struct StatusPageValuesTests {
    static let utc: Calendar = {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(identifier: "UTC")!
        return c
    }()
    /// 2027-01-15 12:00 UTC.
    static let now = Date(timeIntervalSince1970: 1_800_014_400)
    static let day: TimeInterval = 86_400

    static func at(daysAgo: Int, hour: Int) -> Date {
        Self.utc.startOfDay(for: now).addingTimeInterval(-Double(daysAgo) * day + Double(hour) * 3600)
    }

    static func backup(_ daysAgo: Int, _ hour: Int, _ state: RunState) -> BackupOutcome {
        let s = at(daysAgo: daysAgo, hour: hour)
        return BackupOutcome(started: s, ended: s.addingTimeInterval(600), state: state)
    }

    @Test("one cell per day, oldest first, ending today; the worst result of the day wins")
    func worstOfTheDay() {
        let strip = DayStrip(days: 30, calendar: Self.utc)
        let cells = strip.cells(backups: [
            Self.backup(0, 1, .succeeded),
            Self.backup(1, 1, .failed), Self.backup(1, 5, .succeeded),
            Self.backup(2, 1, .warning), Self.backup(2, 3, .succeeded),
            Self.backup(3, 1, .interrupted),
            Self.backup(4, 1, .cancelled),
            Self.backup(30, 1, .failed),  // outside the strip
        ], overdueAfter: nil, watchedSince: nil, now: Self.now)
        #expect(cells.count == 30)
        #expect(cells.last?.day == Self.utc.startOfDay(for: Self.now))
        #expect(cells.first?.day == Self.at(daysAgo: 29, hour: 0))
        #expect(cells.map(\.day) == cells.map(\.day).sorted())
        let marks = Array(cells.suffix(5).map(\.mark))
        #expect(marks == [.none, .failure, .warning, .failure, .success])
        #expect(cells[cells.count - 2].runs == 2)
        #expect(!cells.dropLast(5).contains { $0.mark != .none }, "\(cells.map(\.mark))")
    }

    @Test("a day without a result is overdue once the last success ended longer ago than the threshold at the day's end; from the watch start when there was none")
    func overdueDays() {
        let strip = DayStrip(days: 7, calendar: Self.utc)
        // The last success ended 5 days ago at 01:10; threshold 2 days.
        let cells = strip.cells(backups: [Self.backup(5, 1, .succeeded), Self.backup(2, 1, .skipped)],
                                overdueAfter: 2 * Self.day, watchedSince: Self.at(daysAgo: 20, hour: 0), now: Self.now)
        // 6 days ago: 15 days since the watch began, no success yet: overdue.
        #expect(cells.map(\.mark) == [.overdue, .success, .none, .overdue, .overdue, .overdue, .overdue],
                "\(cells.map(\.mark))")
        // Never succeeded, watched from 3 days ago at noon, threshold 1 day.
        let fresh = strip.cells(backups: [], overdueAfter: Self.day, watchedSince: Self.at(daysAgo: 3, hour: 12), now: Self.now)
        #expect(fresh.map(\.mark) == [.none, .none, .none, .none, .overdue, .overdue, .overdue], "\(fresh.map(\.mark))")
        // No threshold: never overdue.
        let none = strip.cells(backups: [], overdueAfter: nil, watchedSince: Self.at(daysAgo: 20, hour: 0), now: Self.now)
        #expect(none.allSatisfy { $0.mark == .none })
    }

    @Test("days follow the calendar's time zone")
    func timeZone() {
        var berlin = Calendar(identifier: .gregorian)
        berlin.timeZone = TimeZone(identifier: "Europe/Berlin")!
        // 23:30 UTC is already the next day in Berlin.
        let late = Self.utc.startOfDay(for: Self.now).addingTimeInterval(-1800)
        let run = BackupOutcome(started: late, ended: late.addingTimeInterval(60), state: .failed)
        let inUTC = DayStrip(days: 2, calendar: Self.utc).cells(backups: [run], overdueAfter: nil, watchedSince: nil, now: Self.now)
        let inBerlin = DayStrip(days: 2, calendar: berlin).cells(backups: [run], overdueAfter: nil, watchedSince: nil, now: Self.now)
        #expect(inUTC.map(\.mark) == [.failure, .none])
        #expect(inBerlin.map(\.mark) == [.none, .failure])
    }

    @Test("one state per client, tamper alarm first; the fleet lists worst first, then by name")
    func fleetOrder() {
        #expect(ClientHealth.of(lastBackup: .succeeded, lastCheck: nil, tamper: true, overdue: true, running: true) == .tamperAlarm)
        #expect(ClientHealth.of(lastBackup: .failed, lastCheck: .failed, tamper: false, overdue: true, running: true) == .failed)
        #expect(ClientHealth.of(lastBackup: .succeeded, lastCheck: .failed, tamper: false, overdue: true, running: false) == .overdue)
        #expect(ClientHealth.of(lastBackup: .warning, lastCheck: .failed, tamper: false, overdue: false, running: false) == .checkFailed)
        #expect(ClientHealth.of(lastBackup: .skipped, lastCheck: nil, tamper: false, overdue: false, running: true) == .skipped)
        #expect(ClientHealth.of(lastBackup: .succeeded, lastCheck: .succeeded, tamper: false, overdue: false, running: true) == .running)
        #expect(ClientHealth.of(lastBackup: nil, lastCheck: nil, tamper: false, overdue: false, running: false) == .noBackupYet)
        #expect(ClientHealth.of(lastBackup: .warning, lastCheck: nil, tamper: false, overdue: false, running: false) == .ok)
        let rows: [(String, ClientHealth)] = [("web2", .ok), ("db", .ok), ("mail", .failed), ("nas", .tamperAlarm),
                                              ("app", .overdue), ("zeta", .failed), ("x", .running)]
        let sorted = FleetBoard.sorted(rows, health: { $0.1 }, name: { $0.0 }).map(\.0)
        #expect(sorted == ["nas", "mail", "zeta", "app", "x", "db", "web2"])
    }

    @Test("login: free attempts, then a doubling wait up to the cap; a success clears the source; quiet time forgets; many sources slow everyone")
    func throttle() {
        var t = LoginThrottle(free: 3, base: 1, cap: 60, globalFree: 10, maxSources: 100)
        let t0 = Self.now
        for i in 0..<3 {
            #expect(t.decide(source: "a", now: t0) == .allow, "attempt \(i)")
            t.failed(source: "a", now: t0)
        }
        #expect(t.decide(source: "a", now: t0) == .wait(1))
        #expect(t.decide(source: "b", now: t0) == .allow, "another source is not slowed")
        #expect(t.decide(source: "a", now: t0.addingTimeInterval(1)) == .allow)
        t.failed(source: "a", now: t0.addingTimeInterval(1))
        #expect(t.decide(source: "a", now: t0.addingTimeInterval(1)) == .wait(2))
        var at = t0.addingTimeInterval(1)
        for _ in 0..<10 { at = at.addingTimeInterval(100); t.failed(source: "a", now: at) }
        // Each failure came after the quiet time, so the count started over each time but
        // the last: 1 failure, no wait.
        #expect(t.decide(source: "a", now: at) == .allow)
        var u = LoginThrottle(free: 3, base: 1, cap: 60, globalFree: 1000, maxSources: 100)
        for _ in 0..<20 { u.failed(source: "c", now: t0) }
        #expect(u.decide(source: "c", now: t0) == .wait(60), "capped")
        u.succeeded(source: "c")
        #expect(u.decide(source: "c", now: t0) == .allow)
        // 10 failures from 10 sources: the global count slows a fresh source, by one second
        // after the last failure, however many more come (no lock-out of the operator).
        var g = LoginThrottle(free: 3, base: 1, cap: 60, globalFree: 10, maxSources: 100)
        for i in 0..<10 { g.failed(source: "s\(i)", now: t0) }
        #expect(g.decide(source: "fresh", now: t0) == .wait(1))
        for i in 0..<500 { g.failed(source: "t\(i)", now: t0.addingTimeInterval(0.5)) }
        #expect(g.decide(source: "fresh", now: t0.addingTimeInterval(0.5)) == .wait(1))
        #expect(g.decide(source: "fresh", now: t0.addingTimeInterval(1.5)) == .allow)
        #expect(g.decide(source: "t1", now: t0.addingTimeInterval(1.5)) == .allow, "one failure of its own: free")
        // Quiet for the cap: the global count starts over.
        g.failed(source: "u", now: t0.addingTimeInterval(100))
        #expect(g.decide(source: "fresh", now: t0.addingTimeInterval(100)) == .allow)
        // Loopback addresses are one source.
        #expect(LoginThrottle.source(ofPeer: "127.0.0.1") == "loopback" && LoginThrottle.source(ofPeer: "127.4.3.2") == "loopback")
        #expect(LoginThrottle.source(ofPeer: "::1") == "loopback" && LoginThrottle.source(ofPeer: "::ffff:127.0.0.9") == "loopback")
        #expect(LoginThrottle.source(ofPeer: "192.0.2.7") == "192.0.2.7")
        // The remembered sources are bounded.
        var m = LoginThrottle(maxSources: 50)
        for i in 0..<500 { m.failed(source: "x\(i)", now: t0.addingTimeInterval(Double(i) / 1000)) }
        #expect(m.rememberedSources == 50)
    }

    @Test("SVG bars: one rect per value scaled to the largest, a title each, a text alternative, everything escaped")
    func chart() {
        let chart = SVGBarChart(id: "dedup", title: "Deduplicated <bytes>", width: 300, height: 114) { "\(Int($0)) B" }
        let svg = chart.render([.init(label: "a1", value: 50, style: "succeeded"),
                                .init(label: "<script>alert(1)</script>", value: 100, style: "failed\"x"),
                                .init(label: "a3", value: .nan)])
        #expect(svg.components(separatedBy: "<rect ").count - 1 == 3)
        #expect(svg.contains("role=\"img\"") && svg.contains("aria-labelledby=\"dedup-title dedup-desc\""))
        #expect(svg.contains("<title id=\"dedup-title\">Deduplicated &lt;bytes&gt;</title>"))
        #expect(svg.contains("<desc id=\"dedup-desc\">3 values from a1 to a3; the largest is 100 B.</desc>"), "\(svg)")
        #expect(!svg.contains("<script>"))
        #expect(svg.contains("class=\"failed&quot;x\""))
        // 100 px of plot: 50 -> 50 px high, 100 -> 100 px, NaN -> 0.
        #expect(svg.contains("x=\"0\" y=\"64\" width=\"99\" height=\"50\""), "\(svg)")
        #expect(svg.contains("x=\"100\" y=\"14\" width=\"99\" height=\"100\""), "\(svg)")
        #expect(svg.contains("x=\"200\" y=\"114\" width=\"99\" height=\"0\""), "\(svg)")
        #expect(svg.contains("<title>a1: 50 B</title>") && svg.contains("<title>a3: no value</title>"))
        let empty = chart.render([])
        #expect(empty.contains("no data yet") && !empty.contains("<rect"))
        #expect(chart.render([.init(label: "a", value: 1)]) == chart.render([.init(label: "a", value: 1)]))
    }
}

@Suite("Status page sessions: idle and absolute expiry, logout, a bounded number, CSRF tokens")
struct WebSessionsTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("a session lives while used, ends after its idle time or its lifetime, and at logout")
    func expiry() {
        var s = WebSessions(idle: 600, lifetime: 3600, maxSessions: 10)
        s.open(user: "admin", token: "tok-a", csrf: "csrf-a", now: Self.t0)
        #expect(s.touch(token: "tok-a", now: Self.t0.addingTimeInterval(599))?.user == "admin")
        // Used every 9 minutes, it still ends an hour after the login.
        var t = Self.t0.addingTimeInterval(599)
        while t < Self.t0.addingTimeInterval(3500) {
            t = t.addingTimeInterval(540)
            #expect(s.touch(token: "tok-a", now: min(t, Self.t0.addingTimeInterval(3599))) != nil)
        }
        #expect(s.touch(token: "tok-a", now: Self.t0.addingTimeInterval(3600)) == nil)
        #expect(s.count == 0)
        s.open(user: "admin", token: "tok-b", csrf: "csrf-b", now: Self.t0)
        #expect(s.touch(token: "tok-b", now: Self.t0.addingTimeInterval(600)) == nil, "idle too long")
        s.open(user: "admin", token: "tok-c", csrf: "csrf-c", now: Self.t0)
        s.close(token: "tok-c")
        #expect(s.touch(token: "tok-c", now: Self.t0) == nil)
        #expect(s.touch(token: nil, now: Self.t0) == nil && s.touch(token: "unknown", now: Self.t0) == nil)
    }

    @Test("at most maxSessions: the least recently used goes first")
    func bounded() {
        var s = WebSessions(idle: 600, lifetime: 3600, maxSessions: 3)
        for i in 0..<3 { s.open(user: "u", token: "t\(i)", csrf: "c\(i)", now: Self.t0.addingTimeInterval(Double(i))) }
        _ = s.touch(token: "t0", now: Self.t0.addingTimeInterval(10))
        s.open(user: "u", token: "t3", csrf: "c3", now: Self.t0.addingTimeInterval(11))
        #expect(s.count == 3)
        #expect(s.touch(token: "t1", now: Self.t0.addingTimeInterval(12)) == nil, "t1 was the least recently used")
        #expect(s.touch(token: "t0", now: Self.t0.addingTimeInterval(12)) != nil)
    }

    @Test("CSRF: only the session's own token, whole")
    func csrf() {
        var s = WebSessions()
        let a = s.open(user: "u", token: "t", csrf: "0123456789abcdef", now: Self.t0)
        #expect(WebSessions.csrfMatches(a, "0123456789abcdef"))
        #expect(!WebSessions.csrfMatches(a, "0123456789abcdeF"))
        #expect(!WebSessions.csrfMatches(a, "0123456789abcde"))
        #expect(!WebSessions.csrfMatches(a, ""))
        #expect(!WebSessions.csrfMatches(a, nil))
    }
}
