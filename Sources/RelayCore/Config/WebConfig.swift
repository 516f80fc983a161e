import Foundation

/// Where the status page listens: TCP, or a unix socket for a reverse proxy on the relay.
public enum WebListen: Sendable, Equatable, CustomStringConvertible {
    case tcp(ListenAddress)
    case unix(String)

    public var description: String {
        switch self {
        case .tcp(let a): return a.description
        case .unix(let p): return "unix:\(p)"
        }
    }
}

/// `[web]`: the status page the daemon serves (off without the table).
public struct WebSettings: Sendable, Equatable {
    /// The page over HTTP on this address (loopback unless another address is written), or
    /// on a unix socket (`unix:/run/borg-relay/web.sock`) for a proxy.
    public var listen: WebListen
    /// When set, a request's user is this header's value (a reverse proxy on the relay
    /// authenticated it); only with a unix socket `listen`, whose group (`proxy_group`) is
    /// the proxy's, so that no other local user can send the header.
    public var trustProxyUserHeader: String?
    /// The unix socket's group (mode 0660): the proxy's (www-data, caddy).
    public var proxyGroup: String?
    /// The session cookie carries `Secure` (set when a TLS proxy is in front of the page).
    public var cookieSecure: Bool = false
    /// No "run now" and no "cancel" from the page, whoever is logged in.
    public var readOnly: Bool = false

    public init(listen: WebListen) {
        self.listen = listen
    }

    /// Where `relayctl web passwd` keeps the login password's Argon2id hash.
    public static func passwordPath(stateDir: String) -> String { stateDir + "/web-password" }
}

extension ConfigLoader {
    /// Header names are tokens (RFC 9110); the few a browser sets itself are refused, since a
    /// page on the same origin could send them.
    static func parseWeb(_ t: TableReader) throws(ConfigError) -> WebSettings {
        try t.allowOnly(["listen", "trust_proxy_user_header", "proxy_group", "cookie_secure", "read_only"])
        let text = try t.requiredString("listen")
        var w: WebSettings
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst("unix:".count))
            guard path.hasPrefix("/"), !path.contains("\0"), path.utf8.count < 100 else {
                throw t.error("listen", .invalidValue(reason: "'\(text)': a unix socket needs an absolute path shorter than 100 bytes, such as \"unix:/run/borg-relay/web.sock\""))
            }
            w = WebSettings(listen: .unix(path))
        } else {
            guard let a = ListenAddress(text: text) else {
                throw t.error("listen", .invalidValue(reason: "'\(text)' is not an address with a port, such as \"127.0.0.1:8088\", \"[::1]:8088\" or \":8088\" (loopback), nor a unix socket (\"unix:/run/borg-relay/web.sock\")"))
            }
            w = WebSettings(listen: .tcp(a))
        }
        if let g = try t.optionalString("proxy_group") {
            guard case .unix = w.listen else {
                throw t.error("proxy_group", .invalidValue(reason: "proxy_group is the group of a unix socket; it needs listen = \"unix:/run/borg-relay/web.sock\""))
            }
            guard nameProblem(g) == nil else {
                throw t.error("proxy_group", .invalidValue(reason: "'\(g)' is not a group name"))
            }
            w.proxyGroup = g
        }
        if let h = try t.optionalString("trust_proxy_user_header") {
            let token = CharacterSet(charactersIn: "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
            guard !h.isEmpty, h.unicodeScalars.allSatisfy(token.contains) else {
                throw t.error("trust_proxy_user_header", .invalidValue(reason: "'\(h)' is not a header name; use the header your proxy sets, such as \"X-Forwarded-User\" or \"Remote-User\""))
            }
            // A user header is Remote-User or an X- header of the proxy's own; the X- headers
            // proxies use for other things (the client's address, host, scheme) are refused,
            // and so is every header a browser sends itself.
            let lower = h.lowercased()
            let proxyOwn: Set<String> = ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
                                         "x-forwarded-prefix", "x-real-ip", "x-requested-with", "x-refresh"]
            guard lower == "remote-user" || (lower.hasPrefix("x-") && !proxyOwn.contains(lower)) else {
                throw t.error("trust_proxy_user_header", .invalidValue(reason: "'\(h)' is not a user header: use Remote-User or an X- header your proxy sets from its login, such as \"X-Forwarded-User\" (never one a browser sends or one that carries an address)"))
            }
            guard case .unix = w.listen else {
                throw t.error("trust_proxy_user_header", .invalidValue(reason: "a trusted user header needs listen = \"unix:/run/borg-relay/web.sock\" with proxy_group = the proxy's group, so that only the proxy can send it; on \"\(w.listen)\" anyone who reaches the port (any local user, at least) could name any user"))
            }
            w.trustProxyUserHeader = h
        }
        w.cookieSecure = try t.optionalBool("cookie_secure") ?? false
        w.readOnly = try t.optionalBool("read_only") ?? false
        return w
    }
}
