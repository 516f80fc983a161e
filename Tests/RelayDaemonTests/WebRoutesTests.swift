import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
@testable import RelayCore
@testable import RelayDaemon

/// The status page's routes in process (Hummingbird's router test framework): every page,
/// the login form, sessions, the proxy header, CSRF and the roles of the actions. Each
/// refusal is checked by its trace: no run in the history, no cookie, no session.
@Suite("Status page routes in process: login, sessions, proxy users, CSRF, pages, actions", .serialized)
struct WebRoutesTests {
    static let password = "correct horse battery staple"

    /// A daemon's manager with one client on a closed loopback port (a run started here is
    /// skipped at once, and nothing outside 127.0.0.1 is ever asked), and a password set.
    final class Fixture: Sendable {
        let dir: String
        let manager: RunManager
        let history: HistoryStore
        let gate: WebGate

        init(web: String = "listen = \":8088\"", roles: [String: ControlAccess.Role] = [:]) throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("web-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: "\(dir)/state", withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: "\(dir)/key", contents: Data("k".utf8), attributes: [.posixPermissions: 0o600])
            _ = FileManager.default.createFile(atPath: "\(dir)/known_hosts", contents: Data())
            let config = try ConfigLoader.parse("""
                [relay]
                state_dir = "\(dir)/state"
                known_hosts = "\(dir)/known_hosts"
                connect_attempts = 1

                [servers.vault]
                host = "127.0.0.1"
                port = 1
                user = "borg"
                key = "\(dir)/key"

                [clients.web1]
                host = "127.0.0.1"
                port = 1
                user = "root"
                key = "\(dir)/key"
                server = "vault"
                repository = "/srv/borg/web1"
                paths = ["/etc"]

                [web]
                \(web)
                """, file: "\(dir)/relay.toml")
            history = try HistoryStore(path: "\(dir)/state/history.sqlite")
            manager = RunManager(config: config, history: history, logger: Logger(label: "test"))
            let secret = try PasswordHash.secret(Array(WebRoutesTests.password.utf8))
            defer { secret.wipe() }
            try WebPasswordFile.store(secret, stateDir: "\(dir)/state")
            gate = try WebGate(settings: config.web!, passwordPath: WebSettings.passwordPath(stateDir: "\(dir)/state"),
                               roleOf: { roles[$0] ?? .none })
        }

        deinit { try? FileManager.default.removeItem(atPath: dir) }

        func app(maxEventStreams: Int = WebRoutes.maxEventStreams) throws -> some ApplicationProtocol {
            Application(router: WebRoutes.router(manager: manager, gate: gate, renderer: try WebRenderer(), relay: "relay-test",
                                                 logger: Logger(label: "test"), maxEventStreams: maxEventStreams))
        }

        /// Waits until no run of the fixture is unfinished (a started run is skipped quickly).
        func settle() async throws {
            for _ in 0..<200 {
                if try await manager.runs(client: nil, limit: 50).allSatisfy(\.isFinished) { return }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    static func form(_ fields: [(String, String)]) -> ByteBuffer {
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
        return ByteBuffer(string: fields.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: allowed)!)" }
            .joined(separator: "&"))
    }

    static let formHeaders: HTTPFields = [.contentType: "application/x-www-form-urlencoded"]

    static func cookieHeaders(_ token: String) -> HTTPFields {
        [.contentType: "application/x-www-form-urlencoded", .cookie: "\(WebGate.cookieName)=\(token)"]
    }

    /// Logs in with the password; the session's cookie value and its CSRF token (from the page).
    static func login(_ client: some TestClientProtocol) async throws -> (token: String, csrf: String) {
        let token = try await client.execute(uri: "/login", method: .post, headers: formHeaders,
                                             body: form([("password", password), ("next", "/")])) { r -> String in
            #expect(r.status == .seeOther && r.headers[.location] == "/")
            let set = r.headers[.setCookie] ?? ""
            return String(set.split(separator: ";").first?.split(separator: "=", maxSplits: 1).last ?? "")
        }
        let csrf = try await client.execute(uri: "/", method: .get, headers: cookieHeaders(token)) { r -> String in
            #expect(r.status == .ok)
            return csrfOf(String(buffer: r.body))
        }
        return (token, csrf)
    }

    static func csrfOf(_ html: String) -> String {
        guard let r = html.range(of: "name=\"csrf\" value=\"") else { return "" }
        return String(html[r.upperBound...].prefix { $0 != "\"" })
    }

