import Foundation
import RelayCore
import Synchronization

/// Who is looking at the status page, and what they may do.
struct WebIdentity: Sendable, Equatable {
    /// The proxy's user, or `passwordUser` for a password login.
    var user: String
    /// May press "run now" and "cancel" (the socket group's role, and the page not read-only).
    var canAct: Bool
    /// The token every form of this identity carries.
    var csrf: String
    /// The session's cookie value (password logins).
    var session: String?

    static let passwordUser = "operator"
}

/// The status page's access: sessions from the login form, the trusted proxy header, the
/// CSRF tokens and the login throttle. Holds no password: the hash is read from
/// `state_dir/web-password` at each attempt (so `relayctl web passwd` applies at once).
final class WebGate: Sendable {
    static let cookieName = "relay_session"

    let settings: WebSettings
    let passwordPath: String
    /// The role of a user the proxy named: their unix account's groups, as on the socket.
    let roleOf: @Sendable (String) -> ControlAccess.Role
    private let csrfKey: [UInt8]
    private struct State {
        var sessions = WebSessions()
        var throttle = LoginThrottle()
    }
    private let state = Mutex(State())
    /// One Argon2id verification at a time (64 MiB each): a burst of logins cannot take the
    /// relay's memory.
    private let verifying = Mutex(false)

    init(settings: WebSettings, passwordPath: String, roleOf: @escaping @Sendable (String) -> ControlAccess.Role) throws {
        self.settings = settings
        self.passwordPath = passwordPath
        self.roleOf = roleOf
        csrfKey = Array(try PasswordHash.randomToken(bytes: 32).utf8)
    }

    /// The unix account's role for a proxy user (root and the agent's user: admin; the socket
    /// group: member; unknown names and everyone else: none).
    static func accountRole(access: ControlAccess) -> @Sendable (String) -> ControlAccess.Role {
        { user in
            guard let pw = getpwnam(user) else { return .none }
            let uid = pw.pointee.pw_uid
            let gid = pw.pointee.pw_gid
            return access.role(uid: uid, groups: PeerPolicy.groups(uid: uid, gid: gid, pid: 0))
        }
    }

    /// The request's identity: the proxy's header (when trusted), else the session cookie.
    func identify(proxyUser: String?, sessionToken: String?, now: Date) -> WebIdentity? {
        if settings.trustProxyUserHeader != nil, let user = proxyUser?.trimmingCharacters(in: .whitespaces),
           !user.isEmpty, user.count <= 256 {
            let role = roleOf(user)
            return WebIdentity(user: user, canAct: role != .none && !settings.readOnly,
                               csrf: PasswordHash.keyedHash("proxy\u{0}" + user, key: csrfKey), session: nil)
        }
        guard let s = state.withLock({ $0.sessions.touch(token: sessionToken, now: now) }) else { return nil }
        return WebIdentity(user: s.user, canAct: !settings.readOnly, csrf: s.csrf, session: s.token)
    }

    func csrfMatches(_ identity: WebIdentity, _ given: String?) -> Bool {
        WebSessions.constantTimeEquals(identity.csrf, given)
    }

    var hasPassword: Bool { FileManager.default.fileExists(atPath: passwordPath) }

    enum LoginResult: Equatable {
        case success(WebIdentity)
        case wrong
        case wait(TimeInterval)
        case noPassword
        case unreadable(String)
    }

    /// A login attempt from `source` (the peer's address). The password is wiped by the caller.
    func login(_ password: SecretBytes, source: String, now: Date) async -> LoginResult {
        if case .wait(let t) = state.withLock({ $0.throttle.decide(source: source, now: now) }) { return .wait(t) }
        let hash: String
        do {
            guard FileManager.default.fileExists(atPath: passwordPath) else { return .noPassword }
            hash = try String(contentsOfFile: passwordPath, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        } catch {
            return .unreadable("\(passwordPath): \(error.localizedDescription)")
        }
        // One verification at a time; others count as a wait of a second.
        guard verifying.withLock({ busy in
            if busy { return false }
            busy = true
            return true
        }) else { return .wait(1) }
        let ok = await Task.detached { PasswordHash.verify(password, hash: hash) }.value
        verifying.withLock { $0 = false }
        guard ok else {
            state.withLock { $0.throttle.failed(source: source, now: now) }
            return .wrong
        }
        do {
            let token = try PasswordHash.randomToken()
            let csrf = try PasswordHash.randomToken()
            let s = state.withLock { st in
                st.throttle.succeeded(source: source)
                return st.sessions.open(user: WebIdentity.passwordUser, token: token, csrf: csrf, now: now)
            }
            return .success(WebIdentity(user: s.user, canAct: !settings.readOnly, csrf: s.csrf, session: s.token))
        } catch {
            return .unreadable("no random bytes for a session: \(error)")
        }
    }

    func logout(_ identity: WebIdentity) {
        state.withLock { $0.sessions.close(token: identity.session) }
    }

    var sessionCount: Int { state.withLock { $0.sessions.count } }
}
