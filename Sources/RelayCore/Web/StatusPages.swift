import Foundation

/// What the status page shows, built from the control API's views and the history without
/// I/O; the daemon renders these with its templates. Every field is text the template
/// escapes, except the `svg` fields, which `SVGBarChart` escaped itself.

/// One cell of a 30-day strip.
public struct StripCellView: Sendable, Equatable {
    public var mark: String
    public var label: String
}

/// A client's row on the fleet page (and the head of its own page).
public struct FleetRowView: Sendable, Equatable {
    public var name: String
    public var health: String
    /// The CSS class of the state: tamper, failed, overdue, checkfailed, skipped, running, new, ok.
    public var healthClass: String
    public var server: String
    public var lastSuccess: TimeText?
    public var lastRun: String?
    public var lastRunState: String?
    public var lastError: String?
    /// The strip's cells for the template (the client page's wide strip; empty on the fleet
    /// page, which writes `stripHTML`).
    public var strip: [StripCellView]
    /// The strip as HTML (`<li>` cells, escaped).
    public var stripHTML: String
    /// The strip read out: "30 days: 27 with a success, 1 with a failure, 2 overdue".
    public var stripSummary: String
    public var lastOriginal: String?
    public var lastDeduplicated: String?
    public var lastArchive: String?
    public var nextRun: TimeText?
    public var schedule: String?
    public var lastCheck: String?
    public var lastCheckClass: String?
    /// The run in progress or waiting, with what it has moved so far.
    public var current: String?
    public var currentRun: String?
}

public struct CountView: Sendable, Equatable {
    public var label: String
    public var cssClass: String
    public var count: Int
}

public struct FleetPageView: Sendable, Equatable {
    public var relay: String
    public var generated: TimeText
    public var running: Int
    public var queued: Int
    public var maxParallel: Int
    public var clientCount: Int
    public var counts: [CountView]
    public var rows: [FleetRowView]
}

/// What the fleet page needs to know about one client besides its status.
public struct ClientHistory: Sendable {
    /// Its backups of the strip's days.
    public var backups: [BackupOutcome]
    /// The archive of its newest backup that made one.
    public var lastArchive: ArchiveSummary?

    public init(backups: [BackupOutcome], lastArchive: ArchiveSummary? = nil) {
        self.backups = backups
        self.lastArchive = lastArchive
    }

    /// From history records of one client, any order.
    public init(records: [RunRecord]) {
        backups = StatusPages.outcomes(records)
        lastArchive = records.filter { $0.kind == .backup && $0.state.isSuccess && $0.stats != nil }
            .max { ($0.startedAt, $0.id) < ($1.startedAt, $1.id) }
            .flatMap { r in r.stats.flatMap { try? JSONDecoder().decode(ArchiveSummary.self, from: Data($0.utf8)) } }
    }

    /// Records of many clients, by client.
    public static func byClient(_ records: [RunRecord]) -> [String: ClientHistory] {
        Dictionary(grouping: records, by: \.client).mapValues { ClientHistory(records: $0) }
    }
}

public enum StatusPages {
    public static let stripDays = 30
    public static let chartRuns = 60

    public static func cssClass(_ h: ClientHealth) -> String {
        switch h {
        case .tamperAlarm: return "tamper"
        case .failed: return "failed"
        case .overdue: return "overdue"
        case .checkFailed: return "checkfailed"
        case .skipped: return "skipped"
        case .running: return "running"
        case .noBackupYet: return "new"
        case .ok: return "ok"
        }
    }

    public static func health(_ c: StatusView.Client) -> ClientHealth {
        ClientHealth.of(lastBackup: c.last?.state, lastCheck: c.lastCheck?.state, tamper: c.tamperAlarm,
                        overdue: c.overdue, running: c.current != nil)
    }

    /// The backups of the history records, for the strip (unfinished ones are left out).
    public static func outcomes(_ runs: [RunRecord]) -> [BackupOutcome] {
        runs.compactMap { r in
            guard r.kind == .backup, r.state.isFinished else { return nil }
            return BackupOutcome(started: r.startedAt, ended: r.endedAt ?? r.startedAt, state: r.state)
        }
    }

    /// From when the fleet and client pages read backups: the strip's days and a week
    /// before them, so that a strip's first days know the success just before them.
    public static func historySince(now: Date, calendar: Calendar) -> Date {
        calendar.date(byAdding: .day, value: -(stripDays + 7), to: calendar.startOfDay(for: now)) ?? now
    }

    /// The strip's days and their labels ("3 Dec 2026"), the same for every row of a page.
    public struct StripDays: Sendable {
        public var starts: [Date]
        public var end: Date
        public var labels: [Date: String]

        public init(now: Date, calendar: Calendar) {
            let dayFormat = Date.FormatStyle(date: .abbreviated, time: .omitted, locale: Locale(identifier: "en_GB"),
                                             calendar: calendar, timeZone: calendar.timeZone)
            (starts, end) = DayStrip(days: StatusPages.stripDays, calendar: calendar).dayStarts(now: now)
            labels = Dictionary(starts.map { ($0, $0.formatted(dayFormat)) }, uniquingKeysWith: { a, _ in a })
        }
    }

