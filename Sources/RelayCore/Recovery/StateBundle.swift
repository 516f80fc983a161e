import Foundation

/// Seals and opens state bundles (`StateBundleFormat` has the layout). Sealing streams:
/// the plaintext passes through one guarded 64 KiB buffer, chunk by chunk, and only
/// ciphertext leaves it; opening checks the header before it decrypts anything.
public enum StateBundle {
    /// The sealed bundle of `entries`, sealed to `recoveryPublicKey`.
    public static func seal(_ entries: [StateEntry], relay: String, recoveryPublicKey: [UInt8],
                            created: Date = Date()) throws(RecoveryError) -> [UInt8] {
        do {
            let key = try SecretStream.newKey()
            defer { key.wipe() }
            let encryptor = try SecretStream.Encryptor(key: key)
            let header = StateBundleFormat.Header(relay: relay, created: created,
                                                  recoveryKey: RecoveryKey.fingerprint(publicKey: recoveryPublicKey),
                                                  sealedKey: try SecretStream.sealKey(key, to: recoveryPublicKey),
                                                  streamHeader: encryptor.header)
            let headerBytes = header.encoded()
            let ad = Digest.blake2b(headerBytes)
            var out = headerBytes
            let buffer = try SecretBytes(capacity: StateBundleFormat.chunkSize)
            defer { buffer.wipe() }
            func flush(final: Bool) {
                let chunk = buffer.withUnsafeBytes { encryptor.push($0, ad: ad, final: final) }
                out += StateBundleFormat.frameLength(chunk.count)
                out += chunk
                buffer.clear()
            }
            func write(_ bytes: UnsafeRawBufferPointer) {
                var rest = bytes
                while !rest.isEmpty {
                    if buffer.count == buffer.capacity { flush(final: false) }
                    let n = buffer.append(rest)
                    rest = UnsafeRawBufferPointer(rebasing: rest[n...])
                }
            }
            for e in entries {
                StateBundleFormat.entryHead(role: e.role, path: e.path, mode: e.mode, length: UInt64(e.data.count))
                    .withUnsafeBytes { write($0) }
                switch e.data {
                case .plain(let b): b.withUnsafeBytes { write($0) }
                case .secret(let s): s.withUnsafeBytes { write($0) }
                }
            }
            StateBundleFormat.endMark.withUnsafeBytes { write($0) }
            flush(final: true)
            return out
        } catch {
            throw .collect(path: "the state bundle", detail: "\(error)")
        }
    }

    /// The header only (no secret needed): which relay, when, sealed to which key.
    public static func header(_ sealed: [UInt8], source: String) throws(RecoveryError) -> StateBundleFormat.Header {
        try StateBundleFormat.Header.parse(sealed, source: source).0
    }

    /// Opens a sealed bundle with the recovery secret. `source` names it in messages;
    /// `relay`: refuse a bundle of any other relay. The caller wipes the entries.
    public static func open(_ sealed: [UInt8], secret: SecretBytes, source: String,
                            relay expected: String? = nil) throws(RecoveryError) -> (StateBundleFormat.Header, [StateEntry]) {
        let (header, headerLength) = try StateBundleFormat.Header.parse(sealed, source: source)
        if let expected, expected != header.relay {
            throw .otherRelay(source: source, bundleRelay: header.relay, expected: expected)
        }
        let mine = RecoveryKey.fingerprint(publicKey: RecoveryKey.publicKey(of: secret))
        guard mine == header.recoveryKey else {
            throw .wrongSecret(source: source, bundleKey: header.recoveryKey, secretKey: mine, relay: header.relay)
        }
        let ad = Digest.blake2b(Array(sealed[0..<headerLength]))
        let key: SecretBytes
        do {
            guard let k = try SecretStream.openKey(header.sealedKey, secretKey: secret) else {
                throw RecoveryError.damaged(source: source, detail: "its sealed key does not open with the secret its header names")
            }
            key = k
        } catch let e as RecoveryError {
            throw e
        } catch {
            throw .damaged(source: source, detail: "\(error)")
        }
        defer { key.wipe() }
        guard let decryptor = SecretStream.Decryptor(key: key, header: header.streamHeader) else {
            throw .damaged(source: source, detail: "its stream header is malformed")
        }
        var parser = StatePayloadParser()
        var i = headerLength
        var chunk = 0
        do {
            while true {
                guard i < sealed.count else {
                    throw RecoveryError.damaged(source: source, detail: "it ends before its last chunk: cut short after \(chunk) chunk(s)")
                }
                guard i + 4 <= sealed.count else {
                    throw RecoveryError.damaged(source: source, detail: "it ends inside chunk \(chunk + 1): cut short")
                }
                let length = Int(sealed[i..<(i + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
                i += 4
                guard length >= SecretStream.overhead, length <= StateBundleFormat.chunkSize + SecretStream.overhead else {
                    throw RecoveryError.damaged(source: source, detail: "chunk \(chunk + 1) has an impossible length \(length)")
                }
                guard i + length <= sealed.count else {
                    throw RecoveryError.damaged(source: source, detail: "it ends inside chunk \(chunk + 1): cut short")
                }
                chunk += 1
                let pulled: (plain: SecretBytes, final: Bool)?
                do {
                    pulled = try decryptor.pull(sealed[i..<(i + length)], ad: ad)
                } catch {
                    throw RecoveryError.damaged(source: source, detail: "\(error)")
                }
                guard let (plain, final) = pulled else {
                    throw RecoveryError.damaged(source: source, detail: "chunk \(chunk) fails authentication (altered, reordered, or its header changed)")
                }
                i += length
                var feedError: RecoveryError?
                plain.withUnsafeBytes { p in
                    do {
                        try parser.feed(p)
                    } catch {
                        feedError = (error as? RecoveryError) ?? .malformedContents(source: source, detail: "\(error)")
                    }
                }
                plain.wipe()
                if let feedError { throw RecoveryError.malformedContents(source: source, detail: feedError.detail) }
                if final {
                    guard i == sealed.count else {
                        throw RecoveryError.damaged(source: source, detail: "\(sealed.count - i) byte(s) follow its last chunk")
                    }
                    guard parser.isEnded else {
                        throw RecoveryError.malformedContents(source: source, detail: "its entries end without their end mark")
                    }
                    break
                }
            }
        } catch let e as RecoveryError {
            parser.wipe()
            throw e
        } catch {
            parser.wipe()
            throw .damaged(source: source, detail: "\(error)")
        }
        return (header, parser.entries)
    }
}

extension RecoveryError {
    /// The detail of a contents error (the parser does not know the source's name).
    var detail: String {
        if case .malformedContents(_, let d) = self { return d }
        return description
    }
}
