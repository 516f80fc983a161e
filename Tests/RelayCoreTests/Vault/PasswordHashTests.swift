import Foundation
import Testing
@testable import RelayCore

@Suite("The status page's password: Argon2id hashes from libsodium")
struct PasswordHashTests {
    @Test("a hash verifies its password only; each hash has its own salt; short passwords and foreign strings are refused")
    func hashAndVerify() throws {
        let right = try PasswordHash.secret(Array("correct horse battery".utf8))
        let wrong = try PasswordHash.secret(Array("correct horse batterz".utf8))
        let h1 = try PasswordHash.hash(right)
        let h2 = try PasswordHash.hash(right)
        #expect(h1.hasPrefix("$argon2id$v=19$m=65536,t=2,p=1$"), "\(h1)")
        #expect(h1 != h2, "a random salt per hash")
        #expect(!h1.contains("correct"))
        #expect(PasswordHash.verify(right, hash: h1) && PasswordHash.verify(right, hash: h2))
        #expect(!PasswordHash.verify(wrong, hash: h1))
        // Not an Argon2id string, a truncated one, an altered one: never true.
        #expect(!PasswordHash.verify(right, hash: ""))
        #expect(!PasswordHash.verify(right, hash: "correct horse battery"))
        #expect(!PasswordHash.verify(right, hash: String(h1.dropLast(4))))
        var altered = Array(h1.utf8)
        altered[altered.count - 2] = altered[altered.count - 2] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(!PasswordHash.verify(right, hash: String(decoding: altered, as: UTF8.self)))
        #expect(!PasswordHash.verify(right, hash: "$argon2id$" + String(repeating: "x", count: 500)))
        #expect(throws: VaultError.passwordTooShort(minimum: PasswordHash.minimumLength)) {
            try PasswordHash.hash(try PasswordHash.secret(Array("short".utf8)))
        }
    }
}
