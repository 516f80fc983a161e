import Foundation

// Longer than 400 lines: one state machine; its phases, events, actions and transitions
// are read together (as swift-nio-ssh keeps ChildChannelStateMachine in one file).

/// Why a run or one of its attempts failed: the error of the domain that found it.
public enum RunFailure: Error, Equatable, Sendable, CustomStringConvertible {
    case ssh(SSHError)
    case run(RunError)

    public init(_ error: any Error) {
        switch error {
        case let e as RunFailure: self = e
        case let e as SSHError: self = .ssh(e)
        case let e as RunError: self = .run(e)
        default: self = .run(.setup("\(error)"))
        }
    }

    /// The alarm this failure raises: a changed host key.
    public var alarm: RunAlarm? {
        if case .ssh(.hostKeyChanged) = self { return .hostKeyChanged }
        return nil
    }

    /// A failure of the connection (not of borg or the setup): worth another attempt.
    public var isTransient: Bool {
        if case .ssh(let e) = self { return e.isTransient }
        return false
    }

    public var description: String {
        switch self {
        case .ssh(let e): return e.description
        case .run(let e): return e.description
        }
    }
}

/// How borg's command ended on the client: its channel's exit status or signal, and the id
/// of the archive its JSON named (backups).
public struct BorgExit: Sendable, Equatable {
    public var status: Int32?
    public var signal: String?
    public var archiveID: String?

    public init(status: Int32?, signal: String? = nil, archiveID: String? = nil) {
        self.status = status
        self.signal = signal
        self.archiveID = archiveID
    }

    /// borg ended by itself with 0 (success) or 1 (success with warnings).
    public var exitedCleanly: Bool { signal == nil && (status == 0 || status == 1) }
}

/// The decisions of one run, as a value: connecting, starting borg, splicing its
/// connection, draining, stopping, retrying and the post hook. Its drivers (`BackupRun` for
/// a relayed run, borg on T; `LocalBorgRun` for borg on R) feed it what they saw (`Event`)
/// with the time, and carry out what it answers (`Action`); they wake it with `.tick` at
/// `nextDeadline` at the latest. The machine does no I/O and reads no clock, so every phase,
/// timeout, retry and cancel is unit-tested with made-up times (RunMachineTests).
public struct RunMachine: Sendable {
    /// Where borg runs, which decides what the machine can wait for and how it stops borg.
    public enum Kind: Sendable, Equatable {
        /// borg on the client T, over its SSH session: T's session is watched too; borg is
        /// stopped with SIGTERM over its channel and cannot be killed harder.
        case relayed
        /// borg on the relay: there is no T; borg is a process of ours, so SIGTERM is
        /// followed by SIGKILL, and its stderr is read to its end before the run ends.
        case local
    }

    /// What the machine decides with: the relay's run settings and the client's.
    public struct Policy: Sendable {
        public var kind: Kind
        /// Attempts for connection-level failures before borg started ([relay] connect_attempts).
        public var connectAttempts: Int
        /// Seconds before the first retry ([relay] retry_delay); doubled for each further one.
        public var retryDelay: Int
        /// A backup cut off by a dropped link is retried once ([clients.X] retry = true).
        public var retryCreate: Bool
        /// [relay] run_timeout and idle_timeout in seconds (0: no limit).
        public var runTimeout: Int
        public var idleTimeout: Int
        /// [relay] keepalive_interval and keepalive_count.
        public var keepaliveInterval: Int
        public var keepaliveCount: Int
        /// Seconds the splice may move no byte after borg exited before it is closed.
        public var drainGrace: TimeInterval = 120
        /// Seconds borg has to exit once the run is being stopped.
        public var exitGrace: TimeInterval = 15
        /// The client has a post hook (backups).
        public var postHook: Bool
        /// Labels of the two sessions, for errors ("client web1", "server b1").
        public var clientLabel: String
        public var serverLabel: String
        /// The retry delay's jitter factor (0.75…1.25 in runs; fixed in tests).
        public var jitter: @Sendable () -> Double = { Double.random(in: 0.75...1.25) }

