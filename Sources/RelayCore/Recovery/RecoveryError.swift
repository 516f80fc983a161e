/// Failures of the relay's own state backup and of recovery: making, storing, fetching,
/// opening a state bundle and writing it back. Each says what failed and what to do; a
/// recovery that fails has written nothing.
public enum RecoveryError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Not a state bundle at all (wrong magic) or its clear header is cut or malformed.
    case notABundle(source: String, detail: String)
    case unsupportedVersion(source: String, version: Int)
    /// The bundle was sealed to another recovery key than the secret given.
    case wrongSecret(source: String, bundleKey: String, secretKey: String, relay: String)
    /// The bundle is another relay's (`--relay` named another).
    case otherRelay(source: String, bundleRelay: String, expected: String)
    /// Decryption failed: tampered, cut, or bytes after the end.
    case damaged(source: String, detail: String)
    /// The inner contents are not what a state bundle holds.
    case malformedContents(source: String, detail: String)
    /// Collecting the state to back up failed.
    case collect(path: String, detail: String)
    /// No recovery key yet.
    case noRecoveryKey(path: String)
    /// Writing the recovered state would overwrite something.
    case wouldOverwrite(paths: [String])
    case vaultExists(path: String)
    case write(path: String, detail: String)
    /// The state repository on B: a borg step failed.
    case borg(step: String, detail: String)
    case noBundle(repository: String, detail: String)
    /// The bundle's config puts files outside state_dir and the config's directory.
    case outsideAllowed(source: String, paths: [String], roots: [String])
    /// The archive's name and the bundle's authenticated header disagree (a renamed or
    /// copied bundle: a rollback).
    case renamed(source: String, detail: String)
    case config(String)
    case hostKey(String)

    public var description: String {
        switch self {
        case .notABundle(let source, let detail):
            return "\(source) is not a borg-relay state bundle (\(detail)); give the file `relayctl state export` wrote or the state repository's archive; nothing was written"
        case .unsupportedVersion(let source, let version):
            return "\(source) is a state bundle of format version \(version), which this relayctl does not read; use the borg-relay version that wrote it (or newer); nothing was written"
        case .wrongSecret(let source, let bundleKey, let secretKey, let relay):
            return "\(source) (relay \(relay)) was sealed to recovery key \(bundleKey), but the secret given belongs to \(secretKey): wrong secret, or the bundle of a relay whose recovery key was rotated since; nothing was written"
        case .otherRelay(let source, let bundleRelay, let expected):
            return "\(source) is the state of relay '\(bundleRelay)', not of '\(expected)' (--relay); give that relay's bundle; nothing was written"
        case .damaged(let source, let detail):
            return "\(source) is damaged or was altered (\(detail)): it cannot be trusted; take another bundle (an older archive of the state repository, or another export); nothing was written"
        case .malformedContents(let source, let detail):
            return "\(source) opened, but its contents are not a relay's state (\(detail)); nothing was written"
        case .collect(let path, let detail):
            return "cannot read \(path) for the state bundle: \(detail); nothing was sealed or stored"
        case .noRecoveryKey(let path):
            return "\(path) does not exist: this relay has no recovery key yet; create one with `relayctl recovery init` and keep the secret it prints off this host"
        case .wouldOverwrite(let paths):
            return "recovery would overwrite \(paths.joined(separator: ", ")); move them aside (e.g. a packaged example config) and run again; nothing was written"
        case .vaultExists(let path):
            return "\(path) exists: this host already has a vault, and recovery never replaces one (every sealed passphrase depends on it); recover on a fresh host or into another --config/state_dir; nothing was written"
        case .write(let path, let detail):
            return "cannot write \(path): \(detail); nothing was kept (every file written so far was removed)"
        case .borg(let step, let detail):
            return "state repository: \(step) failed: \(detail)"
        case .noBundle(let repository, let detail):
            return "no state bundle in \(repository): \(detail)"
        case .outsideAllowed(let source, let paths, let roots):
            return "\(source): its config puts \(paths.joined(separator: ", ")) outside \(roots.joined(separator: " and ")); recovery writes only under the recovered state_dir and the directory of --config, because a bundle's config decides where its files go. If the bundle is yours and these paths are right, allow their directories with --allow-path DIR; nothing was written"
        case .renamed(let source, let detail):
            return "\(source) \(detail): a bundle renamed or copied in the state repository (an old state passed off as new?); it is not used; nothing was written"
        case .config(let text):
            return text
        case .hostKey(let text):
            return text
        }
    }
}
