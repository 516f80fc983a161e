import Foundation
import Testing
@testable import RelayCore

@Suite("State bundle: format, sealing, opening, refusals")
struct StateBundleTests {
    static func secretBytes(_ s: [UInt8]) throws -> SecretBytes {
        try s.withUnsafeBytes { try SecretBytes.copying($0) }
    }

    static func bytes(_ s: SecretBytes) -> [UInt8] { s.withUnsafeBytes { Array($0) } }

    static func entries(big: Int = 1000) throws -> [StateEntry] {
        var history = [UInt8](repeating: 0, count: big)
        for i in history.indices { history[i] = UInt8(truncatingIfNeeded: i &* 31 &+ 7) }
        return [
            StateEntry(role: .config, path: "/etc/borg-relay/relay.toml", mode: 0o640, data: .plain(Array("[relay]\n".utf8))),
            StateEntry(role: .vaultSecretKey, path: "/var/lib/borg-relay/vault.key", mode: 0o600,
                       data: .secret(try secretBytes(Array(repeating: 0xA5, count: 32)))),
            StateEntry(role: .privateKey, path: "/etc/borg-relay/keys/web1", mode: 0o600,
                       data: .secret(try secretBytes(Array("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n".utf8)))),
            StateEntry(role: .history, path: "/var/lib/borg-relay/history.sqlite", mode: 0o600, data: .plain(history)),
            StateEntry(role: .overdue, path: "/var/lib/borg-relay/overdue.json", mode: 0o600, data: .plain([])),
        ]
    }

    static func plain(_ e: StateEntry) -> [UInt8] {
        switch e.data {
        case .plain(let b): return b
        case .secret(let s): return bytes(s)
        }
    }

    @Test("seal then open gives every entry back, secrets in guarded memory; small and multi-chunk")
    func roundTrip() throws {
        for size in [0, 1000, 200_000] {
            let (sk, pk) = try RecoveryKey.generate()
            let input = try Self.entries(big: size)
            let sealed = try StateBundle.seal(input, relay: "relay-a", recoveryPublicKey: pk, created: Date(timeIntervalSince1970: 1_800_000_000))
            let (header, output) = try StateBundle.open(sealed, secret: sk, source: "test")
            #expect(header.relay == "relay-a")
            #expect(header.created == Date(timeIntervalSince1970: 1_800_000_000))
            #expect(header.recoveryKey == RecoveryKey.fingerprint(publicKey: pk))
            #expect(output.count == input.count)
            for (a, b) in zip(input, output) {
                #expect(a.role == b.role && a.path == b.path && a.mode == b.mode)
                #expect(Self.plain(a) == Self.plain(b))
                #expect(a.role.isSecret == { if case .secret = b.data { return true } else { return false } }())
            }
            // No secret in the clear anywhere in the sealed bytes.
            let needle = Array("BEGIN OPENSSH PRIVATE KEY".utf8)
            #expect(!sealed.indices.dropLast(needle.count).contains { Array(sealed[$0..<($0 + needle.count)]) == needle })
            if size == 200_000 { #expect(sealed.count > 200_000 + 4 * SecretStream.overhead) }
        }
    }

    @Test("a secret that is not the bundle's: an error naming both recovery keys, before decrypting")
    func wrongSecret() throws {
        let (_, pk) = try RecoveryKey.generate()
        let (other, _) = try RecoveryKey.generate()
        let sealed = try StateBundle.seal(try Self.entries(), relay: "relay-a", recoveryPublicKey: pk)
        #expect {
            _ = try StateBundle.open(sealed, secret: other, source: "bundle.x")
        } throws: { e in
            guard case RecoveryError.wrongSecret(let source, let bundleKey, let secretKey, let relay) = e else { return false }
            return source == "bundle.x" && bundleKey == RecoveryKey.fingerprint(publicKey: pk)
                && secretKey == RecoveryKey.fingerprint(publicKey: Vault.publicKey(of: other)) && relay == "relay-a"
                && "\(e)".contains("nothing was written")
        }
    }

