import CSodium
import Foundation

/// Bytes of a secret (a passphrase, a vault secret key) in libsodium-guarded memory:
/// guard pages around it, locked against swapping, zeroed on `wipe()` and in `deinit`.
/// Never converted to a `String`; reach the bytes with `withUnsafeBytes`.
public final class SecretBytes: @unchecked Sendable {
    // @unchecked: the buffer is written only while the owner builds it (single thread),
    // then only read; `wipe()` is called by the owner once it is done with it.
    private var pointer: UnsafeMutableRawPointer?
    public private(set) var count: Int
    public let capacity: Int

    /// Allocates `capacity` zeroed guarded bytes; `count` starts at 0.
    public init(capacity: Int) throws(VaultError) {
        try Sodium.ensureInitialised()
        guard capacity > 0, let p = sodium_malloc(capacity) else {
            throw VaultError.guardedMemory(size: capacity)
        }
        sodium_memzero(p, capacity)
        self.pointer = p
        self.capacity = capacity
        self.count = 0
    }

    deinit { wipe() }

    /// Zeroes and frees the memory. Safe to call more than once.
    public func wipe() {
        if let p = pointer {
            sodium_free(p)  // zeroes before unmapping
            pointer = nil
            count = 0
        }
    }

    public var isWiped: Bool { pointer == nil }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: pointer, count: pointer == nil ? 0 : count))
    }

    /// Gives `body` the whole capacity to fill; it returns how many bytes are now valid.
    func fill(_ body: (UnsafeMutableRawBufferPointer) throws -> Int) rethrows {
        guard let p = pointer else { return }
        let n = try body(UnsafeMutableRawBufferPointer(start: p, count: capacity))
        count = max(0, min(n, capacity))
    }

    /// A copy in its own guarded memory (for a run of several borg steps, each of which
    /// wipes the copy it was given).
    func copy() throws(VaultError) -> SecretBytes {
        let c = try SecretBytes(capacity: max(count, 1))
        withUnsafeBytes { src in
            c.fill { dst in
                if let s = src.baseAddress, src.count > 0 { dst.baseAddress!.copyMemory(from: s, byteCount: src.count) }
                return src.count
            }
        }
        return c
    }

    /// Drops trailing bytes while `predicate` holds (used to strip a final newline).
    func trimTrailing(where predicate: (UInt8) -> Bool) {
        guard let p = pointer else { return }
        let bytes = p.assumingMemoryBound(to: UInt8.self)
        while count > 0 && predicate(bytes[count - 1]) {
            bytes[count - 1] = 0
            count -= 1
        }
    }

    /// Constant-time comparison with another secret.
    public func equals(_ other: SecretBytes) -> Bool {
        guard count == other.count, let a = pointer, let b = other.pointer else { return false }
        return sodium_memcmp(a, b, count) == 0
    }
}

enum Sodium {
    static func ensureInitialised() throws(VaultError) {
        if sodium_init() < 0 { throw VaultError.sodiumInit }
    }
}
