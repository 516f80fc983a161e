import Foundation

/// The whole configuration of one relay, validated. Built only by `ConfigLoader`.
public struct RelayConfig: Sendable, Equatable {
    public var file: String
    public var relay: RelaySettings
    public var servers: [String: ServerConfig]
    public var jumps: [String: JumpConfig]
    public var clients: [String: ClientConfig]
    /// `[metrics]`; nil: no metrics are published.
    public var metrics: MetricsSettings? = nil
    /// `[web]`; nil: no status page.
    public var web: WebSettings? = nil
    /// `[notify.NAME]`, by name.
    public var notifiers: [String: NotifierConfig] = [:]

    public static let defaultPath = "/etc/borg-relay/relay.toml"

    /// The client named `name`, or a `ConfigError` listing the configured ones.
    public func client(_ name: String) throws(ConfigError) -> ClientConfig {
        guard let c = clients[name] else {
            throw ConfigError(file: file, table: "clients", key: nil,
                              kind: .unknownClient(name: name, known: clients.keys.sorted()))
        }
        return c
    }

    public func server(for client: ClientConfig) -> ServerConfig {
        // The loader guarantees that every client names an existing server.
        servers[client.server]!
    }
}

public struct RelaySettings: Sendable, Equatable {
    public static let defaultSocket = "/run/borg-relay/control.sock"
    /// The defaults of the keys the loader needs before it can make a `RelaySettings`; the
    /// other keys' defaults are the properties' initial values below. Nothing else holds a
    /// default of `[relay]`.
    public enum Defaults {
        public static let stateDir = "/var/lib/borg-relay"
        public static let knownHosts = "/etc/borg-relay/known_hosts"
        public static let maxParallel = 4
        public static let keepaliveInterval = 30
        public static let keepaliveCount = 4
        public static let connectTimeout = 30
    }
    public var stateDir: String
    public var socket: String
    public var knownHosts: String
    public var maxParallel: Int
    /// Seconds between keepalive probes on an idle session.
    public var keepaliveInterval: Int
    /// Unanswered probes after which a peer counts as dead.
    public var keepaliveCount: Int
    /// Seconds allowed for TCP connect and key exchange (authentication: authTimeout).
    public var connectTimeout: Int
    /// Cipher list to offer instead of the default (AES-GCM first with AES-NI, else chacha20).
    public var ciphers: String?
    /// Seconds the daemon lets running runs finish after SIGTERM before cancelling them.
    public var shutdownGrace: Int = 300
    /// Runs kept in the history per client (older ones and their logs are pruned).
    public var historyKeepRuns: Int = 1000
    /// Days a run is kept in the history (0: no age limit).
    public var historyKeepDays: Int = 400
    /// Seconds allowed for authentication, once connected.
    public var authTimeout: Int = 30
    /// Seconds allowed for opening a channel or a forward and starting its command.
    public var channelTimeout: Int = 30
    /// Seconds the splice may move no byte in either direction while borg runs (0: no limit).
    public var idleTimeout: Int = 3600
    /// Seconds a whole run may take (0: no limit).
    public var runTimeout: Int = 0
    /// Connection attempts per run (connection-level failures before borg starts).
    public var connectAttempts: Int = 3
    /// Seconds before the first retry; each further one waits twice as long (with jitter).
    public var retryDelay: Int = 10
    /// Runs going through the same jump share its session (one per jump and agent).
    public var shareJumps: Bool = true
    /// The group whose members may connect to the control socket (status, runs, log, run,
    /// cancel, list, info); the socket is chgrp'd to it. nil: the agent's primary group.
    public var socketGroup: String?
    /// The group whose members may also use the operations that read or rewrite the
    /// repository or the client (restore, borg, key-export, init, prune, compact, check).
    /// nil: only root and the agent's user may.
    public var adminGroup: String?
    /// This relay's name in a fleet (history rows, leases, the `relay` label of metrics).
    public var name: String = RelayName.hostDefault
    /// The fleet's shared PostgreSQL database; nil: the embedded SQLite history (one relay).
    public var database: DatabaseSettings?
    /// Seconds a claimed run's lease lasts without a heartbeat (fleet only): after that,
    /// another relay marks the run interrupted. At least 30: a relay that cannot renew
    /// stops its runs at half the lease, and borg gets `exitGrace` (15 s) to end.
    public var lease: Int = 60
    /// `state_server`: the `[servers.NAME]` whose repository `state_repository` holds this
    /// relay's sealed state bundles; nil: no state backup to a server.
    public var stateServer: String?
    /// `state_repository`: the absolute path of that repository on the server.
    public var stateRepository: String?
    /// `state_schedule`: when the daemon backs its state up (besides after each reload).
    public var stateSchedule: CronSchedule = RelaySettings.defaultStateSchedule
    public static let defaultStateSchedule = try! CronSchedule("@daily")

