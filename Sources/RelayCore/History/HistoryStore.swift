import Foundation
import GRDB

/// One run as recorded in the history database.
public struct RunRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "run"

    public var id: String
    public var client: String
    public var server: String
    public var kind: String
    /// queued, running, succeeded, failed, cancelled, interrupted
    public var state: String
    public var startedAt: Date
    public var endedAt: Date?
    public var bytesToServer: Int64
    public var bytesFromServer: Int64
    public var borgExitStatus: Int?
    public var archive: String?
    /// borg's figures for the archive, as JSON.
    public var stats: String?
    public var error: String?
    public var logFile: String?
    /// The agent process that ran it (to tell a live run from one whose agent died).
    public var agentPID: Int32

    enum CodingKeys: String, CodingKey {
        case id, client, server, kind, state, archive, stats, error
        case startedAt = "started_at"
        case endedAt = "ended_at"
        case bytesToServer = "bytes_to_server"
        case bytesFromServer = "bytes_from_server"
        case borgExitStatus = "borg_exit_status"
        case logFile = "log_file"
        case agentPID = "agent_pid"
    }

    /// A record for a run that is starting now in this process.
    public static func starting(runID: String, client: String, server: String, kind: String = "backup",
                                logFile: String?) -> RunRecord {
        RunRecord(id: runID, client: client, server: server, kind: kind, state: "running", startedAt: Date(),
                  endedAt: nil, bytesToServer: 0, bytesFromServer: 0, borgExitStatus: nil, archive: nil,
                  stats: nil, error: nil, logFile: logFile, agentPID: getpid())
    }
}

public enum HistoryError: Error, CustomStringConvertible, Sendable {
    case database(path: String, detail: String)

    public var description: String {
        switch self {
        case .database(let path, let detail):
            return "run history \(path): \(detail) (check that state_dir is writable by the agent's user)"
        }
    }
}

/// The run history: one SQLite database in state_dir (`history.sqlite`).
public final class HistoryStore: Sendable {
    public let path: String
    private let queue: DatabaseQueue

    public init(path: String) throws(HistoryError) {
        self.path = path
        do {
            let dir = (path as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            var config = Configuration()
            config.busyMode = .timeout(10)
            queue = try DatabaseQueue(path: path, configuration: config)
            try Self.migrator.migrate(queue)
        } catch {
            throw HistoryError.database(path: path, detail: "\(error)")
        }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.create(table: "run") { t in
                t.primaryKey("id", .text)
                t.column("client", .text).notNull().indexed()
                t.column("server", .text).notNull()
                t.column("kind", .text).notNull()
                t.column("state", .text).notNull().indexed()
                t.column("started_at", .datetime).notNull()
                t.column("ended_at", .datetime)
                t.column("bytes_to_server", .integer).notNull()
                t.column("bytes_from_server", .integer).notNull()
                t.column("borg_exit_status", .integer)
                t.column("archive", .text)
                t.column("stats", .text)
                t.column("error", .text)
                t.column("log_file", .text)
                t.column("agent_pid", .integer).notNull()
            }
        }
        return m
    }

    private func write<T: Sendable>(_ body: @Sendable (Database) throws -> T) throws(HistoryError) -> T {
        do { return try queue.write(body) } catch { throw HistoryError.database(path: path, detail: "\(error)") }
    }

    private func read<T: Sendable>(_ body: @Sendable (Database) throws -> T) throws(HistoryError) -> T {
        do { return try queue.read(body) } catch { throw HistoryError.database(path: path, detail: "\(error)") }
    }

    public func insert(_ record: RunRecord) throws(HistoryError) {
        try write { db in try record.insert(db) }
    }

    /// Records how a run ended.
    public func finish(_ report: RunReport) throws(HistoryError) {
        let stats: String? = report.archive.flatMap { a in
            (try? JSONEncoder().encode(a)).map { String(decoding: $0, as: UTF8.self) }
        }
        try write { db in
            guard var r = try RunRecord.fetchOne(db, key: report.runID) else { return }
            r.state = report.state.rawValue
            r.endedAt = report.ended
            r.bytesToServer = Int64(clamping: report.bytesToServer)
            r.bytesFromServer = Int64(clamping: report.bytesFromServer)
            r.borgExitStatus = report.borgExitStatus.map(Int.init)
            r.archive = report.archive?.name
            r.stats = stats
            r.error = report.error
            try r.update(db)
        }
    }

    /// Marks runs still "running" whose agent process is gone (killed, crashed) as
    /// interrupted; returns their ids.
    @discardableResult
    public func markInterrupted(isAlive: @Sendable (Int32) -> Bool = HistoryStore.processAlive) throws(HistoryError) -> [String] {
        try write { db in
            let stale = try RunRecord.filter(Column("state") == "running").fetchAll(db).filter { !isAlive($0.agentPID) }
            for var r in stale {
                r.state = "interrupted"
                r.endedAt = Date()
                r.error = "the agent (pid \(r.agentPID)) ended while the run was in progress"
                try r.update(db)
            }
            return stale.map(\.id)
        }
    }

    /// The newest runs first, optionally of one client.
    public func recent(client: String? = nil, limit: Int = 50) throws(HistoryError) -> [RunRecord] {
        try read { db in
            var q = RunRecord.order(Column("started_at").desc, Column("id").desc)
            if let c = client { q = q.filter(Column("client") == c) }
            return try q.limit(limit).fetchAll(db)
        }
    }

    public static let processAlive: @Sendable (Int32) -> Bool = { pid in
        pid > 0 && (kill(pid, 0) == 0 || errno == EPERM)
    }
}