        public init(kind: Kind = .relayed, run: RunPolicy, retryCreate: Bool, postHook: Bool,
                    keepaliveInterval: Int, keepaliveCount: Int, clientLabel: String, serverLabel: String) {
            self.kind = kind
            if kind == .local { drainGrace = 60 }
            connectAttempts = run.connectAttempts
            retryDelay = run.retryDelay
            runTimeout = run.runTimeout
            idleTimeout = run.idleTimeout
            self.retryCreate = retryCreate
            self.postHook = postHook
            self.keepaliveInterval = keepaliveInterval
            self.keepaliveCount = keepaliveCount
            self.clientLabel = clientLabel
            self.serverLabel = serverLabel
        }
    }

    public enum Side: Sendable, Equatable { case client, server }

    /// The remote forward on T (tcp transport) while an attempt runs.
    public enum Forward: Sendable, Equatable {
        /// None (unix transport), or cancelled.
        case none
        /// Open: borg may connect to it. No keepalive goes to T meanwhile (libssh 0.10 has
        /// one global-request state, and the cancel is a global request too).
        case open
        /// Being cancelled (the driver retries the non-blocking cancel until it is done).
        case closing
    }

    /// One attempt while borg runs on the client and its connection is spliced.
    public struct Live: Sendable, Equatable {
        public var attempt: Int
        public var started: Date
        /// Bytes delivered either way so far, and when that last changed.
        public var moved: UInt64 = 0
        public var lastProgress: Date
        /// borg's connection reached the relay (the forward's first connection, or the
        /// listener's first byte).
        public var borgConnected = false
        public var forward: Forward
        public var spliceFinished = false
        public var exit: BorgExit?
        /// borg's stderr reached its end (local runs read it to the end; always true for relayed).
        public var outputClosed: Bool
        /// SIGKILL was sent (local runs).
        public var killed = false
        public var clientWatch: KeepaliveWatch
        public var serverWatch: KeepaliveWatch
        public var nextKeepaliveCheck: Date
    }

    public enum Phase: Sendable, Equatable {
        case idle
        /// Opening both sessions (and running the pre hook, which comes between them).
        case connecting(attempt: Int, started: Date)
        /// Forward or listener, borg serve on B and borg on T being started.
        case starting(attempt: Int, started: Date)
        /// borg runs; the splice carries its connection.
        case running(Live)
        /// borg exited; the splice still holds bytes. Closed `drainGrace` after the last byte.
        case draining(Live, exitedAt: Date)
        /// A cancel or a failure: borg was asked to stop and the splice cut; waits for borg
        /// to exit until `deadline`.
        case stopping(Live, deadline: Date)
        /// A transient failure; the next attempt starts at `until`.
        case waitingToRetry(attempt: Int, until: Date)
        /// The post hook runs on the client.
        case finishing
        case finished
    }

    public enum Event: Sendable, Equatable {
        case begin
        /// Both sessions are open (and the pre hook passed).
        case connected
        /// borg's command was started on the client (its passphrase may still be on the way).
        case borgLaunched
        /// Everything of the attempt is started; `forward`: a tcp forward is open on T.
        case started(forward: Bool)
        /// A failure: thrown while connecting or starting, or found while running (a
        /// forwarded connection that could not be accepted).
        case failed(RunFailure)
        /// A failure after which the attempt cannot go on at all (the event loop broke).
        case abandoned(RunFailure)
        case cancelRequested
        /// The driver found a session closed (`detail`: libssh's last error).
        case sessionClosed(Side, detail: String)
        /// The packets each session has received so far (for keepalives), on each wake-up.
        case tick(clientPackets: UInt64, serverPackets: UInt64)
        /// Bytes delivered either way so far.
        case moved(total: UInt64)
        case borgConnected
        /// borg's channel closed (the command ended).
        case borgExited(BorgExit)
        /// Both ends of the splice are closed (borg serve ended and everything was delivered).
        case spliceFinished
        /// The forward's cancel completed (or failed: it ends with the session).
        case forwardClosed
        /// borg's stderr reached its end (local runs).
        case outputClosed
        /// The post hook ended; `warning`: why it failed.
        case postHookEnded(warning: String?)
    }

