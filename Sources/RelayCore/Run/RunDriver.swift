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
