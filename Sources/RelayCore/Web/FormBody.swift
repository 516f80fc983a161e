/// An `application/x-www-form-urlencoded` body, decoded to bytes (the login form's password
/// never becomes a `String`: its bytes go to guarded memory and these are wiped). Pure.
public struct FormBody: Sendable {
    public private(set) var fields: [(name: String, value: [UInt8])]

    public enum Problem: Error, Equatable, CustomStringConvertible {
        case badEscape(field: String)
        case tooManyFields(limit: Int)

        public var description: String {
            switch self {
            case .badEscape(let f): return "the form field '\(f)' has a broken %-escape"
            case .tooManyFields(let n): return "the form has more than \(n) fields"
            }
        }
    }

    public static let maxFields = 32

    public init(_ body: [UInt8]) throws(Problem) {
        fields = []
        var start = 0
        while start <= body.count {
            let end = body[start...].firstIndex(of: UInt8(ascii: "&")) ?? body.count
            let pair = body[start..<end]
            start = end + 1
            if pair.isEmpty { if end == body.count { break } else { continue } }
            guard fields.count < Self.maxFields else { throw .tooManyFields(limit: Self.maxFields) }
            let eq = pair.firstIndex(of: UInt8(ascii: "=")) ?? pair.endIndex
            let rawName = Array(pair[pair.startIndex..<eq])
            let nameBytes = try Self.decode(rawName, field: String(decoding: rawName.prefix(40), as: UTF8.self))
            let name = String(decoding: nameBytes, as: UTF8.self)
            let value = eq < pair.endIndex ? try Self.decode(Array(pair[(eq + 1)...]), field: name) : []
            fields.append((name, value))
        }
    }

    /// The first field of that name.
    public func bytes(_ name: String) -> [UInt8]? { fields.first { $0.name == name }?.value }

    public func string(_ name: String) -> String? { bytes(name).map { String(decoding: $0, as: UTF8.self) } }

    /// Overwrites every value (after the password was copied out).
    public mutating func wipe() {
        for i in fields.indices {
            for j in fields[i].value.indices { fields[i].value[j] = 0 }
        }
    }

    /// `+` is a space, `%XX` a byte.
    static func decode(_ raw: [UInt8], field: String) throws(Problem) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var i = 0
        while i < raw.count {
            let c = raw[i]
            if c == UInt8(ascii: "+") {
                out.append(UInt8(ascii: " "))
            } else if c == UInt8(ascii: "%") {
                guard i + 2 < raw.count, let h = hex(raw[i + 1]), let l = hex(raw[i + 2]) else {
                    throw .badEscape(field: field)
                }
                out.append(h << 4 | l)
                i += 2
            } else {
                out.append(c)
            }
            i += 1
        }
        return out
    }

    static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
