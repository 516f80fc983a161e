import Foundation
import Hummingbird
import Logging
import NIOCore
import RelayCore
import ServiceLifecycle
import UnixSignals

/// `relay-agent serve`: the control API, the scheduler and the runs, as one
/// swift-service-lifecycle group.
///
/// - SIGTERM/SIGINT: no new runs; running ones get `[relay] shutdown_grace` seconds to
///   finish, then are cancelled cleanly; exit 0.
/// - SIGHUP: the config is read again; a config with mistakes is refused (logged) and the
///   old one stays.
/// - With NOTIFY_SOCKET set (systemd `Type=notify`): READY=1 once the socket listens,
///   RELOADING=1/READY=1 around a reload, STOPPING=1 at shutdown.
public enum Daemon {
    public static func run(configPath: String, config: RelayConfig, logger: Logger) async throws {
        // Files the agent creates are its own (history, logs, the socket until chmod).
        umask(0o077)
        signal(SIGPIPE, SIG_IGN)
        FileLimit.raise(logger: logger)

        // Refuse to start with a vault others could read (the check names the file and mode).
        if FileManager.default.fileExists(atPath: config.relay.vaultSecretKeyPath) {
            try Vault.readSecretKey(path: config.relay.vaultSecretKeyPath).wipe()
        }
        let history: any RunStore
        if let db = config.relay.database {
            history = try PostgresStore(db, relayName: config.relay.name, logger: logger)
            logger.info("fleet: relay \(config.relay.name) on \(db)")
        } else {
            history = try HistoryStore(path: config.relay.historyPath)
            for id in try history.markInterrupted() {
                logger.warning("run \(id) was interrupted (its agent ended mid-run); marked in the history")
            }
        }
        // Operation directories of runs a killed agent left behind (its runs are marked
        // interrupted above; runs of a foreground relay-agent run still running are kept).
        StaleRunFiles.remove(isStale: { id in
            guard let r = try? history.get(id) else { return false }
            return r.state.isFinished
        }, logger: logger)
        StateRepository.removeStaleWork(in: config.relay.stateDir, logger: logger)
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let manager = RunManager(config: config, history: history, logger: logger, connectorPath: exe)
        if let store = manager.fleetStore {
            try store.register(instance: manager.instance, host: ProcessInfo.processInfo.hostName, pid: getpid(),
                               socket: config.relay.socket, lease: config.relay.lease)
            await manager.recoverOwnRuns()
        }
        await manager.prune()
        await manager.startMonitoring()

        let socketPath = config.relay.socket
        try ControlSocket.prepare(path: socketPath)
        let access = try ControlSocket.access(config.relay)
        let policy = PeerPolicy(access: access)
        let router = ControlRoutes.router(manager: manager, policy: policy, logger: logger)
        var httpLogger = logger
        httpLogger.logLevel = .warning
        let connections = ControlConnections(cap: .standard, logger: logger)
        let app = Application(
            router: router,
            // A client that goes quiet mid-request does not hold its connection forever; the
            // cap keeps a flood of connections from taking the agent's file descriptors.
            server: .http1(configuration: .init(additionalChannelHandlers: [ControlConnectionHandler(registry: connections)],
                                                idleTimeout: .seconds(30))),
            configuration: .init(address: .unixDomainSocket(path: socketPath), serverName: "relay-agent"),
            onServerRunning: { _ in
                // The socket's group may connect (0660); the agent's primary group unless
                // [relay] socket_group names another.
                if access.socketGID != getegid() && chown(socketPath, uid_t.max, access.socketGID) != 0 {
                    logger.error("cannot give \(socketPath) to group \(access.socketGroupName) ([relay] socket_group): \(String(cString: strerror(errno)))")
                }
                chmod(socketPath, 0o660)
                logger.info("relay-agent \(getpid()) listening on \(socketPath); \(config.clients.count) clients, max_parallel \(config.relay.maxParallel)")
                SystemdNotifier.notify("READY=1\nSTATUS=listening on \(socketPath)")
            },
            logger: httpLogger
        )
        let scheduler = SchedulerService(manager: manager, logger: logger, timeZone: .current)
        let reloader = ReloadService(configPath: configPath, manager: manager, logger: logger)
        let drainer = DrainService(manager: manager, logger: logger)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: app)]
        if let listen = config.metrics?.listen, let why = ListenProbe.problem(host: listen.host, port: listen.port) {
            throw RunError.setup("[metrics] listen = \"\(listen)\": cannot listen there: \(why); choose another port or stop what uses it")
        }
        if let listen = config.metrics?.listen {
            services.append(.init(service: MetricsServer.application(listen: listen, metrics: manager.metrics, logger: httpLogger)))
            logger.info("metrics on http://\(listen)/metrics")
        }
        if let web = config.web {
            services.append(.init(service: try WebServer.application(web: web, config: config, manager: manager, access: access,
                                                                     logger: logger, httpLogger: httpLogger)))
        }
        services += [.init(service: scheduler), .init(service: reloader),
                     .init(service: StateBackupService(backups: manager.stateBackups, logger: logger, timeZone: .current))]
        if let store = manager.fleetStore { services.append(.init(service: FleetService(manager: manager, store: store, logger: logger))) }
        services.append(.init(service: drainer))
        let group = ServiceGroup(configuration: .init(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
        unlink(socketPath)
        if case .unix(let path) = config.web?.listen { unlink(path) }
        logger.info("relay-agent stopped")
    }
}

