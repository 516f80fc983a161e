import Foundation
import Logging
import RelayCore
import ServiceLifecycle

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

/// A fleet's upkeep (RunManager+Fleet.swift): every second, leases are renewed or given
/// up, expired ones taken over, cancel requests carried out and runs claimed.
struct FleetService: Service {
    let manager: RunManager
    static let tick: Duration = .seconds(1)

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            await manager.fleetTick(now: Date())
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: Self.tick) }
        }
    }
}