    public static func row(_ c: StatusView.Client, history: ClientHistory, watchedSince: Date, now: Date,
                           calendar: Calendar, days known: StripDays? = nil, cellsInTemplate: Bool = true) -> FleetRowView {
        let h = health(c)
        let days = known ?? StripDays(now: now, calendar: calendar)
        let cells = DayStrip(days: stripDays, calendar: calendar)
            .cells(backups: history.backups, overdueAfter: c.maxAge, watchedSince: watchedSince, now: now,
                   days: (days.starts, days.end))
        let strip = cells.map { StripCellView(mark: $0.mark.rawValue, label: label($0, days)) }
        var row = FleetRowView(name: c.name, health: h.rawValue, healthClass: cssClass(h), server: c.server,
                               strip: cellsInTemplate ? strip : [], stripHTML: stripHTML(strip), stripSummary: stripSummary(cells))
        row.lastSuccess = c.lastSuccess.map { TimeText($0, now: now) }
        if let last = c.last {
            row.lastRun = last.id
            row.lastRunState = last.state.rawValue
            if !last.state.isSuccess, let e = last.error { row.lastError = firstLine(e) }
        }
        if let s = history.lastArchive ?? c.last?.stats {
            row.lastOriginal = WebFormat.bytes(s.originalSize)
            row.lastDeduplicated = WebFormat.bytes(s.deduplicatedSize)
            row.lastArchive = s.name
        }
        row.nextRun = c.nextRun.map { TimeText($0, now: now) }
        row.schedule = c.schedule
        if let check = c.lastCheck {
            row.lastCheck = "\(check.state.isSuccess ? "passed" : check.state.rawValue) \(WebFormat.relative(check.endedAt ?? check.startedAt, now: now))"
            row.lastCheckClass = check.state.isSuccess ? "ok" : "failed"
        }
        if let cur = c.current {
            row.currentRun = cur.id
            if cur.state == .running {
                let rate = cur.rate.map { ", \(WebFormat.bytes(Int64($0)))/s" } ?? ""
                row.current = "\(cur.kind.rawValue) running for \(WebFormat.duration(now.timeIntervalSince(cur.startedAt))): \(WebFormat.bytes(cur.bytesToServer)) sent\(rate)"
            } else {
                row.current = "\(cur.kind.rawValue) waiting (\(cur.state.rawValue))"
            }
        }
        return row
    }

    /// "3 Dec 2026: failure (2 backups)".
    static func label(_ cell: DayCell, _ days: StripDays) -> String {
        let what: String
        switch cell.mark {
        case .success: what = "success"
        case .warning: what = "warning"
        case .failure: what = "failure"
        case .overdue: what = "overdue"
        case .none: what = "no backup"
        }
        var text = (days.labels[cell.day] ?? WebFormat.absolute(cell.day)) + ": " + what
        if cell.runs == 1 { text += " (1 backup)" } else if cell.runs > 1 { text += " (\(cell.runs) backups)" }
        return text
    }

    /// The strip's cells as HTML, escaped here: 30 cells × every client is the bulk of the
    /// fleet page, and writing them directly keeps a 200-client page fast.
    public static func stripHTML(_ cells: [StripCellView]) -> String {
        var out = ""
        out.reserveCapacity(cells.count * 64)
        for c in cells {
            out += "<li class=\"day "
            out += SVGBarChart.escape(c.mark)
            out += "\" title=\""
            out += SVGBarChart.escape(c.label)
            out += "\"></li>"
        }
        return out
    }

    static func stripSummary(_ cells: [DayCell]) -> String {
        var parts: [String] = []
        let n = { (m: DayMark) in cells.filter { $0.mark == m }.count }
        if n(.success) > 0 { parts.append("\(n(.success)) with a success") }
        if n(.warning) > 0 { parts.append("\(n(.warning)) with a warning") }
        if n(.failure) > 0 { parts.append("\(n(.failure)) with a failure") }
        if n(.overdue) > 0 { parts.append("\(n(.overdue)) overdue") }
        if parts.isEmpty { parts.append("no backup") }
        return "\(cells.count) days: " + parts.joined(separator: ", ")
    }

    static func firstLine(_ s: String) -> String {
        let line = s.split(separator: "\n", maxSplits: 1).first.map(String.init) ?? s
        return line.count > 240 ? String(line.prefix(240)) + "…" : line
    }

    /// The fleet page: one row per client, worst first.
    public static func fleet(status: StatusView, histories: [String: ClientHistory], relay: String, now: Date,
                             calendar: Calendar) -> FleetPageView {
        let days = StripDays(now: now, calendar: calendar)
        let pairs = status.clients.map { c in
            (health(c), row(c, history: histories[c.name] ?? ClientHistory(backups: []),
                            watchedSince: status.agent.startedAt, now: now, calendar: calendar, days: days,
                            cellsInTemplate: false))
        }
        let sorted = FleetBoard.sorted(pairs, health: { $0.0 }, name: { $0.1.name })
        let counts = ClientHealth.allCases.compactMap { h -> CountView? in
            let n = pairs.filter { $0.0 == h }.count
            return n == 0 ? nil : CountView(label: h.rawValue, cssClass: cssClass(h), count: n)
        }
        return FleetPageView(relay: relay, generated: TimeText(now, now: now), running: status.agent.running,
                             queued: status.agent.queued, maxParallel: status.agent.maxParallel,
                             clientCount: status.clients.count, counts: counts, rows: sorted.map(\.1))
    }
}
