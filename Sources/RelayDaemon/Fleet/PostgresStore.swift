import Foundation
import Logging
import PostgresNIO
import RelayCore

/// The history of a fleet of relays in one PostgreSQL database: the `RunStore` answers of
/// `HistoryStore`, plus the fleet's queue (claims with `FOR UPDATE SKIP LOCKED`), leases,
/// the relays' heartbeats and the logs of finished runs (`PostgresStore+Fleet.swift`).
public final class PostgresStore: RunStore {
    let client: PostgresClient
    /// This relay's `[relay] name`: the runs it records carry it.
    public let relayName: String
    public var location: String { client.settings.description }

    public init(_ settings: DatabaseSettings, relayName: String, logger: Logger) throws(HistoryError) {
        var quiet = logger
        quiet.logLevel = .warning
        client = try PostgresClient(settings, logger: quiet)
        self.relayName = relayName
        try PostgresSchema.migrate(client)
    }

    public func close() { client.close() }

    static let columns = """
        id, client, server, kind, state, started_at, ended_at, bytes_to_server, bytes_from_server, borg_exit_status, \
        archive, stats, error, log_file, agent_pid, agent_start, queued_at, trigger, attempts, alarm, relay
        """
    static let finishedFilter = "state NOT IN ('queued', 'running')"

    static func record(_ row: PostgresRow) throws -> RunRecord {
        let r = row.makeRandomAccess()
        func kind(_ s: String) throws -> RunKind {
            guard let k = RunKind(rawValue: s) else { throw HistoryError.database(path: "run", detail: "unknown kind '\(s)'") }
            return k
        }
        func state(_ s: String) throws -> RunState {
            guard let k = RunState(rawValue: s) else { throw HistoryError.database(path: "run", detail: "unknown state '\(s)'") }
            return k
        }
        return RunRecord(
            id: try r["id"].decode(String.self), client: try r["client"].decode(String.self),
            server: try r["server"].decode(String.self), kind: try kind(try r["kind"].decode(String.self)),
            state: try state(try r["state"].decode(String.self)), startedAt: try r["started_at"].decode(Date.self),
            endedAt: try r["ended_at"].decode(Date?.self), bytesToServer: try r["bytes_to_server"].decode(Int64.self),
            bytesFromServer: try r["bytes_from_server"].decode(Int64.self),
            borgExitStatus: try r["borg_exit_status"].decode(Int32?.self).map(Int.init),
            archive: try r["archive"].decode(String?.self), stats: try r["stats"].decode(String?.self),
            error: try r["error"].decode(String?.self), logFile: try r["log_file"].decode(String?.self),
            agentPID: try r["agent_pid"].decode(Int32.self), agentStart: try r["agent_start"].decode(Int64?.self),
            queuedAt: try r["queued_at"].decode(Date?.self), trigger: try r["trigger"].decode(String?.self),
            attempts: try r["attempts"].decode(String?.self),
            alarm: try r["alarm"].decode(String?.self).flatMap(RunAlarm.init(rawValue:)),
            relay: try r["relay"].decode(String?.self))
    }

    static func archive(_ row: PostgresRow) throws -> ArchiveRecord {
        let r = row.makeRandomAccess()
        var a = ArchiveRecord(client: try r["client"].decode(String.self), name: try r["name"].decode(String.self),
                              id: try r["id"].decode(String?.self), runID: try r["run_id"].decode(String.self),
                              createdAt: try r["created_at"].decode(Date.self), prunedAt: try r["pruned_at"].decode(Date?.self),
                              prunedByRun: try r["pruned_by_run"].decode(String?.self))
        a.seq = try r["seq"].decode(Int64.self)
        return a
    }

    func records(_ q: PostgresQuery) throws(HistoryError) -> [RunRecord] {
        let rows = try client.query(q)
        return try decode { try rows.map(Self.record) }
    }

    func decode<T>(_ body: () throws -> T) throws(HistoryError) -> T {
        do { return try body() } catch let e as HistoryError { throw e } catch {
            throw HistoryError.database(path: location, detail: "cannot read a row: \(error)")
        }
    }

    // MARK: - RunStore

    public func insert(_ record: RunRecord) throws(HistoryError) {
        try insert(record, operation: nil, pinnedRelay: nil, scheduledFor: nil)
    }

