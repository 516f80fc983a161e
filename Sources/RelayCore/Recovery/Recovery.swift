import Foundation

/// One-command recovery on a fresh host: open a sealed bundle with the recovery secret,
/// decide where everything goes, write it (`StateRestore`), or write nothing at all.
public enum Recovery {
    public struct Outcome: Sendable {
        public var relay: String
        public var created: Date
        public var configPath: String
        public var stateDir: String
        public var written: [String]
        public var unchanged: [String]
        public var owner: StateRestore.Owner
    }

    /// Opens `sealed` (named `source` in messages) and writes the state it holds.
    /// `relay`: refuse another relay's bundle. `owner`: a user name, or nil for the owner
    /// of the recovered state_dir if it exists already (a packaged install makes it, owned
    /// by the agent's user), else the user running this.
    /// `archive`: the state repository's archive name the bundle came from; its relay and
    /// time must be the authenticated header's (`StateArchives.matches`). `allowing`:
    /// directories besides state_dir and the config's where the bundle's files may go.
    public static func recover(sealed: [UInt8], secret: SecretBytes, source: String, relay: String?,
                               configPath: String, owner: String?, archive: String? = nil,
                               allowing: [String] = []) throws(RecoveryError) -> Outcome {
        let (header, entries) = try StateBundle.open(sealed, secret: secret, source: source, relay: relay)
        defer { entries.forEach { $0.wipe() } }
        if let archive, let why = StateArchives.mismatch(archive: archive, relay: header.relay, created: header.created) {
            throw .renamed(source: source, detail: why)
        }
        // The recovery key inside must be the one the header names.
        if let pub = entries.first(where: { $0.role == .recoveryPublicKey }), case .plain(let bytes) = pub.data {
            let pk: [UInt8]
            do {
                pk = try RecoveryKey.parsePublicKey(bytes, path: pub.path)
            } catch {
                throw .malformedContents(source: source, detail: "its recovery.pub: \(error)")
            }
            guard RecoveryKey.fingerprint(publicKey: pk) == header.recoveryKey else {
                throw .malformedContents(source: source, detail: "its recovery.pub is not the key its header names")
            }
        }
        let plan = try RestorePlan.make(entries: entries, configPath: configPath, source: source, allowing: allowing,
                                        exists: StateRestore.existing)
        let who = try resolveOwner(owner, stateDir: plan.config.relay.stateDir)
        let written = try StateRestore.write(plan, entries: entries, owner: who)
        return Outcome(relay: header.relay, created: header.created, configPath: configPath, stateDir: plan.config.relay.stateDir,
                       written: written, unchanged: plan.unchanged, owner: who)
    }

    static func resolveOwner(_ name: String?, stateDir: String) throws(RecoveryError) -> StateRestore.Owner {
        if let name {
            if let pw = getpwnam(name) { return .init(uid: pw.pointee.pw_uid, gid: pw.pointee.pw_gid) }
            if let uid = uid_t(name), let pw = getpwuid(uid) { return .init(uid: uid, gid: pw.pointee.pw_gid) }
            throw .config("--owner \(name): no such user on this host; create the agent's user first (e.g. systemd-sysusers) or name another; nothing was written")
        }
        var st = stat()
        if lstat(stateDir, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR { return .init(uid: st.st_uid, gid: st.st_gid) }
        // Keys and the vault owned by root by default would be a surprise both ways (the
        // agent's user cannot read them; or a service running as root was not meant).
        if geteuid() == 0 {
            throw .config("the recovered state_dir \(stateDir) does not exist yet: name the agent's user with --owner (borg-relay for the Debian package; --owner root only if the agent runs as root); nothing was written")
        }
        return .init(uid: geteuid(), gid: getegid())
    }
}
