import CLibSSH
import Foundation

/// One libssh session (`ssh_session`) and the channels opened on it.
///
/// libssh requires that a session and its channels be used by one thread at a time.
/// `@unchecked Sendable` lets a session move from the thread that connected it to the
/// run's event-loop thread; after that hand-over only the loop thread touches it.
public final class SSHSession: @unchecked Sendable {
    /// How the host appears in messages: "server vault (borg@b.example:22)".
    public let label: String
    public let endpoint: HostEndpoint
    let options: SessionOptions
    private(set) var handle: ssh_session?
    private var channels: [WeakChannel] = []
    /// libssh's packet counters for this session (received packets prove the peer is alive).
    private var counter: UnsafeMutablePointer<ssh_counter_struct>?

    /// A connection made elsewhere (a jump's tunnel) that `connect` uses instead of TCP.
    private var connectionFD: Int32?
    /// The jump this session is tunnelled through, if any (its failure explains ours).
    private var jump: JumpHost?
    /// The connection handed to libssh (SSH_OPTIONS_FD).
    private var adoptedConnection: AdoptedSocket?

    /// `fd`: an established connection to use (the session owns it from `connect` on).
    public init(label: String, endpoint: HostEndpoint, options: SessionOptions, fd: Int32? = nil) throws(SSHError) {
        self.label = "\(label) (\(endpoint.display)\(endpoint.via.isEmpty ? "" : " via \(endpoint.via.joined(separator: ", "))"))"
        self.endpoint = endpoint
        self.options = options
        self.connectionFD = fd
        guard let s = ssh_new() else {
            throw SSHError.setup(host: self.label, detail: "ssh_new failed (out of memory)")
        }
        handle = s
        try setOptions(s)
    }

    deinit {
        close()
        if let fd = connectionFD { Glibc.close(fd) }  // never handed to libssh
    }