    /// Inserts a run; a scheduled one (`scheduledFor`) only once per client, kind and due
    /// time: false when another relay enqueued that due time already.
    @discardableResult
    func insert(_ r: RunRecord, operation: String?, pinnedRelay: String?, scheduledFor: Date?) throws(HistoryError) -> Bool {
        let relay = r.state == .queued ? nil : (r.relay ?? relayName)
        let q: PostgresQuery = """
            INSERT INTO run (id, client, server, kind, state, started_at, ended_at, bytes_to_server, bytes_from_server,
                borg_exit_status, archive, stats, error, log_file, agent_pid, agent_start, queued_at, trigger, attempts, alarm,
                relay, operation, pinned_relay, scheduled_for)
            VALUES (\(r.id), \(r.client), \(r.server), \(r.kind.rawValue), \(r.state.rawValue), \(r.startedAt), \(r.endedAt),
                \(r.bytesToServer), \(r.bytesFromServer), \(r.borgExitStatus.map(Int32.init)), \(r.archive), \(r.stats), \(r.error),
                \(r.logFile), \(r.agentPID), \(r.agentStart), \(r.queuedAt), \(r.trigger), \(r.attempts), \(r.alarm?.rawValue),
                \(relay), \(operation), \(pinnedRelay), \(scheduledFor))
            ON CONFLICT DO NOTHING RETURNING id
            """
        return !(try client.query(q)).isEmpty
    }

    @discardableResult
    public func finish(_ report: RunReport) throws(HistoryError) -> RunReport {
        let store = self
        return try client.transaction { c in
            var final = report
            if report.kind == .backup, report.isSuccess, let a = report.archive {
                // Once per run: a finish retried after its COMMIT's answer was lost finds its row.
                var rows = try store.client.run(c, """
                    INSERT INTO archive (client, name, id, run_id, created_at)
                    SELECT \(report.client), \(a.name), \(a.id.map(ArchiveSummary.normalizedID)), \(report.runID), \(report.ended)
                    WHERE NOT EXISTS (SELECT 1 FROM archive WHERE run_id = \(report.runID))
                    RETURNING id
                    """)
                if rows.isEmpty {
                    rows = try store.client.run(c, "SELECT id FROM archive WHERE run_id = \(report.runID) ORDER BY seq LIMIT 1")
                }
                if report.backupProof != nil {
                    final = report.recorded(archiveID: try rows.first?.decode(String?.self) ?? nil)
                }
            }
            _ = try store.client.run(c, """
                UPDATE run SET state = \(final.state.rawValue), ended_at = \(final.ended),
                    bytes_to_server = \(Int64(clamping: final.bytesToServer)), bytes_from_server = \(Int64(clamping: final.bytesFromServer)),
                    borg_exit_status = \(final.borgExitStatus.map { Int32($0) }), archive = \(final.archive?.name),
                    stats = \(final.statsJSON), error = \(final.recordedError), alarm = \(final.alarm?.rawValue),
                    attempts = \(final.attemptsJSON), lease_until = NULL
                WHERE id = \(report.runID)
                """)
            return final
        }
    }

    /// This relay's runs left running by an agent of this relay that is gone (its PIDs are
    /// this host's: the relay's name is the fleet's key). Queued runs belong to the fleet and
    /// stay queued; another relay's runs end by their lease.
    @discardableResult
    public func markInterrupted(isAlive: @Sendable (RunRecord) -> Bool) throws(HistoryError) -> [String] {
        let stale = try records("SELECT \(unescaped: Self.columns) FROM run WHERE state = 'running' AND relay = \(relayName)")
            .filter { !isAlive($0) }
        var ids: [String] = []
        for r in stale {
            let rows = try client.query("""
                UPDATE run SET state = 'interrupted', ended_at = now(), lease_until = NULL,
                    error = \("the agent (pid \(r.agentPID) on relay \(relayName)) ended while the run was in progress")
                WHERE id = \(r.id) AND state = 'running' RETURNING id
                """)
            if !rows.isEmpty { ids.append(r.id) }
        }
        return ids
    }

    public func markStarted(_ id: String) throws(HistoryError) {
        try client.query("UPDATE run SET state = 'running', started_at = now(), relay = \(relayName) WHERE id = \(id)")
    }

    public func markEnded(_ id: String, state: RunState, error: String?) throws(HistoryError) {
        try client.query("UPDATE run SET state = \(state.rawValue), ended_at = now(), error = \(error), lease_until = NULL WHERE id = \(id)")
    }

    public func get(_ id: String) throws(HistoryError) -> RunRecord? {
        try records("SELECT \(unescaped: Self.columns) FROM run WHERE id = \(id)").first
    }

    public func expectedArchives(client name: String) throws(HistoryError) -> [ArchiveRecord] {
        let rows = try client.query("SELECT * FROM archive WHERE client = \(name) AND pruned_at IS NULL ORDER BY seq")
        return try decode { try rows.map(Self.archive) }
    }

