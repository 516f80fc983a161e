import Foundation

/// The state bundle's layout, as values (no I/O, no cryptography):
///
/// ```
/// clear header   "borg-relay-state" (16 bytes), version (1 byte), then fields
///                (tag u8, length u16 BE, bytes) ending with tag 0:
///                1 relay name, 2 created (u64 BE seconds), 3 recovery key fingerprint,
///                4 the stream key sealed to the recovery public key (crypto_box_seal),
///                5 the secretstream header
/// body           frames: length u32 BE, then a crypto_secretstream_xchacha20poly1305
///                chunk; each bound to BLAKE2b(header) as additional data; FINAL on the last
/// payload        (inside the chunks) entries: role u8, path length u16 BE, path,
///                mode u32 BE, data length u64 BE, data; then role 0 (the end)
/// ```
///
/// The header names the relay and the recovery key before anything is decrypted, so a
/// bundle of another relay, or a secret that is not the one the bundle was sealed to, is
/// told precisely; binding it as additional data makes a changed header fail like a
/// changed chunk.
public enum StateBundleFormat {
    public static let magic = Array("borg-relay-state".utf8)
    public static let version: UInt8 = 1
    /// Plaintext bytes per chunk.
    public static let chunkSize = 64 * 1024
    static let maxPath = 4096
    /// A secret entry (a key file) is at most this large.
    static let maxSecretEntry = 1 << 20
    /// Any entry (the history database) is at most this large.
    static let maxEntry: UInt64 = 1 << 32

    /// What an entry is; decides where recovery writes it and whether its bytes are secret.
    public enum Role: UInt8, Sendable, CaseIterable, CustomStringConvertible {
        case config = 1
        case vaultSecretKey = 2
        case vaultPublicKey = 3
        case recoveryPublicKey = 4
        case knownHosts = 5
        case privateKey = 6
        case publicKey = 7
        case history = 8
        case overdue = 9
        case webPassword = 10
        case databasePassword = 11

        /// Its bytes live in guarded memory only.
        public var isSecret: Bool {
            switch self {
            case .vaultSecretKey, .privateKey, .webPassword, .databasePassword: return true
            default: return false
            }
        }

        public var description: String {
            switch self {
            case .config: return "config"
            case .vaultSecretKey: return "vault secret key"
            case .vaultPublicKey: return "vault public key"
            case .recoveryPublicKey: return "recovery public key"
            case .knownHosts: return "known_hosts"
            case .privateKey: return "private key"
            case .publicKey: return "public key"
            case .history: return "history database"
            case .overdue: return "overdue record"
            case .webPassword: return "status page password"
            case .databasePassword: return "database password"
            }
        }
    }

    /// The clear header.
    public struct Header: Equatable, Sendable {
        public var relay: String
        public var created: Date
        /// `RecoveryKey.fingerprint` of the public key the stream key is sealed to.
        public var recoveryKey: String
        public var sealedKey: [UInt8]
        public var streamHeader: [UInt8]

        public init(relay: String, created: Date, recoveryKey: String, sealedKey: [UInt8], streamHeader: [UInt8]) {
            self.relay = relay
            self.created = Date(timeIntervalSince1970: created.timeIntervalSince1970.rounded(.down))
            self.recoveryKey = recoveryKey
            self.sealedKey = sealedKey
            self.streamHeader = streamHeader
        }

        public func encoded() -> [UInt8] {
            var out = StateBundleFormat.magic + [StateBundleFormat.version]
            func field(_ tag: UInt8, _ bytes: [UInt8]) {
                out.append(tag)
                out += be(UInt16(bytes.count))
                out += bytes
            }
            field(1, Array(relay.utf8))
            field(2, be(UInt64(max(0, created.timeIntervalSince1970))))
            field(3, Array(recoveryKey.utf8))
            field(4, sealedKey)
            field(5, streamHeader)
            out += [0, 0, 0]
            return out
        }

