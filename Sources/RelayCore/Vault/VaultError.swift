/// Failures of the passphrase vault: its key files, sealing and opening.
public enum VaultError: Error, CustomStringConvertible, Equatable, Sendable {
    case sodiumInit
    case guardedMemory(size: Int)
    case alreadyExists(path: String)
    case missingKey(path: String, hint: String)
    case unreadableKey(path: String, reason: String)
    case insecureKeyFile(path: String, mode: String)
    case malformedKey(path: String)
    case writeFailed(path: String, reason: String)
    case malformedSealed(context: String)
    case openFailed(context: String)
    case emptyPassphrase
    case passphraseTooLong(limit: Int)
    case confirmationMismatch
    case readFailed(reason: String)
    case passwordTooShort(minimum: Int)
    case passwordHashFailed
    case recoveryKeyExists(path: String)
    case malformedRecoverySecret

    public var description: String {
        switch self {
        case .sodiumInit:
            return "libsodium failed to initialise (sodium_init returned -1)"
        case .guardedMemory(let size):
            return "cannot allocate \(size) bytes of guarded memory (sodium_malloc failed; check RLIMIT_MEMLOCK)"
        case .alreadyExists(let path):
            return "\(path) already exists; refusing to overwrite a vault key (every sealed passphrase depends on it)"
        case .missingKey(let path, let hint):
            return "vault key \(path) does not exist: \(hint)"
        case .unreadableKey(let path, let reason):
            return "cannot read vault key \(path): \(reason)"
        case .insecureKeyFile(let path, let mode):
            return "vault secret key \(path) has mode \(mode); it must be readable by its owner only: chmod 600 \(path)"
        case .malformedKey(let path):
            return "\(path) is not a borg-relay vault key (wrong size or format)"
        case .writeFailed(let path, let reason):
            return "cannot write \(path): \(reason)"
        case .malformedSealed(let context):
            return "\(context): the sealed value is malformed (expected 'sealed:<base64>' from `relayctl seal`)"
        case .openFailed(let context):
            return "\(context): the sealed passphrase cannot be opened with this vault's key: it was sealed to another vault's public key or has been altered; seal it again with `relayctl seal`"
        case .emptyPassphrase:
            return "the passphrase is empty"
        case .passphraseTooLong(let limit):
            return "the passphrase is longer than \(limit) bytes"
        case .confirmationMismatch:
            return "the two passphrases differ"
        case .readFailed(let reason):
            return "cannot read the passphrase: \(reason)"
        case .passwordTooShort(let minimum):
            return "the password is shorter than \(minimum) bytes; choose a longer one (a passphrase of several words is easiest)"
        case .passwordHashFailed:
            return "hashing the password failed (crypto_pwhash_argon2id_str needs 64 MiB of memory: check the memory limits of this process)"
        case .recoveryKeyExists(let path):
            return "\(path) already exists: this relay has a recovery key; refusing to make another (state bundles are sealed to it). To rotate it, see docs/recovery.md"
        case .malformedRecoverySecret:
            return "that is not a recovery secret: it is 'BRS1-' followed by 44 base64 characters, as `relayctl recovery init` printed it"
        }
    }
}
