import Foundation

/// What a run does: a backup, or one of the operations `relayctl` asks for. Stored in the
/// history and sent in the control API as its raw value ("key-export").
public enum RunKind: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    case backup
    case initialize = "init"
    case list
    case info
    case keyExport = "key-export"
    case prune
    case compact
    case check
    case restore
    case borg
    /// A benchmark's splice of a raw stream (`relay-agent bench-splice`).
    case raw

    public var description: String { rawValue }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let text = try c.decode(String.self)
        guard let kind = RunKind(rawValue: text) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription:
                "unknown operation '\(text.prefix(40))' (known: \(OperationRequest.kinds.map(\.rawValue).joined(separator: ", ")))")
        }
        self = kind
    }
}

/// A run of the daemon: what `relayctl` asks for. Backups run borg on T; the operations
/// here run borg on R with the repository connection spliced into B (`LocalBorgRun`).
public struct OperationRequest: Codable, Sendable, Equatable {
    public var kind: RunKind
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
    /// For restore: paths inside the archive (all when empty).
    public var paths: [String]?
    /// For restore: the directory on the client (default: a fresh one under /var/tmp).
    public var to: String?
    /// For restore: extract over the original paths (into /).
    public var inPlace: Bool?
    /// For restore: map owners by name instead of --numeric-ids.
    public var names: Bool?
    /// For borg: the arguments of a read-only borg command on the client.
    public var args: [String]?
    /// For check: the part checked (nil: everything borg checks by default).
    public var scope: CheckScope?
    /// For check with scope repository: seconds of a partial check (borg's --max-duration).
    public var maxDuration: Int?

    public init(kind: RunKind, archive: String? = nil, encryption: String? = nil, json: Bool? = nil,
                dryRun: Bool? = nil, compact: Bool? = nil, verifyData: Bool? = nil, paths: [String]? = nil,
                to: String? = nil, inPlace: Bool? = nil, names: Bool? = nil, args: [String]? = nil,
                scope: CheckScope? = nil, maxDuration: Int? = nil) {
        self.scope = scope
        self.maxDuration = maxDuration
        self.paths = paths
        self.to = to
        self.inPlace = inPlace
        self.names = names
        self.args = args
        self.kind = kind
        self.archive = archive
        self.encryption = encryption
        self.json = json
        self.dryRun = dryRun
        self.compact = compact
        self.verifyData = verifyData
    }

    enum CodingKeys: String, CodingKey {
        case kind, archive, encryption, json, compact, paths, to, names, args, scope
        case maxDuration = "max_duration"
        case dryRun = "dry_run"
        case verifyData = "verify_data"
        case inPlace = "in_place"
    }

    public static let kinds: [RunKind] = [.initialize, .list, .info, .keyExport, .prune, .compact, .check, .restore, .borg]
    /// Kinds that run borg on the client T (through the append-only path), like a backup.
    public static let clientKinds: Set<RunKind> = [.restore, .borg]

    /// borg check's arguments for `repository`: scope, partial checks, --verify-data.
    public func checkArguments(repository: String) throws(OperationError) -> [String] {
        var args = ["check"]
        switch scope {
        case .repository?: args.append("--repository-only")
        case .archives?: args.append("--archives-only")
        case .data?: args.append("--verify-data")
        case nil: break
        }
        if verifyData == true && scope != .data {
            guard scope == nil else { throw .invalid("--verify-data reads the archives' data; it does not go with a \(scope!.rawValue)-only check") }
            args.append("--verify-data")
        }
        if let d = maxDuration {
            guard scope == .repository, (1...2_592_000).contains(d) else {
                throw .invalid("a partial check (max duration \(d) s) needs the repository-only scope and 1 s to 30 days")
            }
            args += ["--max-duration", "\(d)"]
        }
        return args + ["--", repository]
    }

    /// Where a restore goes on the client.
    public func restoreTarget(client: String, runID: String) -> String {
        if inPlace == true { return "/" }
        return to ?? "/var/tmp/borg-relay-restore-\(client)-\(runID)"
    }

    /// The workload on the client for restore and borg.
    public func clientWorkload(client: String, runID: String) throws(OperationError) -> Workload {
        switch kind {
        case .restore:
            // Checked again here: only the grammar's restore shape ever reaches T.
            let argv = try BorgArguments.parse(try restoreArguments(), context: .restore).argv
            return .borg(kind: .restore, arguments: argv,
                         workDir: dryRun == true ? nil : restoreTarget(client: client, runID: runID))
        case .borg:
            // The normalised argv (options in full with =, then -- and the positionals).
            return .borg(kind: .borg, arguments: try BorgArguments.parse(args ?? []).argv, workDir: nil)
        default:
            throw .invalid("\(kind) does not run on the client")
        }
    }
    /// The arguments of a restore's borg extract on the client (run in its target directory).
    func restoreArguments() throws(OperationError) -> [String] {
        guard let a = archive else { throw .invalid("restore needs an archive (see relayctl list CLIENT)") }
        var argv = ["extract", "--log-json", "--progress"]
        if names != true { argv.append("--numeric-ids") }
        if dryRun == true { argv += ["--dry-run", "--list"] }
        argv += ["--", "::" + a]
        argv += (paths ?? []).map { $0.hasPrefix("/") ? String($0.drop { $0 == "/" }) : $0 }
        return argv
    }

