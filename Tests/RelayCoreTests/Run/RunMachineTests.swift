import Foundation
import Testing
@testable import RelayCore

/// A relayed run's decisions with made-up times: no sshd, no borg, no clock.
@Suite("The relayed run as a state machine: phases, timeouts, retries, cancel, the success rule")
struct RunMachineTests {
    typealias M = RunMachine

    /// A machine and its clock.
    struct Run {
        var m: M
        var now = Date(timeIntervalSince1970: 1_000_000)

        init(kind: M.Kind = .relayed, connectAttempts: Int = 3, retryDelay: Int = 10, retryCreate: Bool = false,
             postHook: Bool = false, runTimeout: Int = 0, idleTimeout: Int = 3600, keepalive: (Int, Int) = (10, 3)) {
            var p = M.Policy(kind: kind, run: RunPolicy(idleTimeout: idleTimeout, runTimeout: runTimeout,
                                            connectAttempts: connectAttempts, retryDelay: retryDelay),
                             retryCreate: retryCreate, postHook: postHook,
                             keepaliveInterval: keepalive.0, keepaliveCount: keepalive.1,
                             clientLabel: "client web1", serverLabel: "server b1")
            p.jitter = { 1.0 }
            m = M(policy: p)
        }

        @discardableResult
        mutating func send(_ e: M.Event, after seconds: TimeInterval = 0) -> [M.Action] {
            now = now.addingTimeInterval(seconds)
            return m.handle(e, now: now)
        }

        mutating func tick(after seconds: TimeInterval = 0, client: UInt64 = 0, server: UInt64 = 0) -> [M.Action] {
            send(.tick(clientPackets: client, serverPackets: server), after: seconds)
        }

        /// begin → connected → started: borg runs, its forward (tcp) open or not.
        mutating func toRunning(forward: Bool = true) {
            #expect(send(.begin) == [.connect(attempt: 1)])
            #expect(send(.connected) == [.start])
            #expect(send(.borgLaunched).isEmpty)
            #expect(send(.started(forward: forward)).isEmpty)
            #expect(m.isRunning)
        }

        /// borg connects through the forward, which closes.
        mutating func borgConnects() {
            #expect(send(.borgConnected) == [.cancelForward])
            #expect(send(.forwardClosed).isEmpty)
        }
    }

    static let archived = BorgExit(status: 0, archiveID: "4f1c")

    // MARK: - Phases

    @Test("a backup: connect, start, borg connects (the forward closes), bytes move, borg exits, the splice drains, the run finishes")
    func happyPath() {
        var r = Run()
        r.toRunning()
        r.borgConnects()
        #expect(r.send(.moved(total: 4096), after: 1).isEmpty)
        #expect(r.send(.borgExited(Self.archived), after: 5) == [.closeBorgChannel])
        guard case .draining = r.m.phase else { Issue.record("not draining: \(r.m.phase)"); return }
        #expect(r.send(.spliceFinished, after: 0.1) == [.finish])
        #expect(r.m.phase == .finished)
        #expect(r.m.failure == nil && !r.m.cancelled && r.m.warnings.isEmpty && !r.m.spliceCut && r.m.attempts.isEmpty)
        #expect(r.m.borgSucceeded(needsArchive: true))
    }

    @Test("the splice may finish before borg's channel closes, or after: either order ends the run once both happened")
    func orderOfEOFAndClose() {
        var a = Run()
        a.toRunning(forward: false)
        #expect(a.send(.borgConnected).isEmpty)
        #expect(a.send(.spliceFinished).isEmpty)
        #expect(a.m.isRunning, "borg still runs: the splice's end alone ends nothing")
        #expect(a.send(.borgExited(Self.archived)) == [.closeBorgChannel, .finish])

        var b = Run()
        b.toRunning(forward: false)
        #expect(b.send(.borgConnected).isEmpty)
        #expect(b.send(.borgExited(Self.archived)) == [.closeBorgChannel])
        #expect(b.send(.spliceFinished) == [.finish])
        #expect(a.m.borgSucceeded(needsArchive: true) && b.m.borgSucceeded(needsArchive: true))
    }

