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
        let end = out.firstIndex(of: 0) ?? out.endIndex
        return String(decoding: out[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
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

    /// A random token for a cookie or a form (`bytes` random bytes from libsodium, base64url
    /// without padding: letters, digits, - and _).
    public static func randomToken(bytes: Int = 32) throws(VaultError) -> String {
        try Sodium.ensureInitialised()
        var raw = [UInt8](repeating: 0, count: max(16, bytes))
        randombytes_buf(&raw, raw.count)
        return Data(raw).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// A keyed hash (BLAKE2b, libsodium's crypto_generichash) of `message` under `key`, hex:
    /// the CSRF token of a user the proxy authenticated, from a key the agent draws at start.
    public static func keyedHash(_ message: String, key: [UInt8]) -> String {
        var out = [UInt8](repeating: 0, count: 32)
        let m = Array(message.utf8)
        _ = crypto_generichash(&out, out.count, m, UInt64(m.count), key, key.count)
        return out.map { String(format: "%02x", $0) }.joined()
    }
}
