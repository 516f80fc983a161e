import Foundation

/// How long a run may take and how often it is tried: the run settings of `[relay]`, kept
/// apart from the SSH options (`SessionOptions`). Their defaults live in `RelaySettings`
/// only; this type has none of its own.
public struct RunPolicy: Sendable, Equatable {
    /// Seconds the splice may move no byte either way while borg runs (0: no limit).
    public var idleTimeout: Int
    /// Seconds a whole run may take (0: no limit).
    public var runTimeout: Int
    /// Attempts for connection-level failures before borg starts.
    public var connectAttempts: Int
    /// Seconds before the first retry; each further one waits twice as long (with jitter).
    public var retryDelay: Int

    public init(idleTimeout: Int, runTimeout: Int, connectAttempts: Int, retryDelay: Int) {
        self.idleTimeout = idleTimeout
        self.runTimeout = runTimeout
        self.connectAttempts = connectAttempts
        self.retryDelay = retryDelay
    }

    public init(_ relay: RelaySettings) {
        idleTimeout = relay.idleTimeout
        runTimeout = relay.runTimeout
        connectAttempts = relay.connectAttempts
        retryDelay = relay.retryDelay
    }
}