    public enum Action: Sendable, Equatable {
        case connect(attempt: Int)
        case start
        case sendKeepalive(Side)
        /// SIGTERM to borg (over its channel on T; to the process on R).
        case terminateBorg
        /// SIGKILL to borg on R, which did not end after SIGTERM.
        case killBorg
        /// Close both ends of the splice at once.
        case cutSplice
        case cancelForward
        case closeBorgChannel
        /// Close the attempt's sessions and forget its channels (before a retry).
        case endAttempt
        case runPostHook(success: Bool)
        /// Build the report from `outcome` and close everything.
        case finish
        /// A note for the run log.
        case log(String)
    }

    public let policy: Policy
    public private(set) var phase: Phase = .idle

    // What the report is made of.
    public private(set) var failure: RunFailure?
    public private(set) var cancelled = false
    public private(set) var exit: BorgExit?
    /// The splice was closed before it had finished (drain grace ran out, borg did not exit).
    public private(set) var spliceCut = false
    public private(set) var warnings: [String] = []
    public private(set) var attempts: [RunAttempt] = []
    /// borg was started on the client in the current attempt.
    public private(set) var borgStarted = false
    private var createRetried = false
    private var runDeadline: Date?

    public init(policy: Policy) {
        self.policy = policy
    }

    /// The latest time the driver must wake the machine with `.tick`.
    public var nextDeadline: Date? {
        switch phase {
        case .running(let l):
            var d = [l.nextKeepaliveCheck]
            if let r = runDeadline { d.append(r) }
            if policy.idleTimeout > 0 { d.append(l.lastProgress.addingTimeInterval(TimeInterval(policy.idleTimeout))) }
            return d.min()
        case .draining(let l, let exitedAt):
            var d = [l.nextKeepaliveCheck, drainDeadline(l, exitedAt)]
            if let r = runDeadline { d.append(r) }
            return d.min()
        case .stopping(let l, let deadline):
            return min(l.nextKeepaliveCheck, deadline)
        case .waitingToRetry(_, let until):
            return until
        case .idle, .connecting, .starting, .finishing, .finished:
            return nil
        }
    }

    /// The run ended because the client could not be reached before anything started on it
    /// (its last attempt failed connecting, after the retries): the run is `skipped`, not
    /// failed. The server's failures come first, so a run to an unreachable server fails.
    public var clientUnreachable: Bool {
        guard policy.kind == .relayed, !cancelled, !borgStarted, case .ssh(let e)? = failure else { return false }
        return e.isUnreachable(label: policy.clientLabel)
    }

    /// Whether borg's command on the client reached its goal by the success rule: it exited
    /// 0 or 1 with nothing failed or cancelled, and (backups) its JSON named an archive id.
    public func borgSucceeded(needsArchive: Bool) -> Bool {
        guard failure == nil, !cancelled, let e = exit, e.exitedCleanly else { return false }
        return !needsArchive || e.archiveID != nil
    }

    // MARK: - Events