    @Test("borg exits without ever connecting: the splice is cut (borg serve on B goes) and the forward is closed before the run ends")
    func borgNeverConnected() {
        var r = Run()
        r.toRunning(forward: true)
        #expect(r.send(.borgExited(BorgExit(status: 2))) == [.cutSplice, .cancelForward, .closeBorgChannel])
        #expect(r.m.phase != .finished, "waits for the forward's cancel")
        #expect(r.send(.forwardClosed) == [.finish])
        #expect(!r.m.borgSucceeded(needsArchive: false))
    }

    @Test("no keepalive goes to T while its forward is open or closing (one global request at a time); B is probed after an interval of silence")
    func keepalivesWhileTheForwardIsOpen() {
        var r = Run(keepalive: (10, 3))
        r.toRunning(forward: true)
        #expect(r.tick().isEmpty)
        #expect(r.tick(after: 10) == [.sendKeepalive(.server)])
        // B answers (its packet count grows); T stays silent far beyond 3 × 10 s, unprobed.
        #expect(r.tick(after: 10, server: 1).isEmpty)
        #expect(r.tick(after: 25, server: 2).isEmpty)
        #expect(r.tick(after: 25, server: 3).isEmpty)
        #expect(r.m.isRunning && r.m.failure == nil, "T was not judged while it could not be probed")
        // Once the forward is gone, T is probed, and declared dead after 3 silent intervals.
        r.borgConnects()
        #expect(r.tick(after: 10, server: 4) == [.sendKeepalive(.client)])
        let end = r.tick(after: 10, server: 5)
        #expect(end.first == .cutSplice && end.last == .finish, "\(end)")
        #expect(r.m.failure == .ssh(.connectionLost(host: "client web1", detail: "no answer to SSH keepalives for 30 s")))
    }

    @Test("B silent past its keepalives: the run stops without SIGTERM (borg on T sees its connection close) and fails when borg exits")
    func serverDeadByKeepalive() {
        var r = Run(keepalive: (5, 2))
        r.toRunning(forward: false)
        #expect(r.send(.borgConnected).isEmpty)
        #expect(r.tick(after: 5, client: 1) == [.sendKeepalive(.server)])
        let stop = r.tick(after: 5, client: 2)
        #expect(stop == [.cutSplice], "\(stop)")
        #expect(r.m.isStopping)
        #expect(r.send(.borgExited(BorgExit(status: 2))) == [.closeBorgChannel, .finish])
        #expect(r.m.failure == .ssh(.connectionLost(host: "server b1", detail: "no answer to SSH keepalives for 10 s")))
    }

    @Test("T's session closes: the attempt ends at once (nothing on T can be waited for); B's closes: borg gets exit_grace to notice")
    func sessionsClose() {
        var t = Run(connectAttempts: 1)
        t.toRunning(forward: false)
        #expect(t.send(.sessionClosed(.client, detail: "Socket error: disconnected")) == [.cutSplice, .finish])
        #expect(t.m.failure == .ssh(.connectionLost(host: "client web1", detail: "Socket error: disconnected")))

        var b = Run(connectAttempts: 1, keepalive: (30, 3))
        b.toRunning(forward: false)
        _ = b.tick()
        #expect(b.send(.borgConnected).isEmpty)
        #expect(b.send(.sessionClosed(.server, detail: "Socket error: disconnected")) == [.cutSplice])
        #expect(b.m.nextDeadline == b.now.addingTimeInterval(15))
        // A later failure does not replace the first.
        #expect(b.send(.failed(.run(.setup("later")))).isEmpty)
        #expect(b.send(.borgExited(BorgExit(status: 2)), after: 1) == [.closeBorgChannel, .finish])
        #expect(b.m.failure == .ssh(.connectionLost(host: "server b1", detail: "Socket error: disconnected")))
    }

    // MARK: - Timeouts

    @Test("idle_timeout: no byte either way for that long while borg runs fails the run; every byte moves the deadline")
    func idleTimeout() {
        var r = Run(idleTimeout: 60)
        r.toRunning(forward: false)
        let start = r.now
        #expect(r.m.nextDeadline == start)  // the first keepalive check
        _ = r.tick()
        #expect(r.m.nextDeadline == start.addingTimeInterval(10))
        #expect(r.send(.moved(total: 10), after: 40).isEmpty)
        #expect(r.tick(after: 59, client: 1, server: 1).filter { $0 != .sendKeepalive(.client) && $0 != .sendKeepalive(.server) }.isEmpty)
        #expect(r.m.failure == nil)
        let stop = r.tick(after: 1, client: 2, server: 2)
        #expect(stop.contains(.terminateBorg) && stop.contains(.cutSplice), "\(stop)")
        #expect(r.m.failure == .run(.timedOut(what: "the splice (no byte either way while borg ran)", seconds: 60, key: "idle_timeout")))
    }

