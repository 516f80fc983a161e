import Foundation

/// SSH-level liveness of one session, as a value: fed the session's count of received
/// packets, it says when to send a keepalive probe and when the peer is dead (no packet for
/// `interval × count` seconds). It does no I/O; the owner of the session sends the probes.
public struct KeepaliveWatch: Sendable, Equatable {
    public let interval: TimeInterval
    public let count: Int
    private var lastPackets: UInt64 = 0
    private var lastHeard: Date
    private var lastProbe: Date?

    public init(interval: Int, count: Int, now: Date = Date()) {
        self.interval = TimeInterval(interval)
        self.count = count
        lastHeard = now
    }

    public enum Verdict: Sendable, Equatable {
        /// Check again at `nextCheck`; `probe`: send one keepalive now.
        case alive(nextCheck: Date, probe: Bool)
        case dead(silentFor: TimeInterval)
    }

    /// `packets`: packets received so far on the session. `probing`: whether keepalives may
    /// be sent now (and so silence can be judged); while not, silence never counts for more
    /// than one interval.
    public mutating func check(packets: UInt64, probing: Bool, now: Date) -> Verdict {
        if packets != lastPackets {
            lastPackets = packets
            lastHeard = now
            lastProbe = nil
        }
        guard probing else {
            lastHeard = max(lastHeard, now.addingTimeInterval(-interval))
            return .alive(nextCheck: now.addingTimeInterval(interval), probe: false)
        }
        let silent = now.timeIntervalSince(lastHeard)
        if silent >= interval * Double(count) { return .dead(silentFor: silent) }
        var probe = false
        if silent >= interval && lastProbe.map({ now.timeIntervalSince($0) >= interval }) ?? true {
            probe = true
            lastProbe = now
        }
        let nextProbe = (lastProbe ?? lastHeard).addingTimeInterval(interval)
        let deadAt = lastHeard.addingTimeInterval(interval * Double(count))
        return .alive(nextCheck: min(max(nextProbe, now.addingTimeInterval(0.01)), deadAt), probe: probe)
    }
}

extension SSHSession {
    /// Checks `watch` against this session's packet count and sends the probe it asks for.
    func check(_ watch: inout KeepaliveWatch, probing: Bool, now: Date = Date()) -> KeepaliveWatch.Verdict {
        let verdict = watch.check(packets: packetsReceived, probing: probing, now: now)
        if case .alive(_, true) = verdict { sendKeepalive() }
        return verdict
    }
}