    public mutating func handle(_ event: Event, now: Date) -> [Action] {
        switch phase {
        case .idle:
            guard case .begin = event else { return [] }
            runDeadline = policy.runTimeout > 0 ? now.addingTimeInterval(TimeInterval(policy.runTimeout)) : nil
            phase = .connecting(attempt: 1, started: now)
            return [.connect(attempt: 1)]

        case .connecting(let n, let started), .starting(let n, let started):
            var connecting = false
            if case .connecting = phase { connecting = true }
            switch event {
            case .failed(let f), .abandoned(let f):
                record(f)
                return afterAttempt(n, started: started, now: now)
            case .cancelRequested:
                // Connecting and starting block the driver: the cancel takes effect after.
                cancelled = true
                return []
            case .connected where connecting:
                // A cancel while connecting: nothing is started on T or B.
                if cancelled { return endRun(sessionsOpen: true) }
                phase = .starting(attempt: n, started: started)
                return [.start]
            case .borgLaunched where !connecting:
                borgStarted = true
                return []
            case .started(let forward) where !connecting:
                var live = Live(attempt: n, started: started, lastProgress: now, forward: forward ? .open : .none,
                                outputClosed: policy.kind == .relayed,
                                clientWatch: KeepaliveWatch(interval: policy.keepaliveInterval, count: policy.keepaliveCount, now: now),
                                serverWatch: KeepaliveWatch(interval: policy.keepaliveInterval, count: policy.keepaliveCount, now: now),
                                nextKeepaliveCheck: now)
                phase = .running(live)
                if cancelled { return stop(&live, now: now, terminate: true, note: cancelNote) }
                return []
            default:
                return []
            }

        case .running(var l):
            return live(&l, event, now: now)
        case .draining(var l, _):
            return live(&l, event, now: now)
        case .stopping(var l, _):
            return live(&l, event, now: now)

        case .waitingToRetry(let n, let until):
            switch event {
            case .cancelRequested:
                cancelled = true
                return endRun(sessionsOpen: false)
            case .tick where now >= until:
                phase = .connecting(attempt: n, started: now)
                return [.connect(attempt: n)]
            default:
                return []
            }

        case .finishing:
            // The post hook (clean-up) runs to its end, whatever comes meanwhile.
            guard case .postHookEnded(let w) = event else { return [] }
            if let w { warnings.append(w) }
            phase = .finished
            return [.finish]

        case .finished:
            return []
        }
    }

    // MARK: - While borg runs

