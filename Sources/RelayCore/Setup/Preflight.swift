import Foundation

/// One line of `relayctl preflight`: what was checked, how it went, and the fix.
public struct PreflightResult: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable { case ok, warn, fail }
    public var client: String?
    public var check: String
    public var status: Status
    public var detail: String
    public var fix: String?

    public init(client: String?, check: String, status: Status, detail: String, fix: String? = nil) {
        self.client = client
        self.check = check
        self.status = status
        self.detail = detail
        self.fix = fix
    }
}

/// `relayctl preflight`: checks a setup end to end without running a backup.
public enum Preflight {
    /// What `state_dir/state-backup.json` says of the last state backup.
    public enum StateBackupRecord: Equatable, Sendable {
        case never
        case unreadable(String)
        case succeeded(StateBackupResult)
    }

    /// The recovery line's last-backup part: ok within twice the schedule's period, else a
    /// warning with the fix (a value: no I/O).
    public static func stateBackupAge(_ record: StateBackupRecord, schedule: CronSchedule, now: Date)
        -> (PreflightResult.Status, String, String?) {
        switch record {
        case .never:
            return (.warn, "no state backup has succeeded yet",
                    "relayctl state backup (the agent also backs up at start and on state_schedule); if it fails, the error names the fix")
        case .unreadable(let path):
            return (.warn, "the last state backup is unknown: \(path) cannot be read by this user",
                    "run check as the agent's user (runuser -u borg-relay -- relayctl check)")
        case .succeeded(let r):
            let age = now.timeIntervalSince(r.ended)
            let text = "last succeeded \(WebFormat.relative(r.ended, now: now)) (archive \(r.archive ?? "?"))"
            let period = schedule.period
            if period > 0 && age > 2 * period {
                return (.warn, text + ", more than twice the schedule's period",
                        "relayctl state backup, and see the agent's log for state backups that failed (event state_backup_failed)")
            }
            return (.ok, text, nil)
        }
    }

