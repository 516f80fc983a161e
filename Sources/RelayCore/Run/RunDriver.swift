import Foundation

/// What carries out a `RunMachine`'s actions: `BackupRun` (borg on T) and `LocalBorgRun`
/// (borg on R). `RunMachine.drive` is the one loop both run in.
protocol RunDriver: AnyObject {
    /// Carries out one action (never `.finish`) and returns what it led to.
    func perform(_ action: RunMachine.Action) -> [RunMachine.Event]
    /// Waits for what the machine needs next when no action is pending: the sessions and
    /// channels until `machine.nextDeadline`, or the retry timer.
    func wait(for machine: RunMachine) -> [RunMachine.Event]
}

extension RunMachine {
    /// Runs the machine to its end with `driver`: every event goes to the machine, every
    /// action to the driver, in order. Returns when the machine says `.finish`.
    mutating func drive(_ driver: some RunDriver, clock: () -> Date = Date.init) {
        var actions = handle(.begin, now: clock())
        while true {
            guard !actions.isEmpty else {
                for e in driver.wait(for: self) { actions += handle(e, now: clock()) }
                continue
            }
            let action = actions.removeFirst()
            if action == .finish { return }
            for e in driver.perform(action) { actions += handle(e, now: clock()) }
        }
    }
}

/// A driver whose attempts poll libssh sessions and file descriptors (both drivers): how it
/// waits for the machine is written once, here.
protocol PollingRunDriver: RunDriver {
    var canceller: RunCanceller { get }
    /// The attempt's event loop, while it runs.
    var eventLoop: SSHEventLoop? { get }
    /// Packets received so far by T's and B's sessions (0 where there is none).
    var packets: (client: UInt64, server: UInt64) { get }
    /// What changed since the machine was last told (moving the splice on first).
    func observe() -> [RunMachine.Event]
}

extension PollingRunDriver {
    /// `found` (what callbacks found since the last turn) with a cancel that arrived after
    /// the last poll put first: a failure found in the same turn must not be retried when
    /// the run was cancelled. `told` remembers that the machine has the cancel.
    func cancelFirst(_ found: [RunMachine.Event], told: inout Bool) -> [RunMachine.Event] {
        var found = found
        if canceller.isRequested && !found.contains(.cancelRequested) && !told {
            _ = canceller.takeRequest()
            found.insert(.cancelRequested, at: 0)
        }
        if found.contains(.cancelRequested) { told = true }
        return found
    }

    func wait(for machine: RunMachine) -> [RunMachine.Event] {
        switch machine.phase {
        case .running, .draining, .stopping:
            let found = observe()
            if !found.isEmpty { return found }
            eventLoop?.poll(until: machine.nextDeadline ?? Date().addingTimeInterval(3600))
            return observe() + [.tick(clientPackets: packets.client, serverPackets: packets.server)]
        case .waitingToRetry(_, let until):
            return canceller.wait(until: until) ? [.cancelRequested] : [.tick(clientPackets: 0, serverPackets: 0)]
        case .finishing:
            return [.postHookEnded(warning: nil)]
        case .idle, .connecting, .starting, .finished:
            // Every action of these phases answers at once; waiting here would hang.
            return [.abandoned(.run(.protocolFailure("the run stalled in phase \(machine.phase)")))]
        }
    }
}
