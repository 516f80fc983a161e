import ArgumentParser
import Foundation
import RelayCore

/// Loads the config for the setup tools (they work without a running daemon).
func loadConfig(_ path: String) throws -> RelayConfig {
    do {
        return try ConfigLoader.load(path: path, checkFiles: false)
    } catch {
        throw fail("\(error)", exit: CLI.Exit.usage)
    }
}

struct HostKeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hostkey",
        abstract: "Show a host's SSH host keys and fingerprints (no authentication); --add pins them in the known_hosts file.",
        discussion: """
            Compare the fingerprints with the host's own (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on it) \
            before pinning. Runs never trust a key on first use: an unpinned host stops the run.
            """
    )

    @Argument(help: "HOST, HOST:PORT or [IPv6]:PORT.")
    var target: String

    @Option(name: .long, help: "The config file (for [relay] known_hosts and connect_timeout).")
    var config: String = RelayConfig.defaultPath

    @Flag(name: .long, help: "Append the keys to the configured known_hosts file after confirmation.")
    var add = false

    @Flag(name: .long, help: "With --add: do not ask.")
    var yes = false

    @Option(name: .long, help: "Reach the host through these jumps of the config, in order (repeat, or j1,j2).")
    var via: [String] = []

    func run() throws {
        guard let (host, port) = Self.parse(target) else {
            throw fail("'\(target)' is not HOST, HOST:PORT or [IPv6]:PORT", exit: CLI.Exit.usage)
        }
        let jumps = via.flatMap { $0.split(separator: ",").map(String.init) }
        var timeout = 30
        var knownHosts: String?
        var options: SessionOptions?
        if add || !jumps.isEmpty || FileManager.default.fileExists(atPath: config) {
            let cfg = try loadConfig(config)
            timeout = cfg.relay.connectTimeout
            knownHosts = cfg.relay.knownHosts
            options = SessionOptions(cfg)
            if let unknown = jumps.first(where: { cfg.jumps[$0] == nil }) {
                throw fail("--via \(unknown): \(cfg.file) has no [jumps.\(unknown)] (known: \(cfg.jumps.keys.sorted().joined(separator: ", ")))",
                           exit: CLI.Exit.usage)
            }
        }
        let keys: [HostKeyInfo]
        do {
            keys = try HostKeyProbe.scan(host: host, port: port, timeout: timeout, via: jumps, options: options)
        } catch {
            throw fail("\(error)", exit: CLI.Exit.runFailed)
        }
        let name = HostKeyProbe.pinName(host: host, port: port)
        let entries = knownHosts.map { KnownHosts.entries(for: name, path: $0) } ?? []
        let pinned = entries.filter { $0.marker == nil }.map(\.base64)
        let revoked = entries.filter { $0.marker == .revoked }
        for k in keys {
            print(k.knownHostsLine(name: name))
            var state = pinned.isEmpty ? "" : (pinned.contains(k.base64) ? "  (pinned)" : "  (NOT pinned)")
            if let r = revoked.first(where: { $0.base64 == k.base64 }) { state = "  (REVOKED: line \(r.line) of \(knownHosts ?? ""))" }
            print("  \(k.fingerprint) (\(k.type))\(state)")
        }
        guard add, let file = knownHosts else { return }
        let lines = try confirmedPins(name: name, offered: keys, knownHosts: file, yes: yes)
        if lines.isEmpty { return }
        do {
            try KnownHosts.append(lines, to: file)
        } catch {
            throw fail("\(error)", exit: CLI.Exit.runFailed)
        }
        print("pinned \(lines.count) key(s) for \(name) in \(file)")
    }

    /// HOST, HOST:PORT, [V6]:PORT or a bare IPv6 address.
    static func parse(_ s: String) -> (String, Int)? {
        if s.hasPrefix("["), let close = s.firstIndex(of: "]") {
            let host = String(s[s.index(after: s.startIndex)..<close])
            let rest = s[s.index(after: close)...]
            if rest.isEmpty { return host.isEmpty ? nil : (host, 22) }
            guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()), (1...65535).contains(p), !host.isEmpty else { return nil }
            return (host, p)
        }
        let colons = s.filter { $0 == ":" }.count
        if colons == 1, let i = s.firstIndex(of: ":") {
            guard let p = Int(s[s.index(after: i)...]), (1...65535).contains(p), i != s.startIndex else { return nil }
            return (String(s[..<i]), p)
        }
        if s.isEmpty || s.contains(where: { $0 == " " || $0 == "/" }) { return nil }
        return (s, 22)  // a name, or a bare IPv6 address
    }
}

/// The known_hosts lines to add for `name` from the keys it offered, once the operator has
/// confirmed them (`yes`, or y at a terminal's prompt); none when all are pinned already. A
/// revoked key and a host pinned with other keys are refused. `refusal` ends every refusal
/// (what the caller did not do). Used by `hostkey --add` and `add-client`.
func confirmedPins(name: String, offered keys: [HostKeyInfo], knownHosts file: String, yes: Bool,
                   refusal: String = "") throws -> [String] {
    switch PinDecision(name: name, offered: keys, entries: KnownHosts.entries(for: name, path: file)) {
    case .revoked(let r):
        throw fail("""
            \(name) offers \(r.type) \(r.fingerprint), which line \(r.line) of \(file) marks @revoked; \
            nothing pinned. Give the host a new key, then pin that one.\(refusal)
            """, exit: CLI.Exit.runFailed)
    case .changed:
        throw fail("""
            \(name) is pinned in \(file) with OTHER keys: its host key has changed, or this is not the \
            same host. Check on the host itself; if the change is expected, remove the old lines for \(name) first.\(refusal)
            """, exit: CLI.Exit.runFailed)
    case .nothingNew:
        print("all keys of \(name) are already pinned in \(file)")
        return []
    case .add(let lines):
        if yes { return lines }
        guard isatty(0) == 1 else {
            throw fail("not pinning without confirmation; check the fingerprints on the host, then run again with --yes\(refusal)",
                       exit: CLI.Exit.usage)
        }
        FileHandle.standardError.write(Data("Pin \(lines.count) key(s) for \(name) in \(file)? [y/N] ".utf8))
        let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
        guard answer == "y" || answer == "yes" else { throw fail("nothing pinned\(refusal)", exit: CLI.Exit.runFailed) }
        return lines
    }
}

struct AuthorizedKeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authorized-keys",
        abstract: "Print the authorized_keys lines (and sshd settings) the client's hosts need for the relay's keys."
    )

    @Argument(help: "The client.")
    var client: String

    @Option(name: .long, help: "The config file.")
    var config: String = RelayConfig.defaultPath

    func run() throws {
        let cfg = try loadConfig(config)
        guard let c = cfg.clients[client] else {
            throw fail("unknown client '\(client)': \(cfg.file) has no [clients.\(client)] (known: \(cfg.clients.keys.sorted().joined(separator: ", ")))",
                       exit: CLI.Exit.usage)
        }
        do {
            for line in try AuthorizedKeys.document(config: cfg, client: c) { print(line) }
        } catch {
            throw fail("\(error)", exit: CLI.Exit.runFailed)
        }
    }
}
