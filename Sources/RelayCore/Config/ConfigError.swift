/// A mistake in the configuration file. Every case names the file, the table and the key,
/// so the operator can go straight to the line that needs fixing.
public struct ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        case unreadableFile(reason: String)
        case syntax(line: Int, column: Int, reason: String)
        case unknownKey
        case missingKey
        case wrongType(expected: String, found: String)
        case invalidValue(reason: String)
        case unknownReference(kind: String, name: String, known: [String])
        case relativePath(value: String)
        case unreadablePath(path: String, reason: String)
        case unknownClient(name: String, known: [String])
    }

    public let file: String
    /// Dotted location inside the file, e.g. `clients.web1` or `relay`; empty for the top level.
    public let table: String
    /// The key inside `table`, if the error is about one key.
    public let key: String?
    public let kind: Kind

    public init(file: String, table: String, key: String?, kind: Kind) {
        self.file = file
        self.table = table
        self.key = key
        self.kind = kind
    }

    var location: String {
        switch (table.isEmpty, key) {
        case (true, nil): return file
        case (true, let k?): return "\(file): key '\(k)'"
        case (false, nil): return "\(file): [\(table)]"
        case (false, let k?): return "\(file): [\(table)] key '\(k)'"
        }
    }

    public var description: String {
        switch kind {
        case .unreadableFile(let reason):
            return "\(file): cannot read the config file: \(reason)"
        case .syntax(let line, let column, let reason):
            return "\(file):\(line):\(column): TOML syntax error: \(reason)"
        case .unknownKey:
            return "\(location): unknown key (check its spelling against the config reference, docs/configuration.md)"
        case .missingKey:
            return "\(location): required key is missing"
        case .wrongType(let expected, let found):
            return "\(location): expected \(expected), found \(found)"
        case .invalidValue(let reason):
            return "\(location): \(reason)"
        case .unknownReference(let kind, let name, let known):
            let list = known.isEmpty ? "none are defined" : "defined: \(known.joined(separator: ", "))"
            return "\(location): no \(kind) named '\(name)' (\(list))"
        case .relativePath(let value):
            return "\(location): '\(value)' is a relative path; an absolute path is required"
        case .unreadablePath(let path, let reason):
            return "\(location): cannot read '\(path)': \(reason)"
        case .unknownClient(let name, let known):
            let list = known.isEmpty ? "the config defines no clients" : "configured clients: \(known.joined(separator: ", "))"
            return "\(file): no client named '\(name)' ([clients.\(name)] is missing; \(list))"
        }
    }
}
