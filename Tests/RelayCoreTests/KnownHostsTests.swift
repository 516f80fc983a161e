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