    @Test("idle_timeout does not apply once borg exited (the drain grace does), nor with idle_timeout = 0")
    func idleTimeoutOnlyWhileBorgRuns() {
        var r = Run(idleTimeout: 60)
        r.toRunning(forward: false)
        #expect(r.send(.borgConnected).isEmpty)
        #expect(r.send(.borgExited(Self.archived)) == [.closeBorgChannel])
        _ = r.tick(after: 61, client: 1, server: 1)
        #expect(r.m.failure == nil)

        var off = Run(idleTimeout: 0)
        off.toRunning(forward: false)
        for i in 1...20 { _ = off.tick(after: 3600, client: UInt64(i), server: UInt64(i)) }
        #expect(off.m.failure == nil && off.m.isRunning)
    }

    @Test("run_timeout: the whole run, from its start, across retries")
    func runTimeout() {
        var r = Run(connectAttempts: 5, retryDelay: 10, runTimeout: 100)
        #expect(r.send(.begin) == [.connect(attempt: 1)])
        #expect(r.send(.failed(.ssh(.connect(host: "client web1", detail: "refused"))), after: 5) == [.log("attempt 1 failed: \(SSHError.connect(host: "client web1", detail: "refused")); retrying in 10.0 s"), .endAttempt])
        #expect(r.tick(after: 10) == [.connect(attempt: 2)])
        #expect(r.send(.connected, after: 1) == [.start])
        #expect(r.send(.started(forward: false)).isEmpty)
        #expect(r.m.nextDeadline == r.now, "the first keepalive check is due at once")
        _ = r.tick()
        let stop = r.tick(after: 84, client: 1, server: 1)
        #expect(stop.contains(.terminateBorg), "\(stop)")
        #expect(r.m.failure == .run(.timedOut(what: "the run", seconds: 100, key: "run_timeout")))
    }

    @Test("the drain grace: after borg exits the splice may idle 120 s (counted from the last byte) before it is cut, with a warning")
    func drainGrace() {
        var r = Run()
        r.toRunning(forward: false)
        #expect(r.send(.borgConnected).isEmpty)
        #expect(r.send(.borgExited(Self.archived)) == [.closeBorgChannel])
        let exited = r.now
        _ = r.tick()
        #expect(r.m.nextDeadline == exited.addingTimeInterval(10))  // keepalives still come first
        #expect(r.send(.moved(total: 100), after: 100).isEmpty)
        _ = r.tick(after: 119, client: 1, server: 1)
        #expect(r.m.phase != .finished)
        let end = r.tick(after: 1, client: 2, server: 2)
        #expect(end.contains(.cutSplice) && end.contains(.closeBorgChannel) && end.last == .finish, "\(end)")
        #expect(r.m.spliceCut)
        #expect(r.m.warnings == ["the splice moved no byte for 120 s after the client's command exited; channels were closed"])
    }

    @Test("a failure while borg runs (an accept that failed): SIGTERM, the splice cut, and the failure is the run's")
    func failureWhileRunning() {
        var r = Run(connectAttempts: 1)
        r.toRunning(forward: false)
        let f = RunFailure.ssh(.channel(host: "client web1", what: "accepting borg's forwarded connection", detail: "x"))
        #expect(r.send(.failed(f)) == [.cutSplice, .terminateBorg])
        #expect(r.send(.borgExited(BorgExit(status: nil, signal: "TERM"))) == [.cutSplice, .closeBorgChannel, .finish])
        #expect(r.m.failure == f && !r.m.borgSucceeded(needsArchive: false))
    }

    @Test("run_timeout while the splice drains: the run fails (no SIGTERM: borg has exited)")
    func runTimeoutWhileDraining() {
        var r = Run(runTimeout: 100)
        r.toRunning(forward: false)
        _ = r.send(.borgConnected)
        #expect(r.send(.borgExited(Self.archived), after: 90) == [.closeBorgChannel])
        let end = r.tick(after: 10, client: 1, server: 1)
        #expect(!end.contains(.terminateBorg) && end.contains(.cutSplice) && end.last == .finish, "\(end)")
        #expect(r.m.failure == .run(.timedOut(what: "the run", seconds: 100, key: "run_timeout")))
    }

