import CSodium
import Foundation
import Glibc

/// The offline recovery key: an X25519 key pair whose secret half is printed once by
/// `relayctl recovery init` and kept off R (on paper, in a password manager); only the
/// public half stays in state_dir (`recovery.pub`). State bundles are sealed to it.
public enum RecoveryKey {
    public static let publicKeyBytes = Int(crypto_box_publickeybytes())
    public static let secretKeyBytes = Int(crypto_box_secretkeybytes())
    static let publicKeyHeader = "borg-relay-recovery-public-key-v1 "
    /// The printed secret's prefix (so a pasted vault key or passphrase is told apart).
    static let secretPrefix = "BRS1-"

    /// A new key pair; the secret half in guarded memory.
    public static func generate() throws(VaultError) -> (secretKey: SecretBytes, publicKey: [UInt8]) {
        try Vault.ephemeralKeyPair()
    }

    /// `BRR-` and eight groups of four base32 characters of a BLAKE2b hash of the public key:
    /// what an operator compares by eye (the bundle's header carries it too).
    public static func fingerprint(publicKey: [UInt8]) -> String {
        let digest = Digest.blake2b(publicKey, length: 20, key: Array("borg-relay-recovery".utf8))
        let text = Base32.encode(digest)
        var groups: [String] = []
        var i = text.startIndex
        while i < text.endIndex {
            let j = text.index(i, offsetBy: 4, limitedBy: text.endIndex) ?? text.endIndex
            groups.append(String(text[i..<j]))
            i = j
        }
        return "BRR-" + groups.joined(separator: "-")
    }

    /// The public half of `secretKey`.
    public static func publicKey(of secretKey: SecretBytes) -> [UInt8] { Vault.publicKey(of: secretKey) }

    /// Writes `recovery.pub` (one text line, 0600 like everything in state_dir), never over
    /// an existing file.
    public static func writePublicKey(_ publicKey: [UInt8], path: String) throws(VaultError) {
        let dir = (path as NSString).deletingLastPathComponent
        if mkdir(dir, 0o700) != 0 && errno != EEXIST {
            throw VaultError.writeFailed(path: dir, reason: String(cString: strerror(errno)))
        }
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        if fd < 0 {
            if errno == EEXIST { throw VaultError.recoveryKeyExists(path: path) }
            throw VaultError.writeFailed(path: path, reason: String(cString: strerror(errno)))
        }
        let line = Array((publicKeyHeader + Data(publicKey).base64EncodedString() + "\n").utf8)
        let n = Glibc.write(fd, line, line.count)
        let synced = fsync(fd) == 0
        close(fd)
        guard n == line.count, synced else {
            unlink(path)
            throw VaultError.writeFailed(path: path, reason: "short write")
        }
    }

    /// Reads `recovery.pub`.
    public static func readPublicKey(path: String) throws(VaultError) -> [UInt8] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw VaultError.missingKey(path: path, hint: "create the recovery key with `relayctl recovery init` and keep its secret off this host")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VaultError.unreadableKey(path: path, reason: FileCheck.unreadableReason(path) ?? "permission denied")
        }
        return try parsePublicKey(Array(data), path: path)
    }

    /// Parses the text of `recovery.pub`.
    public static func parsePublicKey(_ bytes: [UInt8], path: String) throws(VaultError) -> [UInt8] {
        let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix(publicKeyHeader),
              let raw = Data(base64Encoded: String(text.dropFirst(publicKeyHeader.count))),
              raw.count == publicKeyBytes else {
            throw VaultError.malformedKey(path: path)
        }
        return [UInt8](raw)
    }

    /// The secret as the operator keeps it: `BRS1-` + base64 of the 32 bytes, in guarded
    /// memory (never a `String`).
    public static func secretText(_ secretKey: SecretBytes) throws(VaultError) -> SecretBytes {
        let prefix = Array(secretPrefix.utf8)
        let b64Length = sodium_base64_encoded_len(secretKey.count, sodium_base64_VARIANT_ORIGINAL)
        let out = try SecretBytes(capacity: prefix.count + b64Length)
        out.fill { buf in
            let dst = buf.baseAddress!.assumingMemoryBound(to: CChar.self)
            for (i, b) in prefix.enumerated() { buf[i] = b }
            secretKey.withUnsafeBytes { sk in
                _ = sodium_bin2base64(dst + prefix.count, b64Length, sk.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                      sk.count, sodium_base64_VARIANT_ORIGINAL)
            }
            return prefix.count + b64Length - 1  // without the NUL
        }
        return out
    }

    /// The secret key from what the operator typed (`BRS1-…`; spaces and newlines ignored).
    public static func parseSecret(_ text: SecretBytes) throws(VaultError) -> SecretBytes {
        let prefix = Array(secretPrefix.utf8)
        let sk = try SecretBytes(capacity: secretKeyBytes)
        var ok = false
        text.withUnsafeBytes { t in
            // Leading blanks are skipped; the prefix is required.
            var start = 0
            while start < t.count && (t[start] == 0x20 || t[start] == 0x09 || t[start] == 0x0a || t[start] == 0x0d) { start += 1 }
            guard t.count - start > prefix.count, Array(t[start..<(start + prefix.count)]) == prefix else { return }
            let body = t.baseAddress!.assumingMemoryBound(to: CChar.self) + start + prefix.count
            let bodyLength = t.count - start - prefix.count
            sk.fill { buf in
                var binLength = 0
                let rc = sodium_base642bin(buf.baseAddress!.assumingMemoryBound(to: UInt8.self), buf.count, body, bodyLength,
                                           " \t\r\n", &binLength, nil, sodium_base64_VARIANT_ORIGINAL)
                ok = rc == 0 && binLength == secretKeyBytes
                return ok ? binLength : 0
            }
        }
        guard ok else {
            sk.wipe()
            throw VaultError.malformedRecoverySecret
        }
        return sk
    }

    /// Writes `bytes` (guarded) to a file descriptor, whole.
    public static func write(_ bytes: SecretBytes, to fd: Int32) -> Bool {
        bytes.withUnsafeBytes { b in
            var done = 0
            while done < b.count {
                let n = Glibc.write(fd, b.baseAddress! + done, b.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                done += n
            }
            return true
        }
    }
}

/// BLAKE2b (libsodium's crypto_generichash).
public enum Digest {
    public static func blake2b(_ bytes: [UInt8], length: Int = 32, key: [UInt8] = []) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        _ = crypto_generichash(&out, length, bytes, UInt64(bytes.count), key.isEmpty ? nil : key, key.count)
        return out
    }

    public static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
}

/// RFC 4648 base32 without padding (the recovery key's fingerprint).
enum Base32 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")

    static func encode(_ bytes: [UInt8]) -> String {
        var out = ""
        var buffer = 0, bits = 0
        for b in bytes {
            buffer = (buffer << 8) | Int(b)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[(buffer >> (bits - 5)) & 31])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[(buffer << (5 - bits)) & 31]) }
        return out
    }
}
