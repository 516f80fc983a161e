import Glibc

/// A bounded FIFO of bytes in one allocation. Data lives in `[head, tail)`; space is made
/// contiguous at the end by moving the live bytes to the front when needed, so callers
/// can read straight into it and write straight out of it (no per-chunk allocation).
final class ByteQueue {
    let capacity: Int
    private let base: UnsafeMutableRawPointer
    private var head = 0
    private var tail = 0

    init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    }

    deinit { base.deallocate() }

    var count: Int { tail - head }
    var isEmpty: Bool { head == tail }
    var freeSpace: Int { capacity - count }

    /// The queued bytes, oldest first.
    var readable: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base + head, count: count) }

    /// Appends as much of `bytes` as fits; returns how many were taken.
    @discardableResult
    func append(_ bytes: UnsafeRawBufferPointer) -> Int {
        let n = min(bytes.count, freeSpace)
        guard n > 0, let src = bytes.baseAddress else { return 0 }
        makeContiguous(n)
        (base + tail).copyMemory(from: src, byteCount: n)
        tail += n
        return n
    }

    /// Lets `fill` write up to `n` bytes (n ≤ freeSpace) at the end; it returns how many it wrote.
    func appendInPlace(_ n: Int, _ fill: (UnsafeMutableRawPointer, Int) -> Int) -> Int {
        precondition(n <= freeSpace)
        makeContiguous(n)
        let w = fill(base + tail, n)
        if w > 0 { tail += min(w, n) }
        return w
    }

    func consume(_ n: Int) {
        head += min(n, count)
        if head == tail { head = 0; tail = 0 }
    }

    func removeAll() { head = 0; tail = 0 }

    private func makeContiguous(_ n: Int) {
        if capacity - tail < n {
            let live = count
            if live > 0 { memmove(base, base + head, live) }
            head = 0
            tail = live
        }
    }
}
