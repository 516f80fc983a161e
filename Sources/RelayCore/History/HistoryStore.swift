import Foundation
import GRDB

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
public final class HistoryStore: RunStore {
    public let path: String
    public var location: String { path }
    private let queue: DatabaseQueue

    public convenience init(path: String) throws(HistoryError) {
        try self.init(path: path, migrateUpTo: nil)
    }

    /// `migrateUpTo`: stop at that migration (tests of later migrations).
    init(path: String, migrateUpTo: String?) throws(HistoryError) {
        self.path = path
        do {
            let dir = (path as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            try Self.makePrivate(path)
            var config = Configuration()
            config.busyMode = .timeout(10)
            queue = try DatabaseQueue(path: path, configuration: config)
            if let last = migrateUpTo {
                try Self.migrator.migrate(queue, upTo: last)
            } else {
                try Self.migrator.migrate(queue)
            }
        } catch {
            throw HistoryError.database(path: path, detail: "\(error)")
        }
    }

    /// The database and SQLite's companion files (-wal, -shm, -journal) are the agent's
    /// alone: the file is created 0600 before SQLite opens it (SQLite gives its companion
    /// files the database's mode), and an existing one that is wider is narrowed.
    static func makePrivate(_ path: String) throws(HistoryError) {
        let fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw HistoryError.database(path: path, detail: "cannot create it: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) == 0 && st.st_mode & 0o077 != 0 && fchmod(fd, 0o600) != 0 {
            throw HistoryError.database(path: path, detail: "cannot make it 0600: \(String(cString: strerror(errno)))")
        }
        for suffix in ["-wal", "-shm", "-journal"] {
            var cst = stat()
            if lstat(path + suffix, &cst) == 0 && cst.st_mode & S_IFMT == S_IFREG && cst.st_mode & 0o077 != 0 {
                _ = chmod(path + suffix, 0o600)
            }
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
        m.registerMigration("v2") { db in
            try db.alter(table: "run") { t in
                t.add(column: "agent_start", .integer)
                t.add(column: "queued_at", .datetime)
                t.add(column: "trigger", .text)
            }
            try db.create(index: "run_started", on: "run", columns: ["started_at"])
        }
        m.registerMigration("v3") { db in
            // Archives the relay itself pruned: the tamper alarm expects every other
            // archive it created to be in the repository.
            try db.create(table: "pruned_archive") { t in
                t.column("client", .text).notNull()
                t.column("archive", .text).notNull()
                t.column("run_id", .text).notNull()
                t.column("pruned_at", .datetime).notNull()
                t.primaryKey(["client", "archive"])
            }
        }
        m.registerMigration("v4") { db in
            try db.alter(table: "run") { t in
                t.add(column: "attempts", .text)
            }
        }
        m.registerMigration("v5") { db in
            // Every archive the relay created, by borg's archive id, kept for good (history
            // pruning never touches it): the tamper alarm's reference. Only the relay's own
            // prune marks a row pruned.
            try db.create(table: "archive") { t in
                t.autoIncrementedPrimaryKey("seq")
                t.column("client", .text).notNull()
                t.column("name", .text).notNull()
                t.column("id", .text)  // nil: known by name only (recorded before v5 without an id)
                t.column("run_id", .text).notNull()
                t.column("created_at", .datetime).notNull()
                t.column("pruned_at", .datetime)
                t.column("pruned_by_run", .text)
            }
            try db.create(index: "archive_client", on: "archive", columns: ["client", "pruned_at"])
            try migrateV3Archives(db)
            try db.drop(table: "pruned_archive")
        }
        m.registerMigration("v6") { db in
            // The alarm a failed run raised (tamper, host_key_changed): the metrics and the
            // status rebuild the tamper alarm from it after a restart.
            try db.alter(table: "run") { t in
                t.add(column: "alarm", .text)
            }
        }
        m.registerMigration("v7") { db in
            // A fleet of relays (PostgresStore applies the same step): the relay that ran a
            // run. The claim, lease and schedule columns are used on PostgreSQL only; one
            // relay on SQLite keeps its queue in memory.
            try db.alter(table: "run") { t in
                t.add(column: "relay", .text)
                t.add(column: "lease_until", .datetime)
                t.add(column: "operation", .text)
                t.add(column: "pinned_relay", .text)
                t.add(column: "scheduled_for", .datetime)
                t.add(column: "cancel_requested", .boolean).notNull().defaults(to: false)
            }
        }
        return m
    }

    /// v5: the archives of succeeded backups still in the run table become archive rows;
    /// their id comes from the run's stats (borg's `create --json`) where it was recorded,
    /// otherwise the row has no id and is checked by name. An archive whose name the relay
    /// pruned (v3's `pruned_archive`) after it was created is marked pruned. Archives whose
    /// runs history pruning had already deleted are not known any more.
    static func migrateV3Archives(_ db: Database) throws {
        let rows = try Row.fetchAll(db, sql: """
            SELECT id, client, archive, stats, started_at, ended_at FROM run
            WHERE kind = 'backup' AND state = 'succeeded' AND archive IS NOT NULL ORDER BY started_at
            """)
        var pruned: [String: (at: Date, run: String)] = [:]
        for r in try Row.fetchAll(db, sql: "SELECT client, archive, run_id, pruned_at FROM pruned_archive") {
            let client: String = r["client"], archive: String = r["archive"]
            let at: Date = r["pruned_at"], run: String = r["run_id"]
            pruned[client + "\u{0}" + archive] = (at, run)
        }
        for r in rows {
            let client: String = r["client"], name: String = r["archive"]
            let ended: Date? = r["ended_at"]
            let started: Date = r["started_at"]
            let created = ended ?? started
            let runID: String = r["id"]
            let stats: String? = r["stats"]
            let id = stats.flatMap { try? JSONDecoder().decode(ArchiveSummary.self, from: Data($0.utf8)) }?.id
            let p = pruned[client + "\u{0}" + name].flatMap { $0.at >= created ? $0 : nil }
            try db.execute(sql: """
                INSERT INTO archive (client, name, id, run_id, created_at, pruned_at, pruned_by_run) VALUES (?, ?, ?, ?, ?, ?, ?)
                """, arguments: [client, name, id.map(ArchiveSummary.normalizedID), runID, created, p?.at, p?.run])
        }
    }

    private func write<T: Sendable>(_ body: @Sendable (Database) throws -> T) throws(HistoryError) -> T {
        do { return try queue.write(body) } catch { throw HistoryError.database(path: path, detail: "\(error)") }
    }

    private func read<T: Sendable>(_ body: @Sendable (Database) throws -> T) throws(HistoryError) -> T {
        do { return try queue.read(body) } catch { throw HistoryError.database(path: path, detail: "\(error)") }
    }

    /// Runs SQL as it is (tests that build an older database).
    func execute(sql: String) throws(HistoryError) {
        try write { db in try db.execute(sql: sql) }
    }

    public func insert(_ record: RunRecord) throws(HistoryError) {
        try write { db in try record.insert(db) }
    }

    /// Records how a run ended, and returns the report as it finally stands: a backup's
    /// archive is recorded (by id) and read back, and its proof judged again with what was
    /// read (`BackupProof`): a backup whose archive id is not recorded did not succeed.
    /// When recording throws, the caller fails the backup (`RunReport.recordingFailed`).
    @discardableResult
    public func finish(_ report: RunReport) throws(HistoryError) -> RunReport {
        try write { db in
            var final = report
            // borg created an archive (it printed it in `create --json`) and the run proved
            // it: the relay expects it in the repository until its own prune removes it.
            if report.kind == .backup, report.isSuccess, let a = report.archive {
                try db.execute(sql: """
                    INSERT INTO archive (client, name, id, run_id, created_at) VALUES (?, ?, ?, ?, ?)
                    """, arguments: [report.client, a.name, a.id.map(ArchiveSummary.normalizedID), report.runID, report.ended])
                if report.backupProof != nil {
                    final = report.recorded(archiveID: try ArchiveRecord.fetchOne(db, key: db.lastInsertedRowID)?.id)
                }
            }
            guard var r = try RunRecord.fetchOne(db, key: report.runID) else { return final }
            r.state = final.state
            r.endedAt = final.ended
            r.bytesToServer = Int64(clamping: final.bytesToServer)
            r.bytesFromServer = Int64(clamping: final.bytesFromServer)
            r.borgExitStatus = final.borgExitStatus.map(Int.init)
            r.archive = final.archive?.name
            r.stats = final.statsJSON
            r.error = final.recordedError
            r.alarm = final.alarm
            r.attempts = final.attemptsJSON
            try r.update(db)
            return final
        }
    }

    /// Marks runs still "running" or "queued" whose agent process is gone (killed,
    /// crashed) as interrupted; returns their ids.
    @discardableResult
    public func markInterrupted(isAlive: @Sendable (RunRecord) -> Bool) throws(HistoryError) -> [String] {
        try write { db in
            let stale = try RunRecord.filter(RunState.unfinished.contains(Column("state"))).fetchAll(db)
                .filter { !isAlive($0) }
            for var r in stale {
                r.error = r.state == .queued
                    ? "the agent (pid \(r.agentPID)) ended before the run started"
                    : "the agent (pid \(r.agentPID)) ended while the run was in progress"
                r.state = .interrupted
                r.endedAt = Date()
                try r.update(db)
            }
            return stale.map(\.id)
        }
    }

    /// A queued run starts now.
    public func markStarted(_ id: String) throws(HistoryError) {
        try write { db in
            guard var r = try RunRecord.fetchOne(db, key: id) else { return }
            r.state = .running
            r.startedAt = Date()
            try r.update(db)
        }
    }

    /// A run that ends without a report (cancelled in the queue, setup failure).
    public func markEnded(_ id: String, state: RunState, error: String?) throws(HistoryError) {
        try write { db in
            guard var r = try RunRecord.fetchOne(db, key: id) else { return }
            r.state = state
            r.endedAt = Date()
            r.error = error
            try r.update(db)
        }
    }

    public func get(_ id: String) throws(HistoryError) -> RunRecord? {
        try read { db in try RunRecord.fetchOne(db, key: id) }
    }

    /// Archives of `client` that the relay created and did not prune, oldest first.
    public func expectedArchives(client: String) throws(HistoryError) -> [ArchiveRecord] {
        try read { db in
            try ArchiveRecord.filter(Column("client") == client && Column("pruned_at") == nil)
                .order(Column("seq")).fetchAll(db)
        }
    }

    /// Every archive record of `client` (pruned ones too), oldest first.
    public func archiveRecords(client: String) throws(HistoryError) -> [ArchiveRecord] {
        try read { db in
            try ArchiveRecord.filter(Column("client") == client).order(Column("seq")).fetchAll(db)
        }
    }

    /// Marks the archives a prune run of the relay removed: rows with an id by their id,
    /// rows known only by name (recorded before ids were) by name. Returns how many rows
    /// were marked.
    @discardableResult
    public func recordPruned(client: String, runID: String, removed: [PresentArchive], at date: Date) throws(HistoryError) -> Int {
        try write { db in
            var marked = 0
            for a in removed {
                try db.execute(sql: """
                    UPDATE archive SET pruned_at = ?, pruned_by_run = ?
                    WHERE client = ? AND pruned_at IS NULL AND (id = ? OR (id IS NULL AND name = ?))
                    """, arguments: [date, runID, client, ArchiveSummary.normalizedID(a.id), a.name])
                marked += db.changesCount
            }
            return marked
        }
    }

    /// The newest finished run of a client.
    public func lastFinished(client: String) throws(HistoryError) -> RunRecord? {
        try read { db in
            try RunRecord.filter(Column("client") == client)
                .filter(!RunState.unfinished.contains(Column("state")))
                .order(Column("started_at").desc).fetchOne(db)
        }
    }

    /// When a client's newest run of any state was asked for (for catch-up after downtime).
    public func lastQueued(client: String) throws(HistoryError) -> Date? {
        try read { db in
            try RunRecord.filter(Column("client") == client).order(Column("started_at").desc).fetchOne(db)
                .map { $0.queuedAt ?? $0.startedAt }
        }
    }

    /// Deletes finished runs beyond the newest `keepPerClient` of each client and runs
    /// older than `maxAgeDays` (0: no age limit). Returns the log files of the deleted
    /// runs, for the caller to remove.
    @discardableResult
    public func prune(keepPerClient: Int, maxAgeDays: Int, now: Date) throws(HistoryError) -> [String] {
        try write { db in
            let finished = RunRecord.filter(!RunState.unfinished.contains(Column("state")))
            var doomed: [RunRecord] = []
            if maxAgeDays > 0 {
                let cutoff = now.addingTimeInterval(-Double(maxAgeDays) * 86400)
                doomed += try finished.filter(Column("started_at") < cutoff).fetchAll(db)
            }
            let clients = try String.fetchAll(db, sql: "SELECT DISTINCT client FROM run")
            for c in clients {
                doomed += try finished.filter(Column("client") == c)
                    .order(Column("started_at").desc, Column("id").desc)
                    .limit(Int.max / 2, offset: keepPerClient).fetchAll(db)
            }
            var seen = Set<String>()
            var logs: [String] = []
            for r in doomed where seen.insert(r.id).inserted {
                try r.delete(db)
                if let l = r.logFile { logs.append(l) }
            }
            return logs
        }
    }

    /// The newest runs first, optionally of one client.
    /// Every finished run, oldest end first (monitoring's state at start-up).
    public func finishedRuns() throws(HistoryError) -> [RunRecord] {
        try read { db in
            try RunRecord.filter(!RunState.unfinished.contains(Column("state")))
                .order(Column("ended_at").asc, Column("started_at").asc).fetchAll(db)
        }
    }

    /// The newest finished run of `client` of `kind`.
    public func lastFinished(client: String, kind: RunKind) throws(HistoryError) -> RunRecord? {
        try read { db in
            try RunRecord.filter(Column("client") == client && Column("kind") == kind.rawValue
                                 && !RunState.unfinished.contains(Column("state")))
                .order(Column("ended_at").desc).fetchOne(db)
        }
    }

    /// Archives the relay created and has not pruned, per client.
    public func archiveCounts() throws(HistoryError) -> [String: Int] {
        try read { db in
            var counts: [String: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT client, COUNT(*) AS n FROM archive WHERE pruned_at IS NULL GROUP BY client") {
                counts[row["client"]] = row["n"]
            }
            return counts
        }
    }

    public func recent(client: String?, limit: Int) throws(HistoryError) -> [RunRecord] {
        try read { db in
            var q = RunRecord.order(Column("started_at").desc, Column("id").desc)
            if let c = client { q = q.filter(Column("client") == c) }
            return try q.limit(limit).fetchAll(db)
        }
    }

    /// Every run of `kind` started at or after `since` (of one client, or all), oldest first
    /// (the status page's 30-day strips: one query for the whole fleet).
    public func runs(kind: RunKind, since: Date, client: String?) throws(HistoryError) -> [RunRecord] {
        try read { db in
            var q = RunRecord.filter(Column("kind") == kind.rawValue && Column("started_at") >= since)
            if let client { q = q.filter(Column("client") == client) }
            return try q.order(Column("started_at"), Column("id")).fetchAll(db)
        }
    }

    public static let processAlive: @Sendable (Int32) -> Bool = { pid in
        pid > 0 && (kill(pid, 0) == 0 || errno == EPERM)
    }

    /// The run's agent still runs: its PID is alive and, where recorded, started at the
    /// same time (not a reused PID).
    public static let agentAlive: @Sendable (RunRecord) -> Bool = { r in
        guard processAlive(r.agentPID) else { return false }
        guard let recorded = r.agentStart else { return true }
        return ProcessIdentity.startTime(of: r.agentPID) == recorded
    }
}
