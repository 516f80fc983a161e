import Foundation

/// Where each entry of an opened bundle goes on the new host, decided before anything is
/// written (a value; the existence of files comes in through `exists`): the config to the
/// path the operator names (`--config`), everything else where the recovered config names
/// it. Refuses when a vault exists already, when any other file would be replaced by
/// different bytes, and when the bundle lacks something the config needs.
public struct RestorePlan {
    public struct Write {
        public var entry: Int
        public var path: String
        /// Files 0600; directories made for them 0700.
        public var mode: mode_t { 0o600 }
    }

    /// What is at a destination now.
    public enum Existing: Equatable, Sendable {
        case absent
        /// A file with exactly the bytes recovery would write.
        case same
        case different
    }

    public var writes: [Write]
    /// The destinations that already hold the same bytes (not written again).
    public var unchanged: [String]
    public var config: RelayConfig

    /// `configPath`: where the config goes. `exists(path, entry)`: what is at `path` now.
    /// `allowing`: directories besides state_dir and the config's where files may go.
    public static func make(entries: [StateEntry], configPath: String, source: String, allowing: [String] = [],
                            exists: (String, StateEntry) -> Existing) throws(RecoveryError) -> RestorePlan {
        func only(_ role: StateBundleFormat.Role) throws(RecoveryError) -> Int? {
            let found = entries.indices.filter { entries[$0].role == role }
            if found.count > 1 { throw .malformedContents(source: source, detail: "it holds \(found.count) entries of kind \(role)") }
            return found.first
        }
        guard let configIndex = try only(.config) else { throw .malformedContents(source: source, detail: "it holds no config") }
        guard case .plain(let configBytes) = entries[configIndex].data else {
            throw .malformedContents(source: source, detail: "its config is not plain text")
        }
        let config: RelayConfig
        do {
            config = try ConfigLoader.parse(String(decoding: configBytes, as: UTF8.self), file: configPath, checkFiles: false)
        } catch {
            throw .malformedContents(source: source, detail: "its config does not load: \(error)")
        }
        let r = config.relay
        var destination: [Int: String] = [configIndex: configPath]
        let fixed: [(StateBundleFormat.Role, String?, Bool)] = [
            (.vaultSecretKey, r.vaultSecretKeyPath, true),
            (.vaultPublicKey, r.vaultPublicKeyPath, true),
            (.recoveryPublicKey, StateManifest.recoveryPublicKeyPath(r), false),
            (.knownHosts, r.knownHosts, true),
            (.history, r.historyPath, false),
            (.overdue, r.stateDir + "/overdue.json", false),
            (.webPassword, WebSettings.passwordPath(stateDir: r.stateDir), false),
            (.databasePassword, r.database?.passwordFile, r.database?.passwordFile != nil),
        ]
        for (role, path, required) in fixed {
            let index = try only(role)
            if required && index == nil { throw .malformedContents(source: source, detail: "it holds no \(role)") }
            guard let index else { continue }
            guard let path else { throw .malformedContents(source: source, detail: "it holds a \(role) its config does not name") }
            destination[index] = path
        }
        // Key files go where the config names them; each named one must be there.
        let named = Set(StateManifest(config: config).items.filter { $0.role == .privateKey }.map(\.path))
        for i in entries.indices where entries[i].role == .privateKey || entries[i].role == .publicKey {
            let e = entries[i]
            let key = e.role == .privateKey ? e.path : String(e.path.dropLast(4))
            guard named.contains(key), e.role == .privateKey || e.path.hasSuffix(".pub") else {
                throw .malformedContents(source: source, detail: "it holds key file \(e.path), which its config does not name")
            }
            if destination.values.contains(e.path) {
                throw .malformedContents(source: source, detail: "it holds \(e.path) twice")
            }
            destination[i] = e.path
        }
        let present = Set(entries.filter { $0.role == .privateKey }.map(\.path))
        if let missing = named.sorted().first(where: { !present.contains($0) }) {
            throw .malformedContents(source: source, detail: "it lacks key file \(missing), which its config names")
        }
        if Set(destination.values).count != destination.count {
            throw .malformedContents(source: source, detail: "two of its entries go to the same path")
        }
        // Nothing that exists is replaced; a vault never.
        var writes: [Write] = []
        var unchanged: [String] = []
        var conflicts: [String] = []
        for (index, path) in destination.sorted(by: { $0.key < $1.key }) {
            let state = exists(path, entries[index])
            if entries[index].role == .vaultSecretKey && state != .absent { throw .vaultExists(path: path) }
            switch state {
            case .absent: writes.append(Write(entry: index, path: path))
            case .same: unchanged.append(path)
            case .different: conflicts.append(path)
            }
        }
        // The bundle's config names where its files go: only under the recovered state_dir,
        // the directory the operator named with --config, and directories they allow.
        let roots = [r.stateDir, (configPath as NSString).deletingLastPathComponent] + allowing
        let outside = destination.filter { $0.key != configIndex }.values.filter { !Self.isUnder($0, roots) }
        if !outside.isEmpty {
            throw .outsideAllowed(source: source, paths: outside.sorted(), roots: roots)
        }
        if !conflicts.isEmpty { throw .wouldOverwrite(paths: conflicts.sorted()) }
        return RestorePlan(writes: writes, unchanged: unchanged, config: config)
    }

    /// Whether `path` (absolute, with no `.` or `..` component, no empty one) lies in one
    /// of `roots` (compared component by component: /etc/br does not hold /etc/brx).
    static func isUnder(_ path: String, _ roots: [String]) -> Bool {
        func parts(_ p: String) -> [Substring]? {
            guard p.hasPrefix("/") else { return nil }
            let c = p.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
            let kept = Array(c.last == "" ? c.dropLast() : c)
            if kept.contains(where: { $0 == "." || $0 == ".." || $0.isEmpty }) { return nil }
            return kept
        }
        guard let p = parts(path) else { return false }
        return roots.contains { root in
            guard let r = parts(root) else { return false }
            return p.count > r.count && Array(p.prefix(r.count)) == r
        }
    }
}
