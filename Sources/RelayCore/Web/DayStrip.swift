import Foundation

/// What one day of a client's strip on the status page shows.
public enum DayMark: String, Sendable, Codable, CaseIterable {
    case success, warning, failure, overdue, none
}

/// One calendar day of the strip.
public struct DayCell: Sendable, Equatable {
    /// The day's first instant in the strip's calendar.
    public var day: Date
    public var mark: DayMark
    /// The backups that started that day.
    public var runs: Int

    public init(day: Date, mark: DayMark, runs: Int) {
        self.day = day
        self.mark = mark
        self.runs = runs
    }
}

/// One finished backup as the strip sees it.
public struct BackupOutcome: Sendable, Equatable {
    public var started: Date
    public var ended: Date
    public var state: RunState

    public init(started: Date, ended: Date, state: RunState) {
        self.started = started
        self.ended = ended
        self.state = state
    }
}

/// A client's last `days` calendar days, oldest first, one cell each: the worst result of
/// the backups started that day (failure over warning over success: a failure is what the
/// operator must look at, even when a later run that day succeeded). A day with no result
/// is overdue when, at its end (now, for today), the newest success had ended longer ago
/// than the client's overdue threshold, counted as `FleetState.isOverdue` counts it (from
/// when the relay began watching the client if it never succeeded); otherwise it is none.
/// Cancelled and skipped backups mark nothing by themselves: offline is not failure, and a
/// cancel is the operator's own act. Pure: the caller gives the time and the calendar.
public struct DayStrip: Sendable {
    public var days: Int
    public var calendar: Calendar

    public init(days: Int = 30, calendar: Calendar) {
        self.days = max(1, days)
        self.calendar = calendar
    }

    /// The first instant of each day of the strip ending at `now`, oldest first, and the end
    /// of the last one (the same for every client of a page: compute it once).
    public func dayStarts(now: Date) -> (starts: [Date], end: Date) {
        let today = calendar.startOfDay(for: now)
        var starts: [Date] = []
        for back in stride(from: days - 1, through: 0, by: -1) {
            if let d = calendar.date(byAdding: .day, value: -back, to: today) { starts.append(d) }
        }
        return (starts, calendar.date(byAdding: .day, value: 1, to: today) ?? now)
    }

    public func cells(backups: [BackupOutcome], overdueAfter: TimeInterval?, watchedSince: Date?,
                      now: Date, days known: (starts: [Date], end: Date)? = nil) -> [DayCell] {
        let (starts, lastEnd) = known ?? dayStarts(now: now)
        let successEnds = backups.filter { $0.state.isSuccess }.map(\.ended).sorted()
        // Each backup into its day (one pass; the days are sorted).
        var states = [[RunState]](repeating: [], count: starts.count)
        if let first = starts.first {
            for b in backups where b.started >= first && b.started < lastEnd {
                var lo = 0, hi = starts.count - 1
                while lo < hi {
                    let mid = (lo + hi + 1) / 2
                    if starts[mid] <= b.started { lo = mid } else { hi = mid - 1 }
                }
                states[lo].append(b.state)
            }
        }
        return starts.enumerated().map { index, start in
            let next = index + 1 < starts.count ? starts[index + 1] : lastEnd
            let those = states[index]
            let mark = Self.worst(those)
            if mark != .none {
                return DayCell(day: start, mark: mark, runs: those.count)
            }
            let end = min(next, now)
            guard let overdueAfter else { return DayCell(day: start, mark: .none, runs: those.count) }
            let lastSuccess = successEnds.last(where: { $0 <= end })
            guard let reference = lastSuccess ?? watchedSince, reference <= end else {
                return DayCell(day: start, mark: .none, runs: those.count)
            }
            let late = end.timeIntervalSince(reference) > overdueAfter
            return DayCell(day: start, mark: late ? .overdue : .none, runs: those.count)
        }
    }

    /// failure > warning > success > none.
    static func worst(_ states: [RunState]) -> DayMark {
        if states.contains(where: { $0 == .failed || $0 == .interrupted }) { return .failure }
        if states.contains(.warning) { return .warning }
        if states.contains(.succeeded) { return .success }
        return .none
    }
}