    @Test("another relay's bundle is refused when --relay names this one")
    func otherRelay() throws {
        let (sk, pk) = try RecoveryKey.generate()
        let sealed = try StateBundle.seal(try Self.entries(), relay: "relay-b", recoveryPublicKey: pk)
        #expect(throws: RecoveryError.otherRelay(source: "f", bundleRelay: "relay-b", expected: "relay-a")) {
            _ = try StateBundle.open(sealed, secret: sk, source: "f", relay: "relay-a")
        }
    }

    @Test("every truncation is refused with a clear error, never a crash")
    func truncations() throws {
        let (sk, pk) = try RecoveryKey.generate()
        let sealed = try StateBundle.seal(try Self.entries(big: 70_000), relay: "relay-a", recoveryPublicKey: pk)
        let cuts = Array(0..<200) + Array(stride(from: 200, to: sealed.count, by: 97)) + [sealed.count - 1]
        for cut in cuts {
            do {
                _ = try StateBundle.open(Array(sealed.prefix(cut)), secret: sk, source: "cut")
                Issue.record("a bundle cut to \(cut) of \(sealed.count) bytes opened")
            } catch {
                switch error {
                case .notABundle, .damaged: break
                default: Issue.record("cut at \(cut): unexpected \(error)")
                }
            }
        }
    }

    @Test("a changed byte anywhere (header or body), an added byte or a swapped chunk: refused")
    func tampering() throws {
        let (sk, pk) = try RecoveryKey.generate()
        let sealed = try StateBundle.seal(try Self.entries(big: 140_000), relay: "relay-a", recoveryPublicKey: pk)
        let (_, headerLength) = try StateBundleFormat.Header.parse(sealed, source: "t")
        var positions = Array(0..<headerLength) + Array(stride(from: headerLength, to: sealed.count, by: 211))
        positions.append(sealed.count - 1)
        for p in positions {
            var t = sealed
            t[p] ^= 0x01
            #expect(throws: RecoveryError.self, "flipped byte \(p)") { _ = try StateBundle.open(t, secret: sk, source: "t") }
        }
        #expect(throws: RecoveryError.self) { _ = try StateBundle.open(sealed + [0], secret: sk, source: "t") }
        // The relay's name in the header changed to another valid one of the same length.
        var renamed = sealed
        let at = try #require(renamed.firstRange(of: Array("relay-a".utf8)))
        renamed[at.upperBound - 1] = UInt8(ascii: "b")
        #expect {
            _ = try StateBundle.open(renamed, secret: sk, source: "t")
        } throws: { e in
            if case RecoveryError.damaged = e { return true }
            return false
        }
        // The first two chunks swapped.
        func frames(_ b: [UInt8]) -> [Range<Int>] {
            var out: [Range<Int>] = []
            var i = headerLength
            while i + 4 <= b.count {
                let n = Int(b[i..<(i + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
                out.append(i..<(i + 4 + n))
                i += 4 + n
            }
            return out
        }
        let f = frames(sealed)
        #expect(f.count >= 3)
        let swapped = Array(sealed[0..<headerLength]) + Array(sealed[f[1]]) + Array(sealed[f[0]]) + f.dropFirst(2).flatMap { Array(sealed[$0]) }
        #expect(throws: RecoveryError.self) { _ = try StateBundle.open(swapped, secret: sk, source: "t") }
        // The final chunk dropped.
        let dropped = Array(sealed.prefix(f.last!.lowerBound))
        #expect {
            _ = try StateBundle.open(dropped, secret: sk, source: "t")
        } throws: { e in
            "\(e)".contains("cut short")
        }
    }

    @Test("headers: not a bundle, another format version, a field missing")
    func headers() throws {
        #expect(throws: RecoveryError.notABundle(source: "f", detail: "it is empty")) { _ = try StateBundleFormat.Header.parse([], source: "f") }
        #expect(throws: RecoveryError.self) { _ = try StateBundleFormat.Header.parse(Array("-----BEGIN OPENSSH".utf8), source: "f") }
        #expect(throws: RecoveryError.unsupportedVersion(source: "f", version: 2)) {
            _ = try StateBundleFormat.Header.parse(StateBundleFormat.magic + [2, 0, 0, 0], source: "f")
        }
        #expect(throws: RecoveryError.self) { _ = try StateBundleFormat.Header.parse(StateBundleFormat.magic + [1, 0, 0, 0], source: "f") }
        let h = StateBundleFormat.Header(relay: "r1", created: Date(timeIntervalSince1970: 5), recoveryKey: "BRR-AAAA",
                                         sealedKey: [1, 2, 3], streamHeader: [4, 5])
        let enc = h.encoded()
        let (back, length) = try StateBundleFormat.Header.parse(enc + [9, 9], source: "f")
        #expect(back == h && length == enc.count)
    }

    @Test("the payload parser takes entries split at every byte boundary, and refuses malformed ones")
    func parser() throws {
        var payload: [UInt8] = []
        payload += StateBundleFormat.entryHead(role: .knownHosts, path: "/k", mode: 0o644, length: 3) + [1, 2, 3]
        payload += StateBundleFormat.entryHead(role: .privateKey, path: "/key", mode: 0o600, length: 2) + [9, 8]
        payload += StateBundleFormat.endMark
        for split in 0...payload.count {
            var p = StatePayloadParser()
            try Array(payload[..<split]).withUnsafeBytes { try p.feed($0) }
            try Array(payload[split...]).withUnsafeBytes { try p.feed($0) }
            #expect(p.isEnded && p.entries.count == 2)
            #expect(p.entries.map(\.path) == ["/k", "/key"])
            p.wipe()
        }
        func refuses(_ bytes: [UInt8]) {
            var p = StatePayloadParser()
            #expect(throws: RecoveryError.self, "\(bytes.prefix(20))") { try bytes.withUnsafeBytes { try p.feed($0) } }
        }
        refuses([200])  // unknown role
        refuses(StateBundleFormat.entryHead(role: .config, path: "relative", mode: 0, length: 0))
        refuses(StateBundleFormat.entryHead(role: .config, path: "/a/../b", mode: 0, length: 0))
        refuses(StateBundleFormat.entryHead(role: .privateKey, path: "/k", mode: 0, length: 1 << 30))
        refuses(StateBundleFormat.endMark + [1])
    }

    @Test("the recovery secret: printed form, parsed back, fingerprints, malformed input")
    func recoverySecret() throws {
        let (sk, pk) = try RecoveryKey.generate()
        let text = try RecoveryKey.secretText(sk)
        let printed = String(decoding: Self.bytes(text), as: UTF8.self)
        #expect(printed.hasPrefix("BRS1-") && printed.count == 5 + 44)
        let back = try RecoveryKey.parseSecret(try Self.secretBytes(Array(("  " + printed + "\n").utf8)))
        #expect(back.equals(sk))
        #expect(RecoveryKey.publicKey(of: back) == pk)
        let fp = RecoveryKey.fingerprint(publicKey: pk)
        #expect(fp.wholeMatch(of: /BRR-([A-Z2-7]{4}-){7}[A-Z2-7]{4}/) != nil, "\(fp)")
        #expect(fp != RecoveryKey.fingerprint(publicKey: try RecoveryKey.generate().publicKey))
        for bad in ["", "BRS1-", "BRS1-abc", String(printed.dropFirst(5)), "BRS2-" + printed.dropFirst(5), printed + "AAAA"] {
            #expect(throws: VaultError.malformedRecoverySecret, "\(bad)") { _ = try RecoveryKey.parseSecret(try Self.secretBytes(Array(bad.utf8) + [0x20])) }
        }
        let line = Array(("borg-relay-recovery-public-key-v1 " + Data(pk).base64EncodedString() + "\n").utf8)
        #expect(try RecoveryKey.parsePublicKey(line, path: "p") == pk)
        #expect(throws: VaultError.malformedKey(path: "p")) { _ = try RecoveryKey.parsePublicKey(Array("borg-relay-vault-public-key-v1 AAAA".utf8), path: "p") }
    }

    @Test("state archive names: made, parsed, and the newest chosen per relay")
    func archiveNames() throws {
        let t = Date(timeIntervalSince1970: 1_800_000_000)
        let n = StateArchives.name(relay: "relay-a.b_c", at: t)
        #expect(n == "relay-state-relay-a.b_c-20270115T080000Z")
        #expect(StateArchives.parse(n)?.relay == "relay-a.b_c")
        #expect(StateArchives.parse("relay-state-x") == nil && StateArchives.parse("web1-2026") == nil)
        let a1 = StateArchives.name(relay: "a", at: t), a2 = StateArchives.name(relay: "a", at: t + 86400)
        let b1 = StateArchives.name(relay: "b", at: t + 999_999)
        #expect(try StateArchives.candidates([a2, a1, "other"], relay: nil, repository: "/r", now: t + 2_000_000) == [a2, a1])
        #expect(try StateArchives.candidates([a1, a2, b1], relay: "a", repository: "/r", now: t + 2_000_000) == [a2, a1])
        #expect { try StateArchives.candidates([a1, b1], relay: nil, repository: "/r", now: t + 2_000_000) } throws: { "\($0)".contains("several relays (a, b)") }
        #expect { try StateArchives.candidates(["x"], relay: nil, repository: "/r", now: t + 2_000_000) } throws: { "\($0)".contains("no relay-state") }
        #expect { try StateArchives.candidates([a1], relay: "b", repository: "/r", now: t + 2_000_000) } throws: { "\($0)".contains("no bundle of relay 'b'") }
    }
}
