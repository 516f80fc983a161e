import Foundation
import Testing
@testable import RelayCore

@Suite("check: the last state backup")
struct PreflightStateBackupTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    static func done(hoursAgo: Double) -> Preflight.StateBackupRecord {
        let ended = now.addingTimeInterval(-hoursAgo * 3600)
        return .succeeded(StateBackupResult(server: "vault", repository: "/srv/borg/relay-state", archive: "relay-r1-x",
                                            archiveID: "ab", bytes: 10, started: ended, ended: ended, trigger: "schedule"))
    }

    @Test("within twice the schedule's period: ok with its age and archive; older: a warning with the fix")
    func age() throws {
        let daily = try CronSchedule("@daily")
        let fresh = Preflight.stateBackupAge(Self.done(hoursAgo: 30), schedule: daily, now: Self.now)
        #expect(fresh.0 == .ok && fresh.1.contains("1 d ago") && fresh.1.contains("relay-r1-x") && fresh.2 == nil)
        let stale = Preflight.stateBackupAge(Self.done(hoursAgo: 49), schedule: daily, now: Self.now)
        #expect(stale.0 == .warn && stale.1.contains("2 d ago") && stale.2?.contains("relayctl state backup") == true)
        let hourly = try CronSchedule("0 * * * *")
        #expect(Preflight.stateBackupAge(Self.done(hoursAgo: 3), schedule: hourly, now: Self.now).0 == .warn)
        #expect(Preflight.stateBackupAge(Self.done(hoursAgo: 1.5), schedule: hourly, now: Self.now).0 == .ok)
    }

    @Test("none yet, or a record this user cannot read: warnings that say which, with the fix")
    func missing() throws {
        let daily = try CronSchedule("@daily")
        let never = Preflight.stateBackupAge(.never, schedule: daily, now: Self.now)
        #expect(never.0 == .warn && never.1.contains("no state backup has succeeded") && never.2 != nil)
        let hidden = Preflight.stateBackupAge(.unreadable("/var/lib/borg-relay/state-backup.json"), schedule: daily, now: Self.now)
        #expect(hidden.0 == .warn && hidden.1.contains("/var/lib/borg-relay/state-backup.json") && hidden.2?.contains("runuser") == true)
    }
}
