import Foundation
import GRDB
import Testing
@testable import RelayCore

@Suite("Recovery: what is backed up, where it goes back, what is refused")
struct RestorePlanTests {
    @Test("a config named relative to the caller's folder (--config relay.toml) is recorded by its absolute path, so the bundle can be restored")
    func relativeConfigPathIsMadeAbsolute() {
        let cwd = FileManager.default.currentDirectoryPath
        #expect(StateCollector.absolute("/etc/borg-relay/relay.toml") == "/etc/borg-relay/relay.toml")
        #expect(StateCollector.absolute("relay.toml") == URL(fileURLWithPath: cwd).appendingPathComponent("relay.toml").standardizedFileURL.path)
        #expect(StateCollector.absolute("./sub/../relay.toml").hasPrefix("/"))
        #expect(!StateCollector.absolute("./sub/../relay.toml").contains(".."))
    }

    @Test("the history is copied through memory: the copy opens with every row written before it (WAL included), nothing is left beside the history")
    func historySnapshotInMemory() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("br-snap-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/history.sqlite"
        let live = try DatabasePool(path: path)  // WAL: the rows below are in history.sqlite-wal
        try live.write { db in
            try db.execute(sql: "CREATE TABLE archive (id TEXT PRIMARY KEY, n INTEGER)")
            for i in 0..<500 { try db.execute(sql: "INSERT INTO archive VALUES (?, ?)", arguments: ["a\(i)", i]) }
        }
        let before = Set(try FileManager.default.contentsOfDirectory(atPath: dir))
        let bytes = try StateCollector.historySnapshot(path: path)
        try live.write { db in try db.execute(sql: "INSERT INTO archive VALUES ('after', 0)") }
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: dir)) == before)
        let copy = dir + "/restored.sqlite"
        try Data(bytes).write(to: URL(fileURLWithPath: copy))
        let restored = try DatabaseQueue(path: copy)
        let (count, sum, after) = try restored.read { db in
            (try Int.fetchOne(db, sql: "SELECT count(*) FROM archive") ?? -1,
             try Int.fetchOne(db, sql: "SELECT sum(n) FROM archive") ?? -1,
             try Int.fetchOne(db, sql: "SELECT count(*) FROM archive WHERE id = 'after'") ?? -1)
        }
        #expect(count == 500 && sum == 499 * 500 / 2 && after == 0)
        #expect(try restored.read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") } == "ok")
        try restored.close()
        try live.close()
        #expect(throws: RecoveryError.self) { try StateCollector.historySnapshot(path: dir + "/missing.sqlite") }
    }

    @Test("work directories of a state backup that did not end are removed at start; other names stay, a link of such a name is removed, not followed")
    func staleStateWork() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("br-work-\(UUID().uuidString)").path
        let outside = dir + "-outside"
        defer { try? FileManager.default.removeItem(atPath: dir); try? FileManager.default.removeItem(atPath: outside) }
        let fm = FileManager.default
        for d in [dir + "/.relay-state-a1B2c3", dir + "/.state-backup-x9Y8z7", dir + "/logs", outside] {
            try fm.createDirectory(atPath: d, withIntermediateDirectories: true)
        }
        try Data("sealed".utf8).write(to: URL(fileURLWithPath: dir + "/.relay-state-a1B2c3/bundle"))
        try Data("canary".utf8).write(to: URL(fileURLWithPath: outside + "/canary"))
        try fm.createSymbolicLink(atPath: dir + "/.relay-state-link", withDestinationPath: outside)
        for f in ["history.sqlite", ".relay-statefile", "relay-state-x"] {
            try Data().write(to: URL(fileURLWithPath: dir + "/" + f))
        }
        let removed = StateRepository.removeStaleWork(in: dir)
        #expect(removed == [".relay-state-a1B2c3", ".relay-state-link", ".state-backup-x9Y8z7"])
        #expect(try fm.contentsOfDirectory(atPath: dir).sorted() == [".relay-statefile", "history.sqlite", "logs", "relay-state-x"])
        #expect(fm.fileExists(atPath: outside + "/canary"))
        #expect(StateRepository.removeStaleWork(in: dir + "/missing").isEmpty)
    }

    static let config = """
        [relay]
        state_dir = "/var/lib/br"
        known_hosts = "/etc/br/known_hosts"
        state_server = "vault"
        state_repository = "/srv/borg/relay-state"

        [servers.vault]
        host = "b.example.net"
        user = "borg"
        key = "/etc/br/keys/vault"
        maintenance_key = "/etc/br/keys/vault-maint"

        [clients.web1]
        host = "t1"
        user = "root"
        key = "/etc/br/keys/web1"
        server = "vault"
        repository = "/srv/borg/web1"
        paths = ["/etc"]

        [clients.web2]
        host = "t2"
        user = "root"
        key = "/etc/br/keys/web1"
        server = "vault"
        repository = "/srv/borg/web2"
        paths = ["/etc"]
        """

    static func entries(dropping: String? = nil, adding: [StateEntry] = [], config: String = config) throws -> [StateEntry] {
        let cfg = try ConfigLoader.parse(config, file: "/old/relay.toml", checkFiles: false)
        return StateManifest(config: cfg).items.filter { $0.path != dropping && $0.required }.map {
            StateEntry(role: $0.role, path: $0.path, mode: 0o600,
                       data: $0.role.isSecret ? .secret(try! SecretBytes.copying(UnsafeRawBufferPointer(start: nil, count: 0))) : .plain($0.role == .config ? Array(config.utf8) : [1]))
        } + adding
    }

    @Test("the manifest: config, vault pair, recovery key, known_hosts, each key file once with its .pub, history, optional state files")
    func manifest() throws {
        let cfg = try ConfigLoader.parse(Self.config, file: "/etc/br/relay.toml", checkFiles: false)
        let items = StateManifest(config: cfg).items
        #expect(items.map(\.path) == [
            "/etc/br/relay.toml", "/var/lib/br/vault.key", "/var/lib/br/vault.pub", "/var/lib/br/recovery.pub", "/etc/br/known_hosts",
            "/etc/br/keys/vault", "/etc/br/keys/vault.pub", "/etc/br/keys/vault-maint", "/etc/br/keys/vault-maint.pub",
            "/etc/br/keys/web1", "/etc/br/keys/web1.pub",
            "/var/lib/br/history.sqlite", "/var/lib/br/overdue.json", "/var/lib/br/web-password",
        ])
        #expect(items.filter(\.required).map(\.role) == [.config, .vaultSecretKey, .vaultPublicKey, .recoveryPublicKey, .knownHosts,
                                                         .privateKey, .privateKey, .privateKey])
        #expect(cfg.relay.stateServer == "vault" && cfg.relay.stateRepository == "/srv/borg/relay-state")
        #expect(cfg.relay.stateSchedule.description == "@daily")
    }

    @Test("destinations: the config at --config, the rest where the recovered config names it")
    func destinations() throws {
        let e = try Self.entries()
        let plan = try RestorePlan.make(entries: e, configPath: "/new/relay.toml", source: "b", allowing: ["/etc/br"]) { _, _ in .absent }
        let paths = Set(plan.writes.map(\.path))
        #expect(paths.contains("/new/relay.toml") && !paths.contains("/old/relay.toml"))
        #expect(paths.isSuperset(of: ["/var/lib/br/vault.key", "/etc/br/keys/web1", "/etc/br/keys/vault-maint", "/etc/br/known_hosts"]))
        #expect(plan.writes.allSatisfy { $0.mode == 0o600 })
        // Files already there with the same bytes are kept.
        let same = try RestorePlan.make(entries: e, configPath: "/new/relay.toml", source: "b", allowing: ["/etc/br"]) { p, _ in p == "/etc/br/known_hosts" ? .same : .absent }
        #expect(same.unchanged == ["/etc/br/known_hosts"])
    }

    @Test("refusals: an existing vault, a file with other bytes, a missing key file, a key file the config does not name, no config")
    func refusals() throws {
        let e = try Self.entries()
        #expect(throws: RecoveryError.vaultExists(path: "/var/lib/br/vault.key")) {
            _ = try RestorePlan.make(entries: e, configPath: "/n", source: "b") { p, _ in p.hasSuffix("vault.key") ? .same : .absent }
        }
        #expect(throws: RecoveryError.wouldOverwrite(paths: ["/etc/br/keys/web1", "/n"])) {
            _ = try RestorePlan.make(entries: e, configPath: "/n", source: "b") { p, _ in p == "/n" || p == "/etc/br/keys/web1" ? .different : .absent }
        }
        #expect { _ = try RestorePlan.make(entries: try Self.entries(dropping: "/etc/br/keys/vault-maint"), configPath: "/n", source: "b") { _, _ in .absent } }
            throws: { "\($0)".contains("lacks key file /etc/br/keys/vault-maint") }
        let stray = StateEntry(role: .privateKey, path: "/root/.ssh/id_ed25519", mode: 0o600, data: .plain([1]))
        #expect { _ = try RestorePlan.make(entries: try Self.entries(adding: [stray]), configPath: "/n", source: "b") { _, _ in .absent } }
            throws: { "\($0)".contains("/root/.ssh/id_ed25519, which its config does not name") }
        #expect { _ = try RestorePlan.make(entries: try Self.entries(dropping: "/old/relay.toml"), configPath: "/n", source: "b") { _, _ in .absent } }
            throws: { "\($0)".contains("holds no config") }
        #expect { _ = try RestorePlan.make(entries: try Self.entries(dropping: "/var/lib/br/vault.key"), configPath: "/n", source: "b") { _, _ in .absent } }
            throws: { "\($0)".contains("holds no vault secret key") }
    }

    @Test("config: state_server and state_repository go together, name a server, take a cron state_schedule")
    func configKeys() throws {
        func load(_ relay: String) throws -> RelayConfig {
            try ConfigLoader.parse(Self.config.replacingOccurrences(of: "state_server = \"vault\"\nstate_repository = \"/srv/borg/relay-state\"", with: relay),
                                   file: "/c", checkFiles: false)
        }
        #expect(try load("").relay.stateServer == nil)
        #expect(try load("state_server = \"vault\"\nstate_repository = \"/s\"\nstate_schedule = \"15 3 * * *\"").relay.stateSchedule.description == "15 3 * * *")
        #expect { try load("state_server = \"vault\"") } throws: { "\($0)".contains("'state_repository': is required with state_server") }
        #expect { try load("state_repository = \"/s\"") } throws: { "\($0)".contains("'state_server': is required with state_repository") }
        #expect { try load("state_server = \"nope\"\nstate_repository = \"/s\"") } throws: { "\($0)".contains("no server named 'nope'") }
        #expect { try load("state_server = \"vault\"\nstate_repository = \"s\"") } throws: { "\($0)".contains("relative path") }
        #expect { try load("state_schedule = \"@daily\"") } throws: { "\($0)".contains("there is none") }
        #expect { try load("state_server = \"vault\"\nstate_repository = \"/s\"\nstate_schedule = \"61 * * * *\"") } throws: { "\($0)".contains("state_schedule") }
    }
}
