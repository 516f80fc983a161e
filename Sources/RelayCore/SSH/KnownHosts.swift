import CLibSSH
import Foundation

/// The relay's pinned known_hosts file, read as OpenSSH reads it. Host patterns are matched
/// by libssh's own line parser (`[host]:port`, wildcards, `!` negation and hashed names, as
/// in libssh's check), and the marker lines that libssh 0.10 silently skips are read too:
/// `@revoked` (OpenSSH refuses a host that offers such a key) and `@cert-authority` (host
/// certificates, which libssh 0.10 cannot verify).
public enum KnownHosts {
    public enum Marker: String, Sendable {
        case revoked = "@revoked"
        case certAuthority = "@cert-authority"
    }

    /// One line of the file whose host patterns match the name asked for.
    public struct Entry: Sendable, Equatable {
        /// 1-based, for messages.
        public let line: Int
        public let marker: Marker?
        /// e.g. ssh-ed25519
        public let type: String
        public let base64: String
        /// SHA256:… as `ssh-keygen -l` prints it.
        public let fingerprint: String
    }

    /// A line split into its marker and the rest (what libssh's parser reads), or nil for a
    /// comment, a blank line or an unknown marker (OpenSSH ignores those lines too).
    /// Pure: no I/O.
    static func split(_ line: Substring) -> (marker: Marker?, rest: String)? {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        if trimmed.isEmpty || trimmed.hasPrefix("#") { return nil }
        guard trimmed.hasPrefix("@") else { return (nil, trimmed) }
        let word = trimmed.prefix { $0 != " " && $0 != "\t" }
        guard let marker = Marker(rawValue: String(word)) else { return nil }
        let rest = trimmed.dropFirst(word.count).trimmingCharacters(in: .whitespaces)
        return rest.isEmpty ? nil : (marker, rest)
    }

    /// The entries for `name` (`host`, or `[host]:port` unless port 22) in `text`.
    public static func entries(for name: String, text: String) -> [Entry] {
        var found: [Entry] = []
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            guard let (marker, rest) = split(line.hasSuffix("\r") ? line.dropLast() : line) else { continue }
            var entry: UnsafeMutablePointer<ssh_knownhosts_entry>?
            guard ssh_known_hosts_parse_line(name.lowercased(), rest, &entry) == SSH_OK, let e = entry else { continue }
            defer { ssh_knownhosts_entry_free(e) }
            guard let k = e.pointee.publickey else { continue }
            var b64: UnsafeMutablePointer<CChar>?
            guard ssh_pki_export_pubkey_base64(k, &b64) == SSH_OK, let b = b64 else { continue }
            defer { ssh_string_free_char(b) }
            let type = ssh_key_type_to_char(ssh_key_type(k)).map { String(cString: $0) } ?? "unknown"
            found.append(Entry(line: i + 1, marker: marker, type: type, base64: String(cString: b),
                               fingerprint: SSHKeys.fingerprint(k) ?? "SHA256:?"))
        }
        return found
    }

    /// The entries for `name` in the file at `path` (none when it cannot be read).
    public static func entries(for name: String, path: String) -> [Entry] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return entries(for: name, text: text)
    }

    /// The pinned keys (lines without a marker) for `name`.
    public static func pinned(for name: String, path: String) -> [Entry] {
        entries(for: name, path: path).filter { $0.marker == nil }
    }

    /// The `@revoked` line that revokes `base64` for `name`, if any.
    public static func revocation(of base64: String, for name: String, path: String) -> Entry? {
        entries(for: name, path: path).first { $0.marker == .revoked && $0.base64 == base64 }
    }
}

/// What `relayctl hostkey --add` does with the keys a host offered, decided against what the
/// known_hosts file already says about that name. No I/O: `KnownHosts.append` writes.
public enum PinDecision: Sendable, Equatable {
    /// Append these lines.
    case add([String])
    /// Every offered key is pinned already.
    case nothingNew
    /// An offered key is marked @revoked: nothing is pinned.
    case revoked(KnownHosts.Entry)
    /// The name is pinned with other keys only: the host key changed (or this is another
    /// host); nothing is pinned.
    case changed

    public init(name: String, offered: [HostKeyInfo], entries: [KnownHosts.Entry]) {
        let pinned = entries.filter { $0.marker == nil }.map(\.base64)
        if let r = entries.first(where: { e in e.marker == .revoked && offered.contains { $0.base64 == e.base64 } }) {
            self = .revoked(r)
        } else if !pinned.isEmpty && !offered.contains(where: { pinned.contains($0.base64) }) {
            self = .changed
        } else {
            let new = offered.filter { !pinned.contains($0.base64) }
            self = new.isEmpty ? .nothingNew : .add(new.map { $0.knownHostsLine(name: name) })
        }
    }
}

extension KnownHosts {
    /// Appends `lines` to the known_hosts file at `path` (created 0644 if missing; a
    /// symlink is refused).
    public static func append(_ lines: [String], to path: String) throws(SystemError) {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw SystemError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array(lines.map { $0 + "\n" }.joined().utf8)
        let written = write(fd, bytes, bytes.count)
        guard written == bytes.count else { throw SystemError("writing \(path) failed: \(String(cString: strerror(errno)))") }
    }
}
