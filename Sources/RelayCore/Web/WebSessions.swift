import Foundation

/// The browsers logged in to the status page. A session is a random token (its cookie) with
/// its own CSRF token (put in every form, checked on every action); it ends `idle` after its
/// last request, `lifetime` after the login, at logout, or when a newer login pushes it out
/// of the `maxSessions` kept (the least recently used goes first). Tokens come from the
/// caller (random bytes from libsodium in the daemon), so this value does no I/O.
public struct WebSessions: Sendable {
    public struct Session: Sendable, Equatable {
        public let token: String
        public let csrf: String
        public let user: String
        public let created: Date
        public var lastSeen: Date
    }

    public let idle: TimeInterval
    public let lifetime: TimeInterval
    public let maxSessions: Int
    private var byToken: [String: Session] = [:]

    public init(idle: TimeInterval = 8 * 3600, lifetime: TimeInterval = 7 * 86_400, maxSessions: Int = 256) {
        self.idle = max(1, idle)
        self.lifetime = max(self.idle, lifetime)
        self.maxSessions = max(1, maxSessions)
    }

    public var count: Int { byToken.count }

    /// A new session after a successful login.
    @discardableResult
    public mutating func open(user: String, token: String, csrf: String, now: Date) -> Session {
        expire(now: now)
        while byToken.count >= maxSessions, let oldest = byToken.values.min(by: { $0.lastSeen < $1.lastSeen }) {
            byToken.removeValue(forKey: oldest.token)
        }
        let s = Session(token: token, csrf: csrf, user: user, created: now, lastSeen: now)
        byToken[token] = s
        return s
    }

    /// The session of a request's cookie, refreshed; nil when there is none or it has ended
    /// (and then it is forgotten).
    public mutating func touch(token: String?, now: Date) -> Session? {
        guard let token, var s = byToken[token] else { return nil }
        guard isLive(s, now: now) else {
            byToken.removeValue(forKey: token)
            return nil
        }
        s.lastSeen = now
        byToken[token] = s
        return s
    }

    public mutating func close(token: String?) {
        if let token { byToken.removeValue(forKey: token) }
    }

    /// Forgets the sessions that have ended.
    public mutating func expire(now: Date) {
        byToken = byToken.filter { isLive($0.value, now: now) }
    }

    func isLive(_ s: Session, now: Date) -> Bool {
        now.timeIntervalSince(s.lastSeen) < idle && now.timeIntervalSince(s.created) < lifetime
    }

    /// Whether a form's CSRF field is the session's token, compared in constant time.
    public static func csrfMatches(_ session: Session, _ given: String?) -> Bool {
        constantTimeEquals(session.csrf, given)
    }

    /// Whether `given` is `expected`, in time that does not depend on where they differ.
    public static func constantTimeEquals(_ expected: String, _ given: String?) -> Bool {
        guard let given else { return false }
        let a = Array(expected.utf8), b = Array(given.utf8)
        guard a.count == b.count, !a.isEmpty else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}