    @Test("a forward whose cancel never completes ends the attempt exit_grace after borg exited, with a warning")
    func forwardCancelThatNeverCompletes() {
        var r = Run()
        r.toRunning(forward: true)
        #expect(r.send(.borgExited(BorgExit(status: 2))) == [.cutSplice, .cancelForward, .closeBorgChannel])
        _ = r.tick()
        let end = r.tick(after: 15, client: 1, server: 1)
        #expect(end.last == .finish, "\(end)")
        #expect(r.m.warnings == ["the forward on the client was not cancelled 15 s after borg exited; channels were closed"])
    }

    @Test("abandoned while stopping (the event loop broke): the attempt ends at once, the cancel stays the run's state")
    func abandonedWhileStopping() {
        var r = Run()
        r.toRunning(forward: false)
        _ = r.send(.cancelRequested)
        #expect(r.send(.abandoned(.run(.protocolFailure("poll keeps failing")))) == [.cutSplice, .finish])
        #expect(r.m.cancelled)
    }

    @Test("a cancel reported before a transient failure is not retried: the post hook still runs")
    func cancelBeforeTransientFailure() {
        var r = Run(connectAttempts: 5, postHook: true)
        r.toRunning(forward: false)
        _ = r.send(.borgConnected)
        _ = r.send(.cancelRequested)
        let end = r.send(.sessionClosed(.server, detail: "gone"))
        #expect(end.isEmpty || !end.contains(.endAttempt), "\(end)")
        #expect(r.send(.borgExited(BorgExit(status: nil, signal: "TERM"))) == [.closeBorgChannel, .runPostHook(success: false)])
        #expect(r.m.attempts.isEmpty && r.m.cancelled)
    }

    // MARK: - Cancel

    @Test("cancel while connecting: nothing is started on T or B; the run ends cancelled (after the post hook, which reports failure)")
    func cancelWhileConnecting() {
        var r = Run(postHook: true)
        #expect(r.send(.begin) == [.connect(attempt: 1)])
        #expect(r.send(.cancelRequested).isEmpty)
        #expect(r.send(.connected) == [.runPostHook(success: false)])
        #expect(r.send(.postHookEnded(warning: nil)) == [.finish])
        #expect(r.m.cancelled)
    }

    @Test("cancel while starting: once started, borg gets SIGTERM and the splice is cut; borg exits and the forward closes; cancelled")
    func cancelWhileStarting() {
        var r = Run()
        _ = r.send(.begin)
        _ = r.send(.connected)
        #expect(r.send(.cancelRequested).isEmpty)
        let stop = r.send(.started(forward: true))
        #expect(stop.contains(.terminateBorg) && stop.contains(.cutSplice), "\(stop)")
        #expect(r.send(.borgExited(BorgExit(status: nil, signal: "TERM"))) == [.cutSplice, .cancelForward, .closeBorgChannel])
        #expect(r.send(.forwardClosed) == [.finish])
        #expect(r.m.cancelled && r.m.failure == nil)
    }

    @Test("cancel while borg runs: SIGTERM, the splice cut, exit_grace for borg; a borg that does not exit is left after 15 s, no warning for a cancel")
    func cancelWhileRunning() {
        var r = Run()
        r.toRunning(forward: false)
        #expect(r.send(.borgConnected).isEmpty)
        #expect(r.send(.cancelRequested) == [.log("cancel requested: stopping borg on the client and closing the splice"), .cutSplice, .terminateBorg])
        #expect(r.m.nextDeadline == r.now)
        _ = r.tick()
        #expect(r.m.nextDeadline == r.now.addingTimeInterval(10))
        #expect(r.send(.cancelRequested).isEmpty, "a second cancel changes nothing")
        _ = r.tick(after: 10, client: 1, server: 1)
        let end = r.tick(after: 5, client: 2, server: 2)
        #expect(end == [.log("borg on the client did not exit; closing everything"), .cutSplice, .closeBorgChannel, .finish], "\(end)")
        #expect(r.m.cancelled && r.m.warnings.isEmpty)
    }

