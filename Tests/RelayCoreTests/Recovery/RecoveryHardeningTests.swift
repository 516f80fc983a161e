import Foundation
import Testing
@testable import RelayCore

/// What an attacker who controls B, or who can make a bundle (anyone with recovery.pub),
/// could try against recover, decided without I/O.
@Suite("Recovery: pinned host keys, archive names, where a bundle's files may go")
struct RecoveryHardeningTests {
    static let ed = HostKeyInfo(type: "ssh-ed25519", base64: "AAAAed", fingerprint: "SHA256:good")
    static let rsa = HostKeyInfo(type: "ssh-rsa", base64: "AAAArsa", fingerprint: "SHA256:evil")
    static let ecdsa = HostKeyInfo(type: "ecdsa-sha2-nistp256", base64: "AAAAec", fingerprint: "SHA256:ec")

    @Test("only the key with the checked fingerprint is pinned (a man in the middle answering another key type's scan is not); without one, the one key shown")
    func pins() {
        #expect(StateFetch.pins([Self.rsa, Self.ed], fingerprint: "SHA256:good") == [Self.ed])
        #expect(StateFetch.pins([Self.rsa, Self.ed], fingerprint: "good") == [Self.ed])
        #expect(StateFetch.pins([Self.rsa, Self.ed], fingerprint: "SHA256:nope").isEmpty)
        #expect(StateFetch.pins([Self.rsa, Self.ecdsa, Self.ed], fingerprint: nil) == [Self.ed])
        #expect(StateFetch.pins([Self.rsa, Self.ecdsa], fingerprint: nil) == [Self.ecdsa])
        #expect(StateFetch.pins([], fingerprint: nil).isEmpty)
    }

    @Test("archive names: impossible or far-future stamps are not bundles; candidates newest first; a name must match the header's relay and time")
    func archiveNames() throws {
        #expect(StateArchives.parse("relay-state-r1-99999999T999999Z") == nil)
        #expect(StateArchives.parse("relay-state-r1-20261304T000000Z") == nil)
        #expect(StateArchives.parse("relay-state-r1-20260230T120000Z") == nil)
        #expect(StateArchives.parse("relay-state-r1-20261204T120000Z")?.relay == "r1")
        let now = Date(timeIntervalSince1970: 1_796_385_600)  // 2026-12-04T12:00:00Z
        let names = ["relay-state-r1-20261201T000000Z", "relay-state-r1-20261204T110000Z", "relay-state-r1-20301204T110000Z",
                     "relay-state-r1-99999999T999999Z", "web1-2026-12-04"]
        #expect(try StateArchives.candidates(names, relay: nil, repository: "/s", now: now)
                == ["relay-state-r1-20261204T110000Z", "relay-state-r1-20261201T000000Z"])
        #expect(throws: RecoveryError.self) {
            _ = try StateArchives.candidates(["relay-state-r1-20301204T110000Z"], relay: nil, repository: "/s", now: now)
        }
        let made = Date(timeIntervalSince1970: 1_796_382_000)  // 11:00:00Z
        #expect(StateArchives.mismatch(archive: "relay-state-r1-20261204T110000Z", relay: "r1", created: made) == nil)
        #expect(StateArchives.mismatch(archive: "relay-state-r1-20261204T120000Z", relay: "r1", created: made)?.contains("is named for 20261204T120000Z but was made at 20261204T110000Z") == true)
        #expect(StateArchives.mismatch(archive: "relay-state-r2-20261204T110000Z", relay: "r1", created: made)?.contains("relay 'r2'") == true)
        #expect(StateArchives.mismatch(archive: "web1-x", relay: "r1", created: made) != nil)
    }

    @Test("destinations must lie under state_dir, the config's directory or an allowed one; component by component, no . or ..")
    func confinement() throws {
        #expect(RestorePlan.isUnder("/etc/br/keys/b", ["/etc/br"]))
        #expect(!RestorePlan.isUnder("/etc/brx/keys/b", ["/etc/br"]))
        #expect(!RestorePlan.isUnder("/etc/br", ["/etc/br"]))
        #expect(!RestorePlan.isUnder("/etc/br/../cron.d/x", ["/etc/br"]))
        #expect(!RestorePlan.isUnder("/etc/br/./x", ["/etc/br"]))
        #expect(!RestorePlan.isUnder("etc/br/x", ["/etc/br"]))
        #expect(RestorePlan.isUnder("/etc/br/x", ["/etc/br/"]))
        #expect(RestorePlan.isUnder("/anything", ["/"]))  // a config in / allows everything: the operator's choice
        // A bundle whose config puts known_hosts into /etc/cron.d: refused, naming it and the fix.
        let evil = RestorePlanTests.config.replacingOccurrences(of: "known_hosts = \"/etc/br/known_hosts\"",
                                                                with: "known_hosts = \"/etc/cron.d/zz-borg-relay\"")
        let entries = try RestorePlanTests.entries(config: evil)
        #expect {
            _ = try RestorePlan.make(entries: entries, configPath: "/etc/br/relay.toml", source: "b") { _, _ in .absent }
        } throws: { "\($0)".contains("/etc/cron.d/zz-borg-relay outside /var/lib/br and /etc/br") && "\($0)".contains("--allow-path") }
        let allowed = try RestorePlan.make(entries: entries, configPath: "/etc/br/relay.toml", source: "b", allowing: ["/etc/cron.d"]) { _, _ in .absent }
        #expect(allowed.writes.contains { $0.path == "/etc/cron.d/zz-borg-relay" })
    }

    @Test("as root, with no state_dir to take the owner from, --owner is needed")
    func ownerAsRoot() throws {
        let missing = "/nonexistent-\(UUID().uuidString)"
        if geteuid() == 0 {
            #expect { _ = try Recovery.resolveOwner(nil, stateDir: missing) } throws: { "\($0)".contains("--owner") }
        } else {
            #expect(try Recovery.resolveOwner(nil, stateDir: missing).uid == geteuid())
        }
        #expect(try Recovery.resolveOwner("root", stateDir: missing).uid == 0)
    }
}
