import Foundation
import NIOCore
import PostgresNIO
import RelayCore

/// A run a relay claimed from the fleet's queue, with what it needs to start it.
struct ClaimedRun: Sendable {
    var record: RunRecord
    var operation: OperationRequest?
}

/// A run whose lease expired, taken over by this relay (marked interrupted).
struct ExpiredRun: Sendable {
    var id: String
    var client: String
    var kind: RunKind
    var trigger: String?
    var relay: String?
}

/// The fleet's queue, leases and heartbeats (see docs/fleet.md).
extension PostgresStore {
    /// The channel of the fleet's wake-ups: a run was queued, a cancel was asked for.
    static let wakeChannel = "borg_relay"

    /// Wakes the fleet's idle relays (LISTEN on `wakeChannel`); polling every few seconds
    /// stays the fallback, so a lost notification only delays.
    func notifyFleet(_ what: String) {
        _ = try? client.query("SELECT pg_notify(\(Self.wakeChannel), \(what))")
    }

    /// Registers this agent under its relay name. Refused while another agent with the name
    /// is alive: its heartbeat is younger than a lease and it is not a process of this host
    /// that is gone (an agent restarted after a crash takes its name back at once). Two
    /// agents of one name would take each other's runs for their own.
    func register(instance: String, host: String, pid: Int32, socket: String, lease: Int,
                  isAlive: (Int32) -> Bool = HistoryStore.processAlive) throws(HistoryError) {
        let other = try client.query("""
            SELECT host, pid, extract(epoch FROM now() - heartbeat_at)::float8 FROM relay_node WHERE name = \(relayName)
            """)
        if let row = other.first {
            let (oldHost, oldPID, age) = try decode { try row.decode((String, Int32, Double).self) }
            let gone = age > Double(lease) || (oldHost == host && (oldPID == pid || !isAlive(oldPID)))
            if !gone {
                throw HistoryError.database(path: location, detail: """
                    another agent is relay \(relayName) (pid \(oldPID) on \(oldHost), heard of \(Int(age)) s ago): \
                    give this one its own [relay] name, or stop the other (its name is free \(lease) s after it was last heard of)
                    """)
            }
        }
        try client.query("""
            INSERT INTO relay_node (name, instance, host, pid, version, started_at, heartbeat_at, socket)
            VALUES (\(relayName), \(instance), \(host), \(pid), \(RelayVersion.current), now(), now(), \(socket))
            ON CONFLICT (name) DO UPDATE SET instance = excluded.instance, host = excluded.host, pid = excluded.pid,
                version = excluded.version, started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                socket = excluded.socket
            """)
    }

    /// Queued runs pinned to this relay whose passphrase (from stdin) was in the memory of
    /// an earlier agent of it: they cannot run any more; cancelled, their ids.
    func cancelOrphanedPins() throws(HistoryError) -> [String] {
        let rows = try client.query("""
            UPDATE run SET state = 'cancelled', ended_at = now(),
                error = 'the agent of relay ' || pinned_relay || ' stopped before the run started; the passphrase given for it is gone: ask again'
            WHERE state = 'queued' AND pinned_relay = \(relayName) RETURNING id
            """)
        return try decode { try rows.map { try $0.decode(String.self) } }
    }

    /// A free relay name when this agent stops (its runs are already ended or interrupted).
    func unregister(instance: String) {
        _ = try? client.query("UPDATE relay_node SET heartbeat_at = 'epoch' WHERE name = \(relayName) AND instance = \(instance)")
    }

    /// Renews this relay's heartbeat and the leases of the runs it holds (`held`: running
    /// here, or ended and not yet recorded). nil when another agent took over the relay's
    /// name; else the ids renewed: a held run missing from them was taken over by another
    /// relay (its lease had expired) and must stop here.
    func renew(instance: String, lease: Int, held: [String]) throws(HistoryError) -> Set<String>? {
        try client.transaction { c in
            let mine = try client.run(c, "UPDATE relay_node SET heartbeat_at = now() WHERE name = \(relayName) AND instance = \(instance) RETURNING name")
            guard !mine.isEmpty else { return nil }
            let rows = try client.run(c, """
                UPDATE run SET lease_until = now() + make_interval(secs => \(Double(lease)))
                WHERE id = ANY(\(held)) AND relay = \(relayName) AND state = 'running' RETURNING id
                """)
            return Set(try rows.map { try $0.decode(String.self) })
        }
    }

    /// Claims the oldest queued run this relay may run (one of `clients`, or pinned to this
    /// relay) whose client has no run in progress anywhere; nil when there is none. Two
    /// relays never claim the same row (`FOR UPDATE SKIP LOCKED`), and a second running run
    /// of a client fails the unique index (`run_one_running`): that claim is nil too. The
    /// client list is a hashed set in the plan (`IN (SELECT unnest …)`: `= ANY` compared
    /// every queued row with every name, 24 ms a claim at 1000 clients).
    /// `logDir`: this relay's `state_dir/logs`; the run's log file is recorded as this
    /// relay's (the relay that queued it named its own).
    func claim(clients: [String], lease: Int, pid: Int32, agentStart: Int64?, logDir: String) throws(HistoryError) -> ClaimedRun? {
        let rows: [PostgresRow]
        do {
            rows = try client.query("""
                UPDATE run SET state = 'running', relay = \(relayName), started_at = now(), agent_pid = \(pid),
                    agent_start = \(agentStart), lease_until = now() + make_interval(secs => \(Double(lease))),
                    log_file = \(logDir) || '/' || client || '/' || id || '.log'
                WHERE id = (
                    SELECT q.id FROM run q
                    WHERE q.state = 'queued' AND (q.pinned_relay = \(relayName) OR (q.pinned_relay IS NULL AND q.client IN (SELECT unnest(\(clients)::text[]))))
                        AND NOT EXISTS (SELECT 1 FROM run b WHERE b.client = q.client AND b.state = 'running')
                    ORDER BY q.queued_at, q.id
                    FOR UPDATE SKIP LOCKED LIMIT 1)
                RETURNING \(unescaped: Self.columns), operation
                """)
        } catch {
            if case .database(_, let detail) = error, detail.contains("SQLSTATE 23505") { return nil }
            throw error
        }
        guard let row = rows.first else { return nil }
        return try decode {
            let record = try Self.record(row)
            let op = try row.makeRandomAccess()["operation"].decode(String?.self)
            return ClaimedRun(record: record, operation: try op.map { try JSONDecoder().decode(OperationRequest.self, from: Data($0.utf8)) })
        }
    }