    @Test("cancel while draining: borg has exited, so no SIGTERM; the splice is cut and the run ends cancelled at once")
    func cancelWhileDraining() {
        var r = Run()
        r.toRunning(forward: false)
        #expect(r.send(.borgConnected).isEmpty)
        #expect(r.send(.borgExited(Self.archived)) == [.closeBorgChannel])
        let end = r.send(.cancelRequested)
        #expect(!end.contains(.terminateBorg) && end.contains(.cutSplice) && end.last == .finish, "\(end)")
        #expect(r.m.cancelled && !r.m.borgSucceeded(needsArchive: true))
    }

    @Test("cancel while waiting to retry: the run ends cancelled without another attempt or a post hook (its sessions are gone)")
    func cancelWhileWaitingToRetry() {
        var r = Run(postHook: true)
        _ = r.send(.begin)
        #expect(r.send(.failed(.ssh(.connect(host: "client web1", detail: "refused")))).last == .endAttempt)
        #expect(r.send(.cancelRequested) == [.finish])
        #expect(r.m.cancelled)
    }

    @Test("a cancel during the post hook changes nothing: the clean-up runs to its end and the run keeps its result")
    func cancelDuringPostHook() {
        var r = Run(postHook: true)
        r.toRunning(forward: false)
        #expect(r.send(.borgConnected).isEmpty)
        #expect(r.send(.spliceFinished).isEmpty)
        #expect(r.send(.borgExited(Self.archived)) == [.closeBorgChannel, .runPostHook(success: true)])
        #expect(r.send(.cancelRequested).isEmpty)
        #expect(r.send(.postHookEnded(warning: "the post hook failed (exit status 3)")) == [.finish])
        #expect(!r.m.cancelled && r.m.borgSucceeded(needsArchive: true))
        #expect(r.m.warnings == ["the post hook failed (exit status 3)"])
    }

    // MARK: - The success rule

    @Test("success is proven: exit 0 or 1 AND an archive id (backups); exit 0 without one, 2, or a signal is not")
    func successRule() {
        func ended(_ exit: BorgExit) -> (Bool, Bool, [M.Action]) {
            var r = Run(postHook: true)
            r.toRunning(forward: false)
            _ = r.send(.borgConnected)
            _ = r.send(.spliceFinished)
            let a = r.send(.borgExited(exit))
            return (r.m.borgSucceeded(needsArchive: true), r.m.borgSucceeded(needsArchive: false), a)
        }
        #expect(ended(BorgExit(status: 0, archiveID: "a1")) == (true, true, [.closeBorgChannel, .runPostHook(success: true)]))
        #expect(ended(BorgExit(status: 1, archiveID: "a1")).0, "1 is borg's 'succeeded with warnings'")
        #expect(ended(BorgExit(status: 0)) == (false, true, [.closeBorgChannel, .runPostHook(success: false)]))
        #expect(ended(BorgExit(status: 2, archiveID: "a1")).0 == false)
        #expect(ended(BorgExit(status: nil, signal: "KILL", archiveID: "a1")).1 == false)
        #expect(ended(BorgExit(status: nil)).1 == false)
    }

    // MARK: - Retries

    @Test("connection failures before borg starts are retried up to connect_attempts, with a doubling delay; each attempt is recorded")
    func connectRetries() {
        var r = Run(connectAttempts: 3, retryDelay: 10)
        let refused = RunFailure.ssh(.connect(host: "server b1", detail: "Connection refused"))
        _ = r.send(.begin)
        #expect(r.send(.failed(refused), after: 1).last == .endAttempt)
        #expect(r.m.phase == .waitingToRetry(attempt: 2, until: r.now.addingTimeInterval(10)))
        #expect(r.m.nextDeadline == r.now.addingTimeInterval(10))
        #expect(r.tick(after: 9).isEmpty, "not yet")
        #expect(r.tick(after: 1) == [.connect(attempt: 2)])
        #expect(r.send(.failed(refused), after: 1).last == .endAttempt)
        #expect(r.m.phase == .waitingToRetry(attempt: 3, until: r.now.addingTimeInterval(20)))
        #expect(r.tick(after: 20) == [.connect(attempt: 3)])
        #expect(r.send(.failed(refused)) == [.finish], "attempts exhausted")
        #expect(r.m.failure == refused)
        #expect(r.m.attempts.map(\.number) == [1, 2] && r.m.attempts.map(\.retryAfter) == [10, 20])
        #expect(r.m.attempts.allSatisfy { $0.error == refused.description })
    }

