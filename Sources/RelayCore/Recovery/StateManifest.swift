import Foundation

/// What a state bundle holds, from the config (a value, no I/O): the config itself, the
/// vault key pair, the recovery public key, known_hosts, every key file the config names
/// (with its `.pub` beside it when there is one), the database password file, and what
/// lives in state_dir besides logs and borg's cache: the history database (one relay on
/// SQLite; a fleet's history is PostgreSQL's to back up), the overdue record and the status
/// page's password hash.
public struct StateManifest: Equatable, Sendable {
    public struct Item: Equatable, Sendable {
        public var role: StateBundleFormat.Role
        public var path: String
        /// A missing required file stops the backup; a missing optional one is left out.
        public var required: Bool
    }

    public var items: [Item]

    public init(config: RelayConfig) {
        var items: [Item] = []
        var seen = Set<String>()
        func add(_ role: StateBundleFormat.Role, _ path: String, required: Bool = true) {
            guard seen.insert(path).inserted else { return }
            items.append(Item(role: role, path: path, required: required))
        }
        let r = config.relay
        add(.config, config.file)
        add(.vaultSecretKey, r.vaultSecretKeyPath)
        add(.vaultPublicKey, r.vaultPublicKeyPath)
        add(.recoveryPublicKey, Self.recoveryPublicKeyPath(r))
        add(.knownHosts, r.knownHosts)
        var keys: [String] = []
        for name in config.servers.keys.sorted() {
            let s = config.servers[name]!
            keys.append(s.endpoint.key)
            if let m = s.maintenanceKey { keys.append(m) }
        }
        for name in config.jumps.keys.sorted() { keys.append(config.jumps[name]!.endpoint.key) }
        for name in config.clients.keys.sorted() { keys.append(config.clients[name]!.endpoint.key) }
        for k in keys {
            add(.privateKey, k)
            add(.publicKey, k + ".pub", required: false)
        }
        if let p = r.database?.passwordFile { add(.databasePassword, p) }
        if r.database == nil { add(.history, r.historyPath, required: false) }
        add(.overdue, r.stateDir + "/overdue.json", required: false)
        add(.webPassword, WebSettings.passwordPath(stateDir: r.stateDir), required: false)
        self.items = items
    }

    public static func recoveryPublicKeyPath(_ relay: RelaySettings) -> String { relay.recoveryPublicKeyPath }
}