        /// Parses the header at the start of `bytes`; returns it and its length.
        public static func parse(_ bytes: [UInt8], source: String) throws(RecoveryError) -> (Header, Int) {
            let magic = StateBundleFormat.magic
            guard bytes.count >= magic.count, Array(bytes[0..<magic.count]) == magic else {
                throw .notABundle(source: source, detail: bytes.isEmpty ? "it is empty" : "it does not start with 'borg-relay-state'")
            }
            guard bytes.count > magic.count else { throw .notABundle(source: source, detail: "it ends inside its header") }
            let version = bytes[magic.count]
            guard version == StateBundleFormat.version else { throw .unsupportedVersion(source: source, version: Int(version)) }
            var i = magic.count + 1
            var fields: [UInt8: [UInt8]] = [:]
            while true {
                guard i + 3 <= bytes.count else { throw .notABundle(source: source, detail: "it ends inside its header") }
                let tag = bytes[i]
                let length = Int(bytes[i + 1]) << 8 | Int(bytes[i + 2])
                i += 3
                if tag == 0 {
                    guard length == 0 else { throw .notABundle(source: source, detail: "its header's end mark is malformed") }
                    break
                }
                guard (1...5).contains(tag) else { throw .notABundle(source: source, detail: "its header has an unknown field \(tag)") }
                guard fields[tag] == nil else { throw .notABundle(source: source, detail: "its header has field \(tag) twice") }
                guard i + length <= bytes.count else { throw .notABundle(source: source, detail: "it ends inside its header") }
                fields[tag] = Array(bytes[i..<(i + length)])
                i += length
            }
            guard let name = fields[1], let created = fields[2], created.count == 8, let fp = fields[3],
                  let sealed = fields[4], let stream = fields[5] else {
                throw .notABundle(source: source, detail: "its header lacks a field")
            }
            let relay = String(decoding: name, as: UTF8.self)
            let key = String(decoding: fp, as: UTF8.self)
            guard RelayName.isValid(relay), key.hasPrefix("BRR-"), key.count < 100, key.allSatisfy({ $0.isASCII }) else {
                throw .notABundle(source: source, detail: "its header names no valid relay or recovery key")
            }
            let seconds = created.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            return (Header(relay: relay, created: Date(timeIntervalSince1970: TimeInterval(seconds)), recoveryKey: key,
                           sealedKey: sealed, streamHeader: stream), i)
        }
    }

    /// The head of one payload entry (its data follows).
    public static func entryHead(role: Role, path: String, mode: UInt32, length: UInt64) -> [UInt8] {
        let p = Array(path.utf8)
        return [role.rawValue] + be(UInt16(p.count)) + p + be(mode) + be(length)
    }

    /// The payload's end mark.
    public static let endMark: [UInt8] = [0]

    /// One body frame's length prefix.
    public static func frameLength(_ n: Int) -> [UInt8] { be(UInt32(n)) }

    static func be<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
        withUnsafeBytes(of: v.bigEndian) { Array($0) }
    }
}

/// A payload entry once read.
public struct StateEntry: @unchecked Sendable {
    // @unchecked: the secret's buffer is only read after the parser built it.
    public enum Data {
        case plain([UInt8])
        case secret(SecretBytes)

        public var count: Int {
            switch self {
            case .plain(let b): return b.count
            case .secret(let s): return s.count
            }
        }
    }

    public var role: StateBundleFormat.Role
    /// Where the file was on the relay that made the bundle.
    public var path: String
    public var mode: UInt32
    public var data: Data

    public func wipe() {
        if case .secret(let s) = data { s.wipe() }
    }
}

/// Reads payload entries from decrypted chunks as they come (a value, no I/O): secret
/// entries go straight into guarded memory.
public struct StatePayloadParser {
    enum Stage {
        case role
        case pathLength(role: StateBundleFormat.Role)
        case path(role: StateBundleFormat.Role, length: Int)
        case modeAndLength(role: StateBundleFormat.Role, path: String)
        case data(StateEntry, remaining: UInt64)
        case ended
    }

