import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import RelayCore
import Synchronization

/// Delivers events to the `[notify.X]` notifiers, off the runs' path: `send` returns at
/// once. Each notifier has its own lane (a task reading a stream), so its events arrive in
/// the order they happened (Healthchecks' /start before its success ping) and a slow
/// receiver holds up only its own lane; each delivery has a timeout per attempt and a few
/// attempts with doubling delays. A failure is logged and counted
/// (`borg_relay_notify_failures_total`), never passed on to a run. At most `maxPending`
/// deliveries wait at once; beyond that an event is dropped (logged, counted), so a dead
/// receiver cannot grow the agent's memory.
final class NotifyCenter: Sendable {
    private struct Delivery: Sendable {
        let event: RelayEvent
        let logTail: String?
    }
    private struct Lane {
        let config: NotifierConfig
        let input: AsyncStream<Delivery>.Continuation
    }
    private struct State {
        var lanes: [String: Lane] = [:]
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
        state = Mutex(State())
        self.metrics = metrics
        self.logger = logger
        http = Self.client
        reload(notifiers)
    }

    /// One client for the process (never shut down, like `HTTPClient.shared`), but one that
    /// follows no redirect: an event goes to the URL the operator wrote and nowhere else.
    private static let client: HTTPClient = {
        var config = HTTPClient.Configuration()
        config.redirectConfiguration = .disallow
        config.timeout = .init(connect: .seconds(10), read: .seconds(60))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }()

    /// Takes the configured notifiers: a changed or removed one's lane ends once it has
    /// delivered what it holds; a new or changed one gets a new lane.
    func reload(_ notifiers: [String: NotifierConfig]) {
        state.withLock { s in
            for (name, lane) in s.lanes where notifiers[name] != lane.config {
                lane.input.finish()
                s.lanes[name] = nil
            }
            for (name, n) in notifiers where s.lanes[name] == nil {
                s.lanes[name] = lane(n)
            }
        }
        metrics?.notifiersConfigured(notifiers.keys.sorted())
    }

    private func lane(_ n: NotifierConfig) -> Lane {
        let (stream, input) = AsyncStream.makeStream(of: Delivery.self, bufferingPolicy: .unbounded)
        Task {
            for await d in stream {
                let ok = await self.deliver(d.event, to: n, logTail: d.logTail)
                self.state.withLock { $0.pending -= 1 }
                if !ok { self.metrics?.notifyFailed(n.name) }
            }
        }
        return Lane(config: n, input: input)
    }

    /// Sends `event` to every notifier that wants it; `logTail` is the body of Healthchecks
    /// pings (the end of the run's log). Returns at once.
    func send(_ event: RelayEvent, logTail: String? = nil) {
        let dropped: [String] = state.withLock { s in
            var dropped: [String] = []
            for lane in s.lanes.values.sorted(by: { $0.config.name < $1.config.name })
            where lane.config.wants(event.event, client: event.client) {
                guard s.pending < Self.maxPending else {
                    dropped.append(lane.config.name)
                    continue
                }
                s.pending += 1
                lane.input.yield(Delivery(event: event, logTail: logTail))
            }
            return dropped
        }
        for name in dropped {
            logger.error("notify.\(name): \(Self.maxPending) notifications pending; the \(event.event.rawValue) event of \(event.client ?? "the agent") was dropped")
            metrics?.notifyDropped(name)
        }
    }

    /// Sends a test event to one notifier and waits for the outcome (`relayctl notify test`).
    func test(_ name: String, relay: String) async throws(ControlError) -> String {
        let all = state.withLock { $0.lanes.mapValues(\.config) }
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