    private func setOptions(_ s: ssh_session) throws(SSHError) {
        func check(_ rc: Int32, _ what: String) throws(SSHError) {
            if rc != SSH_OK { throw SSHError.setup(host: label, detail: "option \(what): \(lastError)") }
        }
        try check(relay_ssh_opt_string(s, SSH_OPTIONS_HOST, endpoint.host), "host")
        try check(relay_ssh_opt_uint(s, SSH_OPTIONS_PORT, UInt32(endpoint.port)), "port")
        try check(relay_ssh_opt_string(s, SSH_OPTIONS_USER, endpoint.user), "user")
        // Only the pinned file counts: no ~/.ssh/config, no global known_hosts.
        try check(relay_ssh_opt_bool(s, SSH_OPTIONS_PROCESS_CONFIG, 0), "process_config")
        try check(relay_ssh_opt_string(s, SSH_OPTIONS_KNOWNHOSTS, options.knownHosts), "knownhosts")
        try check(relay_ssh_opt_string(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null"), "global_knownhosts")
        try check(relay_ssh_opt_string(s, SSH_OPTIONS_SSH_DIR, "/nonexistent-borg-relay"), "ssh_dir")
        try check(relay_ssh_opt_int(s, SSH_OPTIONS_NODELAY, 1), "nodelay")
        try check(relay_ssh_opt_long(s, SSH_OPTIONS_TIMEOUT, options.connectTimeout), "timeout")
        try check(relay_ssh_opt_string(s, SSH_OPTIONS_CIPHERS_C_S, options.ciphers), "ciphers")
        try check(relay_ssh_opt_string(s, SSH_OPTIONS_CIPHERS_S_C, options.ciphers), "ciphers")
        try check(relay_ssh_opt_string(s, SSH_OPTIONS_COMPRESSION, "no"), "compression")
        try check(relay_ssh_opt_int(s, SSH_OPTIONS_LOG_VERBOSITY, Int32(SSH_LOG_NOLOG)), "log_verbosity")
    }

    /// libssh's error text for this session; read it right after a failing call.
    var lastError: String {
        guard let s = handle, let p = ssh_get_error(UnsafeMutableRawPointer(s)) else { return "no session" }
        var text = String(cString: p)
        if text.isEmpty { text = "unknown error" }
        if let f = jump?.failure.withLock({ $0 }) { text += " (the jump on the way failed: \(f))" }
        return text
    }

    func require() throws(SSHError) -> ssh_session {
        guard let s = handle else { throw SSHError.connectionLost(host: label, detail: "session already closed") }
        return s
    }

    // MARK: - Connecting

    /// Connects, checks the host key against the pinned known_hosts file (before any
    /// authentication) and authenticates with the endpoint's key. Blocking; call it on
    /// the thread that owns the session.
    public func open() throws(SSHError) {
        try connect()
        try verifyHostKey()
        try authenticate()
        tuneSocket()
    }

    func connect() throws(SSHError) {
        let s = try require()
        ssh_set_blocking(s, 1)
        if connectionFD == nil && !endpoint.via.isEmpty {
            let c = try JumpPool.connection(to: endpoint, options: options)
            connectionFD = c.fd
            jump = c.jump
        }
        if let fd = connectionFD {
            try setConnection(s, fd)
        }
        let started = Date()
        if ssh_connect(s) != SSH_OK {
            let detail = lastError
            if Date().timeIntervalSince(started) >= Double(options.connectTimeout) - 0.5 {
                throw SSHError.timedOut(host: label, what: "connecting (TCP and key exchange)", seconds: options.connectTimeout,
                                        key: "connect_timeout", detail: detail)
            }
            throw SSHError.connect(host: label, detail: detail)
        }
    }

    private func setConnection(_ s: ssh_session, _ fd: Int32) throws(SSHError) {
        if relay_ssh_opt_int(s, SSH_OPTIONS_FD, fd) != SSH_OK {
            throw SSHError.setup(host: label, detail: "option fd: \(lastError)")
        }
        adoptedConnection = AdoptedSocket(fd)
        connectionFD = nil  // the session's from now on; `close` ends it
    }

    /// Runs a blocking libssh step with `seconds` as libssh's timeout (restored afterwards);
    /// a failure that took that long is reported as a timeout naming `key`.
    func withTimeout<T>(_ seconds: Int, key: String, what: String, _ body: () throws(SSHError) -> T) throws(SSHError) -> T {
        let s = try require()
        _ = relay_ssh_opt_long(s, SSH_OPTIONS_TIMEOUT, seconds)
        defer { _ = relay_ssh_opt_long(s, SSH_OPTIONS_TIMEOUT, options.connectTimeout) }
        let started = Date()
        do {
            return try body()
        } catch {
            if Date().timeIntervalSince(started) >= Double(seconds) - 0.5 {
                throw SSHError.timedOut(host: label, what: what, seconds: seconds, key: key, detail: "\(error)")
            }
            throw error
        }
    }

    func verifyHostKey() throws(SSHError) {
        let s = try require()
        let offered = try serverKeyInfo(s)
        // libssh 0.10 skips marker lines; OpenSSH refuses a revoked key whatever else is pinned.
        let entries = KnownHosts.entries(for: endpoint.knownHostsName, path: options.knownHosts)
        if let revoked = entries.first(where: { $0.marker == .revoked && $0.base64 == offered.base64 }) {
            throw SSHError.hostKeyRevoked(host: label, knownHosts: options.knownHosts, line: revoked.line,
                                          offered: offered.fingerprint, keyType: offered.type)
        }
        let pinned = entries.filter { $0.marker == nil }
        let pinnedText = pinned.isEmpty ? nil : pinned.map { "\($0.type) \($0.fingerprint)" }.joined(separator: ", ")
        let state = ssh_session_is_known_server(s)
        switch state {
        case SSH_KNOWN_HOSTS_OK:
            return
        case SSH_KNOWN_HOSTS_CHANGED:
            throw SSHError.hostKeyChanged(host: label, knownHosts: options.knownHosts,
                                          expected: pinnedText ?? "another key",
                                          offered: offered.fingerprint)
        case SSH_KNOWN_HOSTS_OTHER:
            throw SSHError.hostKeyOtherType(host: label, knownHosts: options.knownHosts,
                                            expected: pinnedText, offered: offered.fingerprint,
                                            keyType: offered.type)
        case SSH_KNOWN_HOSTS_UNKNOWN, SSH_KNOWN_HOSTS_NOT_FOUND:
            if let ca = entries.first(where: { $0.marker == .certAuthority }) {
                throw SSHError.hostCertificatesUnsupported(host: label, knownHosts: options.knownHosts, line: ca.line,
                                                           pinName: endpoint.knownHostsName,
                                                           offered: offered.fingerprint, keyType: offered.type)
            }
            throw SSHError.hostKeyUnknown(host: label, knownHosts: options.knownHosts,
                                          pinName: endpoint.knownHostsName,
                                          offered: offered.fingerprint, keyType: offered.type)
        default:
            throw SSHError.hostKeyCheckFailed(host: label, knownHosts: options.knownHosts, detail: lastError)
        }
    }

    private func serverKeyInfo(_ s: ssh_session) throws(SSHError) -> (fingerprint: String, type: String, base64: String) {
        var key: ssh_key?
        guard ssh_get_server_publickey(s, &key) == SSH_OK, let k = key else {
            throw SSHError.hostKeyCheckFailed(host: label, knownHosts: options.knownHosts,
                                              detail: "the host sent no public key: \(lastError)")
        }
        defer { ssh_key_free(k) }
        let type = ssh_key_type_to_char(ssh_key_type(k)).map { String(cString: $0) } ?? "unknown"
        var b64: UnsafeMutablePointer<CChar>?
        guard ssh_pki_export_pubkey_base64(k, &b64) == SSH_OK, let b = b64 else {
            throw SSHError.hostKeyCheckFailed(host: label, knownHosts: options.knownHosts,
                                              detail: "cannot encode the host's \(type) key")
        }
        defer { ssh_string_free_char(b) }
        return (SSHKeys.fingerprint(k) ?? "SHA256:?", type, String(cString: b))
    }

    func authenticate() throws(SSHError) {
        let s = try require()
        let path = endpoint.key
        var key: ssh_key?
        if ssh_pki_import_privkey_file(path, nil, nil, nil, &key) != SSH_OK || key == nil {
            let reason = FileCheck.unreadableReason(path)
                ?? "not a private key libssh can read, or protected by a passphrase (the relay needs an unencrypted key file, mode 0600)"
            throw SSHError.keyFile(host: label, path: path, detail: reason)
        }
        defer { ssh_key_free(key) }
        let fp = SSHKeys.fingerprint(key!) ?? "SHA256:?"
        _ = relay_ssh_opt_long(s, SSH_OPTIONS_TIMEOUT, options.authTimeout)
        defer { _ = relay_ssh_opt_long(s, SSH_OPTIONS_TIMEOUT, options.connectTimeout) }
        let started = Date()
        let rc = ssh_userauth_publickey(s, nil, key)
        if rc == SSH_AUTH_ERROR.rawValue && Date().timeIntervalSince(started) >= Double(options.authTimeout) - 0.5 {
            throw SSHError.timedOut(host: label, what: "authenticating with \(path)", seconds: options.authTimeout,
                                    key: "auth_timeout", detail: lastError)
        }
        if rc != SSH_AUTH_SUCCESS.rawValue {
            var detail = rc == SSH_AUTH_ERROR.rawValue ? lastError : ""
            if let software = serverSoftware, ClientSSHD(software: software) == .dropbear {
                // Dropbear refuses the whole key when its line has an option it does not know.
                detail += (detail.isEmpty ? "" : "; ") + "the host runs \(software), which refuses a key whose authorized_keys line "
                    + "has an option it does not know (OpenSSH's port-forwarding, permitlisten): give it the line for Dropbear"
            }
            throw SSHError.authDenied(host: label, keyPath: path, fingerprint: fp, detail: detail)
        }
    }

    /// TCP keepalives and a user timeout so that a dead peer or a cut link is noticed
    /// within about keepalive_interval × keepalive_count seconds.
    private func tuneSocket() {
        guard let s = handle else { return }
        let fd = ssh_get_fd(s)
        guard fd >= 0 else { return }
        var one: Int32 = 1
        var idle = Int32(options.keepaliveInterval)
        var count = Int32(options.keepaliveCount)
        var userTimeout = UInt32(options.keepaliveInterval * options.keepaliveCount * 1000)
        let sz = socklen_t(MemoryLayout<Int32>.size)
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sz)
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, sz)
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &idle, sz)
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, &count, sz)
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_USER_TIMEOUT, &userTimeout, socklen_t(MemoryLayout<UInt32>.size))
    }

    /// The server's software from its identification string, e.g. "dropbear_2022.83" or
    /// "OpenSSH_9.2p1 Debian-2+deb12u3"; nil before the connection (also kept after a
    /// failed authentication, for messages).
    public var serverSoftware: String? {
        guard let s = handle, let p = ssh_get_serverbanner(s) else { return nil }
        return ClientSSHD.software(banner: String(cString: p))
    }

    /// The negotiated cipher, e.g. "aes128-gcm@openssh.com".
    public var cipher: String {
        guard let s = handle, let c = ssh_get_cipher_out(s) else { return "?" }
        return String(cString: c)
    }

    /// True while the transport is up.
    var isAlive: Bool {
        guard let s = handle else { return false }
        let status = ssh_get_status(s)
        return status & (SSH_CLOSED | SSH_CLOSED_ERROR) == 0 && ssh_is_connected(s) != 0
    }

    func setBlocking(_ blocking: Bool) {
        if let s = handle { ssh_set_blocking(s, blocking ? 1 : 0) }
    }

    // MARK: - Liveness

    /// Packets received so far (counting starts with the first call).
    var packetsReceived: UInt64 {
        guard let s = handle else { return 0 }
        if counter == nil {
            let c = UnsafeMutablePointer<ssh_counter_struct>.allocate(capacity: 1)
            c.initialize(to: ssh_counter_struct())
            counter = c
            ssh_set_counters(s, nil, c)
        }
        return counter!.pointee.in_packets
    }

    /// Sends an SSH keepalive (`keepalive@openssh.com` global request; OpenSSH answers it).
    /// In non-blocking mode libssh 0.10 keeps the answer of the previous request as the
    /// global-request state until the next call, which then only settles it: the first call
    /// settles a finished exchange, the second sends. With a probe still unanswered both
    /// calls only wait, so at most one is ever outstanding. Never call this while another
    /// global request (e.g. cancel-tcpip-forward) is in progress.
    func sendKeepalive() {
        guard let s = handle else { return }
        _ = ssh_send_keepalive(s)
        _ = ssh_send_keepalive(s)
    }

    // MARK: - Channels

    /// A new session channel object (not yet opened).
    func newChannel(label: String) throws(SSHError) -> SSHChannel {
        let s = try require()
        guard let c = ssh_channel_new(s) else {
            throw SSHError.channel(host: self.label, what: "creating a channel", detail: lastError)
        }
        return adopt(c, label: label)
    }

    /// Takes ownership of a channel libssh created on this session (e.g. an accepted forward).
    func adopt(_ c: ssh_channel, label: String) -> SSHChannel {
        let ch = SSHChannel(session: self, handle: c, label: label)
        channels.removeAll { $0.channel == nil }
        channels.append(WeakChannel(channel: ch))
        return ch
    }

    /// Disconnects and frees the session. `ssh_free` frees every channel still attached,
    /// so the channel objects are told first and will not free theirs again.
    public func close() {
        guard let s = handle else { return }
        if let c = counter {
            ssh_set_counters(s, nil, nil)
            c.deallocate()
            counter = nil
        }
        for w in channels { w.channel?.sessionWillFree() }
        channels.removeAll()
        ssh_disconnect(s)
        ssh_free(s)
        handle = nil
        // libssh 0.10 leaves a connection given with SSH_OPTIONS_FD open; close it here
        // (only if that number still is the same socket), so that the jump's tunnel sees EOF.
        adoptedConnection?.closeIfStillOpen()
        adoptedConnection = nil
    }
}

private struct WeakChannel {
    weak var channel: SSHChannel?
}

public enum SSHKeys {
    /// `SHA256:<base64>` of a libssh key, as `ssh-keygen -l` prints it.
    static func fingerprint(_ key: ssh_key) -> String? {
        var hash: UnsafeMutablePointer<UInt8>?
        var len: Int = 0
        guard ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &len) == SSH_OK, let h = hash else {
            return nil
        }
        defer { ssh_clean_pubkey_hash(&hash) }
        guard let fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, h, len) else { return nil }
        defer { ssh_string_free_char(fp) }
        return String(cString: fp)
    }
}

/// A socket handed to libssh with SSH_OPTIONS_FD. libssh 0.10 does not close it when the
/// session is freed; `closeIfStillOpen` does, but only while the number still names the
/// same socket (same inode), never a descriptor that was reused meanwhile.
struct AdoptedSocket {
    let fd: Int32
    let inode: ino_t?

    init(_ fd: Int32) {
        self.fd = fd
        var st = stat()
        inode = fstat(fd, &st) == 0 ? st.st_ino : nil
    }

    func closeIfStillOpen() {
        var st = stat()
        if let inode, fstat(fd, &st) == 0, st.st_ino == inode { Glibc.close(fd) }
    }
}