/// Waits for the shutdown signal, then lets the runs finish (or cancels them after the
/// grace period). Last in the group, so it is the first to be shut down and the API
/// still answers (`status`) while runs drain.
struct DrainService: Service {
    let manager: RunManager
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        SystemdNotifier.notify("STOPPING=1")
        let grace = await TimeInterval(manager.config.relay.shutdownGrace)
        logger.info("shutdown requested: no new runs")
        await manager.shutdown(grace: grace)
        await manager.stopMonitoring()
        await manager.leaveFleet()
    }
}

/// SIGHUP: reads the config again. A config with a mistake is refused with the error
/// logged; the old one stays in force.
struct ReloadService: Service {
    let configPath: String
    let manager: RunManager
    let logger: Logger

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            SystemdNotifier.notify("RELOADING=1\nMONOTONIC_USEC=\(SystemdNotifier.monotonicMicroseconds())")
            do {
                let new = try ConfigLoader.load(path: configPath)
                let old = await manager.config
                if new.relay.socket != old.relay.socket || new.relay.stateDir != old.relay.stateDir
                    || new.relay.socketGroup != old.relay.socketGroup || new.relay.adminGroup != old.relay.adminGroup {
                    logger.warning("SIGHUP: [relay] socket, state_dir, socket_group and admin_group changes take effect at the next restart")
                }
                if new.relay.name != old.relay.name || new.relay.database != old.relay.database {
                    logger.warning("SIGHUP: [relay] name and database changes take effect at the next restart")
                }
                if new.web != old.web {
                    logger.warning("SIGHUP: [web] changes take effect at the next restart")
                }
                if new.metrics?.listen != old.metrics?.listen {
                    logger.warning("SIGHUP: a change of [metrics] listen takes effect at the next restart (textfile and [notify] changes apply now)")
                }
                await manager.reload(new, timeZone: .current)
                await manager.stateBackups.reloaded(new)
            } catch {
                logger.error("SIGHUP: the new configuration was refused, the old one stays in force: \(error)")
            }
            SystemdNotifier.notify("READY=1")
        }
    }
}

/// The agent's file descriptor soft limit, raised to the hard limit at start: every control
/// connection and every run's sessions, pipes and sockets take descriptors.
enum FileLimit {
    static func raise(logger: Logger) {
        var lim = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0, lim.rlim_cur < lim.rlim_max else { return }
        let old = lim.rlim_cur
        lim.rlim_cur = lim.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0 {
            logger.debug("file descriptor limit raised from \(old) to \(lim.rlim_max)")
        } else {
            logger.warning("cannot raise the file descriptor limit from \(old) to \(lim.rlim_max): \(String(cString: strerror(errno)))")
        }
    }
}

/// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.
enum SystemdNotifier {
    static func notify(_ state: String) {
        guard let path = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"], !path.isEmpty else { return }
        _ = UnixSocket.sendDatagram(Array(state.utf8), to: path)
    }

    static func monotonicMicroseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
    }
}
