import Foundation
import TOMLKit

/// Reads typed values out of one TOML table and turns every mismatch into a `ConfigError`.
struct TableReader {
    let table: TOMLTable
    let file: String
    let path: String

    var keys: [String] { table.keys.sorted() }

    func error(_ key: String?, _ kind: ConfigError.Kind) -> ConfigError {
        ConfigError(file: file, table: path, key: key, kind: kind)
    }

    func allowOnly(_ allowed: Set<String>) throws(ConfigError) {
        for k in table.keys.sorted() where !allowed.contains(k) {
            throw error(k, .unknownKey)
        }
    }

    func value(_ key: String) -> TOMLValueConvertible? { table[key] }

    func optionalTable(_ key: String) throws(ConfigError) -> TableReader? {
        guard let v = value(key) else { return nil }
        guard let t = v.table else { throw error(key, .wrongType(expected: "a table", found: Self.describe(v))) }
        return TableReader(table: t, file: file, path: path.isEmpty ? key : "\(path).\(key)")
    }

    func requiredTable(_ key: String) throws(ConfigError) -> TableReader {
        guard let t = try optionalTable(key) else {
            if path.isEmpty { throw ConfigError(file: file, table: key, key: nil, kind: .missingKey) }
            throw error(key, .missingKey)
        }
        return t
    }

    func optionalString(_ key: String) throws(ConfigError) -> String? {
        guard let v = value(key) else { return nil }
        guard v.type == .string, let s = v.string else {
            throw error(key, .wrongType(expected: "a string", found: Self.describe(v)))
        }
        return s
    }

    func requiredString(_ key: String) throws(ConfigError) -> String {
        guard let s = try optionalString(key) else { throw error(key, .missingKey) }
        return s
    }

    func optionalBool(_ key: String) throws(ConfigError) -> Bool? {
        guard let v = value(key) else { return nil }
        guard v.type == .bool, let b = v.bool else {
            throw error(key, .wrongType(expected: "true or false", found: Self.describe(v)))
        }
        return b
    }

    func optionalInt(_ key: String, range: ClosedRange<Int>) throws(ConfigError) -> Int? {
        guard let v = value(key) else { return nil }
        guard v.type == .int, let i = v.int else {
            throw error(key, .wrongType(expected: "an integer", found: Self.describe(v)))
        }
        guard range.contains(i) else {
            throw error(key, .invalidValue(reason: "\(i) is out of range (\(range.lowerBound)…\(range.upperBound))"))
        }
        return i
    }

    func int(_ key: String, default d: Int, range: ClosedRange<Int>) throws(ConfigError) -> Int {
        try optionalInt(key, range: range) ?? d
    }

    /// A hook: an array of strings (the argument vector), or a string split at spaces
    /// (for a plain command without quoted arguments).
    func hookCommand(_ key: String) throws(ConfigError) -> [String]? {
        guard let v = value(key) else { return nil }
        let argv: [String]
        if v.type == .string, let s = v.string {
            argv = s.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        } else if v.array != nil {
            argv = try stringArray(key) ?? []
        } else {
            throw error(key, .wrongType(expected: "a command (a string, or an array of strings)", found: Self.describe(v)))
        }
        guard let first = argv.first, !first.isEmpty else {
            throw error(key, .invalidValue(reason: "the command is empty"))
        }
        if argv.contains(where: { $0.contains("\0") || $0.contains("\n") }) {
            throw error(key, .invalidValue(reason: "arguments may not contain NUL or newline characters"))
        }
        return argv
    }

    func stringArray(_ key: String) throws(ConfigError) -> [String]? {
        guard let v = value(key) else { return nil }
        guard let a = v.array else {
            throw error(key, .wrongType(expected: "an array of strings", found: Self.describe(v)))
        }
        var out: [String] = []
        for i in 0..<a.count {
            let e = a[i]
            guard e.type == .string, let s = e.string else {
                throw error(key, .wrongType(expected: "an array of strings", found: "an array containing \(Self.describe(e))"))
            }
            out.append(s)
        }
        return out
    }

    /// A group name (as groupadd accepts it) or a numeric gid.
    func groupName(_ key: String) throws(ConfigError) -> String? {
        guard let s = try optionalString(key) else { return nil }
        if s.wholeMatch(of: /[0-9]+/) != nil, UInt32(s) != nil { return s }
        guard s.wholeMatch(of: /[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?/) != nil else {
            throw error(key, .invalidValue(reason: "'\(ConfigLoader.printable(s))' is not a group name (letters, digits, _ . -) or a numeric gid"))
        }
        return s
    }

    func optionalAbsolutePath(_ key: String) throws(ConfigError) -> String? {
        guard let s = try optionalString(key) else { return nil }
        guard s.hasPrefix("/") else { throw error(key, .relativePath(value: s)) }
        return s
    }

    func requiredAbsolutePath(_ key: String) throws(ConfigError) -> String {
        guard let s = try optionalAbsolutePath(key) else { throw error(key, .missingKey) }
        return s
    }

    func absolutePath(_ key: String, default d: String) throws(ConfigError) -> String {
        try optionalAbsolutePath(key) ?? d
    }

    static func describe(_ v: TOMLValueConvertible) -> String {
        switch v.type {
        case .string: return "a string"
        case .int: return "an integer"
        case .double: return "a float"
        case .bool: return "a boolean"
        case .table: return "a table"
        case .array: return "an array"
        case .date, .time, .dateTime: return "a date/time"
        @unknown default: return "a value of another type"
        }
    }
}
