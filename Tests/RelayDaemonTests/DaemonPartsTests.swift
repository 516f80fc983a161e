import Foundation
import Testing
@testable import RelayCore
@testable import RelayDaemon

@Suite("The daemon's one-time keys and schedule bookkeeping, as values")
struct DaemonPartsTests {
    static func secret(_ text: String) throws -> SecretBytes {
        let s = try SecretBytes(capacity: text.utf8.count)
        s.fill { out in
            out.copyBytes(from: Array(text.utf8))
            return text.utf8.count
        }
        return s
    }

    @Test("a one-time key opens one sealed passphrase, once; it expires; at most `max` are kept, the oldest going first")
    func ephemeralKeys() throws {
        var keys = EphemeralKeys(lifetime: 120, max: 2)
        let t0 = Date(timeIntervalSince1970: 3_000_000)
        let k = try keys.make(now: t0)
        let sealed = try Vault.seal(try Self.secret("pass phrase"), publicKey: [UInt8](Data(base64Encoded: k.publicKey)!))
        let p = SealedPassphrase(keyID: k.keyID, sealed: sealed.base64)
        let opened = try keys.open(p, context: "test", now: t0.addingTimeInterval(10))
        #expect(opened.withUnsafeBytes { String(decoding: $0, as: UTF8.self) } == "pass phrase")
        #expect(throws: EphemeralKeys.Refusal.self, "single use") { _ = try keys.open(p, context: "test", now: t0) }
        // Expiry.
        let late = try keys.make(now: t0)
        #expect(throws: EphemeralKeys.Refusal.self) {
            _ = try keys.open(SealedPassphrase(keyID: late.keyID, sealed: sealed.base64), context: "t", now: t0.addingTimeInterval(121))
        }
        // The cap: a third key pushes out the oldest.
        let a = try keys.make(now: t0)
        _ = try keys.make(now: t0.addingTimeInterval(1))
        _ = try keys.make(now: t0.addingTimeInterval(2))
        #expect(keys.count == 2)
        do {
            _ = try keys.open(SealedPassphrase(keyID: a.keyID, sealed: sealed.base64), context: "t", now: t0.addingTimeInterval(3))
            Issue.record("the oldest key survived the cap")
        } catch {
            #expect("\(error)".contains("unknown or expired key \(a.keyID)"))
        }
    }

    @Test("the schedule: planned after now, due ones are taken and move on, a client whose schedule went is dropped")
    func scheduleBook() throws {
        let utc = TimeZone(identifier: "UTC")!
        let t0 = try Date("2026-11-20T01:00:00Z", strategy: .iso8601)
        let nightly = try CronSchedule("30 2 * * *")
        var book = ScheduleBook()
        book.plan([("c", nightly), ("d", nil)], now: t0, timeZone: utc)
        let first = try Date("2026-11-20T02:30:00Z", strategy: .iso8601)
        let second = try Date("2026-11-21T02:30:00Z", strategy: .iso8601)
        #expect(book.nextDue == ["c": first])
        var (due, next) = book.takeDue(now: t0, timeZone: utc) { _ in nightly }
        #expect(due.isEmpty && next == first)
        (due, next) = book.takeDue(now: t0.addingTimeInterval(5400), timeZone: utc) { _ in nightly }
        #expect(due.map(\.client) == ["c"] && due.first?.at == first && next == second)
        (due, next) = book.takeDue(now: t0.addingTimeInterval(2 * 86_400), timeZone: utc) { _ in nil }
        #expect(due.isEmpty && next == nil && book.nextDue.isEmpty)
    }

    @Test("a new scheduler leader plans from the fleet's last due time: one passed during the hand-over is due at once, and only once")
    func scheduleBookFromLastSlot() throws {
        let utc = TimeZone(identifier: "UTC")!
        let everyMinute = try CronSchedule("* * * * *")
        let now = try Date("2026-11-20T01:00:30Z", strategy: .iso8601)
        var book = ScheduleBook()
        // c's 01:00 was not enqueued (its last was 00:59), d's was; e has no history.
        book.plan([("c", everyMinute), ("d", everyMinute), ("e", everyMinute)], now: now, timeZone: utc,
                  from: ["c": try Date("2026-11-20T00:59:00Z", strategy: .iso8601), "d": try Date("2026-11-20T01:00:00Z", strategy: .iso8601)])
        let (due, _) = book.takeDue(now: now, timeZone: utc) { _ in everyMinute }
        #expect(due.map(\.client) == ["c"])
        #expect(due.first?.at == (try Date("2026-11-20T01:00:00Z", strategy: .iso8601)))
        #expect(book.nextDue.values.allSatisfy { $0 == (try? Date("2026-11-20T01:01:00Z", strategy: .iso8601)) })
        let (again, _) = book.takeDue(now: now.addingTimeInterval(1), timeZone: utc) { _ in everyMinute }
        #expect(again.isEmpty)
    }
}

@Suite("Metrics of a relay in a fleet")
struct FleetMetricsTests {
    @Test("every series carries the relay's name in a fleet; one relay has no relay label")
    func relayLabel() {
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let run = FinishedRun(runID: "r1", client: "web1", server: "vault", kind: .backup, state: .succeeded,
                              started: t0, ended: t0.addingTimeInterval(10), error: nil, alarm: nil, archive: nil)
        let fleet = RelayMetrics(started: t0, relay: "relay-a")
        fleet.record(run)
        let text = String(decoding: fleet.publish(), as: UTF8.self)
        let series = text.split(separator: "\n").filter { $0.hasPrefix("borg_relay_") }
        #expect(!series.isEmpty)
        for line in series { #expect(line.contains("relay=\"relay-a\""), "\(line)") }
        #expect(text.contains("borg_relay_runs_total{client=\"web1\",kind=\"backup\",result=\"succeeded\",relay=\"relay-a\"} 1"))
        let single = RelayMetrics(started: t0)
        single.record(run)
        #expect(!String(decoding: single.publish(), as: UTF8.self).contains("relay="))
    }
}