    public static func run(config c: RelayConfig, clients names: [String], localBorg: String = "borg") -> [PreflightResult] {
        var results: [PreflightResult] = []
        func add(_ client: String?, _ check: String, _ status: PreflightResult.Status, _ detail: String, _ fix: String? = nil) {
            results.append(PreflightResult(client: client, check: check, status: status, detail: detail, fix: fix))
        }
        add(nil, "config", .ok, "\(c.file) is valid")
        let options = SessionOptions(c)

        // The vault: present, private.
        let vk = c.relay.vaultSecretKeyPath
        if !FileManager.default.fileExists(atPath: vk) {
            let needed = c.clients.values.contains { $0.passphrase != nil }
            add(nil, "vault", needed ? .fail : .warn, "no vault key at \(vk)", "relayctl vault init --config \(c.file)")
        } else {
            do {
                try Vault.readSecretKey(path: vk).wipe()
                add(nil, "vault", .ok, "\(vk) is readable only by its owner")
            } catch {
                add(nil, "vault", .fail, "\(error)", "chmod 600 \(vk); chown it to the agent's user")
            }
        }
        // Losing this host: the recovery key and where the sealed state goes (docs/recovery.md).
        if !FileManager.default.fileExists(atPath: c.relay.recoveryPublicKeyPath) {
            add(nil, "recovery", .warn, "no recovery key (\(c.relay.recoveryPublicKeyPath)): if this host is lost, its vault and keys are lost with it",
                "relayctl recovery init --config \(c.file) (keep the secret off this host), then set [relay] state_server (docs/recovery.md)")
        } else if let server = c.relay.stateServer, let repository = c.relay.stateRepository {
            let record = StateBackup.recordPath(c.relay)
            let unreadable = FileManager.default.fileExists(atPath: record) && !FileManager.default.isReadableFile(atPath: record)
            let (status, last, fix) = stateBackupAge(unreadable ? .unreadable(record) : StateBackup.lastSuccess(c.relay).map { .succeeded($0) } ?? .never,
                                                     schedule: c.relay.stateSchedule, now: Date())
            // The fingerprint, to compare with the one kept with the secret: an agent that was
            // taken over could have swapped recovery.pub for a key of its own.
            let key = (try? RecoveryKey.readPublicKey(path: c.relay.recoveryPublicKeyPath)).map { RecoveryKey.fingerprint(publicKey: $0) }
            add(nil, "recovery", status, "the state is sealed to recovery key \(key ?? "(recovery.pub unreadable)") and backed up to \(repository) on server \(server) (\(c.relay.stateSchedule)); \(last)", fix)
        } else {
            add(nil, "recovery", .warn, "a recovery key, but no [relay] state_server: the sealed state is not backed up to a server",
                "set [relay] state_server and state_repository, or keep `relayctl state export FILE` copies elsewhere (docs/recovery.md)")
        }
        // borg on R (operations run it there).
        if let v = localVersion(localBorg) {
            add(nil, "borg on the relay", versionStatus(v), v, versionFix(v))
        } else {
            add(nil, "borg on the relay", .warn, "borg not found in PATH", "install borgbackup on the relay (needed for init, list, prune, compact, check)")
        }

        for name in names {
            guard let client = c.clients[name] else {
                add(name, "client", .fail, "\(c.file) has no [clients.\(name)]", "known: \(c.clients.keys.sorted().joined(separator: ", "))")
                continue
            }
            let server = c.server(for: client)
            // Key files.
            var keys = [("[clients.\(name)] key", client.endpoint.key), ("[servers.\(server.name)] key", server.endpoint.key)]
            if let m = server.maintenanceKey { keys.append(("[servers.\(server.name)] maintenance_key", m)) }
            for jump in Set(c.hops(to: client.endpoint) + c.hops(to: server.endpoint)).sorted() {
                if let j = c.jumps[jump] { keys.append(("[jumps.\(jump)] key", j.endpoint.key)) }
            }
            var keysOK = true
            for (what, path) in keys {
                if let reason = FileCheck.unreadableReason(path) {
                    add(name, "key file", .fail, "\(what) \(path): \(reason)", "create it: ssh-keygen -t ed25519 -N '' -f \(path)")
                    keysOK = false
                } else if let reason = FileCheck.loosePermissions(path) {
                    add(name, "key file", .fail, "\(what) \(path): \(reason)")
                    keysOK = false
                } else {
                    add(name, "key file", .ok, "\(what) \(path) is private")
                }
            }
            guard keysOK else { continue }

            // The client: host key, authentication, its sshd (from the banner), borg (its
            // borg_path) and socat.
            var clientVersion: String?
            let (t, clientSoftware) = connect(client.endpoint, "client \(name)", options, name, "client", &results,
                                              dropbearLine: dropbearOptions(client))
            let clientSSHD = clientSoftware.map(ClientSSHD.init(software:)) ?? .openssh
            if let software = clientSoftware {
                add(name, "client sshd", .ok, clientSSHD == .dropbear ? "\(software) (Dropbear: its key needs the line for Dropbear)" : software)
            }
            if let t {
                if let r = try? t.capture(BackupPlan.probeCommand(borgPath: client.borgPath)) {
                    let lines = r.stdout.split(separator: "\n").map(String.init)
                    if let v = lines.first(where: { versionNumber($0) != nil }) {
                        clientVersion = versionNumber(v)
                        add(name, "borg on the client", versionStatus(v), "\(v) (\(client.borgPath))", versionFix(v))
                    } else {
                        add(name, "borg on the client", .fail, "\(client.borgPath) --version printed no version (\(r.stderr.prefix(200)))",
                            client.borgPath == "borg" ? "install borgbackup on the client, or set borg_path in [clients.\(name)]"
                                : "install borgbackup on the client at \(client.borgPath), or fix borg_path in [clients.\(name)]")
                    }
                    if lines.contains("no-socat-found") {
                        add(name, "socat on the client", .fail, "socat is not in the client's PATH", "install socat on the client (the connector borg uses)")
                    } else {
                        add(name, "socat on the client", .ok, lines.last ?? "socat found")
                    }
                }
                // What a unix-transport run starts first: the socket listener, and a
                // connection to it the way borg's connector makes one.
                if client.transport == .unix {
                    let (status, detail, fix) = probeUnixListener(t, client: client)
                    add(name, "socket listener on the client", status, detail, fix)
                }
                // What a tcp-transport run asks for first: a remote forward on T's loopback.
                if client.transport == .tcp {
                    do {
                        let port = try t.probeRemoteForward()
                        add(name, "remote forward on the client", .ok, "the client's sshd opened 127.0.0.1:\(port) for the relay (closed again)")
                    } catch {
                        let fix = clientSSHD == .dropbear
                            ? "the client's Dropbear refused the remote forward: run dropbear without -k, give the key the line for Dropbear relayctl authorized-keys \(name) prints (\(dropbearOptions(client)); no no-port-forwarding), or set transport = \"unix\" in [clients.\(name)]"
                            : "AllowTcpForwarding is off on the client (or its key line forbids forwarding): set AllowTcpForwarding yes (or remote) in its sshd_config and use the line relayctl authorized-keys \(name) prints, or set transport = \"unix\" in [clients.\(name)]"
                        add(name, "remote forward on the client", .fail, "\(error)", fix)
                    }
                }
                t.close()
            }
            // The server: host key, authentication, forced command.
            if let b = connect(server.endpoint, "server \(server.name)", options, name, "server", &results).session {
                let marker = "borg-relay-probe-\(UInt32.random(in: 0...UInt32.max))"
                if let r = try? b.capture("echo \(marker)") {
                    if r.stdout.contains(marker) {
                        add(name, "server key forced", .fail, "the key for [servers.\(server.name)] runs any command (a shell answered)",
                            "prefix its line in B's authorized_keys with \(AuthorizedKeys.serveOptions(appendOnly: true, repository: client.repository)) (relayctl authorized-keys \(name))")
                    } else {
                        add(name, "server key forced", .ok, "an arbitrary command got a forced command, not a shell")
                        serverProbe(b, client: client, server: server, clientVersion: clientVersion, add)
                    }
                }
                b.close()
            }
            if let m = server.maintenanceKey {
                var ep = server.endpoint
                ep.key = m
                if let b = connect(ep, "server \(server.name) (maintenance key)", options, name, "server maintenance key", &results).session {
                    b.close()
                }
            }
        }
        return results
    }

