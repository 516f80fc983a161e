import Foundation

/// The daemon's queue as a value: which runs wait, which run, and which may start next.
///
/// Rules: at most `maxParallel` runs at once; one run per client at a time; first in,
/// first out, but a waiting run of a busy client does not hold up the runs of other clients
/// behind it; at most `maxWaitingPerClient` runs of one client wait (a flood of requests
/// cannot grow the queue, or the history, without bound). No I/O: `RunManager` keeps one.
struct RunQueue<Waiting, Running> {
    struct Entry {
        var id: String
        var client: String
        var item: Waiting
    }

    let maxWaitingPerClient: Int
    private(set) var waiting: [Entry] = []
    private(set) var running: [String: (client: String, item: Running)] = [:]

    init(maxWaitingPerClient: Int) {
        self.maxWaitingPerClient = maxWaitingPerClient
    }

    /// Runs of `client` waiting to start.
    func waitingCount(client: String) -> Int { waiting.count(where: { $0.client == client }) }

    /// The run `client` has, running or else the first waiting; nil when it has none.
    func current(client: String) -> String? {
        running.first(where: { $0.value.client == client })?.key ?? waiting.first(where: { $0.client == client })?.id
    }

    /// Whether `client` may queue another run; the number waiting when it may not.
    func refusal(client: String) -> Int? {
        let n = waitingCount(client: client)
        return n >= maxWaitingPerClient ? n : nil
    }

    mutating func enqueue(id: String, client: String, item: Waiting) {
        waiting.append(Entry(id: id, client: client, item: item))
    }

    /// Takes a waiting run out of the queue (cancelled before it started).
    mutating func remove(id: String) -> Entry? {
        guard let i = waiting.firstIndex(where: { $0.id == id }) else { return nil }
        return waiting.remove(at: i)
    }

    /// The next run that may start with `maxParallel` runs at most, taken out of the
    /// queue; the caller starts it and records it with `started`.
    mutating func next(maxParallel: Int) -> Entry? {
        guard running.count < maxParallel else { return nil }
        let busy = Set(running.values.map(\.client))
        guard let i = waiting.firstIndex(where: { !busy.contains($0.client) }) else { return nil }
        return waiting.remove(at: i)
    }

    mutating func started(id: String, client: String, item: Running) {
        running[id] = (client, item)
    }

    /// A run ended; returns what it ran with.
    mutating func finished(id: String) -> Running? {
        running.removeValue(forKey: id)?.item
    }

    /// Empties the waiting list (shutdown) and returns what waited.
    mutating func drainWaiting() -> [Entry] {
        defer { waiting.removeAll() }
        return waiting
    }
}
