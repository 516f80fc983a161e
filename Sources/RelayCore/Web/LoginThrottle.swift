import Foundation

/// How often the login form may be tried. Per source (the peer's address; every loopback
/// address is one source): the first `free` failures cost nothing, then each attempt must
/// wait a delay that doubles from `base` up to `cap`; a success clears the source. Across
/// all sources, once `globalFree` failures came within `cap`, every attempt waits `base`
/// after the last failure: guessing from many addresses is held to one try per `base`, while
/// the operator, from a fresh source, still gets in after that second (a doubling wait for
/// everyone would let anyone lock the operator out). At most `maxSources` sources are
/// remembered (the oldest is forgotten first), so a flood of addresses cannot grow it without
/// bound. Pure: the caller gives the time.
public struct LoginThrottle: Sendable {
    public enum Decision: Equatable, Sendable {
        case allow
        /// Refused; try again after this many seconds (for Retry-After).
        case wait(TimeInterval)
    }

    struct Entry: Sendable {
        var failures: Int
        var last: Date
    }

    public let free: Int
    public let base: TimeInterval
    public let cap: TimeInterval
    public let globalFree: Int
    public let maxSources: Int
    private var sources: [String: Entry] = [:]
    private var global = Entry(failures: 0, last: .distantPast)

    public init(free: Int = 5, base: TimeInterval = 1, cap: TimeInterval = 300, globalFree: Int = 50,
                maxSources: Int = 4096) {
        self.free = max(0, free)
        self.base = max(0.001, base)
        self.cap = max(self.base, cap)
        self.globalFree = max(0, globalFree)
        self.maxSources = max(1, maxSources)
    }

    /// May `source` try a password now?
    public func decide(source: String, now: Date) -> Decision {
        let wait = max(remaining(sources[source], free: free, now: now), globalRemaining(now: now))
        return wait > 0 ? .wait(wait) : .allow
    }

    /// A wrong password from `source`.
    public mutating func failed(source: String, now: Date) {
        var e = live(sources[source], free: free, now: now) ?? Entry(failures: 0, last: now)
        e.failures += 1
        e.last = now
        if sources[source] == nil && sources.count >= maxSources,
           let oldest = sources.min(by: { $0.value.last < $1.value.last })?.key {
            sources.removeValue(forKey: oldest)
        }
        sources[source] = e
        var g = now.timeIntervalSince(global.last) >= cap ? Entry(failures: 0, last: now) : global
        g.failures += 1
        g.last = now
        global = g
    }

    /// The right password from `source`: its own count starts again (the global one does not).
    public mutating func succeeded(source: String) {
        sources.removeValue(forKey: source)
    }

    /// The sources remembered now (for tests and the metrics).
    public var rememberedSources: Int { sources.count }

    /// The delay after `failures` failures: none up to `free`, then base, 2·base, … up to cap.
    func delay(failures: Int, free: Int) -> TimeInterval {
        guard failures >= free, failures > 0 else { return 0 }
        let doublings = min(failures - free, 30)
        return min(cap, base * pow(2, Double(doublings)))
    }

    /// An entry counts only while its last failure is less than `cap` (plus its own delay)
    /// ago; after that quiet time the source starts over.
    private func live(_ e: Entry?, free: Int, now: Date) -> Entry? {
        guard let e else { return nil }
        return now.timeIntervalSince(e.last) >= cap + delay(failures: e.failures, free: free) ? nil : e
    }

    private func remaining(_ e: Entry?, free: Int, now: Date) -> TimeInterval {
        guard let e, now.timeIntervalSince(e.last) < cap + delay(failures: e.failures, free: free) else { return 0 }
        let until = e.last.addingTimeInterval(delay(failures: e.failures, free: free))
        return max(0, until.timeIntervalSince(now))
    }

    /// The global wait: `base` after the last failure, once `globalFree` have come.
    private func globalRemaining(now: Date) -> TimeInterval {
        guard global.failures >= globalFree, global.failures > 0, now.timeIntervalSince(global.last) < cap else { return 0 }
        return max(0, global.last.addingTimeInterval(base).timeIntervalSince(now))
    }

    /// The throttle's source for a peer address: every loopback address (127.0.0.0/8, ::1,
    /// ::ffff:127.x) is one source, so that a local user cannot dodge the per-source wait by
    /// changing addresses.
    public static func source(ofPeer address: String) -> String {
        if address.hasPrefix("127.") || address == "::1" || address.hasPrefix("::ffff:127.") { return "loopback" }
        return address
    }
}
