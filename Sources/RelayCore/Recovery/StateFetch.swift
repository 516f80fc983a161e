import Foundation
import Logging

/// Fetching the newest bundle on a fresh host, before any config exists: the server is
/// named on the command line, its host key checked by the operator, and pinned only in a
/// private temporary known_hosts for this one fetch.
public struct StateFetch {
    public var host: String
    public var port: Int
    public var user: String
    public var key: String
    public var repository: String
    public var relay: String?
    public var connectorPath: String

    public init(host: String, port: Int, user: String, key: String, repository: String, relay: String?, connectorPath: String) {
        self.host = host
        self.port = port
        self.user = user
        self.key = key
        self.repository = repository
        self.relay = relay
        self.connectorPath = connectorPath
    }

    /// The server's host keys (no authentication), for the operator to check.
    public func hostKeys() throws(RecoveryError) -> [HostKeyInfo] {
        do {
            return try HostKeyProbe.scan(host: host, port: port, timeout: RelaySettings.Defaults.connectTimeout)
        } catch {
            throw .hostKey("\(error)")
        }
    }

    /// The newest bundle of the state repository, reached with `pinned` as the server's keys.
    public func newestBundle(pinned: [HostKeyInfo]) throws(RecoveryError) -> (archive: String, bytes: [UInt8]) {
        guard repository.hasPrefix("/") else { throw .config("--repository \(repository): an absolute path on the server is needed") }
        if let why = FileCheck.unreadableReason(key) { throw .config("--key \(key): \(why)") }
        let work = try StateRepository.makeWork(under: FileManager.default.temporaryDirectory.path)
        defer { StateRepository.removeWork(work) }
        let knownHosts = work + "/known_hosts"
        let name = HostKeyProbe.pinName(host: host, port: port)
        let lines = pinned.map { $0.knownHostsLine(name: name) }.joined(separator: "\n") + "\n"
        guard FileManager.default.createFile(atPath: knownHosts, contents: Data(lines.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw .borg(step: "preparing", detail: "cannot write \(knownHosts)")
        }
        var relaySettings = RelaySettings(stateDir: work, socket: work + "/none.sock", knownHosts: knownHosts, maxParallel: 1,
                                          keepaliveInterval: RelaySettings.Defaults.keepaliveInterval,
                                          keepaliveCount: RelaySettings.Defaults.keepaliveCount,
                                          connectTimeout: RelaySettings.Defaults.connectTimeout, ciphers: nil)
        relaySettings.connectAttempts = 1
        let endpoint = HostEndpoint(host: host, port: port, user: user, key: key, via: [])
        var logger = Logger(label: "borg-relay.recover")
        logger.logLevel = .error
        let repo = StateRepository(server: ServerConfig(name: "state", endpoint: endpoint, maintenanceKey: nil),
                                   repository: repository, options: SessionOptions(relaySettings),
                                   borgBaseDir: work + "/borg", connectorPath: connectorPath, logger: logger)
        let names = try repo.archiveNames(work: work)
        let newest = try StateArchives.newest(names, relay: relay, repository: repository)
        return (newest, try repo.fetch(newest, work: work))
    }
}
