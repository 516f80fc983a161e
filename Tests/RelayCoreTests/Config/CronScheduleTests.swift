import Foundation
import Testing
@testable import RelayCore

@Suite("Cron schedule")
struct CronScheduleTests {
    static let utc = TimeZone(identifier: "UTC")!

    func date(_ s: String, _ tz: TimeZone = utc) -> Date {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = tz
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return f.date(from: s)!
    }

    func next(_ cron: String, after: String, _ tz: TimeZone = utc) throws -> Date? {
        try CronSchedule(cron).next(after: date(after, tz), in: tz)
    }

    @Test func dailyAtHalfPastTwo() throws {
        #expect(try next("30 2 * * *", after: "2026-11-21 23:47:30") == date("2026-11-22 02:30:00"))
        #expect(try next("@daily", after: "2026-11-21 23:47:30") == date("2026-11-22 00:00:00"))
    }

    @Test func stepsAreStrictlyAfter() throws {
        #expect(try next("*/15 * * * *", after: "2026-11-21 10:07:00") == date("2026-11-21 10:15:00"))
        #expect(try next("*/15 * * * *", after: "2026-11-21 10:15:00") == date("2026-11-21 10:30:00"))
        #expect(try next("*/15 * * * *", after: "2026-11-21 23:59:59") == date("2026-11-22 00:00:00"))
        #expect(try next("5-59/20 * * * *", after: "2026-11-21 10:26:00") == date("2026-11-21 10:45:00"))
    }

    @Test func weekdaysNamesAndSunday() throws {
        // 2026-11-21 is a Saturday.
        #expect(try next("0 9 * * mon-fri", after: "2026-11-21 12:00:00") == date("2026-11-23 09:00:00"))
        #expect(try next("0 0 * * 7", after: "2026-11-21 12:00:00") == date("2026-11-22 00:00:00"))
        #expect(try next("0 0 * * sun", after: "2026-11-21 12:00:00") == date("2026-11-22 00:00:00"))
        #expect(try next("0 0 1 jan *", after: "2026-11-21 12:00:00") == date("2027-01-01 00:00:00"))
    }

    @Test func bothDayFieldsMeanEither() throws {
        // Friday the 13th style: day 13 OR a Friday; the next Friday (27th) comes first.
        #expect(try next("0 0 13 * fri", after: "2026-11-21 12:00:00") == date("2026-11-27 00:00:00"))
        #expect(try next("0 0 13 * *", after: "2026-11-21 12:00:00") == date("2026-12-13 00:00:00"))
    }

    @Test func impossibleDateHasNoNextRun() throws {
        #expect(try next("0 0 31 2 *", after: "2026-11-21 12:00:00") == nil)
    }

    @Test func timeZoneIsHonoured() throws {
        let berlin = TimeZone(identifier: "Europe/Berlin")!
        // 02:30 in Berlin in winter is 01:30 UTC.
        #expect(try next("30 2 * * *", after: "2026-11-21 12:00:00", berlin) == date("2026-11-22 01:30:00"))
    }

    @Test func mistakesAreExplained() {
        let cases: [(String, String)] = [
            ("61 * * * *", "minute '61' is not in 0…59"),
            ("* * *", "has 3 fields"),
            ("@sometimes", "not a known macro"),
            ("5-1 * * * *", "runs backwards"),
            ("*/0 * * * *", "step '0'"),
            ("* * * foo *", "month 'foo'"),
            ("1,,2 * * * *", "empty list item"),
        ]
        for (text, fragment) in cases {
            do {
                _ = try CronSchedule(text)
                Issue.record("'\(text)' was accepted")
            } catch {
                #expect(error.reason.contains(fragment), "'\(text)': \(error.reason)")
            }
        }
    }
}
