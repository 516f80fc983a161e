import CSodium
import Foundation
import Glibc

/// The relay's passphrase vault: an X25519 key pair in the state directory.
/// Sealing (`crypto_box_seal`) needs only the public key; opening needs the secret key,
/// which only relay-agent reads.
public enum Vault {
    public static let publicKeyBytes = Int(crypto_box_publickeybytes())
    public static let secretKeyBytes = Int(crypto_box_secretkeybytes())
    public static let sealBytes = Int(crypto_box_sealbytes())
    /// Longest passphrase accepted by `seal`.
    public static let maxPassphrase = 4096
    static let publicKeyHeader = "borg-relay-vault-public-key-v1 "

    /// Creates the key pair: `secretPath` (raw 32 bytes, mode 0600) and `publicPath`
    /// (one text line). Refuses to overwrite either file.
    public static func initialise(secretPath: String, publicPath: String) throws(VaultError) {
        try Sodium.ensureInitialised()
        for p in [secretPath, publicPath] where FileManager.default.fileExists(atPath: p) {
            throw VaultError.alreadyExists(path: p)
        }
        let dir = (secretPath as NSString).deletingLastPathComponent
        if mkdir(dir, 0o700) != 0 && errno != EEXIST {
            throw VaultError.writeFailed(path: dir, reason: String(cString: strerror(errno)))
        }
        var pk = [UInt8](repeating: 0, count: publicKeyBytes)
        let sk = try SecretBytes(capacity: secretKeyBytes)
        defer { sk.wipe() }
        sk.fill { buf in
            crypto_box_keypair(&pk, buf.baseAddress!.assumingMemoryBound(to: UInt8.self))
            return secretKeyBytes
        }
        // O_EXCL: never follow or replace an existing file; 0600 from the start.
        let fd = Glibc.open(secretPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        if fd < 0 {
            if errno == EEXIST { throw VaultError.alreadyExists(path: secretPath) }
            throw VaultError.writeFailed(path: secretPath, reason: String(cString: strerror(errno)))
        }
        let written = sk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let syncOK = fsync(fd) == 0
        close(fd)
        guard written == secretKeyBytes, syncOK else {
            unlink(secretPath)
            throw VaultError.writeFailed(path: secretPath, reason: "short write")
        }
        let line = publicKeyHeader + Data(pk).base64EncodedString() + "\n"
        let pfd = Glibc.open(publicPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)  // public, but nothing in state_dir is for others
        if pfd < 0 {
            let reason = String(cString: strerror(errno))
            unlink(secretPath)
            throw VaultError.writeFailed(path: publicPath, reason: reason)
        }
        let bytes = Array(line.utf8)
        let pw = write(pfd, bytes, bytes.count)
        close(pfd)
        guard pw == bytes.count else {
            unlink(secretPath)
            unlink(publicPath)
            throw VaultError.writeFailed(path: publicPath, reason: "short write")
        }
    }

    /// Reads the public key file written by `initialise`.
    public static func readPublicKey(path: String) throws(VaultError) -> [UInt8] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw VaultError.missingKey(path: path, hint: "create the vault with `relayctl vault init`")
        }
        guard let data = FileManager.default.contents(atPath: path),
              let text = String(data: data, encoding: .utf8) else {
            throw VaultError.unreadableKey(path: path, reason: "permission denied or not text")
        }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.hasPrefix(publicKeyHeader),
              let raw = Data(base64Encoded: String(trimmed.dropFirst(publicKeyHeader.count))),
              raw.count == publicKeyBytes else {
            throw VaultError.malformedKey(path: path)
        }
        return [UInt8](raw)
    }

    /// Reads the secret key into guarded memory. Refuses a file that anyone but its
    /// owner can read or write.
    public static func readSecretKey(path: String) throws(VaultError) -> SecretBytes {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if fd < 0 {
            if errno == ENOENT {
                throw VaultError.missingKey(path: path, hint: "create the vault with `relayctl vault init` (as the user relay-agent runs as)")
            }
            throw VaultError.unreadableKey(path: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw VaultError.unreadableKey(path: path, reason: String(cString: strerror(errno)))
        }
        if st.st_mode & 0o077 != 0 {
            throw VaultError.insecureKeyFile(path: path, mode: String(st.st_mode & 0o777, radix: 8))
        }
        guard st.st_size == secretKeyBytes else { throw VaultError.malformedKey(path: path) }
        let sk = try SecretBytes(capacity: secretKeyBytes)
        var ok = true
        sk.fill { buf in
            let n = read(fd, buf.baseAddress, buf.count)
            ok = n == secretKeyBytes
            return max(0, n)
        }
        guard ok else {
            sk.wipe()
            throw VaultError.malformedKey(path: path)
        }
        return sk
    }

    /// A key pair that lives only in memory (the per-run key for a passphrase handed
    /// over by `relayctl run --passphrase-stdin`); the secret half in guarded memory.
    public static func ephemeralKeyPair() throws(VaultError) -> (secretKey: SecretBytes, publicKey: [UInt8]) {
        try Sodium.ensureInitialised()
        var pk = [UInt8](repeating: 0, count: publicKeyBytes)
        let sk = try SecretBytes(capacity: secretKeyBytes)
        sk.fill { buf in
            crypto_box_keypair(&pk, buf.baseAddress!.assumingMemoryBound(to: UInt8.self))
            return secretKeyBytes
        }
        return (sk, pk)
    }

    /// Seals `secret` to `publicKey`; returns the `sealed:<base64>` value.
    public static func seal(_ secret: SecretBytes, publicKey: [UInt8]) throws(VaultError) -> SealedValue {
        try Sodium.ensureInitialised()
        guard secret.count > 0 else { throw VaultError.emptyPassphrase }
        var cipher = [UInt8](repeating: 0, count: secret.count + sealBytes)
        let rc = secret.withUnsafeBytes { m in
            crypto_box_seal(&cipher, m.baseAddress!.assumingMemoryBound(to: UInt8.self),
                            UInt64(m.count), publicKey)
        }
        guard rc == 0 else { throw VaultError.openFailed(context: "sealing") }
        return SealedValue(base64: Data(cipher).base64EncodedString())
    }

    /// Opens a sealed value into guarded memory. `context` names where the value came
    /// from (e.g. the config file and key) for the error message.
    public static func open(_ sealed: SealedValue, secretKey: SecretBytes, publicKey: [UInt8],
                            context: String) throws(VaultError) -> SecretBytes {
        try Sodium.ensureInitialised()
        guard let cipher = Data(base64Encoded: sealed.base64), cipher.count > sealBytes else {
            throw VaultError.malformedSealed(context: context)
        }
        let plain = try SecretBytes(capacity: cipher.count - sealBytes)
        var rc: Int32 = -1
        plain.fill { out in
            rc = cipher.withUnsafeBytes { c in
                secretKey.withUnsafeBytes { sk in
                    crypto_box_seal_open(out.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                         c.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                         UInt64(c.count), publicKey,
                                         sk.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
            return rc == 0 ? out.count : 0
        }
        guard rc == 0 else {
            plain.wipe()
            throw VaultError.openFailed(context: context)
        }
        return plain
    }

    /// The passphrase of `client` opened with the relay's vault key (nil when its
    /// repository has none); errors name the config file and the client's key.
    public static func openPassphrase(of client: ClientConfig, config: RelayConfig) throws(VaultError) -> SecretBytes? {
        guard let sealed = client.passphrase else { return nil }
        let sk = try readSecretKey(path: config.relay.vaultSecretKeyPath)
        defer { sk.wipe() }
        return try open(sealed, secretKey: sk, publicKey: publicKey(of: sk),
                        context: "\(config.file): [clients.\(client.name)] key 'passphrase'")
    }

    /// Derives the public key from a secret key (to open values without trusting vault.pub).
    public static func publicKey(of secretKey: SecretBytes) -> [UInt8] {
        var pk = [UInt8](repeating: 0, count: publicKeyBytes)
        secretKey.withUnsafeBytes { sk in
            _ = crypto_scalarmult_base(&pk, sk.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        return pk
    }

    /// Reads a passphrase from a file descriptor into guarded memory, up to EOF or a
    /// newline (the newline and a preceding CR are dropped).
    public static func readPassphrase(fd: Int32, stopAtNewline: Bool) throws(VaultError) -> SecretBytes {
        let s = try SecretBytes(capacity: maxPassphrase + 2)
        var failure: VaultError?
        s.fill { buf in
            var n = 0
            while n < buf.count {
                let r = read(fd, buf.baseAddress! + n, stopAtNewline ? 1 : buf.count - n)
                if r < 0 {
                    if errno == EINTR { continue }
                    failure = .readFailed(reason: String(cString: strerror(errno)))
                    return n
                }
                if r == 0 { break }
                if stopAtNewline && buf[n] == UInt8(ascii: "\n") { return n }
                n += r
            }
            return n
        }
        if let f = failure { s.wipe(); throw f }
        s.trimTrailing { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }
        if s.count > maxPassphrase { s.wipe(); throw .passphraseTooLong(limit: maxPassphrase) }
        if s.count == 0 { s.wipe(); throw .emptyPassphrase }
        return s
    }
}
