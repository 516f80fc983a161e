import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
@testable import RelayCore
@testable import RelayDaemon

/// The control API's routes in process (Hummingbird's router test framework): the guard,
/// the routes, the error bodies. The peer is a fixed identity instead of SO_PEERCRED; the
/// end-to-end tests over the real socket are in IntegrationTests.
@Suite("Control API routes in process: roles, errors and bodies")
struct ControlRoutesTests {
    /// uid 900 is the agent; group 901 the socket's, 902 the admins'.
    static let access = ControlAccess(agentUID: 900, socketGID: 901, socketGroupName: "borg-relay",
                                      adminGID: 902, adminGroupName: "borg-relay-admin")
    static let agent = PeerCredentials(pid: 0, uid: 900, gid: 900)
    static let member = PeerCredentials(pid: 0, uid: 64_901, gid: 901)
    static let stranger = PeerCredentials(pid: 0, uid: 64_999, gid: 64_999)

    /// A daemon's router with a config of one client (no host is ever reached: no test
    /// here starts a run) and a fresh history.
    final class Fixture {
        let dir: String
        let manager: RunManager

        init() throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("routes-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: "\(dir)/state", withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: "\(dir)/key", contents: Data("k".utf8), attributes: [.posixPermissions: 0o600])
            _ = FileManager.default.createFile(atPath: "\(dir)/known_hosts", contents: Data())
            let config = try ConfigLoader.parse("""
                [relay]
                state_dir = "\(dir)/state"
                known_hosts = "\(dir)/known_hosts"

                [servers.vault]
                host = "backup.example.net"
                user = "borg"
                key = "\(dir)/key"

                [clients.web1]
                host = "web1.example.net"
                user = "root"
                key = "\(dir)/key"
                server = "vault"
                repository = "/srv/borg/web1"
                paths = ["/etc"]
                """, file: "\(dir)/relay.toml")
            let history = try HistoryStore(path: "\(dir)/state/history.sqlite")
            manager = RunManager(config: config, history: history, logger: Logger(label: "test"))
        }

        deinit { try? FileManager.default.removeItem(atPath: dir) }

        func app(as peer: PeerCredentials) -> some ApplicationProtocol {
            let router = ControlRoutes.router(manager: manager, policy: PeerPolicy(access: ControlRoutesTests.access),
                                              logger: Logger(label: "test"), peer: { _ in .success(peer) })
            return Application(router: router)
        }
    }

