import Foundation
import GRDB
import GRDBSQLite

/// Reads what `StateManifest` names and seals it (the I/O side of a state backup). Key
/// files and the vault key are read into guarded memory and wiped once sealed; the
/// history database is copied online with SQLite's backup API (consistent while the agent
/// writes to it) into an in-memory database, whose bytes are taken with `sqlite3_serialize`:
/// no copy of it is ever on disk (an agent killed mid-backup leaves nothing behind).
public enum StateCollector {
    /// The sealed bundle of this relay's state, sealed to `state_dir/recovery.pub`.
    public static func sealedBundle(config: RelayConfig, now: Date = Date()) throws(RecoveryError) -> [UInt8] {
        let pubPath = StateManifest.recoveryPublicKeyPath(config.relay)
        guard FileManager.default.fileExists(atPath: pubPath) else { throw .noRecoveryKey(path: pubPath) }
        let pk: [UInt8]
        do {
            pk = try RecoveryKey.readPublicKey(path: pubPath)
        } catch {
            throw .collect(path: pubPath, detail: "\(error)")
        }
        let entries = try collect(config: config)
        defer { entries.forEach { $0.wipe() } }
        return try StateBundle.seal(entries, relay: config.relay.name, recoveryPublicKey: pk, created: now)
    }

    /// `path` against the current folder when it is relative (`relay.toml`, `./relay.toml`).
    static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        return URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath,
                                                          isDirectory: true)).standardizedFileURL.path
    }

    /// Every file of the manifest that exists (a missing required one is an error).
    public static func collect(config: RelayConfig) throws(RecoveryError) -> [StateEntry] {
        var entries: [StateEntry] = []
        // The config's own path is what --config said, maybe relative to the caller's
        // folder; the bundle records where it goes back, so it must be absolute.
        var config = config
        config.file = absolute(config.file)
        do {
            for item in StateManifest(config: config).items {
                var st = stat()
                guard stat(item.path, &st) == 0 else {
                    if item.required {
                        let why = String(cString: strerror(errno))
                        let fix = item.role == .vaultSecretKey || item.role == .vaultPublicKey
                            ? "create the vault with `relayctl vault init`" : "the config names it as the \(item.role); create it or fix the config"
                        throw RecoveryError.collect(path: item.path, detail: "\(why) (\(fix))")
                    }
                    continue
                }
                let mode = UInt32(st.st_mode & 0o7777)
                let data: StateEntry.Data
                if item.role == .history {
                    data = .plain(try historySnapshot(path: item.path))
                } else if item.role.isSecret {
                    do {
                        data = .secret(try SecretBytes.readFile(item.path))
                    } catch {
                        throw RecoveryError.collect(path: item.path, detail: "\(error) (run it as the agent's user, which owns the keys and state_dir)")
                    }
                } else {
                    guard let d = FileManager.default.contents(atPath: item.path) else {
                        throw RecoveryError.collect(path: item.path, detail: FileCheck.unreadableReason(item.path) ?? "cannot read it")
                    }
                    data = .plain(Array(d))
                }
                entries.append(StateEntry(role: item.role, path: item.path, mode: mode, data: data))
            }
        } catch let e as RecoveryError {
            entries.forEach { $0.wipe() }
            throw e
        } catch {
            entries.forEach { $0.wipe() }
            throw .collect(path: "state", detail: "\(error)")
        }
        return entries
    }

    /// A consistent copy of the SQLite history, taken with SQLite's online backup API into
    /// memory, as the bytes of a database file.
    static func historySnapshot(path: String) throws(RecoveryError) -> [UInt8] {
        do {
            var readOnly = Configuration()
            readOnly.readonly = true
            readOnly.busyMode = .timeout(10)
            let source = try DatabaseQueue(path: path, configuration: readOnly)
            let destination = try DatabaseQueue()
            try source.backup(to: destination)
            try source.close()
            let bytes = destination.inDatabase { db -> [UInt8]? in
                var size: sqlite3_int64 = 0
                guard let p = sqlite3_serialize(db.sqliteConnection, "main", &size, 0) else { return nil }
                defer { sqlite3_free(p) }
                return Array(UnsafeBufferPointer(start: p, count: Int(size)))
            }
            try destination.close()
            guard let bytes else {
                throw RecoveryError.collect(path: path, detail: "SQLite could not serialize the history's copy (out of memory?)")
            }
            return bytes
        } catch let e as RecoveryError {
            throw e
        } catch {
            throw .collect(path: path, detail: "copying the history with SQLite's backup API failed: \(error)")
        }
    }
}
