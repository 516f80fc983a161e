import Foundation

/// A run of the daemon: what `relayctl` asks for. Backups run borg on T; the operations
/// here run borg on R with the repository connection spliced into B (`LocalBorgRun`).
public struct OperationRequest: Codable, Sendable, Equatable {
    /// init, list, info, key-export
    public var kind: String
    public var archive: String?
    /// For init: borg's --encryption mode.
    public var encryption: String?
    /// For list and info: borg's JSON output.
    public var json: Bool?
    /// For prune: only show what would be pruned.
    public var dryRun: Bool?
    /// For prune: compact afterwards (the retention run after a backup).
    public var compact: Bool?
    /// For check: --verify-data.
    public var verifyData: Bool?

    public init(kind: String, archive: String? = nil, encryption: String? = nil, json: Bool? = nil,
                dryRun: Bool? = nil, compact: Bool? = nil, verifyData: Bool? = nil) {
        self.kind = kind
        self.archive = archive
        self.encryption = encryption
        self.json = json
        self.dryRun = dryRun
        self.compact = compact
        self.verifyData = verifyData
    }

    enum CodingKeys: String, CodingKey {
        case kind, archive, encryption, json, compact
        case dryRun = "dry_run"
        case verifyData = "verify_data"
    }

    public static let kinds = ["init", "list", "info", "key-export", "prune", "compact", "check"]
    /// Kinds that run as a `MaintenanceRun` (several borg steps, the tamper alarm first).
    public static let maintenanceKinds: Set<String> = ["prune", "compact", "check"]

    /// Whether the request can run for this client and server; the reason if not.
    public func validate(client: ClientConfig, server: ServerConfig, file: String) throws(OperationError) {
        guard Self.kinds.contains(kind) else {
            throw .invalid("unknown operation '\(kind)' (known: \(Self.kinds.joined(separator: ", ")))")
        }
        if Self.maintenanceKinds.contains(kind) {
            if archive != nil { throw .invalid("\(kind) takes no archive") }
            if kind == "prune" && client.retention == nil {
                throw .invalid("\(file) [clients.\(client.name)] has no 'retention'; prune needs a policy, e.g. retention = { daily = 7, weekly = 4 }")
            }
            if kind != "check" && server.maintenanceKey == nil {
                throw .invalid("\(kind) needs the server's maintenance key, and \(file) [servers.\(server.name)] has no 'maintenance_key'")
            }
            return
        }
        let p = try plan()
        if p.maintenance && server.maintenanceKey == nil {
            throw .invalid("\(kind) needs the server's maintenance key, and \(file) [servers.\(server.name)] has no 'maintenance_key'")
        }
    }
    /// Encryption modes that keep the key in the repository: keyfile modes would leave the
    /// key on R, where T (which creates the archives) cannot read it.
    public static let encryptions = ["repokey-blake2", "repokey", "authenticated-blake2", "authenticated", "none"]

    /// borg's arguments and the key to use, or why the request cannot run.
    public func plan() throws(OperationError) -> LocalBorgPlan {
        let repo = LocalBorgPlan.repository
        if let a = archive {
            if a.isEmpty || a.count > 200 || a.contains("/") || a.hasPrefix("-") || a.contains("::") {
                throw .invalid("'\(a)' is not an archive name")
            }
        }
        let target = archive.map { repo + "::" + $0 } ?? repo
        switch kind {
        case "init":
            if archive != nil { throw .invalid("init takes no archive") }
            let enc = encryption ?? "repokey-blake2"
            guard Self.encryptions.contains(enc) else {
                throw .invalid("encryption '\(enc)' is not one of \(Self.encryptions.joined(separator: ", ")) (keyfile modes would keep the key on the relay, out of the client's reach)")
            }
            return LocalBorgPlan(kind: kind, arguments: ["init", "--encryption=\(enc)", "--", repo], maintenance: true)
        case "list":
            var args = ["list"]
            if json == true { args.append(archive == nil ? "--json" : "--json-lines") }
            return LocalBorgPlan(kind: kind, arguments: args + ["--", target], maintenance: false)
        case "info":
            return LocalBorgPlan(kind: kind, arguments: ["info"] + (json == true ? ["--json"] : []) + ["--", target],
                                 maintenance: false)
        case "key-export":
            if archive != nil { throw .invalid("key-export takes no archive") }
            return LocalBorgPlan(kind: kind, arguments: ["key", "export", "--", repo], maintenance: false)
        default:
            throw .invalid("unknown operation '\(kind)' (known: \(Self.kinds.joined(separator: ", ")))")
        }
    }
}

public enum OperationError: Error, CustomStringConvertible, Sendable {
    case invalid(String)
    public var description: String {
        switch self {
        case .invalid(let s): return s
        }
    }
}

/// A run the daemon can execute on its own thread.
public protocol RelayRun: AnyObject, Sendable {
    var canceller: RunCanceller { get }
    var progress: ProgressBoard { get }
    func execute() -> RunReport
}

extension BackupRun: RelayRun {}
extension LocalBorgRun: RelayRun {}