    @Test("failures that another attempt cannot fix are not retried: a changed host key, a refused key, a hook, a setup error")
    func permanentFailuresAreNotRetried() {
        for f: RunFailure in [.ssh(.authDenied(host: "client web1", keyPath: "/etc/borg-relay/keys/t", fingerprint: "SHA256:x", detail: "denied")),
                              .ssh(.forwardRefused(host: "client web1", detail: "administratively prohibited")),
                              .run(.hookFailed(hook: "pre", status: 3, detail: "")),
                              .run(.setup("no output file"))] {
            var r = Run(connectAttempts: 5)
            _ = r.send(.begin)
            #expect(r.send(.failed(f)) == [.finish], "\(f)")
            #expect(r.m.failure == f && r.m.attempts.isEmpty)
        }
    }

    @Test("a backup cut off by a dropped link after borg started: retried once with retry = true, never without")
    func createRetry() {
        func cut(_ r: inout Run) -> [M.Action] {
            _ = r.send(.connected)
            _ = r.send(.borgLaunched)
            _ = r.send(.started(forward: false))
            _ = r.send(.borgConnected)
            return r.send(.sessionClosed(.client, detail: "Socket error: disconnected"), after: 30)
        }
        var once = Run(connectAttempts: 1, retryCreate: true)
        _ = once.send(.begin)
        #expect(cut(&once).last == .endAttempt)
        #expect(once.m.failure == nil && !once.m.borgStarted, "the next attempt starts clean")
        #expect(once.tick(after: 10) == [.connect(attempt: 2)])
        #expect(cut(&once) == [.cutSplice, .finish], "only once")
        #expect(once.m.attempts.count == 1)

        var never = Run(connectAttempts: 3, retryCreate: false)
        _ = never.send(.begin)
        #expect(cut(&never) == [.cutSplice, .finish])
        #expect(never.m.attempts.isEmpty)
    }

    @Test("no retry that would end after run_timeout")
    func noRetryPastTheRunDeadline() {
        var r = Run(connectAttempts: 5, retryDelay: 60, runTimeout: 100)
        _ = r.send(.begin)
        #expect(r.send(.failed(.ssh(.timedOut(host: "client web1", what: "connecting", seconds: 30, key: "connect_timeout", detail: ""))), after: 50) == [.finish])
        #expect(r.m.attempts.isEmpty)
    }

    @Test("a cancel that came with a failure is not retried")
    func cancelStopsRetries() {
        var r = Run(connectAttempts: 5)
        _ = r.send(.begin)
        _ = r.send(.cancelRequested)
        #expect(r.send(.failed(.ssh(.connect(host: "client web1", detail: "refused")))) == [.finish])
        #expect(r.m.cancelled)
    }

    @Test("backoff: base × 2^(attempt−1), at most 10 minutes, times the jitter")
    func backoff() {
        #expect(M.backoff(base: 10, attempt: 1, jitter: 1) == 10)
        #expect(M.backoff(base: 10, attempt: 3, jitter: 1) == 40)
        #expect(M.backoff(base: 10, attempt: 30, jitter: 1) == 600)
        #expect(M.backoff(base: 10, attempt: 2, jitter: 0.75) == 15)
    }

    @Test("events that do not belong to a phase are ignored, and a finished run stays finished")
    func strayEvents() {
        var r = Run()
        #expect(r.send(.connected).isEmpty && r.m.phase == .idle)
        r.toRunning(forward: false)
        #expect(r.send(.postHookEnded(warning: nil)).isEmpty)
        #expect(r.send(.abandoned(.run(.protocolFailure("poll keeps failing")))) == [.cutSplice, .finish])
        #expect(r.send(.begin).isEmpty && r.send(.cancelRequested).isEmpty && r.m.phase == .finished)
        #expect(!r.m.cancelled)
    }
}

@Suite("borg on the relay (local runs) in the same machine: SIGKILL after SIGTERM, stderr read to its end, no T")
struct LocalRunMachineTests {
    typealias M = RunMachine
    typealias Run = RunMachineTests.Run

