import Testing
@testable import RelayCore

@Suite("check: borg versions")
struct PreflightVersionTests {
    @Test("the version is the last word of borg --version, whatever the program is called; other lines are not versions")
    func versionNumber() {
        #expect(Preflight.versionNumber("borg 1.2.4") == "1.2.4")
        #expect(Preflight.versionNumber("borg-linux64 1.4.5") == "1.4.5")
        #expect(Preflight.versionNumber("borg 2.0.0b14") == "2.0.0b14")
        #expect(Preflight.versionNumber("/usr/bin/socat") == nil)
        #expect(Preflight.versionNumber("no-socat-found") == nil)
        #expect(Preflight.versionNumber("1.2.4") == nil)
        #expect(Preflight.versionNumber("sh: 1: borg: not found") == nil)
    }

    @Test("T's and B's borg: the same major version is ok (1.2 with 1.4 too), another major version warns with the fix")
    func versionMatch() {
        #expect(Preflight.versionMatch(client: "1.2.4", server: "1.4.5").0 == .ok)
        #expect(Preflight.versionMatch(client: "1.4.5", server: "1.4.5").0 == .ok)
        let (status, detail, fix) = Preflight.versionMatch(client: "2.0.0b14", server: "1.2.4")
        #expect(status == .warn && detail.contains("2.0.0b14") && detail.contains("1.2.4") && detail.contains("major"))
        #expect(fix?.contains("same major version") == true)
    }
}
