import Foundation
import Hummingbird
import Logging
import NIOCore
import RelayCore

/// `GET /metrics` on `[metrics] listen` (Prometheus' text format). Read-only and without
/// secrets; loopback unless the config names another address. It serves the exposition the
/// scheduler's tick (every few seconds) and each run's end publish: a flood of scrapes never
/// enters the run manager.
enum MetricsServer {
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    static func router(metrics: RelayMetrics) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: contentType],
                     body: .init(byteBuffer: ByteBuffer(bytes: metrics.publishedExposition)))
        }
        return router
    }

    static func application(listen: ListenAddress, metrics: RelayMetrics, logger: Logger) -> some ApplicationProtocol {
        Application(router: router(metrics: metrics),
                    server: .http1(configuration: .init(idleTimeout: .seconds(30))),
                    configuration: .init(address: .hostname(listen.host, port: listen.port), serverName: "relay-agent"),
                    logger: logger)
    }
}

extension RunManager {
    /// Shutdown: `agent_stopped`, and the pending notifications get a few seconds.
    func stopMonitoring() async {
        send(RelayEvent(event: .agentStopped, time: Date(), relay: relayName))
        refreshMetrics(now: Date(), writeTextfile: true)
        await notify.flush(timeout: .seconds(10))
    }
}
