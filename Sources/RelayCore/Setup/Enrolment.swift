import Foundation

/// A new client as `relayctl add-client` writes it: the `[clients.NAME]` table appended to
/// the config's text, the rest of the file untouched (comments and order kept). No I/O: the
/// command reads the file, asks, seals, writes.
public struct Enrolment: Sendable, Equatable {
    public var name: String
    public var host: String
    public var port: Int
    public var user: String
    public var key: String
    public var server: String
    public var repository: String
    public var paths: [String]
    public var passphrase: SealedValue?

    public init(name: String, host: String, port: Int, user: String, key: String, server: String, repository: String,
                paths: [String], passphrase: SealedValue? = nil) {
        self.name = name
        self.host = host
        self.port = port
        self.user = user
        self.key = key
        self.server = server
        self.repository = repository
        self.paths = paths
        self.passphrase = passphrase
    }

    /// The table, in the loader's vocabulary.
    public var table: String {
        var keys: [(String, ConfigDocument.Value)] = [
            ("host", .string(host)), ("port", .int(port)), ("user", .string(user)), ("key", .string(key)),
            ("server", .string(server)), ("repository", .string(repository)),
        ]
        if let p = passphrase { keys.append(("passphrase", .string(p.description))) }
        keys.append(("paths", .strings(paths)))
        let header = ConfigDocument.tableHeader("clients.\(name)")
        return (["[\(header)]"] + keys.map { "\($0.0) = \(ConfigDocument.toml($0.1))" }).joined(separator: "\n") + "\n"
    }

    /// `text` with the table appended after one blank line.
    public func appended(to text: String) -> String {
        var t = text
        if !t.isEmpty && !t.hasSuffix("\n") { t += "\n" }
        if !t.isEmpty && !t.hasSuffix("\n\n") { t += "\n" }
        return t + "# added by relayctl add-client\n" + table
    }

    /// The config with this client, validated as the agent would read it (key files are not
    /// checked: the client's key is made only once everything else holds). Refuses a name
    /// that is taken.
    public func validated(in text: String, file: String) throws(ConfigError) -> RelayConfig {
        let before = try ConfigLoader.parse(text, file: file, checkFiles: false)
        if before.clients[name] != nil {
            throw ConfigError(file: file, table: "clients.\(name)", key: nil,
                              kind: .invalidValue(reason: "a client named \(name) exists already; choose another name, or edit its table"))
        }
        return try ConfigLoader.parse(appended(to: text), file: file, checkFiles: false)
    }
}
