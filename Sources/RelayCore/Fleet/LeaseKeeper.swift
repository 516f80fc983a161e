import Foundation

/// A relay's leases on the runs it claimed, as a value: when to renew them (heartbeat),
/// and when to give its runs up because it could not renew them (fencing). No I/O and no
/// clock: the fleet's driver passes the time and carries out the action.
///
/// The safety rule: another relay may take a run over once its lease has expired by the
/// database's clock (`lease_until < now()`, set to the database's `now() + lease` by each
/// renewal). A renewal that succeeded was executed after it was sent, so the lease it
/// set ends at least `lease` after the send time on this relay's clock. This relay stops
/// its runs `fenceAfter` (half the lease) after the last successful renewal was sent:
/// before any other relay can see the lease expire, whatever the wall clocks say (the
/// driver passes a monotonic time), with half a lease left for borg to stop.
public struct LeaseKeeper: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        /// Renew the leases (and this relay's heartbeat row).
        case renew
        /// The leases could not be renewed in time: cancel every run this relay holds.
        case fence(silentFor: TimeInterval)
    }

    public let lease: TimeInterval
    /// When the last successful renewal was sent.
    public private(set) var renewedAt: Date
    /// When the last renewal was attempted (successful or not).
    public private(set) var attemptedAt: Date?
    /// Whether the runs were fenced since the last successful renewal.
    public private(set) var fenced = false

    public init(lease: TimeInterval, start: Date) {
        self.lease = lease
        renewedAt = start
    }

    /// Renewals come this often (at least every 10 s, so a short lease is renewed often enough).
    public var renewEvery: TimeInterval { min(10, lease / 6) }
    public var fenceAfter: TimeInterval { lease / 2 }

    /// What is due at `now` while this relay holds `holding` runs.
    public func due(now: Date, holding: Int) -> [Action] {
        var actions: [Action] = []
        if attemptedAt.map({ now.timeIntervalSince($0) >= renewEvery }) ?? true {
            actions.append(.renew)
        }
        let silent = now.timeIntervalSince(renewedAt)
        if holding > 0 && !fenced && silent >= fenceAfter {
            actions.append(.fence(silentFor: silent))
        }
        return actions
    }

    /// A renewal is sent at `sentAt`.
    public mutating func attempting(at sentAt: Date) { attemptedAt = sentAt }

    /// The renewal sent at `sentAt` succeeded.
    public mutating func renewed(sentAt: Date) {
        if sentAt > renewedAt { renewedAt = sentAt }
        fenced = false
    }

    /// The runs were cancelled (`.fence` carried out).
    public mutating func didFence() { fenced = true }
}

/// Which runs a relay that takes over an expired lease starts again: a scheduled backup
/// (its due time would otherwise pass without a backup), once. Manual runs, operations
/// and runs that were already a takeover are not repeated: their requester sees the run
/// interrupted and decides.
public enum FailoverRule {
    public static let trigger = "failover"

    public static func restarts(kind: RunKind, trigger: String?) -> Bool {
        kind == .backup && (trigger == "schedule" || trigger == "catch-up")
    }
}
