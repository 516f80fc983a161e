import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import RelayCore
import Synchronization

/// One connection to the fleet's PostgreSQL, used synchronously: the store's callers (the
/// run manager, run threads) are synchronous, as with SQLite. Each call waits for its
/// answer on the calling thread (never an event-loop thread); the connection is opened on
/// first use and again after it broke, within `connectTimeout`. Calls are serialised.
///
/// The role's password: postgres-nio's configuration takes a `String`, so it is one here
/// (read from `database_password_file` or PGPASSWORD at start). It is not a backup
/// passphrase and never leaves this process but to PostgreSQL's SCRAM exchange.
final class PostgresClient: Sendable {
    let settings: DatabaseSettings
    private let configuration: PostgresConnection.Configuration
    private let logger: Logger
    private let state = Mutex<Connection>(Connection())

    private struct Connection {
        var open: PostgresConnection?
        /// The last failed attempt to connect: calls fail at once for `retryAfter` after it
        /// (a database that does not answer would otherwise cost every call a connect
        /// timeout, and the run manager's callers would wait in line behind it).
        var failedAt: ContinuousClock.Instant?
        var failure = ""
    }

    static let retryAfter: Duration = .seconds(2)
    /// The longest one call (or transaction) may take.
    static let deadline: TimeAmount = .seconds(10)
    private let nextID = Atomic<Int>(1)

    /// Reads the password (file, else PGPASSWORD) and prepares TLS; nothing is connected yet.
    init(_ settings: DatabaseSettings, environment: [String: String] = ProcessInfo.processInfo.environment,
         logger: Logger) throws(HistoryError) {
        self.settings = settings
        self.logger = logger
        let password = try Self.password(settings, environment: environment)
        let tls: PostgresConnection.Configuration.TLS
        switch settings.tls {
        case .disable:
            tls = .disable
        case .require, .verifyFull:
            var c = TLSConfiguration.makeClientConfiguration()
            if settings.tls == .require { c.certificateVerification = .none }
            if let root = settings.rootCertificate { c.trustRoots = .file(root) }
            do {
                tls = .require(try NIOSSLContext(configuration: c))
            } catch {
                throw HistoryError.database(path: settings.description, detail: "cannot set up TLS (sslrootcert \(settings.rootCertificate ?? "system roots")): \(error)")
            }
        }
        var config = PostgresConnection.Configuration(host: settings.host, port: settings.port, username: settings.user,
                                                      password: password, database: settings.database, tls: tls)
        config.options.connectTimeout = .seconds(5)
        config.options.additionalStartupParameters = [("application_name", "borg-relay")]
        configuration = config
    }