    /// Starts the unix transport's listener on T in a fresh socket directory, connects to
    /// it from T with socat (as borg's connector does) and reads the probe's marker from the
    /// listener's channel: what a unix-transport run needs, end to end. Both sides end by
    /// themselves after the marker, and the listener removes its directory.
    static func probeUnixListener(_ t: SSHSession, client: ClientConfig) -> (PreflightResult.Status, String, String?) {
        let dir = BackupPlan.newUnixSocketDir()
        let fix = "the unix transport needs POSIX sh, mkdir, socat and a writable /tmp on the client "
            + "(its socket goes in a fresh 0700 directory there); or use transport = \"tcp\" in [clients.\(client.name)]"
        let listener: SSHChannel
        do {
            listener = try t.startExec(BackupPlan.unixListenerCommand(dir: dir), label: "socket listener")
        } catch {
            return (.fail, "the socket listener did not start: \(error)", fix)
        }
        defer { listener.close(); listener.free() }
        let probe: ExecOutput
        do {
            probe = try t.capture(BackupPlan.unixProbeCommand(dir: dir), timeout: 20)
        } catch {
            return (.fail, "the connection test did not start: \(error)", fix)
        }
        let marker = Array(BackupPlan.unixProbeMarker.utf8)
        let heard = listener.collect(timeout: 5) { $0.firstRange(of: marker) != nil }
        if heard.stdout.contains(BackupPlan.unixProbeMarker) {
            return (.ok, "a test connection to a socket in \(dir) reached the relay (listener and socket gone again)", nil)
        }
        // What the two sides said: the listener's own error first (it exits when it cannot
        // make its directory or socat is missing), else the connecting side's.
        let ended = heard.finished ? heard : listener.collect(timeout: 2)
        let said = [ended.stderr, probe.stderr].map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
        let last = said.first.flatMap { $0.split(separator: "\n").last.map(String.init) } ?? "no error output"
        let status = ended.status.map { "exit status \($0)" } ?? "still running"
        if said.contains(where: { $0.contains("borg-relay-guard: refused") }) {
            return (.fail, "the client's guard refused the socket listener or its test: \(last)",
                    "install this version's guard on the client (contrib/guard/borg-relay-guard): it knows the unix transport's check")
        }
        return (.fail, "the socket listener on the client did not pass a test connection (listener: \(status)): \(last)", fix)
    }

