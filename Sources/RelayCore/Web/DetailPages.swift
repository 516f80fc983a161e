import Foundation

/// A run in a table.
public struct RunRowView: Sendable, Equatable {
    public var id: String
    public var kind: String
    public var state: String
    public var stateClass: String
    public var started: TimeText
    public var duration: String?
    public var sent: String
    public var archive: String?
    public var error: String?
}

/// One row of a chart's table (its text alternative).
public struct ChartRowView: Sendable, Equatable {
    public var label: String
    public var value: String
}

public struct ChartView: Sendable, Equatable {
    public var id: String
    public var title: String
    /// The SVG, escaped by `SVGBarChart`.
    public var svg: String
    public var rows: [ChartRowView]
}

public struct ArchiveRowView: Sendable, Equatable {
    public var name: String
    public var id: String?
    public var created: TimeText
    public var run: String
    public var pruned: TimeText?
}

public struct ClientPageView: Sendable, Equatable {
    public var row: FleetRowView
    public var charts: [ChartView]
    public var runs: [RunRowView]
    /// The archives this relay created that are still there as far as it knows, newest first.
    public var archives: [ArchiveRowView]
    /// Archives pruned by retention (recorded), newest first.
    public var pruned: [ArchiveRowView]
    /// Stored, not computed: the templates see stored properties only.
    public var hasPruned: Bool
}

public struct AttemptView: Sendable, Equatable {
    public var number: Int
    public var started: TimeText
    public var error: String
    public var retryAfter: String
}

public struct ProgressView: Sendable, Equatable {
    public var phase: String
    public var sent: String
    public var sentBytes: Int64
    public var rate: String?
    public var files: String?
    public var original: String?
    public var deduplicated: String?
    public var currentPath: String?
}

public struct RunPageView: Sendable, Equatable {
    public var id: String
    public var client: String
    public var server: String
    public var kind: String
    public var state: String
    public var stateClass: String
    public var trigger: String?
    public var started: TimeText
    public var ended: TimeText?
    public var duration: String
    public var sent: String
    public var received: String
    public var archive: String?
    public var files: String?
    public var original: String?
    public var compressed: String?
    public var deduplicated: String?
    public var borgExit: String?
    public var error: String?
    public var attempts: [AttemptView]
    public var hasAttempts: Bool
    public var running: Bool
    public var progress: ProgressView?
    public var log: String
    /// The log shown is its last part; how many bytes were left out before it.
    public var logSkipped: String?
}

extension StatusPages {
    public static func stateClass(_ s: RunState) -> String {
        switch s {
        case .succeeded: return "ok"
        case .warning: return "warning"
        case .failed, .interrupted: return "failed"
        case .running: return "running"
        case .queued: return "queued"
        case .skipped: return "skipped"
        case .cancelled: return "cancelled"
        }
    }

    public static func runRow(_ r: RunView, now: Date) -> RunRowView {
        RunRowView(id: r.id, kind: r.kind.rawValue, state: r.state.rawValue, stateClass: stateClass(r.state),
                   started: TimeText(r.startedAt, now: now),
                   duration: r.endedAt.map { WebFormat.duration($0.timeIntervalSince(r.startedAt)) },
                   sent: WebFormat.bytes(r.bytesToServer), archive: r.archive,
                   error: r.error.map(firstLine))
    }

