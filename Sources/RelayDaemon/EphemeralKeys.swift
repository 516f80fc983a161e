import Foundation
import RelayCore

/// The single-use key pairs of `relayctl run --passphrase-stdin`: relayctl seals the
/// passphrase to a fresh public key, the daemon opens it once with the secret key, which is
/// then wiped. Keys expire after `lifetime` seconds; at most `max` are kept (the oldest
/// goes first), so that asking for keys cannot exhaust guarded memory.
struct EphemeralKeys {
    private struct Slot {
        var secretKey: SecretBytes
        var publicKey: [UInt8]
        var expires: Date
    }

    /// Why a sealed passphrase could not be opened.
    enum Refusal: Error, CustomStringConvertible {
        case unknownKey(String)
        case vault(VaultError)

        var description: String {
            switch self {
            case .unknownKey(let id): return "unknown or expired key \(id): ask for a new one (POST /v1/keys) and seal again"
            case .vault(let e): return "\(e)"
            }
        }
    }

    let lifetime: TimeInterval
    let max: Int
    private var slots: [String: Slot] = [:]

    init(lifetime: TimeInterval, max: Int) {
        self.lifetime = lifetime
        self.max = max
    }

    var count: Int { slots.count }

    mutating func make(now: Date) throws(VaultError) -> EphemeralKey {
        dropExpired(now: now)
        if slots.count >= max, let oldest = slots.min(by: { $0.value.expires < $1.value.expires })?.key {
            slots.removeValue(forKey: oldest)?.secretKey.wipe()
        }
        let pair = try Vault.ephemeralKeyPair()
        let id = UUID().uuidString.lowercased()
        let expires = now.addingTimeInterval(lifetime)
        slots[id] = Slot(secretKey: pair.secretKey, publicKey: pair.publicKey, expires: expires)
        return EphemeralKey(keyID: id, publicKey: Data(pair.publicKey).base64EncodedString(), expiresAt: expires)
    }

    /// Opens `sealed` with its key, which is gone afterwards whether or not the value opens.
    mutating func open(_ sealed: SealedPassphrase, context: String, now: Date) throws(Refusal) -> SecretBytes {
        dropExpired(now: now)
        guard let slot = slots.removeValue(forKey: sealed.keyID) else { throw .unknownKey(sealed.keyID) }
        defer { slot.secretKey.wipe() }
        do {
            return try Vault.open(SealedValue(base64: sealed.sealed), secretKey: slot.secretKey,
                                  publicKey: slot.publicKey, context: context)
        } catch {
            throw .vault(error)
        }
    }

    mutating func wipeAll() {
        for s in slots.values { s.secretKey.wipe() }
        slots.removeAll()
    }

    private mutating func dropExpired(now: Date) {
        for (id, s) in slots where s.expires < now {
            s.secretKey.wipe()
            slots.removeValue(forKey: id)
        }
    }
}