    static func local() -> Run { Run(kind: .local, connectAttempts: 1, idleTimeout: 0) }

    @Test("borg exits and the splice finishes, but the run ends only when borg's stderr has ended too")
    func waitsForStderr() {
        var r = Self.local()
        r.toRunning(forward: false)
        #expect(r.send(.borgConnected).isEmpty)
        #expect(r.send(.spliceFinished).isEmpty)
        #expect(r.send(.borgExited(BorgExit(status: 0))) == [.closeBorgChannel])
        #expect(r.m.phase != .finished)
        #expect(r.send(.outputClosed) == [.finish])
    }

    @Test("stderr held open after borg exited (a child of borg's): given exit_grace, then the run ends with a warning")
    func stderrHeldOpen() {
        var r = Self.local()
        r.toRunning(forward: false)
        _ = r.send(.borgConnected)
        _ = r.send(.spliceFinished)
        _ = r.send(.borgExited(BorgExit(status: 0)))
        _ = r.tick()
        let end = r.tick(after: 15, server: 1)
        #expect(end.last == .finish, "\(end)")
        #expect(r.m.warnings == ["borg's output stayed open 15 s after it exited; channels were closed"])
    }

    @Test("cancel: SIGTERM; borg ignores it: SIGKILL after exit_grace; still there after another: the run fails naming it")
    func killAfterTerm() {
        var r = Self.local()
        r.toRunning(forward: false)
        #expect(r.send(.cancelRequested) == [.log("cancel requested: stopping borg on the relay and closing the splice"), .cutSplice, .terminateBorg])
        _ = r.tick()
        #expect(r.tick(after: 15, server: 1) == [.log("borg on the relay did not exit; killing it"), .killBorg])
        #expect(r.m.isStopping)
        let end = r.tick(after: 15, server: 2)
        #expect(end.last == .finish, "\(end)")
        #expect(r.m.failure == .run(.protocolFailure("borg on the relay did not end after SIGKILL")))

        var k = Self.local()
        k.toRunning(forward: false)
        _ = k.send(.cancelRequested)
        _ = k.tick()
        #expect(k.tick(after: 15, server: 1) == [.log("borg on the relay did not exit; killing it"), .killBorg])
        #expect(k.send(.borgExited(BorgExit(status: nil, signal: "KILL"))) == [.cutSplice, .closeBorgChannel])
        #expect(k.send(.outputClosed) == [.finish])
        #expect(k.m.cancelled && k.m.failure == nil)
    }

    @Test("there is no T: its packet count is never judged; B lost: borg on R gets SIGTERM (it is ours to stop)")
    func noClientServerLost() {
        var r = Self.local()
        r.toRunning(forward: false)
        _ = r.send(.borgConnected)
        for i in 1...10 { #expect(!r.tick(after: 10, server: UInt64(i)).contains(.sendKeepalive(.client))) }
        #expect(r.m.isRunning)
        #expect(r.send(.sessionClosed(.server, detail: "Socket error: disconnected")) == [.cutSplice, .terminateBorg])
        #expect(r.m.failure == .ssh(.connectionLost(host: "server b1", detail: "Socket error: disconnected")))
    }
}

@Suite("Keepalive verdicts")
struct KeepaliveWatchTests {
    let t0 = Date(timeIntervalSince1970: 5_000)

    @Test("silence: a probe after each interval, dead after interval × count; any packet resets it")
    func probesAndDeath() {
        var w = KeepaliveWatch(interval: 10, count: 3, now: t0)
        #expect(w.check(packets: 0, probing: true, now: t0) == .alive(nextCheck: t0.addingTimeInterval(10), probe: false))
        #expect(w.check(packets: 0, probing: true, now: t0.addingTimeInterval(10)) == .alive(nextCheck: t0.addingTimeInterval(20), probe: true))
        #expect(w.check(packets: 0, probing: true, now: t0.addingTimeInterval(15)) == .alive(nextCheck: t0.addingTimeInterval(20), probe: false))
        #expect(w.check(packets: 0, probing: true, now: t0.addingTimeInterval(20)) == .alive(nextCheck: t0.addingTimeInterval(30), probe: true))
        #expect(w.check(packets: 0, probing: true, now: t0.addingTimeInterval(30)) == .dead(silentFor: 30))
        var v = KeepaliveWatch(interval: 10, count: 3, now: t0)
        _ = v.check(packets: 0, probing: true, now: t0.addingTimeInterval(25))
        #expect(v.check(packets: 7, probing: true, now: t0.addingTimeInterval(29)) == .alive(nextCheck: t0.addingTimeInterval(39), probe: false))
    }