    /// One event while borg runs, drains or is being stopped; `l` is the phase's attempt.
    private mutating func live(_ l: inout Live, _ event: Event, now: Date) -> [Action] {
        var actions: [Action] = []
        switch event {
        case .cancelRequested:
            guard !isStopping else { break }
            cancelled = true
            return stop(&l, now: now, terminate: true, note: cancelNote)
        case .failed(let f):
            record(f)
            guard !isStopping else { break }
            return stop(&l, now: now, terminate: true, note: nil)
        case .abandoned(let f):
            record(f)
            return [.cutSplice] + afterAttempt(l.attempt, started: l.started, now: now)
        case .sessionClosed(.client, let detail):
            return clientLost(l, detail: detail, now: now)
        case .sessionClosed(.server, let detail):
            guard !isStopping else { break }
            record(.ssh(.connectionLost(host: policy.serverLabel, detail: detail)))
            // borg on T sees its connection close and exits: no TERM needed. borg on R is ours
            // to stop.
            return stop(&l, now: now, terminate: policy.kind == .local, note: nil)
        case .tick(let clientPackets, let serverPackets):
            if now >= l.nextKeepaliveCheck {
                var next = now.addingTimeInterval(3600)
                if policy.kind == .relayed {
                    switch l.clientWatch.check(packets: clientPackets, probing: l.forward == .none, now: now) {
                    case .alive(let at, let probe):
                        next = min(next, at)
                        if probe { actions.append(.sendKeepalive(.client)) }
                    case .dead(let silent):
                        return actions + clientLost(l, detail: "no answer to SSH keepalives for \(Int(silent)) s", now: now)
                    }
                }
                switch l.serverWatch.check(packets: serverPackets, probing: true, now: now) {
                case .alive(let at, let probe):
                    next = min(next, at)
                    if probe { actions.append(.sendKeepalive(.server)) }
                case .dead(let silent):
                    if !isStopping {
                        record(.ssh(.connectionLost(host: policy.serverLabel, detail: "no answer to SSH keepalives for \(Int(silent)) s")))
                        l.nextKeepaliveCheck = next
                        return actions + stop(&l, now: now, terminate: policy.kind == .local, note: nil)
                    }
                }
                l.nextKeepaliveCheck = next
            }
        case .moved(let total):
            if total != l.moved {
                l.moved = total
                l.lastProgress = now
            }
        case .borgConnected:
            l.borgConnected = true
            if l.forward == .open {
                l.forward = .closing
                actions.append(.cancelForward)
            }
        case .forwardClosed:
            l.forward = .none
        case .outputClosed:
            l.outputClosed = true
        case .spliceFinished:
            l.spliceFinished = true
        case .borgExited(let e):
            guard l.exit == nil else { break }
            l.exit = e
            exit = e
            if !l.borgConnected {
                // borg never connected: let borg serve on B go, and close the forward.
                actions.append(.cutSplice)
                l.spliceFinished = true
                if l.forward == .open {
                    l.forward = .closing
                    actions.append(.cancelForward)
                }
            }
            actions.append(.closeBorgChannel)
            if case .running = phase {
                phase = .draining(l, exitedAt: now)
            }
        case .begin, .connected, .borgLaunched, .started, .postHookEnded:
            break
        }
        store(l)

        // Timeouts, while nothing failed yet.
        if !isStopping && failure == nil {
            if let d = runDeadline, now >= d {
                record(.run(.timedOut(what: "the run", seconds: policy.runTimeout, key: "run_timeout")))
                return actions + stop(&l, now: now, terminate: true, note: nil)
            }
            if case .running = phase, policy.idleTimeout > 0,
               now.timeIntervalSince(l.lastProgress) >= TimeInterval(policy.idleTimeout) {
                record(.run(.timedOut(what: "the splice (no byte either way while borg ran)",
                                      seconds: policy.idleTimeout, key: "idle_timeout")))
                return actions + stop(&l, now: now, terminate: true, note: nil)
            }
        }

        // The attempt is over when borg exited, the splice finished, the forward is closed
        // and borg's stderr ended.
        if isOver(l) {
            return actions + afterAttempt(l.attempt, started: l.started, now: now)
        }
        // Or when its deadline passed: the drain grace, or borg's time to exit once stopped.
        let deadline: Date?
        switch phase {
        case .draining(_, let exitedAt): deadline = drainDeadline(l, exitedAt)
        case .stopping(_, let d): deadline = d
        default: deadline = nil
        }
        guard let d = deadline, now >= d else { return actions }
        if l.exit == nil && policy.kind == .local {
            // borg on R ignored SIGTERM: SIGKILL, and a last grace; then give up on it.
            if !l.killed {
                l.killed = true
                phase = .stopping(l, deadline: now.addingTimeInterval(policy.exitGrace))
                return actions + [.log("borg on the relay did not exit; killing it"), .killBorg]
            }
            record(.run(.protocolFailure("borg on the relay did not end after SIGKILL")))
            return actions + [.cutSplice] + afterAttempt(l.attempt, started: l.started, now: now)
        }
        let what: String
        if l.exit == nil {
            what = "borg on \(borgPlace) did not exit"
        } else if l.forward == .closing {
            what = "the forward on the client was not cancelled \(Int(policy.exitGrace)) s after borg exited"
        } else if l.spliceFinished {
            what = "borg's output stayed open \(Int(policy.exitGrace)) s after it exited"
        } else {
            what = "the splice moved no byte for \(Int(policy.drainGrace)) s after the \(policy.kind == .local ? "relay's borg" : "client's command") exited"
        }
        if failure == nil && !cancelled { warnings.append("\(what); channels were closed") }
        if !l.spliceFinished { spliceCut = true }
        return actions + [.log("\(what); closing everything"), .cutSplice, .closeBorgChannel]
            + afterAttempt(l.attempt, started: l.started, now: now)
    }

    private func isOver(_ l: Live) -> Bool {
        l.exit != nil && l.spliceFinished && l.forward != .closing && l.outputClosed
    }

    private var borgPlace: String { policy.kind == .local ? "the relay" : "the client" }

    private var cancelNote: String { "cancel requested: stopping borg on \(borgPlace) and closing the splice" }

    /// borg runs and nothing stopped it yet.
    public var isRunning: Bool {
        if case .running = phase { return true }
        return false
    }

