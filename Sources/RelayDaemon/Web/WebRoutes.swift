import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Mustache
import NIOCore
import RelayCore
import Synchronization

/// The request context of the status page: the peer's address (for the login throttle)
/// and, behind the gate, who is asking.
struct WebContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let peer: String
    var identity: WebIdentity?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        peer = LoginThrottle.source(ofPeer: source.channel.remoteAddress?.ipAddress ?? "local")
    }

    /// Forms are small: the login's password, a CSRF token.
    var maxUploadSize: Int { 16 * 1024 }
}

/// Everything a page's template sees.
struct PageFrame: Sendable {
    var title: String
    var relay: String
    var version: String = RelayVersion.current
    var user: String?
    var csrf: String?
    var canAct = false
    /// Seconds between the page's background refreshes (none on the login page).
    var refresh: Int?
    var message: MessageView?
    var login: LoginView?
    var fleet: FleetPageView?
    var client: ClientPageView?
    var run: RunPageView?
}

struct MessageView: Sendable {
    var heading: String
    var text: String
    var cssClass: String
    var back: String?
}

struct LoginView: Sendable {
    var next: String
    var error: String?
    var noPassword: Bool
}

/// HTML escaping for the templates (`{{x}}`): the same escape as the SVG charts', on UTF-8
/// bytes with a fast path for text with nothing to escape. swift-mustache's own walks
/// characters through a dictionary and was a third of a 200-client page's time.
struct RelayHTMLContent: MustacheContentType {
    static let name = "RELAY_HTML"

    func escapeText(_ text: String) -> String { SVGBarChart.escape(text) }
}

/// The templates, compiled once.
struct WebRenderer: Sendable {
    let library: MustacheLibrary

    init() throws {
        MustacheContentTypes.register(RelayHTMLContent(), named: RelayHTMLContent.name)
        var library = MustacheLibrary()
        try library.register(WebTemplates.page, named: "page")
        self.library = library
    }

    func render(_ frame: PageFrame) -> String {
        library.render(frame, withTemplate: "page") ?? "<!DOCTYPE html><title>borg-relay</title><p>the page template is missing</p>"
    }
}

/// The status page's routes. Reading needs a login (or the trusted proxy's header);
/// "run now" and "cancel" need the socket group's role and the form's CSRF token.
enum WebRoutes {
    static let refreshSeconds = 5
    /// Server-sent events of a run: how often progress is looked at, and for how long one
    /// stream lasts (the browser connects again after it).
    static let eventInterval: Duration = .milliseconds(1000)
    static let eventStreamLimit: TimeInterval = 3600
    /// Live progress streams open at once (each looks at its run every second).
    static let maxEventStreams = 32

