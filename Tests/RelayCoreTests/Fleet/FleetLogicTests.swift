import Foundation
import Testing
@testable import RelayCore

@Suite("Fleet: leases, fencing, failover, the database URL")
struct FleetLogicTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("leases are renewed every lease/6 (at most 10 s); a relay that cannot renew gives its runs up at half the lease, once")
    func leaseKeeper() {
        var k = LeaseKeeper(lease: 60, start: t0)
        #expect(k.renewEvery == 10 && k.fenceAfter == 30)
        #expect(k.due(now: t0, holding: 1) == [.renew])
        k.attempting(at: t0)
        k.renewed(sentAt: t0)
        #expect(k.due(now: t0.addingTimeInterval(9), holding: 1).isEmpty)
        #expect(k.due(now: t0.addingTimeInterval(10), holding: 1) == [.renew])
        // The database is away: attempts fail, nothing renews.
        var t = t0
        for _ in 0..<2 {
            t = t.addingTimeInterval(10)
            k.attempting(at: t)
        }
        #expect(k.due(now: t0.addingTimeInterval(29), holding: 1).isEmpty)
        #expect(k.due(now: t0.addingTimeInterval(30), holding: 1).contains(.fence(silentFor: 30)))
        // Nothing held: nothing to give up.
        #expect(!k.due(now: t0.addingTimeInterval(30), holding: 0).contains { if case .fence = $0 { true } else { false } })
        k.didFence()
        #expect(!k.due(now: t0.addingTimeInterval(35), holding: 1).contains { if case .fence = $0 { true } else { false } })
        // A renewal that succeeds again: the next silence counts from it.
        k.renewed(sentAt: t0.addingTimeInterval(60))
        #expect(k.due(now: t0.addingTimeInterval(89), holding: 1).allSatisfy { $0 == .renew })
        #expect(k.due(now: t0.addingTimeInterval(90), holding: 1).contains(.fence(silentFor: 30)))
        // An older renewal answering late does not move the time back.
        k.renewed(sentAt: t0.addingTimeInterval(30))
        #expect(k.renewedAt == t0.addingTimeInterval(60))
        // A short lease is renewed more often than every 10 s.
        #expect(LeaseKeeper(lease: 15, start: t0).renewEvery == 2.5)
    }

    @Test("only a scheduled backup lost with its relay starts again, and only once")
    func failoverRule() {
        #expect(FailoverRule.restarts(kind: .backup, trigger: "schedule"))
        #expect(FailoverRule.restarts(kind: .backup, trigger: "catch-up"))
        #expect(!FailoverRule.restarts(kind: .backup, trigger: FailoverRule.trigger))
        #expect(!FailoverRule.restarts(kind: .backup, trigger: "api"))
        #expect(!FailoverRule.restarts(kind: .check, trigger: "schedule"))
        #expect(!FailoverRule.restarts(kind: .prune, trigger: "retention"))
    }

    @Test("the database URL: user, host, port, database, TLS; a password in it is refused without repeating it")
    func databaseURL() throws {
        let d = try DatabaseSettings.parse("postgresql://relay@db.example.net:6432/fleet?sslmode=verify-full&sslrootcert=/etc/ca.pem").get()
        #expect(d.user == "relay" && d.host == "db.example.net" && d.port == 6432 && d.database == "fleet")
        #expect(d.tls == .verifyFull && d.rootCertificate == "/etc/ca.pem")
        #expect(try DatabaseSettings.parse("postgres://r@db/x").get().tls == .verifyFull)
        #expect(try DatabaseSettings.parse("postgresql://r@127.0.0.1/x").get().tls == .disable)
        #expect(try DatabaseSettings.parse("postgresql://r@db/x?sslmode=disable").get().tls == .disable)
        func problem(_ url: String) -> String? {
            if case .failure(let p) = DatabaseSettings.parse(url) { return p.reason }
            return nil
        }
        let leaked = problem("postgresql://relay:hunter2-secret@db/x")
        #expect(leaked?.contains("database_password_file") == true)
        #expect(leaked?.contains("hunter2") == false)
        #expect(problem("mysql://r@db/x")?.contains("postgresql://") == true)
        #expect(problem("postgresql://db/x")?.contains("no user") == true)
        #expect(problem("postgresql://r@db")?.contains("no database") == true)
        #expect(problem("postgresql://r@db/x?sslmode=maybe")?.contains("verify-full") == true)
        #expect(problem("postgresql://r@db/x?sslrootcert=ca.pem")?.contains("absolute") == true)
        #expect(problem("postgresql://r@db/x?application_name=y")?.contains("unknown parameter") == true)
        #expect(d.description == "postgresql://relay@db.example.net:6432/fleet?sslmode=verify-full")
    }

    @Test("[relay] name, database, lease and [clients.X] relays in the config; relays without a fleet is an error that says so")
    func config() throws {
        let base = """
            [relay]
            state_dir = "/tmp/x"
            name = "r-1.zone_a"
            database = "postgresql://relay@127.0.0.1:5432/borg_relay"
            database_password_file = "/etc/borg-relay/db-password"
            lease = 30
            [servers.s]
            host = "b"
            user = "u"
            key = "/k"
            [clients.c]
            host = "t"
            user = "u"
            key = "/k"
            server = "s"
            repository = "/r"
            paths = ["/p"]
            relays = ["r-1.zone_a", "r2"]
            """
        let cfg = try ConfigLoader.parse(base, file: "t.toml", checkFiles: false)
        #expect(cfg.relay.name == "r-1.zone_a" && cfg.relay.lease == 30)
        #expect(cfg.relay.database?.passwordFile == "/etc/borg-relay/db-password")
        #expect(cfg.clients["c"]?.relays == ["r-1.zone_a", "r2"])
        func error(_ text: String) -> String {
            do { _ = try ConfigLoader.parse(text, file: "t.toml", checkFiles: false); return "" } catch { return "\(error)" }
        }
        #expect(error(base.replacingOccurrences(of: "database = \"postgresql://relay@127.0.0.1:5432/borg_relay\"\n", with: ""))
            .contains("database_password_file"))
        let noFleet = base.replacingOccurrences(of: "database = \"postgresql://relay@127.0.0.1:5432/borg_relay\"\n", with: "")
            .replacingOccurrences(of: "database_password_file = \"/etc/borg-relay/db-password\"\n", with: "")
        #expect(error(noFleet).contains("there is no fleet"))
        #expect(error(base.replacingOccurrences(of: "name = \"r-1.zone_a\"", with: "name = \"-bad name\"")).contains("not a relay name"))
        #expect(error(base.replacingOccurrences(of: "lease = 30", with: "lease = 20")).contains("lease"))
        let secret = error(base.replacingOccurrences(of: "relay@127.0.0.1", with: "relay:pw-in-url@127.0.0.1"))
        #expect(secret.contains("database_password_file") && !secret.contains("pw-in-url"))
    }
}