    static func password(_ s: DatabaseSettings, environment: [String: String]) throws(HistoryError) -> String? {
        if let file = s.passwordFile {
            var st = stat()
            guard stat(file, &st) == 0 else {
                throw HistoryError.database(path: s.description, detail: "[relay] database_password_file \(file): \(String(cString: strerror(errno))); create it (one line, mode 0600)")
            }
            if st.st_mode & 0o007 != 0 {
                throw HistoryError.database(path: s.description, detail: "[relay] database_password_file \(file) can be read by everyone (mode \(String(st.st_mode & 0o777, radix: 8))): chmod 0600 \(file)")
            }
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw HistoryError.database(path: s.description, detail: "[relay] database_password_file \(file) cannot be read by the agent's user")
            }
            let line = text.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
            guard !line.isEmpty else {
                throw HistoryError.database(path: s.description, detail: "[relay] database_password_file \(file) is empty; its first line is the password")
            }
            return line
        }
        return environment["PGPASSWORD"]
    }

    /// Runs one statement; its rows.
    @discardableResult
    func query(_ q: PostgresQuery) throws(HistoryError) -> [PostgresRow] {
        try withConnection { c in try c.query(q, logger: logger).wait().rows }
    }

    /// Runs `body` in one transaction on the connection (BEGIN … COMMIT, ROLLBACK on error).
    func transaction<T>(_ body: (PostgresConnection) throws -> T) throws(HistoryError) -> T {
        try withConnection { c in
            _ = try c.query("BEGIN", logger: logger).wait()
            do {
                let result = try body(c)
                _ = try c.query("COMMIT", logger: logger).wait()
                return result
            } catch {
                _ = try? c.query("ROLLBACK", logger: logger).wait()
                throw error
            }
        }
    }

    /// Runs one statement on a connection of the caller's (the scheduler's lock, a
    /// migration's transaction). As with the client's own connection, one that does not
    /// answer within `deadline` is closed, which fails the call (the scheduler's lock goes
    /// with it, and another relay takes it) instead of holding the caller until TCP gives up.
    func run(_ c: PostgresConnection, _ q: PostgresQuery) throws -> [PostgresRow] {
        let guardTask = c.eventLoop.scheduleTask(in: Self.deadline) { let _: EventLoopFuture<Void> = c.close() }
        defer { guardTask.cancel() }
        return try c.query(q, logger: logger).wait().rows
    }

    /// Opens a separate connection (the scheduler's advisory lock lives on one).
    func connect() throws -> PostgresConnection {
        try PostgresConnection.connect(on: MultiThreadedEventLoopGroup.singleton.next(), configuration: configuration,
                                       id: nextID.wrappingAdd(1, ordering: .relaxed).oldValue, logger: logger).wait()
    }

    /// A separate connection for async use (LISTEN), without blocking a thread.
    func connectAsync() async throws -> PostgresConnection {
        try await PostgresConnection.connect(configuration: configuration, id: nextID.wrappingAdd(1, ordering: .relaxed).oldValue,
                                             logger: logger)
    }

    func close() {
        let c = state.withLock { s in defer { s.open = nil }; return s.open }
        try? c?.close().wait()
    }

    deinit { close() }

    private func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws(HistoryError) -> T {
        do {
            return try state.withLock { s throws -> T in
                let c: PostgresConnection
                if let open = s.open, !open.isClosed {
                    c = open
                } else {
                    if let at = s.failedAt, ContinuousClock.now - at < Self.retryAfter {
                        throw HistoryError.database(path: settings.description, detail: s.failure)
                    }
                    if let broken = s.open { try? broken.close().wait() }
                    s.open = nil
                    do {
                        c = try connect()
                    } catch {
                        s.failedAt = ContinuousClock.now
                        s.failure = Self.describe(error)
                        throw error
                    }
                    s.open = c
                    s.failedAt = nil
                }
                // A database that stops answering mid-call (packets dropped, no reset) would
                // hold the call until TCP gives up, minutes later: after `deadline` the
                // connection is closed, which fails the call.
                let guardTask = c.eventLoop.scheduleTask(in: Self.deadline) { let _: EventLoopFuture<Void> = c.close() }
                defer { guardTask.cancel() }
                do {
                    return try body(c)
                } catch {
                    if c.isClosed { s.open = nil }
                    throw error
                }
            }
        } catch let e as HistoryError {
            throw e
        } catch {
            throw HistoryError.database(path: settings.description, detail: Self.describe(error))
        }
    }

    /// PostgreSQL's own message where there is one (postgres-nio's description hides it).
    static func describe(_ error: any Error) -> String {
        if let p = error as? PSQLError {
            if let message = p.serverInfo?[.message] {
                return "\(message) (SQLSTATE \(p.serverInfo?[.sqlState] ?? "?"))"
            }
            return "\(p.code)\(p.underlying.map { ": \($0)" } ?? "") (is PostgreSQL running and reachable?)"
        }
        return "\(error)"
    }

    static func isUniqueViolation(_ error: any Error) -> Bool {
        (error as? PSQLError)?.serverInfo?[.sqlState] == "23505"
    }
}
