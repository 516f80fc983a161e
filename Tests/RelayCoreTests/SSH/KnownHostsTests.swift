import Foundation
import Testing
@testable import RelayCore

@Suite("known_hosts lines and markers")
struct KnownHostsParsingTests {
    static let key = "AAAAC3NzaC1lZDI1NTE5AAAAIIgYUVne3VBK5OVEu2gzIvjvsTu5iFdqsYD7qeOTvA79"

    @Test("markers are split off; comments, blank lines and unknown markers are skipped")
    func split() {
        #expect(KnownHosts.split("host ssh-ed25519 \(Self.key)")?.marker == nil)
        #expect(KnownHosts.split("  @revoked * ssh-ed25519 \(Self.key)")?.marker == .revoked)
        #expect(KnownHosts.split("@revoked * ssh-ed25519 \(Self.key)")?.rest == "* ssh-ed25519 \(Self.key)")
        #expect(KnownHosts.split("@cert-authority *.example ssh-ed25519 \(Self.key)")?.marker == .certAuthority)
        #expect(KnownHosts.split("@bogus host ssh-ed25519 \(Self.key)") == nil)
        #expect(KnownHosts.split("@revoked") == nil)
        #expect(KnownHosts.split("# host ssh-ed25519 \(Self.key)") == nil)
        #expect(KnownHosts.split("   ") == nil)
    }

    @Test("entries match host patterns as libssh does (port form, wildcard, list) and carry their line numbers")
    func entries() {
        let text = """
            # pins
            [127.0.0.1]:2222 ssh-ed25519 \(Self.key)
            other.example ssh-ed25519 \(Self.key)
            @revoked * ssh-ed25519 \(Self.key)
            @revoked other.example,backup.example ssh-ed25519 \(Self.key)
            @cert-authority *.example ssh-ed25519 \(Self.key)
            not a valid line
            """
        let local = KnownHosts.entries(for: "[127.0.0.1]:2222", text: text)
        #expect(local.map(\.line) == [2, 4])
        #expect(local.map(\.marker) == [nil, .revoked])
        #expect(local.allSatisfy { $0.base64 == Self.key && $0.type == "ssh-ed25519" && $0.fingerprint.hasPrefix("SHA256:") })
        let backup = KnownHosts.entries(for: "backup.example", text: text)
        #expect(backup.map(\.line) == [4, 5, 6])
        #expect(backup.map(\.marker) == [.revoked, .revoked, .certAuthority])
        #expect(KnownHosts.entries(for: "[127.0.0.1]:2223", text: "[127.0.0.1]:2222 ssh-ed25519 \(Self.key)").isEmpty)
    }
}

@Suite("hostkey --add: what is pinned, decided against the file")
struct PinDecisionTests {
    static let ed = HostKeyInfo(type: "ssh-ed25519", base64: "AAAAed", fingerprint: "SHA256:ed")
    static let rsa = HostKeyInfo(type: "ssh-rsa", base64: "AAAArsa", fingerprint: "SHA256:rsa")
    static func entry(_ k: HostKeyInfo, _ marker: KnownHosts.Marker? = nil, line: Int = 1) -> KnownHosts.Entry {
        KnownHosts.Entry(line: line, marker: marker, type: k.type, base64: k.base64, fingerprint: k.fingerprint)
    }

    @Test("nothing pinned: every offered key is added; some pinned: only the new ones; all pinned: nothing")
    func adds() {
        #expect(PinDecision(name: "[h]:22", offered: [Self.ed, Self.rsa], entries: [])
                == .add(["[h]:22 ssh-ed25519 AAAAed", "[h]:22 ssh-rsa AAAArsa"]))
        #expect(PinDecision(name: "h", offered: [Self.ed, Self.rsa], entries: [Self.entry(Self.ed)]) == .add(["h ssh-rsa AAAArsa"]))
        #expect(PinDecision(name: "h", offered: [Self.ed], entries: [Self.entry(Self.ed)]) == .nothingNew)
    }

    @Test("a name pinned with other keys only is a changed host key; a revoked offered key stops everything")
    func refuses() {
        let other = HostKeyInfo(type: "ssh-ed25519", base64: "AAAAother", fingerprint: "SHA256:o")
        #expect(PinDecision(name: "h", offered: [Self.ed], entries: [Self.entry(other)]) == .changed)
        let revoked = Self.entry(Self.rsa, .revoked, line: 7)
        #expect(PinDecision(name: "h", offered: [Self.ed, Self.rsa], entries: [revoked]) == .revoked(revoked))
        // A @cert-authority line is no pin: the keys are added as for an unpinned name.
        #expect(PinDecision(name: "h", offered: [Self.ed], entries: [Self.entry(other, .certAuthority)]) == .add(["h ssh-ed25519 AAAAed"]))
    }
}
