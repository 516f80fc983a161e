import Foundation

/// Options shared by every session the relay opens.
public struct SessionOptions: Sendable {
    public var knownHosts: String
    public var connectTimeout: Int
    public var authTimeout: Int
    public var channelTimeout: Int
    /// The config's jumps by name (for `via`), and whether runs share their sessions.
    public var jumps: [String: HostEndpoint] = [:]
    public var shareJumps: Bool
    public var keepaliveInterval: Int
    public var keepaliveCount: Int
    /// Cipher preference list offered to every host.
    public var ciphers: String

    /// The SSH settings of `[relay]` (their defaults live in `RelaySettings`); the run
    /// settings are `RunPolicy`'s.
    public init(_ relay: RelaySettings) {
        knownHosts = relay.knownHosts
        connectTimeout = relay.connectTimeout
        authTimeout = relay.authTimeout
        channelTimeout = relay.channelTimeout
        shareJumps = relay.shareJumps
        keepaliveInterval = relay.keepaliveInterval
        keepaliveCount = relay.keepaliveCount
        ciphers = relay.ciphers ?? Self.defaultCiphers
    }

    /// The relay's settings and the config's jumps.
    public init(_ config: RelayConfig) {
        self.init(config.relay)
        jumps = config.jumps.mapValues(\.endpoint)
    }

    /// AES-GCM first where the CPU has AES instructions, chacha20-poly1305 first otherwise.
    public static let defaultCiphers: String = {
        let gcm = "aes128-gcm@openssh.com,aes256-gcm@openssh.com"
        let chacha = "chacha20-poly1305@openssh.com"
        let ctr = "aes128-ctr,aes256-ctr"
        return CPU.hasAES ? "\(gcm),\(chacha),\(ctr)" : "\(chacha),\(gcm),\(ctr)"
    }()
}

enum CPU {
    static let hasAES: Bool = {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return false }
        for line in info.split(separator: "\n") where line.hasPrefix("flags") {
            return line.split(separator: " ").contains("aes")
        }
        return false
    }()
}