    /// borg serve on B, through the client's key: version, repository, append-only.
    private static func serverProbe(_ b: SSHSession, client: ClientConfig, server: ServerConfig, clientVersion: String?,
                                    _ add: (String?, String, PreflightResult.Status, String, String?) -> Void) {
        let name = client.name
        let line = "\(AuthorizedKeys.serveOptions(appendOnly: true, repository: client.repository)) (relayctl authorized-keys \(name))"
        let probe: BorgServeProbe
        do {
            probe = try b.probeBorgServe(repository: client.repository)
        } catch {
            add(name, "borg on the server", .fail, "the forced command did not speak borg's protocol: \(error)",
                "the key's forced command must be \(line)")
            return
        }
        if let v = probe.serverVersion {
            add(name, "borg on the server", versionStatus("borg \(v)"), "borg \(v)", versionFix("borg \(v)"))
            if let c = clientVersion {
                let (status, detail, fix) = versionMatch(client: c, server: v)
                add(name, "borg versions", status, detail, fix)
            }
        } else {
            add(name, "borg on the server", .warn, "borg serve did not report its version", "borg-relay is tested with borg 1.2.x and 1.4.x")
        }
        switch probe.repository {
        case .opened:
            add(name, "repository", .ok, "\(client.repository) on \(server.name) exists and opens with the relay's key", nil)
        case .missing(let m):
            add(name, "repository", .fail, "\(client.repository) on \(server.name) does not exist (\(m))",
                "create it: relayctl init \(name)")
        case .notAllowed(let m):
            add(name, "repository", .fail, "the forced command on \(server.name) does not allow \(client.repository) (\(m))",
                "make the line's --restrict-to-repository name it: \(line)")
        case .locked(let m):
            add(name, "repository", .warn, "\(client.repository) is locked (a run in progress?): \(m)",
                "run check again when no run is going; if it stays locked: borg break-lock")
        case .failed(let m):
            add(name, "repository", .fail, "opening \(client.repository) failed: \(m)", nil)
        }
        switch probe.appendOnly {
        case .enforced:
            add(name, "server append-only", .ok, "borg serve refused a repair (a write append-only forbids); nothing was written", nil)
        case .notEnforced:
            add(name, "server append-only", .fail,
                "borg serve on \(server.name) is NOT append-only: a compromised client could delete or rewrite archives",
                "add --append-only to the forced command: \(line)")
        case .unknown(let why):
            if case .opened = probe.repository {
                add(name, "server append-only", .warn, "could not tell whether borg serve is append-only: \(why)",
                    "check the forced command on \(server.name) by hand: \(line)")
            }
        }
    }