    /// A cancel or a failure is stopping the attempt.
    public var isStopping: Bool {
        if case .stopping = phase { return true }
        return false
    }

    /// After borg exited: the splice may idle `drainGrace` (from its last byte); once it has
    /// finished, borg's stderr gets `exitGrace` to end.
    private func drainDeadline(_ l: Live, _ exitedAt: Date) -> Date {
        l.spliceFinished ? exitedAt.addingTimeInterval(policy.exitGrace)
            : max(l.lastProgress, exitedAt).addingTimeInterval(policy.drainGrace)
    }

    /// Writes the attempt back into the current phase.
    private mutating func store(_ l: Live) {
        switch phase {
        case .running: phase = .running(l)
        case .draining(_, let at): phase = .draining(l, exitedAt: at)
        case .stopping(_, let d): phase = .stopping(l, deadline: d)
        default: break
        }
    }

    /// Cancel or failure: borg is asked to stop (unless it already exited or B went away),
    /// the splice is cut, and borg has `exitGrace` to exit.
    private mutating func stop(_ l: inout Live, now: Date, terminate: Bool, note: String?) -> [Action] {
        var actions: [Action] = note.map { [.log($0)] } ?? []
        actions.append(.cutSplice)
        l.spliceFinished = true
        if terminate && l.exit == nil { actions.append(.terminateBorg) }
        phase = .stopping(l, deadline: now.addingTimeInterval(policy.exitGrace))
        if isOver(l) {
            return actions + afterAttempt(l.attempt, started: l.started, now: now)
        }
        return actions
    }

    /// T's session is gone: nothing on T can be waited for; the attempt ends now.
    private mutating func clientLost(_ l: Live, detail: String, now: Date) -> [Action] {
        record(.ssh(.connectionLost(host: policy.clientLabel, detail: detail)))
        return [.cutSplice] + afterAttempt(l.attempt, started: l.started, now: now)
    }

    private mutating func record(_ f: RunFailure) {
        if failure == nil { failure = f }
    }

    // MARK: - Retries and the end

    /// An attempt ended: retry (a transient failure, within the policy) or end the run.
    private mutating func afterAttempt(_ n: Int, started: Date, now: Date) -> [Action] {
        guard let f = failure, f.isTransient, !cancelled else { return endRun(sessionsOpen: true) }
        let again: Bool
        if !borgStarted {
            again = n < policy.connectAttempts
        } else {
            again = policy.retryCreate && !createRetried
            if again { createRetried = true }
        }
        guard again else { return endRun(sessionsOpen: true) }
        let delay = Self.backoff(base: policy.retryDelay, attempt: n, jitter: policy.jitter())
        if let d = runDeadline, now.addingTimeInterval(delay) >= d { return endRun(sessionsOpen: true) }
        attempts.append(RunAttempt(number: n, started: started, ended: now, error: "\(f)", retryAfter: delay))
        let resume = borgStarted ? " (borg resumes from its last checkpoint)" : ""
        failure = nil
        borgStarted = false
        exit = nil
        spliceCut = false
        phase = .waitingToRetry(attempt: n + 1, until: now.addingTimeInterval(delay))
        return [.log("attempt \(n) failed: \(f); retrying in \(String(format: "%.1f", delay)) s\(resume)"), .endAttempt]
    }

    /// The run is over: the post hook (when there is one and the sessions are still open),
    /// then the report.
    private mutating func endRun(sessionsOpen: Bool) -> [Action] {
        if policy.postHook && sessionsOpen {
            phase = .finishing
            return [.runPostHook(success: borgSucceeded(needsArchive: true))]
        }
        phase = .finished
        return [.finish]
    }

    /// Seconds before retry `attempt + 1`: base × 2^(attempt−1), at most 10 minutes, times `jitter`.
    static func backoff(base: Int, attempt: Int, jitter: Double) -> TimeInterval {
        min(600, Double(base) * pow(2, Double(max(0, attempt - 1)))) * jitter
    }
}
