import Foundation
import RelayCore

/// When each scheduled client is next due, as a value: planned at start and reload, moved
/// on as runs are taken. No clock of its own (the scheduler passes the time).
struct ScheduleBook {
    private(set) var nextDue: [String: Date] = [:]

    /// Every client's next due time after `now`; clients without a schedule have none.
    mutating func plan(_ schedules: [(client: String, schedule: CronSchedule?)], now: Date, timeZone: TimeZone) {
        nextDue = [:]
        for (client, s) in schedules {
            if let s, let n = s.next(after: now, in: timeZone) { nextDue[client] = n }
        }
    }

    /// The clients due at `now`, by name, each moved on to its next time (`schedule` gives a
    /// client's current schedule; one that has none any more is dropped), and the earliest
    /// next due time.
    mutating func takeDue(now: Date, timeZone: TimeZone, schedule: (String) -> CronSchedule?) -> (due: [String], next: Date?) {
        var due: [String] = []
        for (client, when) in nextDue where when <= now {
            guard let s = schedule(client) else { nextDue[client] = nil; continue }
            due.append(client)
            nextDue[client] = s.next(after: now, in: timeZone)
        }
        return (due.sorted(), nextDue.values.min())
    }
}