    public func archiveRecords(client name: String) throws(HistoryError) -> [ArchiveRecord] {
        let rows = try client.query("SELECT * FROM archive WHERE client = \(name) ORDER BY seq")
        return try decode { try rows.map(Self.archive) }
    }

    @discardableResult
    public func recordPruned(client name: String, runID: String, removed: [PresentArchive], at date: Date) throws(HistoryError) -> Int {
        var marked = 0
        for a in removed {
            marked += try client.query("""
                UPDATE archive SET pruned_at = \(date), pruned_by_run = \(runID)
                WHERE client = \(name) AND pruned_at IS NULL AND (id = \(ArchiveSummary.normalizedID(a.id)) OR (id IS NULL AND name = \(a.name)))
                RETURNING seq
                """).count
        }
        return marked
    }

    public func lastFinished(client name: String) throws(HistoryError) -> RunRecord? {
        try records("""
            SELECT \(unescaped: Self.columns) FROM run WHERE client = \(name) AND \(unescaped: Self.finishedFilter)
            ORDER BY started_at DESC LIMIT 1
            """).first
    }

    public func lastQueued(client name: String) throws(HistoryError) -> Date? {
        try records("SELECT \(unescaped: Self.columns) FROM run WHERE client = \(name) ORDER BY started_at DESC LIMIT 1")
            .first.map { $0.queuedAt ?? $0.startedAt }
    }

    /// Deletes as `HistoryStore.prune` does; the log files returned are this relay's (the
    /// others' are on their own disks, and their next prune finds none of the rows).
    @discardableResult
    public func prune(keepPerClient: Int, maxAgeDays: Int, now: Date) throws(HistoryError) -> [String] {
        let cutoff: Date? = maxAgeDays > 0 ? now.addingTimeInterval(-Double(maxAgeDays) * 86400) : nil
        let rows = try client.query("""
            DELETE FROM run WHERE id IN (
                SELECT id FROM (SELECT id, started_at, row_number() OVER (PARTITION BY client ORDER BY started_at DESC, id DESC) AS n
                                FROM run WHERE \(unescaped: Self.finishedFilter)) t
                WHERE t.n > \(keepPerClient) OR (\(cutoff)::timestamptz IS NOT NULL AND t.started_at < \(cutoff)::timestamptz))
            RETURNING id, log_file, relay
            """)
        var logs: [String] = []
        var ids: [String] = []
        for row in rows {
            let (id, log, relay) = try decode { try row.decode((String, String?, String?).self) }
            ids.append(id)
            if let log, relay == nil || relay == relayName { logs.append(log) }
        }
        if !ids.isEmpty {
            // The stored logs of exactly these runs (by primary key, not a scan of run_log).
            try client.query("DELETE FROM run_log WHERE run_id = ANY(\(ids))")
        }
        return logs
    }

    public func finishedRuns() throws(HistoryError) -> [RunRecord] {
        try records("SELECT \(unescaped: Self.columns) FROM run WHERE \(unescaped: Self.finishedFilter) ORDER BY ended_at ASC NULLS FIRST, started_at ASC")
    }

    public func lastFinished(client name: String, kind: RunKind) throws(HistoryError) -> RunRecord? {
        try records("""
            SELECT \(unescaped: Self.columns) FROM run WHERE client = \(name) AND kind = \(kind.rawValue)
                AND \(unescaped: Self.finishedFilter) ORDER BY ended_at DESC NULLS LAST LIMIT 1
            """).first
    }

    public func archiveCounts() throws(HistoryError) -> [String: Int] {
        let rows = try client.query("SELECT client, count(*) FROM archive WHERE pruned_at IS NULL GROUP BY client")
        return try decode {
            var out: [String: Int] = [:]
            for row in rows {
                let (c, n) = try row.decode((String, Int64).self)
                out[c] = Int(n)
            }
            return out
        }
    }

    public func recent(client name: String?, limit: Int) throws(HistoryError) -> [RunRecord] {
        try records("""
            SELECT \(unescaped: Self.columns) FROM run WHERE (\(name)::text IS NULL OR client = \(name)::text)
            ORDER BY started_at DESC, id DESC LIMIT \(limit)
            """)
    }

    public func runs(kind: RunKind, since: Date, client name: String?) throws(HistoryError) -> [RunRecord] {
        try records("""
            SELECT \(unescaped: Self.columns) FROM run WHERE kind = \(kind.rawValue) AND started_at >= \(since)
                AND (\(name)::text IS NULL OR client = \(name)::text)
            ORDER BY started_at, id
            """)
    }
}