    /// Kinds that run as a `MaintenanceRun` (several borg steps, the tamper alarm first).
    public static let maintenanceKinds: Set<RunKind> = [.prune, .compact, .check]

    /// Whether the request can run for this client and server; the reason if not.
    public func validate(client: ClientConfig, server: ServerConfig, file: String) throws(OperationError) {
        guard Self.kinds.contains(kind) else {
            throw .invalid("unknown operation '\(kind)' (known: \(Self.kinds.map(\.rawValue).joined(separator: ", ")))")
        }
        if kind == .restore {
            guard let a = archive else { throw .invalid("restore needs an archive (see relayctl list CLIENT)") }
            _ = try LocalBorgPlan.checkArchive(a)
            if inPlace == true && to != nil { throw .invalid("give either a target directory or in-place, not both") }
            if let t = to {
                let parts = t.split(separator: "/")
                if !t.hasPrefix("/") || parts.isEmpty || parts.contains("..") || parts.contains(".") {
                    throw .invalid("the restore target '\(t)' must be an absolute directory other than / (use in-place to restore over the originals)")
                }
                if t.contains("\n") || t.contains("\r") || t.contains("\0") {
                    throw .invalid("the restore target may not contain a newline or NUL (it is sent through the client's login shell)")
                }
            }
            for p in paths ?? [] where p.isEmpty || p.split(separator: "/").contains("..") {
                throw .invalid("'\(p)' is not a path inside the archive")
            }
            for p in paths ?? [] where p.allSatisfy({ $0 == "/" }) {
                throw .invalid("'\(p)' is the whole archive: give no path to restore everything")
            }
            // The extract on T, through the same grammar as relayctl borg (restore shape).
            _ = try BorgArguments.parse(try restoreArguments(), context: .restore)
            return
        }
        if kind == .borg {
            guard let argv = args, !argv.isEmpty else {
                throw .invalid("give the borg command after --, e.g. relayctl borg CLIENT -- list ::ARCHIVE")
            }
            // The allowlist grammar: the refusal names the argument and why.
            _ = try BorgArguments.parse(argv)
            return
        }
        if Self.maintenanceKinds.contains(kind) {
            if archive != nil { throw .invalid("\(kind) takes no archive") }
            if kind == .prune && client.retention == nil {
                throw .invalid("\(file) [clients.\(client.name)] has no 'retention'; prune needs a policy, e.g. retention = { daily = 7, weekly = 4 }")
            }
            if kind == .check { _ = try checkArguments(repository: LocalBorgPlan.repository) }
            if kind != .check && (scope != nil || maxDuration != nil) { throw .invalid("only check takes a scope and a max duration") }
            if kind != .check && server.maintenanceKey == nil {
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
        if let a = archive { _ = try LocalBorgPlan.checkArchive(a) }
        let target = archive.map { repo + "::" + $0 } ?? repo
        switch kind {
        case .initialize:
            if archive != nil { throw .invalid("init takes no archive") }
            let enc = encryption ?? "repokey-blake2"
            guard Self.encryptions.contains(enc) else {
                throw .invalid("encryption '\(enc)' is not one of \(Self.encryptions.joined(separator: ", ")) (keyfile modes would keep the key on the relay, out of the client's reach)")
            }
            return LocalBorgPlan(kind: kind, arguments: ["init", "--encryption=\(enc)", "--", repo], maintenance: true)
        case .list:
            var args = ["list"]
            if json == true { args.append(archive == nil ? "--json" : "--json-lines") }
            return LocalBorgPlan(kind: kind, arguments: args + ["--", target], maintenance: false)
        case .info:
            return LocalBorgPlan(kind: kind, arguments: ["info"] + (json == true ? ["--json"] : []) + ["--", target],
                                 maintenance: false)
        case .keyExport:
            if archive != nil { throw .invalid("key-export takes no archive") }
            return LocalBorgPlan(kind: kind, arguments: ["key", "export", "--", repo], maintenance: false)
        default:
            throw .invalid("unknown operation '\(kind)' (known: \(Self.kinds.map(\.rawValue).joined(separator: ", ")))")
        }
    }
}

extension LocalBorgPlan {
    /// An archive name as relayctl may pass it to borg.
    static func checkArchive(_ a: String) throws(OperationError) -> String {
        if a.isEmpty || a.count > 200 || a.contains("/") || a.hasPrefix("-") || a.contains("::") {
            throw .invalid("'\(a)' is not an archive name")
        }
        return a
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

extension Retention {
    /// borg prune's keep options for this policy.
    public var keepArguments: [String] {
        var args: [String] = []
        if let w = within { args.append("--keep-within=\(w)") }
        for (flag, value) in [("hourly", hourly), ("daily", daily), ("weekly", weekly),
                              ("monthly", monthly), ("yearly", yearly)] {
            if let v = value { args.append("--keep-\(flag)=\(v)") }
        }
        return args
    }
}
