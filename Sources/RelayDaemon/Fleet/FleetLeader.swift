import Foundation
import Logging
import PostgresNIO
import RelayCore

/// The fleet's one scheduler: the relay holding a PostgreSQL advisory lock, on a
/// connection of its own, enqueues scheduled runs. The lock lives as long as that
/// connection: when the relay (or its link to the database) goes, PostgreSQL ends the
/// session and another relay takes the lock at its next try (every scheduler tick).
/// Due times are enqueued once even if two relays ever believed they led: a run's
/// `scheduled_for` is unique per client and kind.
final class FleetLeader: @unchecked Sendable {
    // Used only from the scheduler's task (one at a time), hence unchecked.
    private let client: PostgresClient
    private let logger: Logger
    private var connection: PostgresConnection?

    init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Whether this relay leads now: it keeps the lock while its connection answers, and
    /// tries to take it otherwise.
    func lead() -> Bool {
        if let c = connection {
            if !c.isClosed, (try? client.run(c, "SELECT 1")) != nil { return true }
            logger.warning("fleet: lost the scheduler's lock (its database connection broke)")
            try? c.close().wait()
            connection = nil
        }
        let c: PostgresConnection
        do {
            c = try client.connect()
        } catch {
            logger.debug("fleet: cannot try the scheduler's lock: \(PostgresClient.describe(error))")
            return false
        }
        do {
            // The lock is released when PostgreSQL ends this session. A relay that dies
            // closes its socket and the session ends at once; one cut off from the database
            // (a partition: no FIN, no RST) would leave the session, and the fleet without
            // a scheduler, until the server's TCP keepalive gave up (two hours by default).
            // Keepalives on this session's socket make the server notice within about
            // `silentAfter` seconds.
            _ = try client.run(c, Self.keepalive)
            let rows = try client.run(c, "SELECT pg_try_advisory_lock(\(PostgresSchema.schedulerLock))")
            if try rows.first?.decode(Bool.self) == true {
                connection = c
                return true
            }
        } catch {
            logger.debug("fleet: cannot try the scheduler's lock: \(PostgresClient.describe(error))")
        }
        // Closed on every other path (postgres-nio asserts a connection is closed before release).
        try? c.close().wait()
        return false
    }

    /// Idle seconds before the server probes the leader's connection, the seconds between
    /// probes, and how many go unanswered before it ends the session; and how long sent data
    /// may stay unacknowledged (milliseconds). A lost leader's lock is free again after
    /// about idle + interval × count seconds; the new leader enqueues what came due
    /// meanwhile (it looks back `RunManager.handover`). Settings of the session: a unix-socket
    /// connection ignores them.
    static let keepaliveIdle = 10, keepaliveInterval = 5, keepaliveCount = 3
    static var silentAfter: Int { keepaliveIdle + keepaliveInterval * keepaliveCount }
    static var keepalive: PostgresQuery { """
        SELECT set_config('tcp_keepalives_idle', \(String(keepaliveIdle)), false),
               set_config('tcp_keepalives_interval', \(String(keepaliveInterval)), false),
               set_config('tcp_keepalives_count', \(String(keepaliveCount)), false),
               set_config('tcp_user_timeout', \(String(silentAfter * 1000)), false)
        """ }

    func resign() {
        if let c = connection {
            _ = try? client.run(c, "SELECT pg_advisory_unlock(\(PostgresSchema.schedulerLock))")
            try? c.close().wait()
        }
        connection = nil
    }
}
