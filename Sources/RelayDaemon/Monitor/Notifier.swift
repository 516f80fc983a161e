import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import RelayCore
import Synchronization

/// Delivers events to the `[notify.X]` notifiers, off the runs' path: `send` returns at
/// once; each delivery is a task of its own with a timeout per attempt and a few attempts
/// with doubling delays. A failure is logged and counted
/// (`borg_relay_notify_failures_total`), never passed on to a run. At most `maxPending`
/// deliveries wait at once; beyond that an event is dropped (logged, counted), so a dead
/// receiver cannot grow the agent's memory.
final class NotifyCenter: Sendable {
    private struct State {
        var notifiers: [String: NotifierConfig]
        var pending = 0
    }
    private let state: Mutex<State>
    private let metrics: RelayMetrics?
    private let logger: Logger
    private let http: HTTPClient
    static let maxPending = 256
    /// Base delay between attempts (doubled each time).
    static let retryDelay: Duration = .seconds(1)

    init(notifiers: [String: NotifierConfig], metrics: RelayMetrics?, logger: Logger) {
        state = Mutex(State(notifiers: notifiers))
        self.metrics = metrics
        metrics?.notifiersConfigured(notifiers.keys.sorted())
        self.logger = logger
        http = Self.client
    }

    /// One client for the process (never shut down, like `HTTPClient.shared`), but one that
    /// follows no redirect: an event goes to the URL the operator wrote and nowhere else.
    private static let client: HTTPClient = {
        var config = HTTPClient.Configuration()
        config.redirectConfiguration = .disallow
        config.timeout = .init(connect: .seconds(10), read: .seconds(60))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }()

    func reload(_ notifiers: [String: NotifierConfig]) {
        state.withLock { $0.notifiers = notifiers }
        metrics?.notifiersConfigured(notifiers.keys.sorted())
    }

    /// Sends `event` to every notifier that wants it; `logTail` is the body of Healthchecks
    /// pings (the end of the run's log). Returns at once.
    func send(_ event: RelayEvent, logTail: String? = nil) {
        let targets = state.withLock { s in
            s.notifiers.values.sorted(by: { $0.name < $1.name }).filter { $0.wants(event.event, client: event.client) }
        }
        for n in targets {
            let taken = state.withLock { s in
                guard s.pending < Self.maxPending else { return false }
                s.pending += 1
                return true
            }
            guard taken else {
                logger.error("notify.\(n.name): \(Self.maxPending) notifications pending; the \(event.event.rawValue) event of \(event.client ?? "the agent") was dropped")
                metrics?.notifyDropped(n.name)
                continue
            }
            Task {
                let ok = await self.deliver(event, to: n, logTail: logTail)
                self.state.withLock { $0.pending -= 1 }
                if !ok { self.metrics?.notifyFailed(n.name) }
            }
        }
    }

    /// Sends a test event to one notifier and waits for the outcome (`relayctl notify test`).
    func test(_ name: String, relay: String) async throws(ControlError) -> String {
        let all = state.withLock { $0.notifiers }
        guard let n = all[name] else {
            throw .notFound("no notifier '\(name)' ([notify.NAME] in the config; configured: \(all.keys.sorted().joined(separator: ", ")))")
        }
        let event = RelayEvent(event: .test, time: Date(), relay: relay)
        do {
            try await attempt(event, to: n, logTail: nil)
            return "notify.\(name) (\(n.kind.rawValue)): the test event was delivered"
        } catch {
            throw .init(status: 502, body: .init(code: "notify_failed", error: "notify.\(name) (\(n.kind.rawValue)): the test event was not delivered: \(error)"))
        }
    }

