import Foundation

/// A cron schedule: five fields (minute hour day-of-month month day-of-week) with `*`,
/// lists, ranges, steps and names (`jan`…`dec`, `sun`…`sat`, 7 = Sunday), or one of
/// `@hourly @daily @midnight @weekly @monthly @yearly @annually`. As in Vixie cron, when
/// both day fields are restricted a day matches if either does.
public struct CronSchedule: Sendable, Equatable, CustomStringConvertible {
    public let text: String
    let minutes: Set<Int>
    let hours: Set<Int>
    let daysOfMonth: Set<Int>
    let months: Set<Int>
    let daysOfWeek: Set<Int>  // 0 = Sunday
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool

    public var description: String { text }

    public struct ParseError: Error, CustomStringConvertible, Equatable, Sendable {
        public let reason: String
        public var description: String { reason }
    }

    static let macros = [
        "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
        "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
    ]
    static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    public init(_ text: String) throws(ParseError) {
        self.text = text
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let expanded: String
        if trimmed.hasPrefix("@") {
            guard let m = Self.macros[trimmed] else {
                throw ParseError(reason: "'\(text)' is not a known macro (\(Self.macros.keys.sorted().joined(separator: ", ")))")
            }
            expanded = m
        } else {
            expanded = trimmed
        }
        let fields = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw ParseError(reason: "'\(text)' has \(fields.count) fields; cron needs 5: minute hour day-of-month month day-of-week")
        }
        minutes = try Self.field(fields[0], name: "minute", range: 0...59, names: [])
        hours = try Self.field(fields[1], name: "hour", range: 0...23, names: [])
        daysOfMonth = try Self.field(fields[2], name: "day of month", range: 1...31, names: [])
        months = try Self.field(fields[3], name: "month", range: 1...12, names: Self.monthNames, nameBase: 1)
        var dow = try Self.field(fields[4], name: "day of week", range: 0...7, names: Self.dayNames)
        if dow.remove(7) != nil { dow.insert(0) }
        daysOfWeek = dow
        dayOfMonthRestricted = !fields[2].hasPrefix("*")
        dayOfWeekRestricted = !fields[4].hasPrefix("*")
    }

    private static func field(_ text: String, name: String, range: ClosedRange<Int>, names: [String],
                              nameBase: Int = 0) throws(ParseError) -> Set<Int> {
        func value(_ s: String) throws(ParseError) -> Int {
            if let i = names.firstIndex(of: s) { return i + nameBase }
            guard let v = Int(s), range.contains(v) else {
                throw ParseError(reason: "\(name) '\(s)' is not in \(range.lowerBound)…\(range.upperBound)")
            }
            return v
        }
        var out = Set<Int>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false).map(String.init) {
            guard !part.isEmpty else { throw ParseError(reason: "\(name) field '\(text)' has an empty list item") }
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard pieces.count <= 2 else { throw ParseError(reason: "\(name) '\(part)' has more than one '/'") }
            var step = 1
            if pieces.count == 2 {
                guard let s = Int(pieces[1]), s > 0 else { throw ParseError(reason: "\(name) step '\(pieces[1])' must be a positive number") }
                step = s
            }
            var lo = range.lowerBound, hi = range.upperBound
            if pieces[0] != "*" {
                let ends = pieces[0].split(separator: "-", omittingEmptySubsequences: false).map(String.init)
                guard ends.count <= 2, !ends.contains("") else { throw ParseError(reason: "\(name) '\(part)' is not a number or range") }
                lo = try value(ends[0])
                hi = ends.count == 2 ? try value(ends[1]) : (pieces.count == 2 ? range.upperBound : lo)
                guard lo <= hi else { throw ParseError(reason: "\(name) range '\(pieces[0])' runs backwards") }
            }
            out.formUnion(stride(from: lo, through: hi, by: step))
        }
        return out
    }

    private func dayMatches(day: Int, weekday: Int) -> Bool {
        let dom = daysOfMonth.contains(day), dow = daysOfWeek.contains(weekday)
        switch (dayOfMonthRestricted, dayOfWeekRestricted) {
        case (true, true): return dom || dow
        case (true, false): return dom
        case (false, true): return dow
        case (false, false): return true
        }
    }

    /// The first time strictly after `date` (to the minute) that the schedule fires, in
    /// `timeZone`; nil if there is none within eight years (e.g. "0 0 31 2 *").
    public func next(after date: Date, in timeZone: TimeZone = .current) -> Date? {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = timeZone
        guard var t = cal.dateInterval(of: .minute, for: date)?.end else { return nil }
        let limit = date.addingTimeInterval(8 * 366 * 86400)
        while t <= limit {
            let c = cal.dateComponents([.year, .month, .day, .hour, .minute, .weekday], from: t)
            guard let month = c.month, let day = c.day, let hour = c.hour, let minute = c.minute,
                  let weekday = c.weekday else { return nil }
            if !months.contains(month) {
                guard let start = cal.dateInterval(of: .month, for: t)?.end else { return nil }
                t = start
            } else if !dayMatches(day: day, weekday: weekday - 1) {
                guard let start = cal.dateInterval(of: .day, for: t)?.end else { return nil }
                t = start
            } else if !hours.contains(hour) {
                guard let start = cal.dateInterval(of: .hour, for: t)?.end else { return nil }
                t = start
            } else if !minutes.contains(minute) {
                t = t.addingTimeInterval(60)
            } else {
                return t
            }
        }
        return nil
    }
}
