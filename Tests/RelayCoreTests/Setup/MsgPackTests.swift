import RelayCore
import Testing

@Suite("MessagePack subset for borg's RPC")
struct MsgPackTests {
    @Test("values round-trip; byte strings are written as str (borg's server refuses bin)")
    func roundTrip() throws {
        let values: [MsgPack] = [
            .none, true, false, 0, 127, 128, -1, -32, -33, 65535, .int(1 << 40), .int(-(1 << 40)), .double(1.5),
            "", "x", .bytes(Array(repeating: 7, count: 31)), .bytes(Array(repeating: 7, count: 32)),
            .bytes(Array(repeating: 1, count: 300)), .bytes(Array(repeating: 2, count: 70000)),
            [1, "a", [true]], .array(Array(repeating: 1, count: 20)),
            ["i": 1, "m": "open", "a": ["path": "/srv/r", "create": false]],
            .map((0..<20).map { MsgPackPair(key: .int(Int64($0)), value: .none) }),
        ]
        for v in values {
            let bytes = v.encoded
            let (back, used) = try #require(try MsgPack.decode(bytes))
            #expect(back == v)
            #expect(used == bytes.count)
            if case .bytes = v {
                let t = try #require(bytes.first)
                #expect((0xa0...0xbf).contains(t) || [0xd9, 0xda, 0xdb].contains(t), "byte string written as type \(t)")
            }
        }
        #expect(MsgPack.string("abc").encoded == [0xa3, 0x61, 0x62, 0x63])
        #expect(MsgPack.bytes(Array(repeating: 0, count: 32)).encoded.prefix(2) == [0xd9, 32])
    }

    @Test("a value split anywhere decodes as incomplete; two values decode one at a time")
    func incomplete() throws {
        let v: MsgPack = ["i": 3, "r": ["server_version": [1, 2, 4]]]
        let bytes = v.encoded
        for cut in 0..<bytes.count {
            #expect(try MsgPack.decode(Array(bytes[0..<cut])) == nil, "cut at \(cut)")
        }
        let (first, used) = try #require(try MsgPack.decode(bytes + MsgPack.int(5).encoded))
        #expect(first == v && used == bytes.count)
        #expect(first["r"]?["server_version"]?.elements?.compactMap(\.integer) == [1, 2, 4])
    }

    @Test("malformed or hostile input is an error or incomplete, never a trap")
    func hostile() throws {
        #expect(throws: MsgPack.DecodeError.self) { try MsgPack.decode([0xc1]) }
        #expect(throws: MsgPack.DecodeError.self) { try MsgPack.decode([0xd4, 0, 0]) }
        #expect(throws: MsgPack.DecodeError.self) { try MsgPack.decode([0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]) }
        #expect(throws: MsgPack.DecodeError.self) { try MsgPack.decode(Array(repeating: 0x91, count: 100) + [0]) }
        // Huge announced lengths with no data behind them.
        #expect(try MsgPack.decode([0xdd, 0xff, 0xff, 0xff, 0xff]) == nil)
        #expect(try MsgPack.decode([0xdf, 0xff, 0xff, 0xff, 0xff]) == nil)
        #expect(try MsgPack.decode([0xdb, 0xff, 0xff, 0xff, 0xff, 1]) == nil)
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20000 {
            let n = Int.random(in: 0..<24, using: &rng)
            let junk = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try? MsgPack.decode(junk)
        }
    }
}