    static func router(manager: RunManager, gate: WebGate, renderer: WebRenderer, relay: String, logger: Logger,
                       calendar: @escaping @Sendable () -> Calendar = { Calendar.current },
                       maxEventStreams: Int = WebRoutes.maxEventStreams) -> Router<WebContext> {
        let router = Router(context: WebContext.self)
        router.add(middleware: WebHeadersMiddleware())
        let streams = StreamSlots(limit: maxEventStreams)

        router.get("static/app.css") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/css; charset=utf-8", .cacheControl: "max-age=300"],
                     body: .init(byteBuffer: ByteBuffer(string: WebTemplates.css)))
        }
        router.get("static/app.js") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/javascript; charset=utf-8", .cacheControl: "max-age=300"],
                     body: .init(byteBuffer: ByteBuffer(string: WebTemplates.js)))
        }

        @Sendable func page(_ frame: PageFrame, status: HTTPResponse.Status = .ok) -> Response {
            Response(status: status, headers: [.contentType: "text/html; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: renderer.render(frame))))
        }
        @Sendable func frame(_ title: String, _ identity: WebIdentity?) -> PageFrame {
            PageFrame(title: title, relay: relay, user: identity?.user, csrf: identity?.csrf,
                      canAct: identity?.canAct ?? false, refresh: refreshSeconds)
        }
        @Sendable func message(_ identity: WebIdentity?, _ status: HTTPResponse.Status, _ heading: String, _ text: String,
                     back: String? = "/") -> Response {
            var f = frame(heading, identity)
            f.refresh = nil
            f.message = MessageView(heading: heading, text: text, cssClass: status.code >= 500 ? "failed" : "warning", back: back)
            return page(f, status: status)
        }
        @Sendable func loginPage(next: String, error: String?, status: HTTPResponse.Status) -> Response {
            var f = PageFrame(title: "Log in", relay: relay)
            f.login = LoginView(next: safeNext(next), error: error, noPassword: !gate.hasPassword)
            return page(f, status: status)
        }

        /// A refusal of the run manager (ControlError: its status and words), else a 500.
        @Sendable func failure(_ identity: WebIdentity?, _ error: any Error, _ heading: String, back: String) -> Response {
            if let e = error as? ControlError {
                return message(identity, .init(code: e.status), heading, e.body.error, back: back)
            }
            logger.error("status page: \(heading): \(error)")
            return message(identity, .internalServerError, heading, "\(error)", back: back)
        }
        @Sendable func csrfRefused(_ identity: WebIdentity) -> Response {
            logger.warning("status page: a form without its CSRF token from \(identity.user) was refused")
            return message(identity, .forbidden, "Refused",
                           "The form did not carry this session's token (an old page, or a request from another site). Load the page again and retry.")
        }
        @Sendable func notAllowed(_ identity: WebIdentity) -> Response {
            let why = gate.settings.readOnly
                ? "This page is read-only ([web] read_only = true)."
                : "\(identity.user) may only look: run now and cancel need membership in the control socket's group ([relay] socket_group), as for relayctl."
            return message(identity, .forbidden, "Not allowed", why)
        }

        // MARK: Login and logout

        router.get("login") { request, context in
            if gate.identify(proxyUser: proxyUser(request, gate), sessionToken: request.cookies[WebGate.cookieName]?.value,
                             now: Date()) != nil {
                return redirect(safeNext(request.uri.queryParameters["next"].map(String.init) ?? "/"))
            }
            return loginPage(next: request.uri.queryParameters["next"].map(String.init) ?? "/", error: nil, status: .ok)
        }
        router.post("login") { request, context in
            var buffer: ByteBuffer
            do {
                buffer = try await collectForm(request, limit: context.maxUploadSize)
            } catch is FormTimeout {
                return closing(loginPage(next: "/", error: "The form did not arrive within \(formDeadline).", status: .requestTimeout))
            } catch {
                return loginPage(next: "/", error: "The form was larger than \(context.maxUploadSize) bytes.", status: .contentTooLarge)
            }
            var bytes = Array(buffer.readableBytesView)
            // The request's copy of the password is wiped as far as this buffer owns it.
            buffer.withUnsafeMutableReadableBytes { p in
                if let base = p.baseAddress { memset(base, 0, p.count) }
            }
            defer { for i in bytes.indices { bytes[i] = 0 } }
            var form: FormBody
            do {
                form = try FormBody(bytes)
            } catch {
                return loginPage(next: "/", error: "The form could not be read: \(error).", status: .badRequest)
            }
            defer { form.wipe() }
            let next = form.string("next") ?? "/"
            guard var raw = form.bytes("password"), !raw.isEmpty else {
                return loginPage(next: next, error: "Enter the password.", status: .unauthorized)
            }
            let secret: SecretBytes
            do { secret = try PasswordHash.secret(raw) } catch {
                return loginPage(next: next, error: "No guarded memory for the password: \(error).", status: .internalServerError)
            }
            defer { secret.wipe() }
            // `raw` shares its bytes with the form: the form wipes a copy of its own first
            // (copy-on-write), then `raw`, the only holder left, is wiped in place.
            form.wipe()
            for i in raw.indices { raw[i] = 0 }
            switch await gate.login(secret, source: context.peer, now: Date()) {
            case .success(let identity):
                logger.info("status page: login from \(context.peer)")
                var r = redirect(safeNext(next))
                r.setCookie(sessionCookie(identity.session ?? "", secure: gate.settings.cookieSecure))
                return r
            case .wrong:
                logger.warning("status page: a wrong password from \(context.peer)")
                return loginPage(next: next, error: "That is not the password.", status: .unauthorized)
            case .wait(let seconds):
                var r = loginPage(next: next, error: "Too many attempts: wait \(Int(seconds.rounded(.up))) s and try again.",
                                  status: .tooManyRequests)
                r.headers[.retryAfter] = String(Int(seconds.rounded(.up)))
                return r
            case .noPassword:
                return loginPage(next: next, error: "No password is set: on the relay, run relayctl web passwd.",
                                 status: .unauthorized)
            case .unreadable(let why):
                logger.error("status page: cannot check a login: \(why)")
                return loginPage(next: next, error: "The relay cannot check passwords now (its log says why).",
                                 status: .internalServerError)
            }
        }

        let authed = router.group().add(middleware: WebAuthMiddleware(gate: gate))

        authed.post("logout") { request, context in
            let identity = context.identity!
            guard try await csrfOK(request, context, gate) else { return csrfRefused(identity) }
            gate.logout(identity)
            var r = redirect("/login")
            r.setCookie(Cookie(name: WebGate.cookieName, value: "", maxAge: 0, path: "/", secure: gate.settings.cookieSecure,
                               httpOnly: true, sameSite: .strict))
            return r
        }

        // MARK: Pages

        authed.get("/") { _, context in
            let now = Date()
            let cal = calendar()
            let status = await manager.status()
            let since = StatusPages.historySince(now: now, calendar: cal)
            let histories = try await manager.webHistories(since: since)
            var f = frame("Fleet", context.identity)
            f.fleet = StatusPages.fleet(status: status, histories: histories, relay: relay, now: now, calendar: cal)
            return page(f)
        }
        authed.get("clients/:name") { _, context in
            let name = context.parameters.get("name") ?? ""
            let now = Date()
            let cal = calendar()
            let status = await manager.status()
            guard let c = status.clients.first(where: { $0.name == name }) else {
                return message(context.identity, .notFound, "No such client", "There is no client \(name) in this relay's configuration.")
            }
            let since = StatusPages.historySince(now: now, calendar: cal)
            let histories = try await manager.webHistories(since: since, client: name)
            let runs = try await manager.runs(client: name, limit: StatusPages.chartRuns)
            let archives = try await manager.webArchives(client: name)
            var f = frame(name, context.identity)
            f.client = StatusPages.client(c, history: histories[name] ?? ClientHistory(backups: []), runs: runs,
                                          archives: archives, watchedSince: status.agent.startedAt, now: now, calendar: cal)
            return page(f)
        }
        authed.get("runs/:id") { _, context in
            guard let id = runID(context) else {
                return message(context.identity, .badRequest, "Not a run", "That is not a run id.")
            }
            let r: RunView
            do { r = try await manager.run(id) } catch {
                return failure(context.identity, error, "No such run", back: "/")
            }
            let tail = try await manager.webLogTail(id)
            var f = frame("Run \(id)", context.identity)
            f.run = StatusPages.run(r, log: tail.text, skipped: tail.skipped, now: Date())
            return page(f)
        }
        authed.get("runs/:id/events") { _, context in
            guard let id = runID(context) else { throw HTTPError(.badRequest, message: "not a run id") }
            do { _ = try await manager.run(id) } catch let e as ControlError {
                throw HTTPError(.init(code: e.status), message: e.body.error)
            }
            guard streams.take() else {
                var r = Response(status: .serviceUnavailable, headers: [.contentType: "text/plain; charset=utf-8"],
                                 body: .init(byteBuffer: ByteBuffer(string: "\(streams.limit) live progress streams are open; try again later\n")))
                r.headers[.retryAfter] = "30"
                return r
            }
            return Response(status: .ok,
                            headers: [.contentType: "text/event-stream", .cacheControl: "no-store",
                                      HTTPField.Name("X-Accel-Buffering")!: "no"],
                            body: ResponseBody { writer in
                                defer { streams.release() }
                                try await streamProgress(id, manager: manager, writer: &writer)
                                try await writer.finish(nil)
                            })
        }

        // MARK: Actions

        authed.post("clients/:name/run") { request, context in
            let identity = context.identity!
            guard try await csrfOK(request, context, gate) else { return csrfRefused(identity) }
            guard identity.canAct else { return notAllowed(identity) }
            let name = context.parameters.get("name") ?? ""
            do {
                let runs = try await manager.submit(RunRequest(clients: [name]), trigger: "web:\(identity.user)")
                logger.info("status page: \(identity.user) started run \(runs.first?.id ?? "?") of \(name)")
                return redirect("/runs/\(runs.first?.id ?? "")")
            } catch {
                return failure(identity, error, "Not started", back: "/clients/\(name)")
            }
        }
        authed.post("runs/:id/cancel") { request, context in
            let identity = context.identity!
            guard try await csrfOK(request, context, gate) else { return csrfRefused(identity) }
            guard identity.canAct else { return notAllowed(identity) }
            guard let id = runID(context) else { return message(identity, .badRequest, "Not a run", "That is not a run id.") }
            do {
                _ = try await manager.cancel(id)
                logger.info("status page: \(identity.user) cancelled run \(id)")
                return redirect("/runs/\(id)")
            } catch {
                return failure(identity, error, "Not cancelled", back: "/runs/\(id)")
            }
        }

        return router
    }

    // MARK: - Helpers

    /// How long a form's body may take to arrive: a client that sends it a byte at a time
    /// does not hold its connection for long.
    static let formDeadline: Duration = .seconds(10)

    struct FormTimeout: Error {}

    /// The request's body, at most `limit` bytes, within `formDeadline`.
    static func collectForm(_ request: Request, limit: Int, within deadline: Duration = formDeadline) async throws -> ByteBuffer {
        try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask { try await request.body.collect(upTo: limit) }
            group.addTask {
                try await Task.sleep(for: deadline)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let buffer = first else { throw FormTimeout() }
            return buffer
        }
    }

    /// The answer, with the connection closed after it.
    static func closing(_ response: Response) -> Response {
        var r = response
        r.headers[.connection] = "close"
        return r
    }

    static func redirect(_ to: String) -> Response {
        Response(status: .seeOther, headers: [.location: to])
    }

    static func sessionCookie(_ token: String, secure: Bool) -> Cookie {
        Cookie(name: WebGate.cookieName, value: token, path: "/", secure: secure, httpOnly: true, sameSite: .strict)
    }

    static func proxyUser(_ request: Request, _ gate: WebGate) -> String? {
        guard let h = gate.settings.trustProxyUserHeader, let name = HTTPField.Name(h) else { return nil }
        return request.headers[name]
    }

    /// Where a login goes next: one of the page's own routes (`/`, `/clients/NAME`,
    /// `/runs/ID`), else `/`. Nothing else passes: no other host, no scheme, no tab or
    /// backslash a browser would drop or turn around.
    static func safeNext(_ next: String) -> String {
        if next == "/" { return "/" }
        let parts = next.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].isEmpty else { return "/" }
        let value = String(parts[2])
        switch parts[1] {
        case "clients" where ConfigLoader.nameProblem(value) == nil: return next
        case "runs" where ControlAPI.isRunID(value): return next
        default: return "/"
        }
    }

    static func runID(_ context: WebContext) -> String? {
        guard let id = context.parameters.get("id"), ControlAPI.isRunID(id) else { return nil }
        return id
    }

    /// The form's `csrf` field is the identity's token.
    static func csrfOK(_ request: Request, _ context: WebContext, _ gate: WebGate) async throws -> Bool {
        guard let identity = context.identity else { return false }
        guard let buffer = try? await collectForm(request, limit: context.maxUploadSize),
              let form = try? FormBody(Array(buffer: buffer)) else { return false }
        return gate.csrfMatches(identity, form.string("csrf"))
    }

    /// `event: progress` whenever what has moved changes (at most once a second), a comment
    /// every 15 s to keep proxies from closing the stream, `event: end` when the run is over.
    static func streamProgress(_ id: String, manager: RunManager, writer: inout any ResponseBodyWriter) async throws {
        let started = Date()
        var last: String?
        var quiet = 0
        while Date().timeIntervalSince(started) < eventStreamLimit {
            let r = try await manager.run(id)
            if r.isFinished {
                try await writer.write(ByteBuffer(string: "event: end\ndata: {\"state\":\"\(r.state.rawValue)\"}\n\n"))
                break
            }
            if let p = StatusPages.progress(r) {
                let event = ProgressEvent(p, state: r.state.rawValue)
                let data = String(decoding: (try? JSONEncoder().encode(event)) ?? Data(), as: UTF8.self)
                if data != last {
                    try await writer.write(ByteBuffer(string: "event: progress\ndata: \(data)\n\n"))
                    last = data
                    quiet = 0
                }
            }
            quiet += 1
            if quiet >= 15 {
                try await writer.write(ByteBuffer(string: ": still running\n\n"))
                quiet = 0
            }
            try await Task.sleep(for: eventInterval)
        }
    }

    struct ProgressEvent: Encodable {
        var state: String
        var phase: String
        var sent: String
        var bytesToServer: Int64
        var rate: String?
        var files: String?
        var currentPath: String?

        init(_ p: ProgressView, state: String) {
            self.state = state
            phase = p.phase
            sent = p.sent
            bytesToServer = p.sentBytes
            rate = p.rate
            files = p.files
            currentPath = p.currentPath
        }

        enum CodingKeys: String, CodingKey {
            case state, phase, sent, rate, files
            case bytesToServer = "bytes_to_server"
            case currentPath = "current_path"
        }
    }
}

