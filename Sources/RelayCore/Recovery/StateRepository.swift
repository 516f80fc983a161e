import Foundation
import Logging

/// The borg repository on B that holds state bundles, reached as the maintenance
/// operations reach theirs: borg on R (`LocalBorgRun`), its connection spliced into a
/// channel on B. The bundles are sealed already, so the repository is unencrypted
/// (`borg init -e none`) and stored uncompressed (compressing ciphertext gains nothing,
/// and a scan of B's bytes would see any clear text).
public struct StateRepository {
    public var server: ServerConfig
    public var repository: String
    public var options: SessionOptions
    public var borgBaseDir: String
    public var connectorPath: String
    public var logger: Logger
    public var logFile: String?

    /// borg's questions about an unencrypted repository it has not seen (a fresh R, a new
    /// BORG_BASE_DIR) and about its location are answered yes: the bundles inside are sealed.
    static let environment = ["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes", "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"]

    public init(server: ServerConfig, repository: String, options: SessionOptions, borgBaseDir: String,
                connectorPath: String, logger: Logger, logFile: String? = nil) {
        self.server = server
        self.repository = repository
        self.options = options
        self.borgBaseDir = borgBaseDir
        self.connectorPath = connectorPath
        self.logger = logger
        self.logFile = logFile
    }

    /// The repository as a client of the run drivers (its name shows in log lines).
    var client: ClientConfig {
        ClientConfig(name: "relay-state", endpoint: server.endpoint, server: server.name, repository: repository,
                     passphrase: nil, paths: ["-"], exclude: [], compression: nil, archive: "-", transport: .tcp,
                     borgPath: "borg", schedule: nil, jitter: 0, catchUp: false, retention: nil, pre: nil, post: nil)
    }

    /// One borg step on R; its report.
    func step(_ kind: RunKind, _ arguments: [String], output: String?, stdin: Int32 = -1) throws(RecoveryError) -> RunReport {
        var plan = LocalBorgPlan(kind: kind, arguments: arguments, maintenance: false)
        plan.environment = Self.environment
        do {
            let run = try LocalBorgRun(runID: CLI.newRunID(), client: client, server: server, plan: plan, options: options,
                                       passphrase: nil, logger: logger, logFile: logFile, outputPath: output,
                                       borgBaseDir: borgBaseDir, connectorPath: connectorPath, stdinFD: stdin)
            return run.execute()
        } catch {
            throw .borg(step: "borg \(kind)", detail: "\(error)")
        }
    }

    var url: String { LocalBorgPlan.repository }

    /// The archive names in the repository.
    public func archiveNames(work: String) throws(RecoveryError) -> [String] {
        let out = work + "/list.json"
        defer { unlink(out) }
        let r = try step(.list, ["list", "--json", "--", url], output: out)
        guard r.isSuccess else {
            throw .borg(step: "borg list of \(repository) on \(server.endpoint.display)", detail: r.error ?? r.state.rawValue)
        }
        guard let data = FileManager.default.contents(atPath: out), let archives = PresentArchive.parse(borgListJSON: data) else {
            throw .borg(step: "borg list", detail: "its --json output does not parse")
        }
        return archives.map(\.name)
    }

    /// The bytes of one archive's bundle (`borg extract --stdout`).
    public func fetch(_ archive: String, work: String) throws(RecoveryError) -> [UInt8] {
        let out = work + "/bundle"
        defer { unlink(out) }
        let r = try step(.restore, ["extract", "--stdout", "--", url + "::" + archive], output: out)
        guard r.isSuccess, let data = FileManager.default.contents(atPath: out) else {
            throw .borg(step: "borg extract of \(archive)", detail: r.error ?? "no output")
        }
        return Array(data)
    }

    /// Creates the repository unless it exists.
    func ensureExists(work: String) throws(RecoveryError) {
        let out = work + "/info.json"
        defer { unlink(out) }
        let info = try step(.info, ["info", "--json", "--", url], output: out)
        if info.isSuccess { return }
        let said = info.error ?? ""
        guard said.contains("does not exist") || said.contains("DoesNotExist") else {
            throw .borg(step: "borg info of \(repository) on \(server.endpoint.display)", detail: said)
        }
        logger.info("state repository \(repository) on server \(server.name) does not exist: creating it (borg init -e none; the bundles are sealed)")
        let r = try step(.initialize, ["init", "--encryption=none", "--", url], output: nil)
        guard r.isSuccess else { throw .borg(step: "borg init of \(repository)", detail: r.error ?? r.state.rawValue) }
    }

    /// Stores `sealed` as archive `name` (stdin of `borg create`, from a memory file) and
    /// reads it back: the archive counts only when its bytes are the bundle's. Returns
    /// the archive's id.
    public func store(_ sealed: [UInt8], archive name: String, work: String) throws(RecoveryError) -> String {
        try ensureExists(work: work)
        let fd: Int32
        do {
            fd = try MemoryFile.make(sealed, name: "borg-relay-state")
        } catch {
            throw .borg(step: "preparing the bundle for borg create", detail: "\(error)")
        }
        defer { close(fd) }
        let out = work + "/create.json"
        defer { unlink(out) }
        let r = try step(.backup, ["create", "--json", "--compression", "none", "--stdin-name", "relay-state.bundle",
                                   "--stdin-mode", "0600", "--", url + "::" + name, "-"], output: out, stdin: fd)
        guard r.isSuccess else { throw .borg(step: "borg create of \(name)", detail: r.error ?? r.state.rawValue) }
        guard let data = FileManager.default.contents(atPath: out), let summary = ArchiveSummary.parse(borgJSON: data),
              let id = summary.id else {
            throw .borg(step: "borg create of \(name)", detail: "its --json output names no archive id")
        }
        let back = try fetch(name, work: work)
        guard back == sealed else {
            throw .borg(step: "reading \(name) back", detail: "its bytes differ from the bundle sent (\(back.count) bytes read, \(sealed.count) sent)")
        }
        return id
    }

    /// A fresh private directory (0700) for borg's output files; removed by `removeWork`.
    public static func makeWork(under base: String) throws(RecoveryError) -> String {
        var template = Array((base + "/.relay-state-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw .borg(step: "preparing", detail: "cannot make a private directory in \(base): \(String(cString: strerror(errno)))")
        }
        return String(cString: made)
    }

    public static func removeWork(_ dir: String) {
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Work directories a killed agent left in `stateDir` (`.relay-state-*`, and the
    /// `.state-backup-*` history copies of earlier versions): removed when the agent starts,
    /// before any state backup of its own can run. A symbolic link of such a name is removed
    /// itself, never followed. The names removed.
    @discardableResult
    public static func removeStaleWork(in stateDir: String, logger: Logger? = nil) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: stateDir)) ?? []
        var removed: [String] = []
        for name in names.sorted() where name.hasPrefix(".relay-state-") || name.hasPrefix(".state-backup-") {
            let path = stateDir + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFLNK ? unlink(path) == 0 : (try? FileManager.default.removeItem(atPath: path)) != nil {
                removed.append(name)
                logger?.info("removed \(path), left by a state backup that did not end (the agent was killed)")
            }
        }
        return removed
    }
}
