/// Failures talking to a server, client or jump host over SSH. Each message names the
/// host (role, name and address) and, where it helps, the key fingerprints and the fix.
public enum SSHError: Error, CustomStringConvertible, Equatable, Sendable {
    case setup(host: String, detail: String)
    case connect(host: String, detail: String)
    case hostKeyUnknown(host: String, knownHosts: String, pinName: String, offered: String, keyType: String)
    case hostKeyChanged(host: String, knownHosts: String, expected: String, offered: String)
    case hostKeyOtherType(host: String, knownHosts: String, expected: String?, offered: String, keyType: String)
    case hostKeyCheckFailed(host: String, knownHosts: String, detail: String)
    case hostKeyRevoked(host: String, knownHosts: String, line: Int, offered: String, keyType: String)
    case hostCertificatesUnsupported(host: String, knownHosts: String, line: Int, pinName: String, offered: String, keyType: String)
    case keyFile(host: String, path: String, detail: String)
    case authDenied(host: String, keyPath: String, fingerprint: String, detail: String)
    case channel(host: String, what: String, detail: String)
    case forwardRefused(host: String, detail: String)
    case connectionLost(host: String, detail: String)
    case timedOut(host: String, what: String, seconds: Int, key: String, detail: String)
    case tunnelRefused(host: String, target: String, detail: String)

    public var description: String {
        switch self {
        case .setup(let host, let detail):
            return "\(host): cannot set up the SSH session: \(detail)"
        case .connect(let host, let detail):
            return "\(host): cannot connect: \(detail)"
        case .hostKeyUnknown(let host, let kh, let pinName, let offered, let keyType):
            return "\(host): host key is not pinned in \(kh) (the host offers \(keyType) \(offered)); "
                + "no connection is trusted on first use. Verify the fingerprint on the host "
                + "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and add its line for '\(pinName)' to \(kh)"
        case .hostKeyChanged(let host, let kh, let expected, let offered):
            return "\(host): HOST KEY CHANGED: \(kh) pins \(expected) but the host offers \(offered). "
                + "Stopped before authenticating. If the change is expected (reinstalled host), "
                + "replace the host's line in \(kh); otherwise treat this as an attack"
        case .hostKeyOtherType(let host, let kh, let expected, let offered, let keyType):
            let pinned = expected.map { "pins \($0)" } ?? "pins a key of another type"
            return "\(host): host key mismatch: \(kh) \(pinned) but the host offers \(keyType) \(offered). "
                + "Stopped before authenticating; pin the host's \(keyType) key in \(kh) if it is genuine"
        case .hostKeyRevoked(let host, let kh, let line, let offered, let keyType):
            return "\(host): HOST KEY REVOKED: the host offers \(keyType) \(offered), which line \(line) of \(kh) marks "
                + "@revoked. Stopped before authenticating. If the host has a new key, pin that one "
                + "(relayctl hostkey --add); never remove the @revoked line to make a run pass"
        case .hostCertificatesUnsupported(let host, let kh, let line, let pinName, let offered, let keyType):
            return "\(host): host key is not pinned in \(kh); line \(line) is a @cert-authority line, and borg-relay "
                + "does not accept host certificates (libssh 0.10 cannot verify them). Pin the host's own key for "
                + "'\(pinName)' instead (it offers \(keyType) \(offered); relayctl hostkey --add prints and adds it)"
        case .hostKeyCheckFailed(let host, let kh, let detail):
            return "\(host): cannot check the host key against \(kh): \(detail)"
        case .keyFile(let host, let path, let detail):
            return "\(host): cannot load the private key \(path): \(detail)"
        case .authDenied(let host, let path, let fp, let detail):
            return "\(host): authentication with key \(path) (\(fp)) was refused\(detail.isEmpty ? "" : ": \(detail)"); "
                + "check that the key's line is in the host's authorized_keys (`relayctl authorized-keys`)"
        case .channel(let host, let what, let detail):
            return "\(host): \(what) failed: \(detail)"
        case .forwardRefused(let host, let detail):
            return "\(host): the remote forward on 127.0.0.1 was refused (\(detail)): TCP forwarding is off for the relay's key. "
                + "Set AllowTcpForwarding yes (or remote) in the client's sshd_config and give the key the line relayctl "
                + "authorized-keys prints ('port-forwarding,permitlisten=\"127.0.0.1:*\"'), or use transport = \"unix\" for this client"
        case .connectionLost(let host, let detail):
            return "\(host): connection lost: \(detail)"
        case .tunnelRefused(let host, let target, let detail):
            return "\(host): the jump refused a tunnel (direct-tcpip) to \(target): \(detail); its authorized_keys line "
                + "needs 'port-forwarding,permitopen=\"\(target)\"' (relayctl authorized-keys prints it) and its sshd "
                + "AllowTcpForwarding yes or local"
        case .timedOut(let host, let what, let seconds, let key, let detail):
            return "\(host): \(what) timed out after \(seconds) s ([relay] \(key))" + (detail.isEmpty ? "" : ": \(detail)")
        }
    }
}

extension SSHError {
    /// Failures of the network or the peer that a later attempt may not meet: worth a
    /// retry. Host keys, keys, authentication and refusals are not.
    /// Connecting to `label`'s host failed (refused, unreachable, timed out) before any SSH
    /// exchange: the host is offline, as opposed to a host that answered and refused.
    /// (`label` is the role and name, "client web1"; a session's host also names its address.)
    public func isUnreachable(label: String) -> Bool {
        func names(_ host: String) -> Bool { host == label || host.hasPrefix(label + " (") }
        switch self {
        case .connect(let host, _): return names(host)
        case .timedOut(let host, let what, _, let key, _): return names(host) && key == "connect_timeout" && what.hasPrefix("connecting")
        default: return false
        }
    }

    public var isTransient: Bool {
        switch self {
        case .connect, .connectionLost, .timedOut: return true
        default: return false
        }
    }
}