    public var vaultSecretKeyPath: String { stateDir + "/vault.key" }
    public var vaultPublicKeyPath: String { stateDir + "/vault.pub" }
    /// The recovery key's public half (`relayctl recovery init`, docs/recovery.md).
    public var recoveryPublicKeyPath: String { stateDir + "/recovery.pub" }
    public var logDir: String { stateDir + "/logs" }
    public var historyPath: String { stateDir + "/history.sqlite" }
}

/// Where and how to reach one SSH host (a server, a client or a jump).
public struct HostEndpoint: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var user: String
    public var key: String
    public var via: [String]

    /// `user@host:port` as shown in messages.
    public var display: String { "\(user)@\(host):\(port)" }
    /// The name the host is pinned under in known_hosts (`[host]:port` unless port 22).
    public var knownHostsName: String { port == 22 ? host : "[\(host)]:\(port)" }
}

public struct ServerConfig: Sendable, Equatable {
    public var name: String
    public var endpoint: HostEndpoint
    public var maintenanceKey: String?
}

public struct JumpConfig: Sendable, Equatable {
    public var name: String
    public var endpoint: HostEndpoint
}

public enum Transport: String, Sendable, Equatable {
    case tcp
    case unix
}

public struct Retention: Sendable, Equatable {
    public var within: String?
    public var hourly: Int?
    public var daily: Int?
    public var weekly: Int?
    public var monthly: Int?
    public var yearly: Int?
}

public struct ClientConfig: Sendable, Equatable {
    public var name: String
    /// The relays of a fleet that may run this client (by `[relay] name`); empty: all.
    public var relays: [String] = []
    public var endpoint: HostEndpoint
    public var server: String
    public var repository: String
    /// `sealed:<base64>` as printed by `relayctl seal`; nil for an unencrypted repository.
    public var passphrase: SealedValue?
    public var paths: [String]
    public var exclude: [String]
    public var compression: String?
    public var archive: String
    public var transport: Transport
    /// The borg executable on the client (`borg` from PATH unless set).
    public var borgPath: String
    public var schedule: CronSchedule?
    /// Seconds of random delay added to each scheduled start (spreads load).
    public var jitter: Int
    /// Run once at start-up if a scheduled time passed while the daemon was down.
    public var catchUp: Bool
    public var retention: Retention?
    /// Hook commands on the client, as argument vectors (not run through a shell unless
    /// the user writes `sh -c`).
    public var pre: [String]?
    public var post: [String]?
    /// Seconds each hook may run before it is killed (`timeout` on the client: coreutils or BusyBox).
    public var preTimeout: Int = 3600
    public var postTimeout: Int = 3600
    /// The forced command on the client (contrib/guard/borg-relay-guard), as argv; only
    /// `relayctl authorized-keys` uses it.
    public var guardCommand: [String]?
    /// `borg create --lock-wait`: seconds borg waits for the repository lock (a run cut
    /// off a moment ago may hold it until B's sshd notices).
    public var lockWait: Int = 300
    /// `borg create --checkpoint-interval` (borg's default 1800 when nil).
    public var checkpointInterval: Int?
    /// Retry a create that failed on a dropped link, once (borg resumes from its checkpoint).
    public var retry: Bool = false
    /// borg on the client may use the repository although it knew it under another
    /// location (a client that pushed to it directly before): the relay sets
    /// BORG_RELOCATED_REPO_ACCESS_IS_OK=yes for borg on the client.
    public var relocatedOK: Bool = false
    /// `max_age`: the last successful backup may be this old (seconds) before the client
    /// is overdue; nil: twice the schedule's period (`overdueAfter`).
    public var maxAge: TimeInterval?
    /// How old the last successful backup may be before the client is overdue: `max_age`,
    /// else twice the schedule's longest gap (`CronSchedule.period`); nil without either.
    /// Set by the loader.
    public var overdueAfter: TimeInterval?
    /// `check_schedule`: when `borg check` runs on the relay (through the read-only path).
    public var checkSchedule: CronSchedule?
    public var checkScope: CheckScope = .repository
    /// `check_max_duration`: seconds of a partial repository check (borg's --max-duration).
    public var checkMaxDuration: Int?
}

/// A passphrase sealed to the vault's public key. Holding one reveals nothing.
public struct SealedValue: Sendable, Equatable, CustomStringConvertible {
    public static let prefix = "sealed:"
    public let base64: String

    public init(base64: String) { self.base64 = base64 }

    /// Parses `sealed:<base64>`; nil if the text does not have that shape.
    public init?(text: String) {
        guard text.hasPrefix(Self.prefix) else { return nil }
        let b = String(text.dropFirst(Self.prefix.count))
        guard !b.isEmpty, Data(base64Encoded: b) != nil else { return nil }
        self.base64 = b
    }

    public var description: String { Self.prefix + base64 }
}
