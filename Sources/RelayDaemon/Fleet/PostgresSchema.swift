import Foundation
import PostgresNIO
import RelayCore

/// The history's migrations on PostgreSQL: the same steps, by the same names, as
/// `HistoryStore.migrator` on SQLite, in PostgreSQL's types. A fleet's database always
/// starts empty (no SQLite history is copied into it), so the data conversions of the
/// SQLite steps (v5 moved v3's pruned names into `archive`) have nothing to convert here.
/// Applied in one transaction under an advisory lock: relays starting together migrate once.
enum PostgresSchema {
    static let migrations: [(name: String, sql: [String])] = [
        ("v1", ["""
            CREATE TABLE run (
                id text PRIMARY KEY, client text NOT NULL, server text NOT NULL, kind text NOT NULL,
                state text NOT NULL, started_at timestamptz NOT NULL, ended_at timestamptz,
                bytes_to_server bigint NOT NULL, bytes_from_server bigint NOT NULL,
                borg_exit_status integer, archive text, stats text, error text, log_file text,
                agent_pid integer NOT NULL)
            """,
            "CREATE INDEX run_client ON run (client)",
            "CREATE INDEX run_state ON run (state)"]),
        ("v2", ["ALTER TABLE run ADD COLUMN agent_start bigint, ADD COLUMN queued_at timestamptz, ADD COLUMN trigger text",
                "CREATE INDEX run_started ON run (started_at)"]),
        ("v3", ["""
            CREATE TABLE pruned_archive (client text NOT NULL, archive text NOT NULL, run_id text NOT NULL,
                pruned_at timestamptz NOT NULL, PRIMARY KEY (client, archive))
            """]),
        ("v4", ["ALTER TABLE run ADD COLUMN attempts text"]),
        ("v5", ["""
            CREATE TABLE archive (seq bigserial PRIMARY KEY, client text NOT NULL, name text NOT NULL, id text,
                run_id text NOT NULL, created_at timestamptz NOT NULL, pruned_at timestamptz, pruned_by_run text)
            """,
            "CREATE INDEX archive_client ON archive (client, pruned_at)",
            "DROP TABLE pruned_archive"]),
        ("v6", ["ALTER TABLE run ADD COLUMN alarm text"]),
        ("v7", ["""
            ALTER TABLE run ADD COLUMN relay text, ADD COLUMN lease_until timestamptz, ADD COLUMN operation text,
                ADD COLUMN pinned_relay text, ADD COLUMN scheduled_for timestamptz,
                ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false
            """,
            // One run per client at a time, for the whole fleet.
            "CREATE UNIQUE INDEX run_one_running ON run (client) WHERE state = 'running'",
            // A schedule's due time is enqueued once, whichever relay leads the scheduler.
            "CREATE UNIQUE INDEX run_slot ON run (client, kind, scheduled_for) WHERE scheduled_for IS NOT NULL",
            // The claim's order: its LIMIT 1 stops at the first claimable row.
            "CREATE INDEX run_queued ON run (queued_at, id) WHERE state = 'queued'",
            // Each relay reads the runs the others finished (monitoring), every few seconds.
            "CREATE INDEX run_ended ON run (ended_at)",
            """
            CREATE TABLE relay_node (name text PRIMARY KEY, instance text NOT NULL, host text NOT NULL,
                pid integer NOT NULL, version text NOT NULL, started_at timestamptz NOT NULL,
                heartbeat_at timestamptz NOT NULL, socket text NOT NULL)
            """,
            "CREATE TABLE run_log (run_id text PRIMARY KEY, relay text NOT NULL, body bytea NOT NULL, complete boolean NOT NULL, updated_at timestamptz NOT NULL)",
        ]),
    ]

    /// The key of the advisory lock migrations take (any constant shared by all relays).
    static let migrationLock: Int64 = 0x626f_7267_0001
    /// The key of the scheduler's advisory lock.
    static let schedulerLock: Int64 = 0x626f_7267_0002

    /// Applies what is missing; the names applied.
    @discardableResult
    static func migrate(_ client: PostgresClient) throws(HistoryError) -> [String] {
        try client.transaction { c in
            _ = try client.run(c, "SELECT pg_advisory_xact_lock(\(migrationLock))")
            _ = try client.run(c, "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL)")
            let done = Set(try client.run(c, "SELECT name FROM schema_migrations").map { try $0.decode(String.self) })
            let known = Set(migrations.map(\.name))
            if let unknown = done.subtracting(known).sorted().first {
                throw HistoryError.database(path: client.settings.description, detail:
                    "the database was migrated by a newer borg-relay (migration \(unknown) is unknown to this one): upgrade this relay to the fleet's version")
            }
            var applied: [String] = []
            for m in migrations where !done.contains(m.name) {
                for sql in m.sql { _ = try client.run(c, PostgresQuery(unsafeSQL: sql)) }
                _ = try client.run(c, "INSERT INTO schema_migrations (name, applied_at) VALUES (\(m.name), now())")
                applied.append(m.name)
            }
            return applied
        }
    }
}
