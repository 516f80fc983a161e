import Foundation
import RelayCore

/// When each scheduled client is next due, as a value: planned at start and reload, moved
/// on as runs are taken. No clock of its own (the scheduler passes the time).
struct ScheduleBook {
    private(set) var nextDue: [String: Date] = [:]

    /// Every client's next due time after `now`; clients without a schedule have none.
    /// `from`: a client's last due time already taken (a fleet's new scheduler leader): its
    /// next due time follows that one, and may be due at once.
    mutating func plan(_ schedules: [(client: String, schedule: CronSchedule?)], now: Date, timeZone: TimeZone,
                       from: [String: Date] = [:]) {
        nextDue = [:]
        for (client, s) in schedules {
            if let s, let n = s.next(after: min(from[client] ?? now, now), in: timeZone) { nextDue[client] = n }
        }
    }

    /// The clients due at `now`, by name, with the due time each was taken for, each moved
    /// on to its next time (`schedule` gives a client's current schedule; one that has none
    /// any more is dropped), and the earliest next due time.
    mutating func takeDue(now: Date, timeZone: TimeZone, schedule: (String) -> CronSchedule?) -> (due: [(client: String, at: Date)], next: Date?) {
        var due: [(client: String, at: Date)] = []
        for (client, when) in nextDue where when <= now {
            guard let s = schedule(client) else { nextDue[client] = nil; continue }
            due.append((client, when))
            nextDue[client] = s.next(after: now, in: timeZone)
        }
        return (due.sorted { $0.client < $1.client }, nextDue.values.min())
    }
}
