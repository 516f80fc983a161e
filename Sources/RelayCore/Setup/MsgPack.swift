/// The small part of MessagePack that borg's RPC protocol uses (borg 1.x `serve`):
/// nil, booleans, integers, raw strings, arrays and maps. Borg packs with
/// `use_bin_type=False`, so byte strings travel as the (old) raw/str type, and its server
/// refuses the bin type (`max_bin_len=0`): `encode` writes every byte string as str.
/// Decoding is for untrusted input: bounded depth and sizes, never a trap.
public indirect enum MsgPack: Hashable, Sendable {
    case none
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case bytes([UInt8])
    case array([MsgPack])
    case map([MsgPackPair])

    public static func string(_ s: String) -> MsgPack { .bytes(Array(s.utf8)) }

    /// The value as text, when it is a byte string.
    public var text: String? {
        if case .bytes(let b) = self { return String(decoding: b, as: UTF8.self) }
        return nil
    }

    public var integer: Int64? {
        if case .int(let i) = self { return i }
        return nil
    }

    public var elements: [MsgPack]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// The entry of a map whose key is the byte string `key`.
    public subscript(key: String) -> MsgPack? {
        guard case .map(let pairs) = self else { return nil }
        let k = Array(key.utf8)
        return pairs.first { $0.key == .bytes(k) }?.value
    }

    public func encode(into out: inout [UInt8]) {
        switch self {
        case .none: out.append(0xc0)
        case .bool(let b): out.append(b ? 0xc3 : 0xc2)
        case .int(let i):
            if i >= 0 && i < 128 { out.append(UInt8(i)) }
            else if i < 0 && i >= -32 { out.append(UInt8(bitPattern: Int8(i))) }
            else { out.append(0xd3); Self.be(UInt64(bitPattern: i), 8, &out) }
        case .double(let d):
            out.append(0xcb); Self.be(d.bitPattern, 8, &out)
        case .bytes(let b):
            if b.count < 32 { out.append(0xa0 | UInt8(b.count)) }
            else if b.count < 256 { out.append(0xd9); out.append(UInt8(b.count)) }
            else if b.count < 65536 { out.append(0xda); Self.be(UInt64(b.count), 2, &out) }
            else { out.append(0xdb); Self.be(UInt64(b.count), 4, &out) }
            out += b
        case .array(let a):
            if a.count < 16 { out.append(0x90 | UInt8(a.count)) } else { out.append(0xdc); Self.be(UInt64(a.count), 2, &out) }
            for e in a { e.encode(into: &out) }
        case .map(let m):
            if m.count < 16 { out.append(0x80 | UInt8(m.count)) } else { out.append(0xde); Self.be(UInt64(m.count), 2, &out) }
            for p in m { p.key.encode(into: &out); p.value.encode(into: &out) }
        }
    }

    public var encoded: [UInt8] {
        var out: [UInt8] = []
        encode(into: &out)
        return out
    }

    private static func be(_ v: UInt64, _ n: Int, _ out: inout [UInt8]) {
        for i in stride(from: n - 1, through: 0, by: -1) { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }

    public enum DecodeError: Error, Equatable, CustomStringConvertible {
        case malformed(String)
        public var description: String {
            switch self { case .malformed(let what): return "malformed MessagePack: \(what)" }
        }
    }

    /// Decodes one value from the front of `data`: the value and the bytes it took, or nil
    /// when `data` holds only part of it.
    public static func decode(_ data: [UInt8], maxDepth: Int = 16) throws(DecodeError) -> (MsgPack, Int)? {
        var reader = Reader(data: data)
        do {
            let v = try reader.value(depth: maxDepth)
            return (v, reader.at)
        } catch {
            switch error {
            case .incomplete: return nil
            case .bad(let why): throw .malformed(why)
            }
        }
    }

    private struct Reader {
        enum Failure: Error { case incomplete, bad(String) }
        let data: [UInt8]
        var at = 0

        mutating func take(_ n: Int) throws(Failure) -> ArraySlice<UInt8> {
            guard n >= 0, data.count - at >= n else { throw .incomplete }
            defer { at += n }
            return data[at..<at + n]
        }

        mutating func uint(_ n: Int) throws(Failure) -> UInt64 {
            try take(n).reduce(0) { $0 << 8 | UInt64($1) }
        }

        mutating func value(depth: Int) throws(Failure) -> MsgPack {
            guard depth > 0 else { throw .bad("nested deeper than the protocol needs") }
            let t = try uint(1)
            switch t {
            case 0x00...0x7f: return .int(Int64(t))
            case 0xe0...0xff: return .int(Int64(Int8(bitPattern: UInt8(t))))
            case 0x80...0x8f: return try map(Int(t & 0x0f), depth)
            case 0x90...0x9f: return try array(Int(t & 0x0f), depth)
            case 0xa0...0xbf: return .bytes(Array(try take(Int(t & 0x1f))))
            case 0xc0: return .none
            case 0xc2: return .bool(false)
            case 0xc3: return .bool(true)
            case 0xc4, 0xd9: return .bytes(Array(try take(Int(try uint(1)))))
            case 0xc5, 0xda: return .bytes(Array(try take(Int(try uint(2)))))
            case 0xc6, 0xdb: return .bytes(Array(try take(Int(try uint(4)))))
            case 0xca: return .double(Double(Float(bitPattern: UInt32(try uint(4)))))
            case 0xcb: return .double(Double(bitPattern: try uint(8)))
            case 0xcc: return .int(Int64(try uint(1)))
            case 0xcd: return .int(Int64(try uint(2)))
            case 0xce: return .int(Int64(try uint(4)))
            case 0xcf:
                let v = try uint(8)
                guard v <= UInt64(Int64.max) else { throw .bad("integer out of range") }
                return .int(Int64(v))
            case 0xd0: return .int(Int64(Int8(truncatingIfNeeded: try uint(1))))
            case 0xd1: return .int(Int64(Int16(truncatingIfNeeded: try uint(2))))
            case 0xd2: return .int(Int64(Int32(truncatingIfNeeded: try uint(4))))
            case 0xd3: return .int(Int64(bitPattern: try uint(8)))
            case 0xdc: return try array(Int(try uint(2)), depth)
            case 0xdd: return try array(Int(try uint(4)), depth)
            case 0xde: return try map(Int(try uint(2)), depth)
            case 0xdf: return try map(Int(try uint(4)), depth)
            default: throw .bad("type byte 0x\(String(t, radix: 16)) is not used by borg")
            }
        }

        mutating func array(_ n: Int, _ depth: Int) throws(Failure) -> MsgPack {
            // Each element takes at least one byte: a count beyond the data is incomplete.
            guard n <= data.count - at else { throw .incomplete }
            var a: [MsgPack] = []
            a.reserveCapacity(n)
            for _ in 0..<n { a.append(try value(depth: depth - 1)) }
            return .array(a)
        }

        mutating func map(_ n: Int, _ depth: Int) throws(Failure) -> MsgPack {
            guard n <= (data.count - at) / 2 else { throw .incomplete }
            var m: [MsgPackPair] = []
            m.reserveCapacity(n)
            for _ in 0..<n {
                let k = try value(depth: depth - 1)
                m.append(MsgPackPair(key: k, value: try value(depth: depth - 1)))
            }
            return .map(m)
        }
    }
}

public struct MsgPackPair: Hashable, Sendable {
    public var key: MsgPack
    public var value: MsgPack
    public init(key: MsgPack, value: MsgPack) {
        self.key = key
        self.value = value
    }
}

extension MsgPack: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral {
    public init(stringLiteral s: String) { self = .string(s) }
    public init(integerLiteral i: Int64) { self = .int(i) }
    public init(booleanLiteral b: Bool) { self = .bool(b) }
    public init(arrayLiteral a: MsgPack...) { self = .array(a) }
    public init(dictionaryLiteral pairs: (String, MsgPack)...) {
        self = .map(pairs.map { MsgPackPair(key: .string($0.0), value: $0.1) })
    }
}