    /// Waits until no delivery is pending, at most `timeout` (shutdown: agent_stopped).
    func flush(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while state.withLock({ $0.pending }) > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Every attempt of one delivery; false when all failed.
    private func deliver(_ event: RelayEvent, to n: NotifierConfig, logTail: String?) async -> Bool {
        var delay = Self.retryDelay
        for number in 1...n.attempts {
            do {
                try await attempt(event, to: n, logTail: logTail)
                logger.debug("notify.\(n.name): \(event.event.rawValue) delivered")
                return true
            } catch {
                let last = number == n.attempts
                logger.warning("notify.\(n.name) (\(n.kind.rawValue)): the \(event.event.rawValue) event of \(event.client ?? "the agent") was not delivered (attempt \(number) of \(n.attempts)): \(error)\(last ? "; giving up" : "")")
                if last { break }
                try? await Task.sleep(for: delay)
                delay *= 2
            }
        }
        return false
    }

    private struct DeliveryError: Error, CustomStringConvertible {
        var description: String
    }

    /// One attempt; throws what went wrong.
    private func attempt(_ event: RelayEvent, to n: NotifierConfig, logTail: String?) async throws {
        let timeout = TimeAmount.seconds(Int64(n.timeout))
        switch n.kind {
        case .command:
            try await runCommand(n.argv ?? [], event: event, timeout: TimeInterval(n.timeout))
            return
        case .webhook:
            var r = HTTPClientRequest(url: try url(n, event))
            r.method = .POST
            r.headers.add(name: "Content-Type", value: "application/json")
            r.body = .bytes(ByteBuffer(data: event.json()))
            try await post(r, timeout: timeout)
        case .healthchecks:
            guard let target = event.healthchecksURL(base: try url(n, event)) else { return }
            var r = HTTPClientRequest(url: target)
            r.method = .POST
            r.headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
            r.body = .bytes(ByteBuffer(string: logTail.map { event.message + "\n\n" + $0 } ?? event.message))
            try await post(r, timeout: timeout)
        case .ntfy:
            var r = HTTPClientRequest(url: try url(n, event))
            r.method = .POST
            r.headers.add(name: "Title", value: Self.headerSafe("borg-relay: \(event.client ?? event.relay) \(event.event.rawValue)"))
            r.headers.add(name: "Priority", value: "\(event.ntfyPriority)")
            r.headers.add(name: "Tags", value: event.ntfyPriority >= 4 ? "warning" : "floppy_disk")
            r.body = .bytes(ByteBuffer(string: event.message + (event.error.map { "\n\($0)" } ?? "")))
            try await post(r, timeout: timeout)
        }
    }

    private func url(_ n: NotifierConfig, _ event: RelayEvent) throws -> String {
        guard let u = n.url else { throw DeliveryError(description: "no url") }
        return u.replacingOccurrences(of: "{client}", with: event.client ?? "relay")
    }

    private func post(_ request: HTTPClientRequest, timeout: TimeAmount) async throws {
        let response = try await http.execute(request, timeout: timeout)
        // The body is not needed; read a little so the connection can be reused.
        _ = try? await response.body.collect(upTo: 64 * 1024)
        guard (200..<300).contains(response.status.code) else {
            throw DeliveryError(description: "the receiver answered HTTP \(response.status.code)")
        }
    }

    private func runCommand(_ argv: [String], event: RelayEvent, timeout: TimeInterval) async throws {
        var env = ["PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"]
        env.merge(event.environment) { _, new in new }
        let input = event.json()
        let finalEnv = env
        let outcome: CommandRunner.Outcome = try await withCheckedThrowingContinuation { c in
            // A thread of its own: the command blocks until it ends or its timeout.
            let t = Thread {
                do { c.resume(returning: try CommandRunner.run(argv, env: finalEnv, input: input, timeout: timeout)) } catch { c.resume(throwing: error) }
            }
            t.name = "notify command"
            t.start()
        }
        guard outcome.succeeded else { throw DeliveryError(description: "\(argv[0]) \(outcome.description)") }
    }

    /// Header values: one line, printable ASCII (names are [A-Za-z0-9._-]).
    static func headerSafe(_ s: String) -> String {
        String(s.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7f ? Character($0) : "?" })
    }
}
