import Foundation
import Logging
import PostgresNIO
import RelayCore
import ServiceLifecycle
import Synchronization

/// Starts runs when clients' `schedule`s come due, after a random delay of up to
/// `jitter` seconds, and repository checks when their `check_schedule` does; at start-up,
/// runs once what was missed while the agent was down (clients with `catch_up = true`).
/// Each tick also moves monitoring on (overdue clients, the gauges, the textfile).
struct SchedulerService: Service {
    let manager: RunManager
    let logger: Logger
    let timeZone: TimeZone
    /// The longest sleep between checks (a reload shows within this time).
    static let tick: Duration = .seconds(5)

    func run() async throws {
        let now = Date()
        let fleet = await manager.isFleet
        let leader = manager.fleetStore.map { FleetLeader(client: $0.client, logger: logger) }
        defer { leader?.resign() }
        if !fleet {
            for client in await manager.missedSchedules(now: now, timeZone: timeZone) {
                logger.info("client \(client): a scheduled run was missed while the agent was down; catching up now")
                await manager.submitScheduled(client, trigger: "catch-up")
            }
        }
        await manager.planSchedules(now: now, timeZone: timeZone)
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                let now = Date()
                await manager.monitorTick(now: now)
                // In a fleet only the holder of the scheduler's lock enqueues; the others
                // keep their books moving (for status) and enqueue nothing.
                var leads = true
                if let leader {
                    leads = leader.lead()
                    await manager.takeLead(leads, now: now, timeZone: timeZone)
                }
                let (due, checks, next) = await manager.takeDue(now: now, timeZone: timeZone)
                for (client, slot) in checks where leads {
                    logger.info("client \(client): scheduled repository check")
                    await manager.submitScheduledCheck(client, slot: fleet ? slot : nil)
                }
                for (client, jitter, slot) in due where leads {
                    let delay = jitter > 0 ? Int.random(in: 0...jitter) : 0
                    if delay > 0 { logger.info("client \(client): scheduled run starts in \(delay) s (jitter)") }
                    group.addTask {
                        if delay > 0 { try? await Task.sleep(for: .seconds(delay)) }
                        if Task.isCancelled || Task.isShuttingDownGracefully { return }
                        await manager.submitScheduled(client, trigger: "schedule", slot: fleet ? slot : nil)
                    }
                }
                var wait = Self.tick
                if let next {
                    let seconds = max(0.05, next.timeIntervalSinceNow)
                    wait = min(wait, .milliseconds(Int64(seconds * 1000)))
                }
                let pause = wait
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
            }
            group.cancelAll()
        }
    }
}

/// A fleet's upkeep (RunManager+Fleet.swift): leases are renewed or given up, expired
/// ones taken over, cancel requests carried out and runs claimed, every second, and at once
/// when another relay notifies the fleet (LISTEN on a connection of its own; it reconnects
/// after the database was away).
struct FleetService: Service {
    let manager: RunManager
    let store: PostgresStore
    let logger: Logger
    /// While wake-ups arrive (LISTEN is connected), the upkeep runs every 5 s (or as often
    /// as the leases need); without them, every second.
    private let listening = Flag()

    final class Flag: Sendable {
        private let value = Atomic<Bool>(false)
        var isSet: Bool { value.load(ordering: .relaxed) }
        func set(_ v: Bool) { value.store(v, ordering: .relaxed) }
    }

    func run() async throws {
        let (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let renewEvery = await manager.leases.renewEvery
        await withDiscardingTaskGroup { group in
            group.addTask { await listen(wake) }
            group.addTask {
                // Each notification (or the tick) runs one upkeep turn.
                for await _ in wakes {
                    if Task.isCancelled || Task.isShuttingDownGracefully { break }
                    await manager.fleetTick()
                }
            }
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                wake.yield()
                let tick: Duration = listening.isSet ? .milliseconds(Int64(min(5, renewEvery) * 1000)) : .seconds(1)
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: tick) }
            }
            wake.finish()
            group.cancelAll()
        }
    }

    private func listen(_ wake: AsyncStream<Void>.Continuation) async {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let c = try await store.client.connectAsync()
                do {
                    try await c.listen(on: PostgresStore.wakeChannel) { notifications in
                        listening.set(true)
                        wake.yield()  // what was queued while not listening
                        for try await _ in notifications { wake.yield() }
                    }
                } catch {
                    logger.debug("fleet: listening for wake-ups: \(PostgresClient.describe(error)); polling meanwhile")
                }
                listening.set(false)
                // A connection is closed before it is released (postgres-nio asserts it).
                try? await c.close()
            } catch {
                listening.set(false)
                logger.debug("fleet: cannot connect to listen for wake-ups: \(PostgresClient.describe(error)); polling meanwhile")
            }
            try? await Task.sleep(for: .seconds(2))
        }
    }
}