    @Test("without a login every page is 401 pointing at /login; the static files and the login form are open; the form has a password field")
    func loginRequired() async throws {
        let f = try Fixture()
        try await f.app().test(.router) { client in
            for path in ["/", "/clients/web1", "/runs/20261203T000000-abcdef"] {
                try await client.execute(uri: path, method: .get) { r in
                    #expect(r.status == .unauthorized, "\(path)")
                    #expect(String(buffer: r.body).contains("/login?next="), "\(path)")
                    #expect(!String(buffer: r.body).contains("data-client"), "no data before the login")
                }
            }
            try await client.execute(uri: "/runs/x/events", method: .get) { r in #expect(r.status == .unauthorized) }
            try await client.execute(uri: "/clients/web1/run", method: .post, headers: Self.formHeaders,
                                     body: Self.form([("csrf", "x")])) { r in #expect(r.status == .unauthorized) }
            try await client.execute(uri: "/login", method: .get) { r in
                #expect(r.status == .ok)
                let html = String(buffer: r.body)
                #expect(html.contains("<form method=\"post\" action=\"/login\">") && html.contains("<input type=\"password\" id=\"password\" name=\"password\""), "\(html)")
                #expect(r.headers[.contentSecurityPolicy]?.contains("script-src 'self'") == true)
                #expect(r.headers[HTTPField.Name("X-Frame-Options")!] == "DENY")
            }
            try await client.execute(uri: "/static/app.css", method: .get) { r in
                #expect(r.status == .ok && String(buffer: r.body).contains("prefers-color-scheme: dark"))
            }
            try await client.execute(uri: "/static/app.js", method: .get) { r in
                #expect(r.status == .ok && String(buffer: r.body).contains("EventSource"))
            }
        }
        #expect(try await f.manager.runs(client: nil, limit: 10).isEmpty)
    }

    @Test("login: a wrong password is 401 with no cookie; the right one sets an HttpOnly SameSite=Strict cookie and goes to next (never off the site); logout ends the session")
    func loginAndLogout() async throws {
        let f = try Fixture()
        try await f.app().test(.router) { client in
            try await client.execute(uri: "/login", method: .post, headers: Self.formHeaders,
                                     body: Self.form([("password", "wrong password!"), ("next", "/")])) { r in
                #expect(r.status == .unauthorized && r.headers[.setCookie] == nil)
                #expect(String(buffer: r.body).contains("That is not the password."))
            }
            try await client.execute(uri: "/login", method: .post, headers: Self.formHeaders,
                                     body: Self.form([("next", "/")])) { r in #expect(r.status == .unauthorized) }
            #expect(f.gate.sessionCount == 0)
            try await client.execute(uri: "/login", method: .post, headers: Self.formHeaders,
                                     body: Self.form([("password", Self.password), ("next", "//evil.example/x")])) { r in
                #expect(r.status == .seeOther && r.headers[.location] == "/", "\(r.headers)")
                let cookie = r.headers[.setCookie] ?? ""
                #expect(cookie.hasPrefix("\(WebGate.cookieName)=") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "\(cookie)")
                #expect(!cookie.contains("Secure"))
            }
            try await client.execute(uri: "/login", method: .post, headers: Self.formHeaders,
                                     body: Self.form([("password", Self.password), ("next", "/clients/web1")])) { r in
                #expect(r.headers[.location] == "/clients/web1")
            }
            let (token, csrf) = try await Self.login(client)
            #expect(!csrf.isEmpty && csrf != token)
            // next is one of the page's own routes or nothing: a tab (which browsers drop,
            // making /\t/evil.com into //evil.com), a scheme, a backslash, a dot segment go to /.
            for evil in ["/\t/evil.example", "//evil.example", "/\\evil.example", "javascript:alert(1)",
                         "https://evil.example/", "/clients/../runs", "/clients/web1/x", "/runs/a b", " /"] {
                try await client.execute(uri: "/login?next=" + evil.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!,
                                         method: .get, headers: Self.cookieHeaders(token)) { r in
                    #expect(r.status == .seeOther && r.headers[.location] == "/", "\(evil.debugDescription) → \(r.headers[.location] ?? "")")
                }
            }
            try await client.execute(uri: "/login?next=%2Fruns%2F20261203T000000-abcdef", method: .get, headers: Self.cookieHeaders(token)) { r in
                #expect(r.headers[.location] == "/runs/20261203T000000-abcdef")
            }
            try await client.execute(uri: "/", method: .get, headers: Self.cookieHeaders(token)) { r in
                let html = String(buffer: r.body)
                #expect(html.contains("data-client=\"web1\"") && html.contains("operator"), "\(html)")
                #expect(!html.contains(Self.password))
            }
            // Logout without the token: refused, the session stays.
            try await client.execute(uri: "/logout", method: .post, headers: Self.cookieHeaders(token),
                                     body: Self.form([("csrf", "nope")])) { r in #expect(r.status == .forbidden) }
            try await client.execute(uri: "/", method: .get, headers: Self.cookieHeaders(token)) { r in #expect(r.status == .ok) }
            try await client.execute(uri: "/logout", method: .post, headers: Self.cookieHeaders(token),
                                     body: Self.form([("csrf", csrf)])) { r in
                #expect(r.status == .seeOther && r.headers[.setCookie]?.contains("Max-Age=0") == true, "\(r.headers)")
            }
            try await client.execute(uri: "/", method: .get, headers: Self.cookieHeaders(token)) { r in #expect(r.status == .unauthorized) }
            try await client.execute(uri: "/", method: .get, headers: Self.cookieHeaders("forged-token")) { r in #expect(r.status == .unauthorized) }
        }
    }

    @Test("cookie_secure = true puts Secure on the session cookie")
    func secureCookie() async throws {
        let f = try Fixture(web: "listen = \":8088\"\ncookie_secure = true")
        try await f.app().test(.router) { client in
            try await client.execute(uri: "/login", method: .post, headers: Self.formHeaders,
                                     body: Self.form([("password", Self.password)])) { r in
                #expect(r.headers[.setCookie]?.contains("Secure") == true)
            }
        }
    }

    @Test("after 5 wrong passwords the next attempt is 429 with Retry-After, even with the right password")
    func throttled() async throws {
        let f = try Fixture()
        try await f.app().test(.router) { client in
            for _ in 0..<5 {
                try await client.execute(uri: "/login", method: .post, headers: Self.formHeaders,
                                         body: Self.form([("password", "guess-guess-guess")])) { r in #expect(r.status == .unauthorized) }
            }
            try await client.execute(uri: "/login", method: .post, headers: Self.formHeaders,
                                     body: Self.form([("password", Self.password)])) { r in
                #expect(r.status == .tooManyRequests && r.headers[.retryAfter] != nil && r.headers[.setCookie] == nil)
            }
        }
        #expect(f.gate.sessionCount == 0)
    }

    @Test("pages: fleet, client (charts, runs, archives), run (log, error); unknown client and run 404, a bad run id 400")
    func pages() async throws {
        let f = try Fixture()
        // A finished failed run in the history, with a log.
        let logPath = "\(f.dir)/state/run.log"
        try "2026-12-03 connecting to 127.0.0.1:1\nthe <b>log</b> line\n".write(toFile: logPath, atomically: true, encoding: .utf8)
        var rec = RunRecord.starting(runID: "20261203T010000-aaaaaa", client: "web1", server: "vault", logFile: logPath)
        rec.state = .failed
        rec.endedAt = rec.startedAt.addingTimeInterval(3)
        rec.error = "client web1: connection refused <script>"
        try f.history.insert(rec)
        try await f.app().test(.router) { client in
            let (token, _) = try await Self.login(client)
            let h = Self.cookieHeaders(token)
            try await client.execute(uri: "/", method: .get, headers: h) { r in
                let html = String(buffer: r.body)
                #expect(html.contains("<tr class=\"client\" data-client=\"web1\" data-state=\"failed\">"), "\(html)")
                #expect(html.contains("class=\"day failure\"") && html.contains("client web1: connection refused &lt;script&gt;"))
                #expect(!html.contains("<script>"), "the error is escaped")
            }
            try await client.execute(uri: "/clients/web1", method: .get, headers: h) { r in
                let html = String(buffer: r.body)
                #expect(r.status == .ok)
                #expect(html.contains("id=\"chart-added\"") && html.contains("id=\"chart-duration\"") && html.contains("id=\"chart-original\""))
                #expect(html.contains("data-run=\"20261203T010000-aaaaaa\"") && html.contains("Run a backup now"))
            }
            try await client.execute(uri: "/runs/20261203T010000-aaaaaa", method: .get, headers: h) { r in
                let html = String(buffer: r.body)
                #expect(r.status == .ok && html.contains("the &lt;b&gt;log&lt;/b&gt; line") && html.contains("What went wrong"), "\(html)")
                #expect(!html.contains("id=\"progress\""), "no progress box for a finished run")
            }
            try await client.execute(uri: "/runs/20261203T010000-aaaaaa/events", method: .get, headers: h) { r in
                #expect(r.headers[.contentType] == "text/event-stream")
                #expect(String(buffer: r.body).contains("event: end\ndata: {\"state\":\"failed\"}"), "\(String(buffer: r.body))")
            }
            try await client.execute(uri: "/clients/nosuch", method: .get, headers: h) { r in #expect(r.status == .notFound) }
            // Errors carry the same headers as pages; the events of an unknown run are a 404.
            try await client.execute(uri: "/runs/20261203T010000-bbbbbb/events", method: .get, headers: h) { r in
                #expect(r.status == .notFound && r.headers[.contentSecurityPolicy] != nil, "\(r.status)")
            }
            try await client.execute(uri: "/no/such/page", method: .get, headers: h) { r in
                #expect(r.status == .notFound && r.headers[.contentSecurityPolicy] != nil && r.headers[HTTPField.Name("X-Frame-Options")!] == "DENY")
            }
            try await client.execute(uri: "/runs/20261203T010000-bbbbbb", method: .get, headers: h) { r in #expect(r.status == .notFound) }
            try await client.execute(uri: "/runs/bad%21id", method: .get, headers: h) { r in #expect(r.status == .badRequest) }
        }
    }

    @Test("run now and cancel: refused with 403 without the form's CSRF token or with another one (nothing is queued); with it, the run starts and the page goes to it")
    func actionsAndCSRF() async throws {
        let f = try Fixture()
        try await f.app().test(.router) { client in
            let (token, csrf) = try await Self.login(client)
            let h = Self.cookieHeaders(token)
            try await client.execute(uri: "/clients/web1/run", method: .post, headers: h, body: Self.form([])) { r in
                #expect(r.status == .forbidden && String(buffer: r.body).contains("token"))
            }
            try await client.execute(uri: "/clients/web1/run", method: .post, headers: h,
                                     body: Self.form([("csrf", String(csrf.reversed()))])) { r in #expect(r.status == .forbidden) }
            #expect(try await f.manager.runs(client: nil, limit: 10).isEmpty, "a refused form queued a run")
            let location = try await client.execute(uri: "/clients/web1/run", method: .post, headers: h,
                                                    body: Self.form([("csrf", csrf)])) { r -> String in
                #expect(r.status == .seeOther)
                return r.headers[.location] ?? ""
            }
            try await f.settle()
            let runs = try await f.manager.runs(client: "web1", limit: 10)
            #expect(runs.count == 1 && location == "/runs/\(runs[0].id)" && runs[0].trigger == "web:operator", "\(runs) \(location)")
            // Cancel: the run has ended, so a conflict is shown (and nothing else happens).
            try await client.execute(uri: "/runs/\(runs[0].id)/cancel", method: .post, headers: h, body: Self.form([])) { r in
                #expect(r.status == .forbidden)
            }
            try await client.execute(uri: "/runs/\(runs[0].id)/cancel", method: .post, headers: h,
                                     body: Self.form([("csrf", csrf)])) { r in
                #expect(r.status == .conflict && String(buffer: r.body).contains("has already ended"), "\(String(buffer: r.body))")
            }
        }
    }

    @Test("read_only = true: the page shows no action and refuses one with 403, CSRF token or not")
    func readOnly() async throws {
        let f = try Fixture(web: "listen = \":8088\"\nread_only = true")
        try await f.app().test(.router) { client in
            let (token, _) = try await Self.login(client)
            let csrf = try await client.execute(uri: "/clients/web1", method: .get, headers: Self.cookieHeaders(token)) { r -> String in
                #expect(!String(buffer: r.body).contains("Run a backup now"))
                return Self.csrfOf(String(buffer: r.body))  // the logout form's
            }
            try await client.execute(uri: "/clients/web1/run", method: .post, headers: Self.cookieHeaders(token),
                                     body: Self.form([("csrf", csrf)])) { r in
                #expect(r.status == .forbidden && String(buffer: r.body).contains("read_only"), "\(String(buffer: r.body))")
            }
        }
        #expect(try await f.manager.runs(client: nil, limit: 10).isEmpty)
    }

    @Test("the proxy's user header: a member of the socket group may act with its token; a user without the role sees the page but gets 403; no header and no cookie is 401")
    func proxyUsers() async throws {
        let f = try Fixture(web: "listen = \"unix:/tmp/unused-\(UUID().uuidString).sock\"\ntrust_proxy_user_header = \"X-Forwarded-User\"",
                            roles: ["alice": .member])
        let user = HTTPField.Name("X-Forwarded-User")!
        try await f.app().test(.router) { client in
            try await client.execute(uri: "/", method: .get) { r in #expect(r.status == .unauthorized) }
            let mallory = try await client.execute(uri: "/clients/web1", method: .get, headers: [user: "mallory"]) { r -> String in
                let html = String(buffer: r.body)
                #expect(r.status == .ok && html.contains("mallory") && !html.contains("Run a backup now"))
                return Self.csrfOf(html)
            }
            try await client.execute(uri: "/clients/web1/run", method: .post, headers: [user: "mallory", .contentType: "application/x-www-form-urlencoded"],
                                     body: Self.form([("csrf", mallory)])) { r in
                #expect(r.status == .forbidden && String(buffer: r.body).contains("socket_group"), "\(String(buffer: r.body))")
            }
            #expect(try await f.manager.runs(client: nil, limit: 10).isEmpty)
            let alice = try await client.execute(uri: "/clients/web1", method: .get, headers: [user: "alice"]) { r -> String in
                #expect(String(buffer: r.body).contains("Run a backup now"))
                return Self.csrfOf(String(buffer: r.body))
            }
            #expect(alice != mallory && !alice.isEmpty)
            // Mallory's token is not Alice's.
            try await client.execute(uri: "/clients/web1/run", method: .post, headers: [user: "alice", .contentType: "application/x-www-form-urlencoded"],
                                     body: Self.form([("csrf", mallory)])) { r in #expect(r.status == .forbidden) }
            #expect(try await f.manager.runs(client: nil, limit: 10).isEmpty)
            try await client.execute(uri: "/clients/web1/run", method: .post, headers: [user: "alice", .contentType: "application/x-www-form-urlencoded"],
                                     body: Self.form([("csrf", alice)])) { r in #expect(r.status == .seeOther) }
            try await f.settle()
            #expect(try await f.manager.runs(client: "web1", limit: 10).first?.trigger == "web:alice")
        }
    }

    @Test("live progress streams are bounded: over the limit the answer is 503 with Retry-After; a stream gives its slot back when it ends")
    func streamCap() async throws {
        let f = try Fixture()
        var rec = RunRecord.starting(runID: "20261203T020000-cccccc", client: "web1", server: "vault", logFile: nil)
        rec.state = .succeeded
        rec.endedAt = rec.startedAt
        try f.history.insert(rec)
        let id = rec.id
        try await f.app(maxEventStreams: 0).test(.router) { client in
            let (token, _) = try await Self.login(client)
            try await client.execute(uri: "/runs/\(id)/events", method: .get, headers: Self.cookieHeaders(token)) { r in
                #expect(r.status == .serviceUnavailable && r.headers[.retryAfter] == "30", "\(r.status)")
            }
        }
        let slots = StreamSlots(limit: 1)
        #expect(slots.take() && !slots.take())
        slots.release()
        #expect(slots.take() && slots.inUse == 1)
        try await f.app(maxEventStreams: 1).test(.router) { client in
            let (token, _) = try await Self.login(client)
            for _ in 0..<3 {
                try await client.execute(uri: "/runs/\(id)/events", method: .get, headers: Self.cookieHeaders(token)) { r in
                    #expect(r.status == .ok && String(buffer: r.body).contains("event: end"))
                }
            }
        }
    }

    @Test("a form that trickles in is given up after the deadline (a slow client does not hold its connection)")
    func slowForm() async throws {
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        continuation.yield(ByteBuffer(string: "password=a"))  // and then nothing more, ever
        let request = Request(head: HTTPRequest(method: .post, scheme: "http", authority: "x", path: "/login"),
                              body: RequestBody(asyncSequence: stream))
        let started = ContinuousClock.now
        await #expect(throws: WebRoutes.FormTimeout.self) {
            _ = try await WebRoutes.collectForm(request, limit: 16 * 1024, within: .milliseconds(300))
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        continuation.finish()
        // A body that arrives in time is read whole.
        let whole = Request(head: HTTPRequest(method: .post, scheme: "http", authority: "x", path: "/login"),
                            body: RequestBody(buffer: ByteBuffer(string: "csrf=abc")))
        #expect(String(buffer: try await WebRoutes.collectForm(whole, limit: 1024)) == "csrf=abc")
    }
}