    @Test("while probing is not allowed, silence never counts for more than one interval")
    func notProbing() {
        var w = KeepaliveWatch(interval: 10, count: 3, now: t0)
        #expect(w.check(packets: 0, probing: false, now: t0.addingTimeInterval(500)) == .alive(nextCheck: t0.addingTimeInterval(510), probe: false))
        #expect(w.check(packets: 0, probing: true, now: t0.addingTimeInterval(500)) == .alive(nextCheck: t0.addingTimeInterval(510), probe: true))
        #expect(w.check(packets: 0, probing: true, now: t0.addingTimeInterval(515)) == .alive(nextCheck: t0.addingTimeInterval(520), probe: true))
        #expect(w.check(packets: 0, probing: true, now: t0.addingTimeInterval(520)) == .dead(silentFor: 30))
    }
}

@Suite("The one driver loop (RunMachine.drive) with a scripted driver")
struct RunDriveTests {
    /// A driver that answers from a script and moves a fake clock to each deadline.
    final class Scripted: RunDriver {
        var now = Date(timeIntervalSince1970: 2_000_000)
        var performed: [RunMachine.Action] = []
        var connects = 0
        let failFirstConnect: Bool
        var waits = 0

        init(failFirstConnect: Bool) { self.failFirstConnect = failFirstConnect }

        func perform(_ action: RunMachine.Action) -> [RunMachine.Event] {
            performed.append(action)
            switch action {
            case .connect:
                connects += 1
                if failFirstConnect && connects == 1 { return [.failed(.ssh(.connect(host: "client web1", detail: "refused")))] }
                return [.connected]
            case .start:
                return [.borgLaunched, .started(forward: true), .borgConnected]
            case .cancelForward:
                return [.forwardClosed]
            default:
                return []
            }
        }

        func wait(for machine: RunMachine) -> [RunMachine.Event] {
            waits += 1
            if let d = machine.nextDeadline, d > now { now = d }
            if case .waitingToRetry = machine.phase { return [.tick(clientPackets: 0, serverPackets: 0)] }
            return [.moved(total: 4096), .borgExited(BorgExit(status: 0, archiveID: "a1")), .spliceFinished]
        }
    }

    static func machine() -> RunMachine {
        var p = RunMachine.Policy(run: RunPolicy(idleTimeout: 3600, runTimeout: 0, connectAttempts: 3, retryDelay: 10),
                                  retryCreate: false, postHook: false, keepaliveInterval: 10, keepaliveCount: 3,
                                  clientLabel: "client web1", serverLabel: "server b1")
        p.jitter = { 1.0 }
        return RunMachine(policy: p)
    }

    @Test("a backup runs to its end: connect, start, the forward closes once borg connected, the success rule holds")
    func happyPath() {
        let d = Scripted(failFirstConnect: false)
        var m = Self.machine()
        m.drive(d, clock: { d.now })
        #expect(d.performed == [.connect(attempt: 1), .start, .cancelForward, .closeBorgChannel], "\(d.performed)")
        #expect(m.phase == .finished && m.borgSucceeded(needsArchive: true) && m.attempts.isEmpty)
    }

    @Test("a refused first connection: the attempt ends, the driver waits out the retry delay on the clock, the second attempt succeeds")
    func retry() {
        let d = Scripted(failFirstConnect: true)
        var m = Self.machine()
        let start = d.now
        m.drive(d, clock: { d.now })
        #expect(d.performed.prefix(3) == [.connect(attempt: 1), .log("attempt 1 failed: \(SSHError.connect(host: "client web1", detail: "refused")); retrying in 10.0 s"), .endAttempt])
        #expect(d.performed.contains(.connect(attempt: 2)))
        #expect(d.now >= start.addingTimeInterval(10), "the retry waited for its delay")
        #expect(m.attempts.count == 1 && m.borgSucceeded(needsArchive: true))
    }
}