    /// The three charts of a client page over its last `chartRuns` finished backups, oldest
    /// first: deduplicated bytes added and duration per run (every state: a failed run shows
    /// as a failed bar), original size per archive made.
    public static func charts(_ runs: [RunView]) -> [ChartView] {
        let backups = runs.filter { $0.kind == .backup && $0.isFinished && $0.endedAt != nil }
            .sorted { ($0.startedAt, $0.id) < ($1.startedAt, $1.id) }
            .suffix(chartRuns)
        let label = { (r: RunView) in WebFormat.absolute(r.startedAt) }
        func chart(_ id: String, _ title: String, _ items: [(String, Double, String)],
                   format: @escaping @Sendable (Double) -> String) -> ChartView {
            let svg = SVGBarChart(id: id, title: title, maxSlot: 30, format: format)
                .render(items.map { SVGBarChart.Bar(label: $0.0, value: $0.1, style: $0.2) })
            return ChartView(id: id, title: title, svg: svg, rows: items.map { ChartRowView(label: $0.0, value: format($0.1)) })
        }
        let bytes: @Sendable (Double) -> String = { WebFormat.bytes(Int64($0)) }
        let secs: @Sendable (Double) -> String = { WebFormat.duration($0) }
        let added = backups.map { (label($0), Double($0.stats?.deduplicatedSize ?? 0), "bar " + stateClass($0.state)) }
        let took = backups.map { (label($0), $0.endedAt!.timeIntervalSince($0.startedAt), "bar " + stateClass($0.state)) }
        let original = backups.compactMap { r in r.stats.map { (label(r), Double($0.originalSize), "bar ok") } }
        return [
            chart("chart-added", "Deduplicated bytes added per backup", added, format: bytes),
            chart("chart-duration", "Duration per backup", took, format: secs),
            chart("chart-original", "Original size of each archive", original, format: bytes),
        ]
    }

    public static func client(_ c: StatusView.Client, history: ClientHistory, runs: [RunView], archives: [ArchiveRecord],
                              watchedSince: Date, now: Date, calendar: Calendar) -> ClientPageView {
        let row = row(c, history: history, watchedSince: watchedSince, now: now, calendar: calendar)
        let sorted = archives.sorted { ($0.createdAt, $0.name) > ($1.createdAt, $1.name) }
        func view(_ a: ArchiveRecord) -> ArchiveRowView {
            ArchiveRowView(name: a.name, id: a.id, created: TimeText(a.createdAt, now: now), run: a.runID,
                           pruned: a.prunedAt.map { TimeText($0, now: now) })
        }
        let pruned = sorted.filter { $0.prunedAt != nil }.map(view)
        return ClientPageView(row: row, charts: charts(runs), runs: runs.map { runRow($0, now: now) },
                              archives: sorted.filter { $0.prunedAt == nil }.map(view),
                              pruned: pruned, hasPruned: !pruned.isEmpty)
    }

    public static func progress(_ r: RunView) -> ProgressView? {
        guard r.state == .running, let p = r.progress else { return nil }
        return ProgressView(phase: p.phase, sent: WebFormat.bytes(r.bytesToServer), sentBytes: r.bytesToServer,
                            rate: r.rate.map { "\(WebFormat.bytes(Int64($0)))/s" },
                            files: p.files.map(String.init), original: p.originalSize.map(WebFormat.bytes),
                            deduplicated: p.deduplicatedSize.map(WebFormat.bytes), currentPath: p.currentPath)
    }

    /// `log`: the end of the run's log; `skipped`: bytes before it that are not shown.
    public static func run(_ r: RunView, log: String, skipped: Int, now: Date) -> RunPageView {
        let end = r.endedAt ?? now
        let attempts = (r.attempts ?? []).map {
            AttemptView(number: $0.number, started: TimeText($0.started, now: now), error: $0.error,
                        retryAfter: WebFormat.duration($0.retryAfter))
        }
        return RunPageView(
            id: r.id, client: r.client, server: r.server, kind: r.kind.rawValue, state: r.state.rawValue,
            stateClass: stateClass(r.state), trigger: r.trigger, started: TimeText(r.startedAt, now: now),
            ended: r.endedAt.map { TimeText($0, now: now) }, duration: WebFormat.duration(end.timeIntervalSince(r.startedAt)),
            sent: WebFormat.bytes(r.bytesToServer), received: WebFormat.bytes(r.bytesFromServer), archive: r.archive,
            files: r.stats.map { String($0.nfiles) }, original: r.stats.map { WebFormat.bytes($0.originalSize) },
            compressed: r.stats.map { WebFormat.bytes($0.compressedSize) },
            deduplicated: r.stats.map { WebFormat.bytes($0.deduplicatedSize) },
            borgExit: r.borgExitStatus.map(String.init), error: r.error,
            attempts: attempts, hasAttempts: !attempts.isEmpty,
            running: r.state == .running || r.state == .queued, progress: progress(r), log: log,
            logSkipped: skipped > 0 ? WebFormat.bytes(Int64(skipped)) : nil)
    }
}
