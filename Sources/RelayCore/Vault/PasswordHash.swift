import CSodium
import Foundation

/// A password for people (the status page's login) kept as an Argon2id hash: libsodium's
/// `crypto_pwhash_argon2id_str`, whose `$argon2id$v=19$m=…,t=…,p=1$salt$hash` string carries
/// its own random salt and limits, so a stored hash stays verifiable when the defaults
/// change. The password itself only ever lives in guarded memory (`SecretBytes`).
public enum PasswordHash {
    /// Shorter passwords are refused.
    public static let minimumLength = 10

    /// libsodium's interactive limits (64 MiB, 2 passes): the cost of one login attempt,
    /// which the login throttle bounds further.
    static var opsLimit: UInt64 { UInt64(crypto_pwhash_argon2id_opslimit_interactive()) }
    static var memLimit: Int { crypto_pwhash_argon2id_memlimit_interactive() }

    /// The hash string of `password`.
    public static func hash(_ password: SecretBytes) throws(VaultError) -> String {
        try Sodium.ensureInitialised()
        guard password.count >= minimumLength else { throw .passwordTooShort(minimum: minimumLength) }
        var out = [CChar](repeating: 0, count: crypto_pwhash_argon2id_strbytes())
        let rc = password.withUnsafeBytes { p in
            crypto_pwhash_argon2id_str(&out, p.baseAddress!.assumingMemoryBound(to: CChar.self), UInt64(p.count),
                                       opsLimit, memLimit)
        }
        guard rc == 0 else { throw .passwordHashFailed }
        return String(cString: out)
    }

    /// Whether `password` is the one `hash` was made from (constant time in libsodium). A
    /// string that is not an Argon2id hash never verifies.
    public static func verify(_ password: SecretBytes, hash: String) -> Bool {
        guard (try? Sodium.ensureInitialised()) != nil, hash.hasPrefix("$argon2id$"),
              hash.utf8.count < crypto_pwhash_argon2id_strbytes() else { return false }
        return hash.withCString { h in
            password.withUnsafeBytes { p in
                guard let base = p.baseAddress else { return false }
                return crypto_pwhash_argon2id_str_verify(h, base.assumingMemoryBound(to: CChar.self), UInt64(p.count)) == 0
            }
        }
    }

    /// The password in guarded memory, from bytes a test or the login form gave (the form's
    /// copy is wiped by its caller).
    public static func secret(_ bytes: some Collection<UInt8>) throws(VaultError) -> SecretBytes {
        let s = try SecretBytes(capacity: max(bytes.count, 1))
        s.fill { dst in
            var i = 0
            for b in bytes { dst[i] = b; i += 1 }
            return bytes.count
        }
        return s
    }
}