    /// Connects and authenticates; `software` is the server's software from its banner
    /// (also after a refused key, so that the fix can name the line for Dropbear).
    private static func connect(_ ep: HostEndpoint, _ label: String, _ options: SessionOptions, _ client: String,
                                _ what: String, _ results: inout [PreflightResult],
                                dropbearLine: String? = nil) -> (session: SSHSession?, software: String?) {
        var session: SSHSession?
        var software: String?
        do {
            let s = try SSHSession(label: label, endpoint: ep, options: options)
            session = s
            try s.open()
            software = s.serverSoftware
            results.append(PreflightResult(client: client, check: "\(what) connection", status: .ok,
                                           detail: "\(ep.display): host key pinned and matching, key accepted"))
            return (s, software)
        } catch {
            software = session?.serverSoftware
            session?.close()
            var fix: String?
            switch error {
            case .hostKeyUnknown, .hostKeyChanged, .hostKeyOtherType:
                fix = "check the host's key on the host itself, then: relayctl hostkey \(ep.host):\(ep.port) --add"
            case .authDenied where dropbearLine != nil && software.map(ClientSSHD.init(software:)) == .dropbear:
                fix = "the client runs \(software ?? "Dropbear"), which refuses the OpenSSH line: put the line for Dropbear that "
                    + "relayctl authorized-keys \(client) prints in ~\(ep.user)/.ssh/authorized_keys on it (\(dropbearLine ?? "") KEY)"
            case .authDenied:
                fix = "add the relay's key to the host: relayctl authorized-keys \(client)"
            default:
                fix = nil
            }
            results.append(PreflightResult(client: client, check: "\(what) connection", status: .fail, detail: "\(error)", fix: fix))
            return (nil, software)
        }
    }

    /// The options of the client's authorized_keys line for Dropbear, for fixes.
    static func dropbearOptions(_ c: ClientConfig) -> String {
        AuthorizedKeys.clientOptions(transport: c.transport, guardCommand: c.guardCommand, sshd: .dropbear)
            ?? "none: the guard's command contains a \", which Dropbear cannot carry in command="
    }

    static func localVersion(_ borg: String) -> String? {
        let p = Pipe()
        let proc = Process()
        proc.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        proc.arguments = [borg, "--version"]
        proc.standardOutput = p
        proc.standardError = FileHandle.nullDevice
        do { try proc.run() } catch { return nil }
        let data = p.fileHandleForReading.readDataToEndOfFile()
        proc.waitUntilExit()
        guard proc.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The version in a line of `borg --version` ("borg 1.2.4", "borg-linux64 1.4.5"): its
    /// last word when that starts with DIGITS.DIGITS; nil for any other line.
    static func versionNumber(_ line: String) -> String? {
        guard let last = line.split(separator: " ").last, line.split(separator: " ").count >= 2,
              last.wholeMatch(of: /[0-9]+\.[0-9]+([.a-z0-9+-]*)/) != nil else { return nil }
        return String(last)
    }

    /// T's and B's borg: they speak the same protocol within a major version (1.2 and 1.4
    /// work together); across major versions (1.x and 2.x) they do not.
    static func versionMatch(client: String, server: String) -> (PreflightResult.Status, String, String?) {
        let c = client.split(separator: ".").first.map(String.init) ?? client
        let s = server.split(separator: ".").first.map(String.init) ?? server
        if c == s {
            return (.ok, "borg \(client) on the client and borg \(server) on the server have the same major version", nil)
        }
        return (.warn, "borg \(client) on the client and borg \(server) on the server differ in major version: they may not speak the same protocol",
                "install the same major version on both (borg-relay is tested with 1.2.x and 1.4.x)")
    }

    /// 1.2.x and 1.4.x work; 2.0 betas dropped --append-only.
    static func versionStatus(_ v: String) -> PreflightResult.Status {
        let number = v.split(separator: " ").last.map(String.init) ?? ""
        if number.hasPrefix("1.2.") || number.hasPrefix("1.4.") { return .ok }
        return .warn
    }

    static func versionFix(_ v: String) -> String? {
        let number = v.split(separator: " ").last.map(String.init) ?? ""
        if number.hasPrefix("2.") { return "borg 2.0 (beta) has no serve --append-only; use 1.2.x or 1.4.x" }
        if versionStatus(v) == .warn { return "borg-relay is tested with borg 1.2.x and 1.4.x" }
        return nil
    }
}
