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

    /// The keys to pin for the fetch: with a fingerprint, only the key that has it (a
    /// scan makes one connection per key type, so a man in the middle could answer one of
    /// them with its own key: pinning every key scanned would let it in); without one, the
    /// key the operator is asked about, the first of ed25519, ECDSA, RSA.
    public static func pins(_ keys: [HostKeyInfo], fingerprint: String?) -> [HostKeyInfo] {
        if let fingerprint {
            let want = fingerprint.hasPrefix("SHA256:") ? fingerprint : "SHA256:" + fingerprint
            return keys.filter { $0.fingerprint == want }
        }
        for prefix in ["ssh-ed25519", "ecdsa-", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] {
            if let k = keys.first(where: { $0.type.hasPrefix(prefix) }) { return [k] }
        }
        return keys.first.map { [$0] } ?? []
    }

    /// Whether a bundle that failed to open is worth passing over for an older one (it is
    /// damaged, renamed, not a bundle, sealed to another key), not a failure of this host.
    public static func isBundleFault(_ error: RecoveryError) -> Bool {
        switch error {
        case .notABundle, .unsupportedVersion, .damaged, .malformedContents, .renamed, .wrongSecret, .otherRelay: return true
        default: return false
        }
    }

    /// The state repository's bundles, newest first (at most `tries`), each given to `body`
    /// until one is taken: a bundle `body` refuses for a fault of its own
    /// (`isBundleFault`) is reported through `skipped` and the next older one is tried;
    /// any other error ends the search. Reached with `pinned` as the server's keys.
    public func firstGoodBundle<T>(pinned: [HostKeyInfo], tries: Int = 5, now: Date = Date(),
                                   skipped: (String, RecoveryError) -> Void,
                                   _ body: (String, [UInt8]) throws(RecoveryError) -> T) throws(RecoveryError) -> T {
        let (repo, work) = try prepare(pinned: pinned)
        defer { StateRepository.removeWork(work) }
        let names = try StateArchives.candidates(try repo.archiveNames(work: work), relay: relay, repository: repository, now: now)
        var first: RecoveryError?
        for name in names.prefix(tries) {
            do {
                return try body(name, try repo.fetch(name, work: work))
            } catch {
                guard Self.isBundleFault(error) else { throw error }
                skipped(name, error)
                if first == nil { first = error }
            }
        }
        throw first!
    }

    /// The state repository reached with `pinned` as the server's only keys, and a private
    /// work directory (the caller removes it).
    private func prepare(pinned: [HostKeyInfo]) throws(RecoveryError) -> (StateRepository, String) {
        guard !pinned.isEmpty else { throw .hostKey("no host key of \(host) to pin: nothing was fetched") }
        guard repository.hasPrefix("/") else { throw .config("--repository \(repository): an absolute path on the server is needed") }
        if let why = FileCheck.unreadableReason(key) { throw .config("--key \(key): \(why)") }
        let work = try StateRepository.makeWork(under: FileManager.default.temporaryDirectory.path)
        let knownHosts = work + "/known_hosts"
        let name = HostKeyProbe.pinName(host: host, port: port)
        let lines = pinned.map { $0.knownHostsLine(name: name) }.joined(separator: "\n") + "\n"
        guard FileManager.default.createFile(atPath: knownHosts, contents: Data(lines.utf8), attributes: [.posixPermissions: 0o600]) else {
            StateRepository.removeWork(work)
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
        return (repo, work)
    }
}
