import CSodium
import Foundation

/// libsodium's `crypto_secretstream_xchacha20poly1305`: a stream of authenticated chunks
/// under one random key, the last one tagged FINAL, so that a cut, a reordering, a changed
/// or an added byte is detected. The key is sealed to a public key (`crypto_box_seal`) so
/// that only the holder of the matching secret can read the stream.
public enum SecretStream {
    public static let keyBytes = Int(crypto_secretstream_xchacha20poly1305_keybytes())
    public static let headerBytes = Int(crypto_secretstream_xchacha20poly1305_headerbytes())
    public static let overhead = Int(crypto_secretstream_xchacha20poly1305_abytes())
    public static let sealedKeyBytes = keyBytes + Int(crypto_box_sealbytes())

    /// A fresh random stream key in guarded memory.
    public static func newKey() throws(VaultError) -> SecretBytes {
        try Sodium.ensureInitialised()
        let k = try SecretBytes(capacity: keyBytes)
        k.fill { buf in
            crypto_secretstream_xchacha20poly1305_keygen(buf.baseAddress!.assumingMemoryBound(to: UInt8.self))
            return keyBytes
        }
        return k
    }

    /// `key` sealed to `publicKey` (anyone may seal; only the secret key's holder opens).
    public static func sealKey(_ key: SecretBytes, to publicKey: [UInt8]) throws(VaultError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: sealedKeyBytes)
        let rc = key.withUnsafeBytes { k in
            crypto_box_seal(&out, k.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(k.count), publicKey)
        }
        guard rc == 0 else { throw VaultError.openFailed(context: "sealing the state bundle's key") }
        return out
    }

    /// Opens a sealed stream key; nil when `secretKey` is not the one it was sealed to or
    /// the bytes were altered.
    public static func openKey(_ sealed: [UInt8], secretKey: SecretBytes) throws(VaultError) -> SecretBytes? {
        guard sealed.count == sealedKeyBytes else { return nil }
        let pk = Vault.publicKey(of: secretKey)
        let k = try SecretBytes(capacity: keyBytes)
        var rc: Int32 = -1
        k.fill { out in
            rc = secretKey.withUnsafeBytes { sk in
                crypto_box_seal_open(out.baseAddress!.assumingMemoryBound(to: UInt8.self), sealed, UInt64(sealed.count), pk,
                                     sk.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
            return rc == 0 ? keyBytes : 0
        }
        guard rc == 0 else {
            k.wipe()
            return nil
        }
        return k
    }

    /// Encrypts chunks; `header` goes in front of the first one.
    public final class Encryptor {
        private var state = crypto_secretstream_xchacha20poly1305_state()
        public let header: [UInt8]

        public init(key: SecretBytes) throws(VaultError) {
            try Sodium.ensureInitialised()
            var h = [UInt8](repeating: 0, count: SecretStream.headerBytes)
            var st = crypto_secretstream_xchacha20poly1305_state()
            let rc = key.withUnsafeBytes { k in
                crypto_secretstream_xchacha20poly1305_init_push(&st, &h, k.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
            header = h
            state = st
            sodium_memzero(&st, MemoryLayout.size(ofValue: st))
            guard rc == 0 else { throw VaultError.openFailed(context: "starting the state bundle's encryption") }
        }

        deinit { sodium_memzero(&state, MemoryLayout.size(ofValue: state)) }

        /// One chunk: `plain`'s bytes encrypted, bound to `ad`; `final` on the last.
        public func push(_ plain: UnsafeRawBufferPointer, ad: [UInt8], final: Bool) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: plain.count + SecretStream.overhead)
            var outLength: UInt64 = 0
            let tag = final ? UInt8(crypto_secretstream_xchacha20poly1305_tag_final()) : UInt8(crypto_secretstream_xchacha20poly1305_tag_message())
            _ = crypto_secretstream_xchacha20poly1305_push(&state, &out, &outLength,
                                                          plain.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(plain.count),
                                                          ad, UInt64(ad.count), tag)
            return Array(out.prefix(Int(outLength)))
        }
    }

    /// Decrypts chunks in order.
    public final class Decryptor {
        private var state = crypto_secretstream_xchacha20poly1305_state()

        /// nil when the header does not fit the key (cannot happen for a good bundle).
        public init?(key: SecretBytes, header: [UInt8]) {
            guard header.count == SecretStream.headerBytes else { return nil }
            var st = crypto_secretstream_xchacha20poly1305_state()
            let rc = key.withUnsafeBytes { k in
                crypto_secretstream_xchacha20poly1305_init_pull(&st, header, k.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
            state = st
            sodium_memzero(&st, MemoryLayout.size(ofValue: st))
            if rc != 0 { return nil }
        }

        deinit { sodium_memzero(&state, MemoryLayout.size(ofValue: state)) }

        /// The chunk's plaintext in guarded memory and whether it was the final one; nil when
        /// the chunk was altered, cut, reordered or bound to other data.
        public func pull(_ cipher: ArraySlice<UInt8>, ad: [UInt8]) throws(VaultError) -> (plain: SecretBytes, final: Bool)? {
            guard cipher.count >= SecretStream.overhead else { return nil }
            let plain = try SecretBytes(capacity: max(1, cipher.count - SecretStream.overhead))
            var tag: UInt8 = 0
            var rc: Int32 = -1
            plain.fill { out in
                var outLength: UInt64 = 0
                rc = cipher.withUnsafeBufferPointer { c in
                    crypto_secretstream_xchacha20poly1305_pull(&state, out.baseAddress!.assumingMemoryBound(to: UInt8.self), &outLength,
                                                               &tag, c.baseAddress, UInt64(c.count), ad, UInt64(ad.count))
                }
                return rc == 0 ? Int(outLength) : 0
            }
            guard rc == 0 else {
                plain.wipe()
                return nil
            }
            return (plain, tag == UInt8(crypto_secretstream_xchacha20poly1305_tag_final()))
        }
    }
}

extension SecretBytes {
    /// Appends bytes (up to the capacity); returns how many were taken.
    @discardableResult
    public func append(_ bytes: UnsafeRawBufferPointer) -> Int {
        let start = count
        var taken = 0
        fill { buf in
            taken = Swift.min(bytes.count, buf.count - start)
            if taken > 0, let src = bytes.baseAddress { (buf.baseAddress! + start).copyMemory(from: src, byteCount: taken) }
            return start + taken
        }
        return taken
    }

    /// Empties the buffer (zeroing what it held), keeping its memory.
    public func clear() {
        fill { buf in
            if let p = buf.baseAddress { sodium_memzero(p, buf.count) }
            return 0
        }
    }

    /// Guarded memory holding a copy of `bytes` (at least 1 byte of capacity).
    public static func copying(_ bytes: UnsafeRawBufferPointer) throws(VaultError) -> SecretBytes {
        let s = try SecretBytes(capacity: Swift.max(1, bytes.count))
        s.append(bytes)
        return s
    }

    /// Reads a whole file into guarded memory (a private key, the vault key): the bytes
    /// never pass through an ordinary Swift array. At most `limit` bytes.
    public static func readFile(_ path: String, limit: Int = 1 << 20) throws(VaultError) -> SecretBytes {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw VaultError.unreadableKey(path: path, reason: String(cString: strerror(errno))) }
        defer { Glibc.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw VaultError.unreadableKey(path: path, reason: "not a regular file")
        }
        guard Int(st.st_size) <= limit else { throw VaultError.unreadableKey(path: path, reason: "larger than \(limit) bytes") }
        let s = try SecretBytes(capacity: Swift.max(1, Int(st.st_size)))
        var failure: String?
        s.fill { buf in
            var n = 0
            while n < Int(st.st_size) {
                let r = Glibc.read(fd, buf.baseAddress! + n, Int(st.st_size) - n)
                if r < 0 && errno == EINTR { continue }
                if r < 0 { failure = String(cString: strerror(errno)); break }
                if r == 0 { break }
                n += r
            }
            return n
        }
        if let failure {
            s.wipe()
            throw VaultError.unreadableKey(path: path, reason: failure)
        }
        return s
    }
}