    static func json(_ r: TestResponse) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(buffer: r.body))) as? [String: Any] ?? [:]
    }

    @Test("status answers the agent and a member of the socket's group with the clients; a stranger gets 403")
    func status() async throws {
        let f = try Fixture()
        try await f.app(as: Self.agent).test(.router) { client in
            try await client.execute(uri: "/v1/status", method: .get) { r in
                #expect(r.status == .ok)
                let clients = (Self.json(r)["clients"] as? [[String: Any]])?.compactMap { $0["name"] as? String }
                #expect(clients == ["web1"], "\(String(buffer: r.body))")
            }
        }
        try await f.app(as: Self.member).test(.router) { client in
            try await client.execute(uri: "/v1/status", method: .get) { r in #expect(r.status == .ok) }
        }
        try await f.app(as: Self.stranger).test(.router) { client in
            try await client.execute(uri: "/v1/status", method: .get) { r in
                #expect(r.status == .forbidden)
                #expect(Self.json(r)["code"] as? String == "forbidden", "\(String(buffer: r.body))")
            }
        }
    }

    @Test("a member may not restore: 403 naming the admin group, before the body is even validated")
    func memberRestoreRefused() async throws {
        let f = try Fixture()
        let body = ByteBuffer(string: #"{"clients":["web1"],"operation":{"kind":"restore","archive":"a"}}"#)
        try await f.app(as: Self.member).test(.router) { client in
            try await client.execute(uri: "/v1/runs", method: .post, body: body) { r in
                #expect(r.status == .forbidden)
                #expect((Self.json(r)["error"] as? String)?.contains("borg-relay-admin") == true, "\(String(buffer: r.body))")
            }
        }
        #expect(try await f.manager.runs(client: nil, limit: 10).isEmpty, "nothing was queued")
    }

    @Test("bad requests get 400 or 404 with what was wrong: an unknown client, a body that is not a run request, an unknown operation, a bad limit, an unknown run")
    func errors() async throws {
        let f = try Fixture()
        try await f.app(as: Self.agent).test(.router) { client in
            try await client.execute(uri: "/v1/runs", method: .post, body: ByteBuffer(string: #"{"clients":["nope"]}"#)) { r in
                #expect(r.status == .notFound)
                #expect((Self.json(r)["error"] as? String)?.contains("unknown client 'nope'") == true, "\(String(buffer: r.body))")
            }
            try await client.execute(uri: "/v1/runs", method: .post, body: ByteBuffer(string: "[1,2")) { r in
                #expect(r.status == .badRequest)
                #expect((Self.json(r)["error"] as? String)?.contains("not a valid run request") == true)
            }
            let unknown = ByteBuffer(string: #"{"clients":["web1"],"operation":{"kind":"delete"}}"#)
            try await client.execute(uri: "/v1/runs", method: .post, body: unknown) { r in
                #expect(r.status == .badRequest)
                #expect((Self.json(r)["error"] as? String)?.contains("unknown operation 'delete'") == true, "\(String(buffer: r.body))")
            }
            try await client.execute(uri: "/v1/runs?limit=0", method: .get) { r in
                #expect(r.status == .badRequest)
                #expect((Self.json(r)["error"] as? String)?.contains("limit must be a number from 1 to 10000") == true)
            }
            try await client.execute(uri: "/v1/runs/20261202-000000-abcd", method: .get) { r in
                #expect(r.status == .notFound)
            }
            try await client.execute(uri: "/v1/runs/..%2Fetc/log", method: .get) { r in
                #expect(r.status == .badRequest || r.status == .notFound)
            }
        }
        #expect(try await f.manager.runs(client: nil, limit: 10).isEmpty, "nothing was queued")
    }

    @Test("a body larger than the limit is refused with 413, for a member too (the guard reads it first)")
    func tooLarge() async throws {
        let f = try Fixture()
        let big = ByteBuffer(string: #"{"clients":["web1"],"x":""# + String(repeating: "a", count: ControlAPI.maxRequestBody) + #""}"#)
        for peer in [Self.agent, Self.member] {
            try await f.app(as: peer).test(.router) { client in
                try await client.execute(uri: "/v1/runs", method: .post, body: big) { r in
                    #expect(r.status == .contentTooLarge, "\(String(buffer: r.body))")
                }
            }
        }
    }

    @Test("a one-time key for --passphrase-stdin: 201 with a 32-byte public key that expires")
    func newKey() async throws {
        let f = try Fixture()
        try await f.app(as: Self.agent).test(.router) { client in
            try await client.execute(uri: "/v1/keys", method: .post) { r in
                #expect(r.status == .created)
                let key = try ControlAPI.decoder().decode(EphemeralKey.self, from: Data(buffer: r.body))
                #expect(Data(base64Encoded: key.publicKey)?.count == 32)
                #expect(key.expiresAt > Date())
            }
        }
    }
}

@Suite("The metrics endpoint in process: GET /metrics only, the text format, no secret")
struct MetricsRouteTests {
    @Test("GET /metrics answers the exposition; other methods and paths are refused")
    func route() async throws {
        let f = try ControlRoutesTests.Fixture()
        await f.manager.startMonitoring()
        let app = Application(router: MetricsServer.router(metrics: f.manager.metrics))
        try await app.test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get) { r in
                #expect(r.status == .ok)
                #expect(r.headers[.contentType] == MetricsServer.contentType)
                let text = String(buffer: r.body)
                #expect(text.contains("borg_relay_build_info{version=\"\(RelayVersion.current)\"} 1"), "\(text)")
                #expect(text.contains("borg_relay_overdue{client=\"web1\"} 0"))
                #expect(text.contains("borg_relay_runs_running 0"))
            }
            try await client.execute(uri: "/metrics", method: .post) { r in #expect(r.status == .notFound || r.status == .methodNotAllowed) }
            try await client.execute(uri: "/v1/status", method: .get) { r in #expect(r.status == .notFound) }
        }
    }

    @Test("notify test is for admins: a member of the socket group is refused before anything is sent")
    func notifyTestAdminOnly() async throws {
        let f = try ControlRoutesTests.Fixture()
        try await f.app(as: ControlRoutesTests.member).test(.router) { client in
            try await client.execute(uri: "/v1/notify/ops/test", method: .post) { r in
                #expect(r.status == .forbidden, "\(String(buffer: r.body))")
            }
        }
        try await f.app(as: ControlRoutesTests.agent).test(.router) { client in
            try await client.execute(uri: "/v1/notify/ops/test", method: .post) { r in
                #expect(r.status == .notFound)
                #expect((ControlRoutesTests.json(r)["error"] as? String)?.contains("no notifier 'ops'") == true, "\(String(buffer: r.body))")
            }
        }
    }

    @Test("ntfy titles cannot carry a header break")
    func headerSafe() {
        #expect(NotifyCenter.headerSafe("a\r\nX-Evil: 1") == "a??X-Evil: 1")
    }
}