/// A bounded number of slots (the live progress streams).
final class StreamSlots: Sendable {
    let limit: Int
    private let used = Mutex(0)

    init(limit: Int) { self.limit = limit }

    func take() -> Bool {
        used.withLock { n in
            guard n < limit else { return false }
            n += 1
            return true
        }
    }

    func release() { used.withLock { $0 = max(0, $0 - 1) } }

    var inUse: Int { used.withLock { $0 } }
}

/// Reading needs an identity: a request without one gets the login form with 401 (HTML
/// pages) or a bare 401 (the event stream).
struct WebAuthMiddleware: RouterMiddleware {
    typealias Context = WebContext
    let gate: WebGate

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let identity = gate.identify(proxyUser: WebRoutes.proxyUser(request, gate),
                                           sessionToken: request.cookies[WebGate.cookieName]?.value, now: Date()) else {
            if request.uri.path.hasSuffix("/events") || request.method != .get {
                return Response(status: .unauthorized, headers: [.contentType: "text/plain; charset=utf-8"],
                                body: .init(byteBuffer: ByteBuffer(string: "log in first: /login\n")))
            }
            let next = request.uri.path
            return WebRoutes.redirectToLogin(next: next)
        }
        var context = context
        context.identity = identity
        return try await next(request, context)
    }
}

extension WebRoutes {
    /// 401 with a pointer to the login form (a browser follows the refresh; the form comes back here).
    static func redirectToLogin(next: String) -> Response {
        let target = "/login?next=" + (safeNext(next).addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=?#+"))) ?? "/")
        let body = "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0; url=\(SVGBarChart.escape(target))\"><title>Log in · borg-relay</title></head><body><p><a href=\"\(SVGBarChart.escape(target))\">Log in</a> to see this page.</p></body></html>"
        return Response(status: .unauthorized, headers: [.contentType: "text/html; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// Headers on every answer: no framing, no sniffing, no referrer, nothing cached, and a
/// content security policy that lets the page load only its own stylesheet and script.
struct WebHeadersMiddleware: RouterMiddleware {
    typealias Context = WebContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var r: Response
        do {
            r = try await next(request, context)
        } catch let e as HTTPResponseError {
            // 404, 405 and the routes' own errors get the same headers as pages.
            r = try e.response(from: request, context: context)
        }
        r.headers[.contentSecurityPolicy] = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        r.headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        r.headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        r.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        if r.headers[.cacheControl] == nil { r.headers[.cacheControl] = "no-store" }
        return r
    }
}