    private var stage = Stage.role
    private var pending: [UInt8] = []
    public private(set) var entries: [StateEntry] = []
    public var isEnded: Bool { if case .ended = stage { return true } else { return false } }

    public init() {}

    /// Feeds the next plaintext bytes; a malformed payload is an error whose text says where.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) throws(RecoveryError) {
        var i = 0
        func need(_ n: Int) -> [UInt8]? {
            let take = Swift.min(n - pending.count, bytes.count - i)
            if take > 0 { pending += bytes[i..<(i + take)]; i += take }
            guard pending.count == n else { return nil }
            defer { pending = [] }
            return pending
        }
        while i < bytes.count {
            switch stage {
            case .ended:
                throw .malformedContents(source: "", detail: "bytes after the end of its entries")
            case .role:
                let r = bytes[i]
                i += 1
                if r == 0 {
                    stage = .ended
                    continue
                }
                guard let role = StateBundleFormat.Role(rawValue: r) else {
                    throw .malformedContents(source: "", detail: "an entry of unknown kind \(r)")
                }
                stage = .pathLength(role: role)
            case .pathLength(let role):
                guard let b = need(2) else { return }
                let n = Int(b[0]) << 8 | Int(b[1])
                guard n > 0, n <= StateBundleFormat.maxPath else {
                    throw .malformedContents(source: "", detail: "a \(role) entry with a path of \(n) bytes")
                }
                stage = .path(role: role, length: n)
            case .path(let role, let length):
                guard let b = need(length) else { return }
                let path = String(decoding: b, as: UTF8.self)
                guard path.hasPrefix("/"), !path.contains("\0"), !path.split(separator: "/").contains("..") else {
                    throw .malformedContents(source: "", detail: "a \(role) entry whose path is not absolute and plain")
                }
                stage = .modeAndLength(role: role, path: path)
            case .modeAndLength(let role, let path):
                guard let b = need(12) else { return }
                let mode = b[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                let length = b[4..<12].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                let limit = role.isSecret ? UInt64(StateBundleFormat.maxSecretEntry) : StateBundleFormat.maxEntry
                guard length <= limit else {
                    throw .malformedContents(source: "", detail: "a \(role) entry of \(length) bytes")
                }
                let data: StateEntry.Data
                if role.isSecret {
                    do {
                        data = .secret(try SecretBytes(capacity: Swift.max(1, Int(length))))
                    } catch {
                        throw .malformedContents(source: "", detail: "\(error)")
                    }
                } else {
                    var b: [UInt8] = []
                    b.reserveCapacity(Int(length))
                    data = .plain(b)
                }
                let entry = StateEntry(role: role, path: path, mode: mode, data: data)
                if length == 0 {
                    entries.append(entry)
                    stage = .role
                } else {
                    stage = .data(entry, remaining: length)
                }
            case .data(var entry, let remaining):
                stage = .ended  // the stage's copy is dropped, so the array grows in place
                let take = Int(Swift.min(remaining, UInt64(bytes.count - i)))
                let slice = UnsafeRawBufferPointer(rebasing: bytes[i..<(i + take)])
                switch entry.data {
                case .secret(let s): s.append(slice)
                case .plain(var b):
                    entry.data = .plain([])  // keep one reference to the array
                    b += slice
                    entry.data = .plain(b)
                }
                i += take
                let left = remaining - UInt64(take)
                if left == 0 {
                    entries.append(entry)
                    stage = .role
                } else {
                    stage = .data(entry, remaining: left)
                }
            }
        }
    }

    /// Wipes every secret read so far (after a failure, or once written).
    public func wipe() {
        entries.forEach { $0.wipe() }
        if case .data(let e, _) = stage { e.wipe() }
    }
}
