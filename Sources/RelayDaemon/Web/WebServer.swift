import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import RelayCore

/// The status page's listener on `[web] listen`: TCP, or a unix socket (mode 0660, group
/// `proxy_group`) for a reverse proxy on the relay.
enum WebServer {
    /// Open connections to the page at once.
    static let maxConnections = 256

    static func application(web: WebSettings, config: RelayConfig, manager: RunManager, access: ControlAccess,
                            logger: Logger, httpLogger: Logger) throws -> some ApplicationProtocol {
        let gate = try WebGate(settings: web, passwordPath: WebSettings.passwordPath(stateDir: config.relay.stateDir),
                               roleOf: WebGate.accountRole(access: access))
        let router = WebRoutes.router(manager: manager, gate: gate, renderer: try WebRenderer(),
                                      relay: manager.relayName, logger: logger)
        let address: BindAddress
        var group: gid_t?
        switch web.listen {
        case .tcp(let a):
            if let why = ListenProbe.problem(host: a.host, port: a.port) {
                throw RunError.setup("[web] listen = \"\(a)\": cannot listen there: \(why); choose another port or stop what uses it")
            }
            address = .hostname(a.host, port: a.port)
            if !a.isLoopback {
                logger.warning("[web] listen = \"\(a)\" is not loopback: the page is plain HTTP; put a TLS proxy in front (docs/status-page.md)")
            }
        case .unix(let path):
            try ControlSocket.prepare(path: path)
            address = .unixDomainSocket(path: path)
            if let g = web.proxyGroup {
                guard let gid = GroupLookup.gid(of: g) else {
                    throw RunError.setup("[web] proxy_group: no group named '\(g)' on this host; create it or name the proxy's group (www-data, caddy)")
                }
                group = gid
            }
        }
        let proxyGID = group
        if web.trustProxyUserHeader == nil && !gate.hasPassword {
            logger.warning("[web]: no password is set, so nobody can log in yet: relayctl web passwd")
        }
        return Application(
            router: router,
            // At most maxConnections at once (beyond, new ones wait in the backlog): a flood of
            // slow requests cannot take the descriptors the runs and the control socket need.
            // A connection idle between requests for 30 s is closed.
            server: .http1(configuration: .init(idleTimeout: .seconds(30))),
            configuration: .init(address: address, serverName: "relay-agent",
                                 availableConnectionsDelegate: MaximumAvailableConnections(maxConnections)),
            onServerRunning: { _ in
                if case .unix(let path) = web.listen {
                    if let gid = proxyGID, chown(path, uid_t.max, gid) != 0 {
                        logger.error("cannot give \(path) to group \(web.proxyGroup ?? "") ([web] proxy_group): \(String(cString: strerror(errno)))")
                    }
                    chmod(path, 0o660)
                }
                logger.info("status page on \(web.listen.description.hasPrefix("unix:") ? web.listen.description : "http://\(web.listen)/")")
            },
            logger: httpLogger
        )
    }
}
