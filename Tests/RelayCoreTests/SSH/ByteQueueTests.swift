import Foundation
import Testing
@testable import RelayCore

@Suite("Byte queue")
struct ByteQueueTests {
    @Test func randomOperationsMatchAReferenceFIFO() {
        var rng = SystemRandomNumberGenerator()
        let q = ByteQueue(capacity: 1000)
        var reference: [UInt8] = []
        var next: UInt8 = 0
        for _ in 0..<20_000 {
            switch Int.random(in: 0..<3, using: &rng) {
            case 0:
                let n = Int.random(in: 0...400, using: &rng)
                let chunk = (0..<n).map { _ -> UInt8 in next &+= 1; return next }
                let took = chunk.withUnsafeBytes { q.append($0) }
                #expect(took == min(n, 1000 - reference.count))
                reference += chunk.prefix(took)
            case 1:
                let n = Int.random(in: 0...400, using: &rng)
                let room = q.freeSpace
                let want = min(n, room)
                let chunk = (0..<want).map { _ -> UInt8 in next &+= 1; return next }
                let wrote = q.appendInPlace(want) { p, len in
                    chunk.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: min(len, chunk.count)) }
                    return chunk.count
                }
                #expect(wrote == want)
                reference += chunk
            default:
                let n = Int.random(in: 0...500, using: &rng)
                let c = min(n, reference.count)
                #expect(Array(q.readable.prefix(c)) == Array(reference.prefix(c)))
                q.consume(c)
                reference.removeFirst(c)
            }
            #expect(q.count == reference.count)
        }
        #expect(Array(q.readable) == reference)
    }

    @Test func spliceDirectionKeepsBacklogWhenFull() {
        let d = SpliceDirection(name: "t", capacity: 10)
        let data = [UInt8](repeating: 7, count: 15)
        let took = data.withUnsafeBytes { d.accept($0) }
        #expect(took == 10)
        #expect(d.backlog)
        #expect(!d.drained)
        d.discarding = true
        #expect(data.withUnsafeBytes { d.accept($0) } == 15)
        #expect(d.dropped == 15)
    }
}
