import Testing
@testable import RelayDaemon

@Suite("The daemon's queue: max_parallel, one run per client, FIFO that a busy client does not hold up, the per-client cap")
struct RunQueueTests {
    typealias Q = RunQueue<String, String>

    /// Starts what may start, as the daemon does; returns the ids in the order started.
    static func startAll(_ q: inout Q, maxParallel: Int) -> [String] {
        var ids: [String] = []
        while let e = q.next(maxParallel: maxParallel) {
            q.started(id: e.id, client: e.client, item: "run \(e.id)")
            ids.append(e.id)
        }
        return ids
    }

    @Test("first in, first out, up to max_parallel; a finished run lets the next start")
    func fifoAndParallel() {
        var q = Q(maxWaitingPerClient: 10)
        for (id, client) in [("1", "a"), ("2", "b"), ("3", "c"), ("4", "d")] { q.enqueue(id: id, client: client, item: id) }
        #expect(Self.startAll(&q, maxParallel: 2) == ["1", "2"])
        #expect(q.waiting.map(\.id) == ["3", "4"])
        #expect(q.finished(id: "1") == "run 1")
        #expect(Self.startAll(&q, maxParallel: 2) == ["3"])
        #expect(q.finished(id: "nope") == nil)
    }

    @Test("one run per client: its second waits, and does not hold up another client's run behind it")
    func oneRunPerClient() {
        var q = Q(maxWaitingPerClient: 10)
        q.enqueue(id: "1", client: "a", item: "")
        q.enqueue(id: "2", client: "a", item: "")
        q.enqueue(id: "3", client: "b", item: "")
        #expect(Self.startAll(&q, maxParallel: 8) == ["1", "3"])
        #expect(q.current(client: "a") == "1" && q.current(client: "b") == "3" && q.current(client: "c") == nil)
        _ = q.finished(id: "1")
        #expect(q.current(client: "a") == "2", "the waiting run is the client's current one")
        #expect(Self.startAll(&q, maxParallel: 8) == ["2"])
    }

    @Test("at most max_waiting runs of one client wait; other clients are not affected; a cancelled one makes room")
    func perClientCap() {
        var q = Q(maxWaitingPerClient: 3)
        for i in 1...3 {
            #expect(q.refusal(client: "a") == nil)
            q.enqueue(id: "a\(i)", client: "a", item: "")
        }
        #expect(q.refusal(client: "a") == 3)
        #expect(q.refusal(client: "b") == nil)
        #expect(q.remove(id: "a2")?.id == "a2")
        #expect(q.remove(id: "a2") == nil)
        #expect(q.refusal(client: "a") == nil)
    }

    @Test("shutdown drains what waits and leaves what runs")
    func drain() {
        var q = Q(maxWaitingPerClient: 10)
        q.enqueue(id: "1", client: "a", item: "")
        q.enqueue(id: "2", client: "b", item: "")
        _ = Self.startAll(&q, maxParallel: 1)
        #expect(q.drainWaiting().map(\.id) == ["2"])
        #expect(q.waiting.isEmpty && q.running.keys.sorted() == ["1"])
        #expect(q.next(maxParallel: 5) == nil)
    }
}