    /// Marks runs whose lease expired interrupted (each is taken over by exactly one relay:
    /// the UPDATE returns a row once); what was taken over.
    func expireLeases() throws(HistoryError) -> [ExpiredRun] {
        let rows = try client.query("""
            UPDATE run SET state = 'interrupted', ended_at = now(), lease_until = NULL,
                error = 'relay ' || coalesce(relay, '?') || ' stopped renewing its lease (the agent ended, or lost the database); taken over by relay ' || \(relayName)
            WHERE state = 'running' AND lease_until < now()
            RETURNING id, client, kind, trigger, relay
            """)
        return try decode {
            try rows.map { row in
                let (id, client, kind, trigger, relay) = try row.decode((String, String, String, String?, String?).self)
                return ExpiredRun(id: id, client: client, kind: RunKind(rawValue: kind) ?? .backup, trigger: trigger, relay: relay)
            }
        }
    }

    /// A queued run is cancelled; false when it is not queued (any more).
    func cancelQueued(_ id: String) throws(HistoryError) -> Bool {
        !(try client.query("""
            UPDATE run SET state = 'cancelled', ended_at = now(), error = 'cancelled before it started'
            WHERE id = \(id) AND state = 'queued' RETURNING id
            """)).isEmpty
    }

    /// Asks the relay running `id` to cancel it; that relay's name, nil when it is not running.
    func requestCancel(_ id: String) throws(HistoryError) -> String? {
        let rows = try client.query("UPDATE run SET cancel_requested = true WHERE id = \(id) AND state = 'running' RETURNING relay")
        return try decode { try rows.first?.decode(String?.self) ?? nil }
    }

    /// This relay's running runs that someone asked to cancel.
    func cancelRequests() throws(HistoryError) -> [String] {
        let rows = try client.query("SELECT id FROM run WHERE relay = \(relayName) AND state = 'running' AND cancel_requested")
        return try decode { try rows.map { try $0.decode(String.self) } }
    }

    /// Runs in progress or waiting, fleet-wide, oldest first.
    func unfinished() throws(HistoryError) -> [RunRecord] {
        try records("SELECT \(unescaped: Self.columns) FROM run WHERE state IN ('queued', 'running') ORDER BY queued_at, id")
    }

    /// The newest due time of each client's schedule that was enqueued (kind: backup or check).
    func lastSlots(kind: RunKind) throws(HistoryError) -> [String: Date] {
        let rows = try client.query("SELECT client, max(scheduled_for) FROM run WHERE kind = \(kind.rawValue) AND scheduled_for IS NOT NULL GROUP BY client")
        return try decode {
            var out: [String: Date] = [:]
            for row in rows {
                let (c, d) = try row.decode((String, Date).self)
                out[c] = d
            }
            return out
        }
    }

    /// Runs other relays finished (recorded) with an end after `since`, oldest first.
    func finishedByOthers(since: Date) throws(HistoryError) -> [RunRecord] {
        try records("""
            SELECT \(unescaped: Self.columns) FROM run
            WHERE ended_at > \(since) AND relay IS DISTINCT FROM \(relayName) AND \(unescaped: Self.finishedFilter)
            ORDER BY ended_at, id
            """)
    }

    /// Keeps a finished run's log in the database (relayctl on any relay reads it there).
    /// `complete`: the run has ended (while it runs, its relay stores the log so far).
    func storeLog(runID: String, bytes: [UInt8], complete: Bool = true) throws(HistoryError) {
        // A ByteBuffer is bytea to postgres-nio ([UInt8] would be an array of integers).
        let body = ByteBuffer(bytes: bytes)
        try client.query("""
            INSERT INTO run_log (run_id, relay, body, complete, updated_at) VALUES (\(runID), \(relayName), \(body), \(complete), now())
            ON CONFLICT (run_id) DO UPDATE SET body = excluded.body, complete = excluded.complete, updated_at = now()
            """)
    }

    /// A run's log as stored, if it was.
    func storedLog(runID: String) throws(HistoryError) -> [UInt8]? {
        let rows = try client.query("SELECT body FROM run_log WHERE run_id = \(runID)")
        return try decode { try rows.first.map { Array(try $0.decode(ByteBuffer.self).readableBytesView) } }
    }

    /// The relays of the fleet and when each was last heard of.
    func relays() throws(HistoryError) -> [(name: String, host: String, heartbeat: Date)] {
        let rows = try client.query("SELECT name, host, heartbeat_at FROM relay_node ORDER BY name")
        return try decode { try rows.map { let (n, h, b) = try $0.decode((String, String, Date).self); return (n, h, b) } }
    }
}
