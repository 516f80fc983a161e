import Foundation
import Testing
@testable import RelayCore

@Suite("Vault")
struct VaultTests {
    final class Dir {
        let path: String
        init() throws {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("vault-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }
        var sk: String { path + "/state/vault.key" }
        var pk: String { path + "/state/vault.pub" }
    }

    func secret(_ s: String) throws -> SecretBytes {
        let b = try SecretBytes(capacity: 64)
        b.fill { buf in
            let bytes = Array(s.utf8)
            buf.copyBytes(from: bytes)
            return bytes.count
        }
        return b
    }

    func string(_ s: SecretBytes) -> String {
        s.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
    }

    @Test func initSealOpenRoundTrip() throws {
        let d = try Dir()
        try Vault.initialise(secretPath: d.sk, publicPath: d.pk)
        var st = stat()
        #expect(stat(d.sk, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o600)
        let pk = try Vault.readPublicKey(path: d.pk)
        let sealed = try Vault.seal(try secret("correct horse"), publicKey: pk)
        #expect(sealed.description.hasPrefix("sealed:"))
        #expect(SealedValue(text: sealed.description) == sealed)
        let sk = try Vault.readSecretKey(path: d.sk)
        #expect(Vault.publicKey(of: sk) == pk)
        let opened = try Vault.open(sealed, secretKey: sk, publicKey: pk, context: "test")
        #expect(string(opened) == "correct horse")
        opened.wipe()
        #expect(opened.isWiped)
        #expect(opened.count == 0)
    }

    @Test func refusesToOverwrite() throws {
        let d = try Dir()
        try Vault.initialise(secretPath: d.sk, publicPath: d.pk)
        let before = try Data(contentsOf: URL(fileURLWithPath: d.sk))
        #expect(throws: VaultError.alreadyExists(path: d.sk)) {
            try Vault.initialise(secretPath: d.sk, publicPath: d.pk)
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: d.sk)) == before)
    }

    @Test func tamperedAndForeignValuesAreRefused() throws {
        let d = try Dir(), other = try Dir()
        try Vault.initialise(secretPath: d.sk, publicPath: d.pk)
        try Vault.initialise(secretPath: other.sk, publicPath: other.pk)
        let pk = try Vault.readPublicKey(path: d.pk)
        let sk = try Vault.readSecretKey(path: d.sk)
        let sealed = try Vault.seal(try secret("s3cret"), publicKey: pk)

        var raw = [UInt8](Data(base64Encoded: sealed.base64)!)
        raw[raw.count - 1] ^= 0x01
        let tampered = SealedValue(base64: Data(raw).base64EncodedString())
        #expect(throws: VaultError.openFailed(context: "cfg: [clients.x] key 'passphrase'")) {
            _ = try Vault.open(tampered, secretKey: sk, publicKey: pk, context: "cfg: [clients.x] key 'passphrase'")
        }
        let foreign = try Vault.seal(try secret("s3cret"), publicKey: try Vault.readPublicKey(path: other.pk))
        #expect(throws: VaultError.self) { _ = try Vault.open(foreign, secretKey: sk, publicKey: pk, context: "x") }
        let short = SealedValue(base64: Data([1, 2, 3]).base64EncodedString())
        #expect(throws: VaultError.malformedSealed(context: "x")) { _ = try Vault.open(short, secretKey: sk, publicKey: pk, context: "x") }
        #expect(SealedValue(text: "sealed:!!notbase64") == nil)
        #expect(SealedValue(text: "hunter2") == nil)
    }

    @Test func looseSecretKeyModeRefused() throws {
        let d = try Dir()
        try Vault.initialise(secretPath: d.sk, publicPath: d.pk)
        chmod(d.sk, 0o640)
        #expect(throws: VaultError.insecureKeyFile(path: d.sk, mode: "640")) { _ = try Vault.readSecretKey(path: d.sk) }
    }

    @Test func missingVaultExplainsFix() throws {
        let d = try Dir()
        do {
            _ = try Vault.readSecretKey(path: d.sk)
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("relayctl vault init"))
        }
    }

    @Test func readPassphraseStripsOneNewlineAndRefusesEmpty() throws {
        func read(_ input: String) throws -> String {
            var fds: [Int32] = [0, 0]
            #expect(pipe(&fds) == 0)
            let bytes = Array(input.utf8)
            _ = write(fds[1], bytes, bytes.count)
            close(fds[1])
            defer { close(fds[0]) }
            let s = try Vault.readPassphrase(fd: fds[0], stopAtNewline: false)
            defer { s.wipe() }
            return string(s)
        }
        #expect(try read("pass word\n") == "pass word")
        #expect(try read("pass word\r\n") == "pass word")
        #expect(try read("no newline") == "no newline")
        #expect(throws: VaultError.emptyPassphrase) { _ = try read("\n") }
        #expect(throws: VaultError.passphraseTooLong(limit: Vault.maxPassphrase)) {
            _ = try read(String(repeating: "x", count: Vault.maxPassphrase + 2))
        }
    }
}
