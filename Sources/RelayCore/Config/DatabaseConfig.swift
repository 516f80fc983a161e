import Foundation

/// `[relay] database = "postgresql://…"`: a fleet of relays shares one PostgreSQL database
/// for the history, the queue and the schedule (see docs/fleet.md). The password is never
/// in the URL (the config is not a secret store): it comes from `database_password_file` or
/// from `PGPASSWORD` in the agent's environment.
public struct DatabaseSettings: Sendable, Equatable, CustomStringConvertible {
    public enum TLSMode: String, Sendable, Equatable, CaseIterable {
        /// No TLS (only for a database on this host or a private link).
        case disable
        /// TLS required; the server's certificate is checked against `sslrootcert` (or the
        /// system's roots) and its name against the host.
        case verifyFull = "verify-full"
        /// TLS required, the certificate is not checked (protects against passive listeners only).
        case require
    }

    public var host: String
    public var port: Int
    public var user: String
    public var database: String
    public var tls: TLSMode
    /// A PEM file of the CA that signed the server's certificate (`sslrootcert=`).
    public var rootCertificate: String?
    /// The file holding the role's password (one line, 0600 or 0640 root:group).
    public var passwordFile: String?

    /// The URL without secrets, for logs and errors.
    public var description: String {
        "postgresql://\(user)@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)?sslmode=\(tls.rawValue)"
    }

    /// Parses `postgresql://USER@HOST[:PORT]/DATABASE[?sslmode=…&sslrootcert=…]`; the reason
    /// a URL is refused, with the fix, otherwise.
    public static func parse(_ text: String) -> Result<DatabaseSettings, DatabaseURLProblem> {
        func fail(_ why: String) -> Result<DatabaseSettings, DatabaseURLProblem> { .failure(DatabaseURLProblem(reason: why)) }
        let example = "e.g. \"postgresql://borg_relay@db.example.net:5432/borg_relay?sslmode=verify-full\""
        guard let comps = URLComponents(string: text), let scheme = comps.scheme else {
            return fail("'\(ConfigLoader.printable(text))' is not a URL (\(example))")
        }
        guard scheme == "postgresql" || scheme == "postgres" else {
            return fail("the scheme must be postgresql://, not \(scheme):// (\(example))")
        }
        if comps.password != nil {
            return fail("the URL holds a password; the config file is not the place for it: put it in a file named by [relay] database_password_file (mode 0600) or in PGPASSWORD in the agent's environment, and remove it from the URL")
        }
        guard let user = comps.user, !user.isEmpty else {
            return fail("the URL names no user (\(example))")
        }
        guard let host = comps.host, !host.isEmpty else {
            return fail("the URL names no host (\(example))")
        }
        let port = comps.port ?? 5432
        guard (1...65535).contains(port) else { return fail("port \(port) is out of range") }
        let db = String(comps.path.drop(while: { $0 == "/" }))
        guard !db.isEmpty, !db.contains("/") else {
            return fail("the URL names no database after the host (\(example))")
        }
        var tls: TLSMode = host == "localhost" || host == "127.0.0.1" || host == "::1" ? .disable : .verifyFull
        var root: String?
        for item in comps.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let v = item.value, let m = TLSMode(rawValue: v) else {
                    return fail("sslmode '\(item.value ?? "")' is not one of \(TLSMode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                tls = m
            case "sslrootcert":
                guard let v = item.value, v.hasPrefix("/") else { return fail("sslrootcert must be an absolute path") }
                root = v
            default:
                return fail("unknown parameter '\(item.name)' (known: sslmode, sslrootcert)")
            }
        }
        return .success(DatabaseSettings(host: host, port: port, user: user, database: db, tls: tls,
                                         rootCertificate: root, passwordFile: nil))
    }
}

public struct DatabaseURLProblem: Error, Sendable {
    public let reason: String
}

/// A relay's name in a fleet: letters, digits, `.`, `_`, `-`; at most 64.
public enum RelayName {
    public static func isValid(_ s: String) -> Bool {
        s.wholeMatch(of: /[A-Za-z0-9][A-Za-z0-9._-]{0,63}/) != nil
    }

    /// This host's name, shortened to the first label when it is not a valid relay name.
    public static var hostDefault: String {
        let h = ProcessInfo.processInfo.hostName
        if isValid(h) { return h }
        let first = String(h.split(separator: ".").first ?? "relay")
        return isValid(first) ? first : "relay"
    }
}
