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

    func resign() {
        if let c = connection {
            _ = try? client.run(c, "SELECT pg_advisory_unlock(\(PostgresSchema.schedulerLock))")
            try? c.close().wait()
        }
        connection = nil
    }
}
