import CLibSSH
import Foundation

/// One host key a server offered.
public struct HostKeyInfo: Sendable, Equatable {
    /// e.g. ssh-ed25519
    public let type: String
    public let base64: String
    /// SHA256:… as `ssh-keygen -l` prints it.
    public let fingerprint: String

    /// The known_hosts line for `name` (`host` or `[host]:port`).
    public func knownHostsLine(name: String) -> String { "\(name) \(type) \(base64)" }
}

/// Asks a server for its host keys without authenticating (`relayctl hostkey`): one
/// connection per key algorithm, so that every key the host has is shown.
public enum HostKeyProbe {
    /// One probe per key type. An RSA key is the same key whichever signature algorithm the
    /// server signs with; Dropbear offers only rsa-sha2-256 and ssh-rsa, OpenSSH all three.
    static let algorithms = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                             "rsa-sha2-512,rsa-sha2-256,ssh-rsa"]

    /// What one connection for one key type found.
    enum Outcome {
        case key(HostKeyInfo?)
        /// The host answered but has no key of this type.
        case noKeyOfType(String)
        /// The connection failed before key exchange (refused, dropped, timed out).
        case failed(String)
    }

    /// `via`: jump names (from `options.jumps`) to reach the host through.
    public static func scan(host: String, port: Int, timeout: Int, via: [String] = [],
                            options: SessionOptions? = nil) throws(SSHError) -> [HostKeyInfo] {
        var keys: [HostKeyInfo] = []
        var lastError = ""
        var reached = false
        let label = "\(host):\(port)" + (via.isEmpty ? "" : " via \(via.joined(separator: ", "))")
        for algorithm in algorithms {
            // A connection dropped before key exchange is tried again: Dropbear drops a new
            // unauthenticated connection while five from the same address are still ending.
            for attempt in 1...3 {
                switch try probe(host: host, port: port, timeout: timeout, via: via, options: options,
                                 algorithm: algorithm, label: label) {
                case .key(let info):
                    reached = true
                    if let info, !keys.contains(info) { keys.append(info) }
                case .noKeyOfType(let e):
                    reached = true
                    lastError = e
                case .failed(let e):
                    lastError = e
                    if attempt < 3 && e.contains("disconnected") {
                        usleep(300_000 * UInt32(attempt))
                        continue
                    }
                }
                break
            }
        }
        if keys.isEmpty {
            throw SSHError.connect(host: label, detail: reached ? "no host key in a type libssh accepts: \(lastError)" : lastError)
        }
        return keys
    }

    /// One connection that offers only `algorithm` as host key type.
    static func probe(host: String, port: Int, timeout: Int, via: [String], options: SessionOptions?,
                      algorithm: String, label: String) throws(SSHError) -> Outcome {
        guard let s = ssh_new() else { throw SSHError.connect(host: label, detail: "ssh_new failed") }
        var tunnel: AdoptedSocket?
        defer {
            ssh_free(s)
            tunnel?.closeIfStillOpen()  // libssh 0.10 leaves a given fd open
        }
        if !via.isEmpty, let options {
            let target = HostEndpoint(host: host, port: port, user: "-", key: "-", via: via)
            let fd = try JumpPool.connection(to: target, options: options).fd
            tunnel = AdoptedSocket(fd)
            _ = relay_ssh_opt_int(s, SSH_OPTIONS_FD, fd)
        }
        _ = relay_ssh_opt_string(s, SSH_OPTIONS_HOST, host)
        _ = relay_ssh_opt_uint(s, SSH_OPTIONS_PORT, UInt32(port))
        _ = relay_ssh_opt_long(s, SSH_OPTIONS_TIMEOUT, timeout)
        _ = relay_ssh_opt_string(s, SSH_OPTIONS_HOSTKEYS, algorithm)
        _ = relay_ssh_opt_string(s, SSH_OPTIONS_KNOWNHOSTS, "/dev/null")
        _ = relay_ssh_opt_string(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null")
        _ = relay_ssh_opt_bool(s, SSH_OPTIONS_PROCESS_CONFIG, 0)
        guard ssh_connect(s) == SSH_OK else {
            let e = String(cString: ssh_get_error(UnsafeMutableRawPointer(s)))
            // "no match for method server host key algo" just means the host has no key of this type.
            return e.contains("host key") || e.contains("hostkey") ? .noKeyOfType(e) : .failed(e)
        }
        defer { ssh_disconnect(s) }
        var key: ssh_key?
        guard ssh_get_server_publickey(s, &key) == SSH_OK, let k = key else { return .key(nil) }
        defer { ssh_key_free(k) }
        var b64: UnsafeMutablePointer<CChar>?
        guard ssh_pki_export_pubkey_base64(k, &b64) == SSH_OK, let b = b64 else { return .key(nil) }
        defer { ssh_string_free_char(b) }
        let type = ssh_key_type_to_char(ssh_key_type(k)).map { String(cString: $0) } ?? "unknown"
        return .key(HostKeyInfo(type: type, base64: String(cString: b), fingerprint: SSHKeys.fingerprint(k) ?? "SHA256:?"))
    }

    /// The name a host is pinned under: `host` for port 22, else `[host]:port`.
    public static func pinName(host: String, port: Int) -> String { port == 22 ? host : "[\(host)]:\(port)" }

    /// Keys already pinned for `name` in `knownHosts` (base64 blobs), read with libssh's parser.
    public static func pinned(name: String, knownHosts: String) -> [String] {
        KnownHosts.pinned(for: name, path: knownHosts).map(\.base64)
    }

    /// The public half of a private key file, as an authorized_keys key (`type base64`).
    public static func publicKey(ofPrivateKey path: String) throws(SSHError) -> String {
        var priv: ssh_key?
        guard ssh_pki_import_privkey_file(path, nil, nil, nil, &priv) == SSH_OK, let p = priv else {
            throw SSHError.keyFile(host: "relay", path: path,
                                   detail: FileCheck.unreadableReason(path) ?? "not an unencrypted private key libssh can read")
        }
        defer { ssh_key_free(p) }
        var pub: ssh_key?
        guard ssh_pki_export_privkey_to_pubkey(p, &pub) == SSH_OK, let k = pub else {
            throw SSHError.keyFile(host: "relay", path: path, detail: "cannot derive its public key")
        }
        defer { ssh_key_free(k) }
        var b64: UnsafeMutablePointer<CChar>?
        guard ssh_pki_export_pubkey_base64(k, &b64) == SSH_OK, let b = b64 else {
            throw SSHError.keyFile(host: "relay", path: path, detail: "cannot encode its public key")
        }
        defer { ssh_string_free_char(b) }
        let type = ssh_key_type_to_char(ssh_key_type(k)).map { String(cString: $0) } ?? "unknown"
        return "\(type) \(String(cString: b))"
    }
}
