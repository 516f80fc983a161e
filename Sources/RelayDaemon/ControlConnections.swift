import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import RelayCore
import Synchronization

/// The open control connections of one agent, for the cap (`ConnectionCap`). Every
/// connection's handler reports here; the registry closes the connections the cap's
/// decision names. Connections live on several event loops, hence the lock.
final class ControlConnections: Sendable {
    let cap: ConnectionCap
    private let logger: Logger
    private struct State {
        var open: [UInt64: (info: ConnectionCap.Open, channel: any Channel)] = [:]
        var nextID: UInt64 = 1
        var tick: UInt64 = 0
        /// Closed by the cap since the last warning, and when that was.
        var closedByCap = 0
        var lastWarning: ContinuousClock.Instant?
    }
    private let state = Mutex(State())

    init(cap: ConnectionCap, logger: Logger) {
        self.cap = cap
        self.logger = logger
    }

    var count: Int { state.withLock { $0.open.count } }

    /// A new connection from `uid`: its id, or nil if it must be closed at once.
    func opened(uid: uid_t, channel: any Channel) -> UInt64? {
        let cap = self.cap
        let (id, victims, refusal): (UInt64?, [any Channel], String?) = state.withLock { s in
            switch cap.admit(uid: uid, open: s.open.values.map { $0.info }) {
            case .refuse(let why):
                s.closedByCap += 1
                return (nil, [], why)
            case .accept(let closing):
                let victims = closing.compactMap { s.open.removeValue(forKey: $0)?.channel }
                s.closedByCap += victims.count
                let id = s.nextID
                s.nextID += 1
                s.tick += 1
                s.open[id] = (ConnectionCap.Open(id: id, uid: uid, idleSince: s.tick), channel)
                return (id, victims, nil)
            }
        }
        for v in victims { v.close(promise: nil) }
        if refusal != nil || !victims.isEmpty { warnAboutCap(refusal) }
        return id
    }

    func busy(_ id: UInt64) {
        state.withLock { $0.open[id]?.info.idleSince = nil }
    }

    func idle(_ id: UInt64) {
        state.withLock { s in
            s.tick += 1
            s.open[id]?.info.idleSince = s.tick
        }
    }

    func closed(_ id: UInt64) {
        _ = state.withLock { $0.open.removeValue(forKey: id) }
    }

    /// One warning per 10 s at most, with the number closed meanwhile (a flood would
    /// otherwise flood the log too).
    private func warnAboutCap(_ refusal: String?) {
        let now = ContinuousClock.now
        let n: Int? = state.withLock { s in
            if let last = s.lastWarning, now - last < .seconds(10) { return nil }
            s.lastWarning = now
            defer { s.closedByCap = 0 }
            return s.closedByCap
        }
        guard let n else { return }
        logger.warning("control socket: \(n) connection(s) closed by the cap (at most \(cap.total) open, \(cap.perPeer) per user; idle ones go first)\(refusal.map { "; a new one was refused: \($0)" } ?? "")")
    }
}

/// In each control connection's pipeline (after HTTP decoding): registers the connection
/// with the cap, tells it when a request is in progress, and answers malformed HTTP with
/// a JSON 400 (`{"code":"bad_request","error":…}`) instead of an empty one.
final class ControlConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let registry: ControlConnections
    private var id: UInt64?
    private var registered = false
    /// Requests read and responses finished: equal when the connection is idle.
    private var requests = 0
    private var responses = 0

    init(registry: ControlConnections) {
        self.registry = registry
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { register(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        register(context)
        context.fireChannelActive()
    }

    private func register(_ context: ChannelHandlerContext) {
        guard !registered else { return }
        registered = true
        let channel = context.channel
        guard let provider = channel as? SocketOptionProvider else {
            context.close(promise: nil)
            return
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
            .hop(to: context.eventLoop)
            .whenComplete { (result: Result<PeerCredentials, any Error>) in
                let (handler, context) = loopBound.value
                guard channel.isActive else { return }  // gone already: nothing to count
                guard case .success(let cred) = result, let id = handler.registry.opened(uid: cred.uid, channel: channel) else {
                    context.close(promise: nil)
                    return
                }
                handler.id = id
                if handler.requests != handler.responses { handler.registry.busy(id) }
            }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let id { registry.closed(id) }
        id = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if let id { registry.closed(id) }
        id = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) {
            requests += 1
            if let id { registry.busy(id) }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            responses += 1
            if requests <= responses, let id { registry.idle(id) }
        }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Malformed HTTP between requests: answer it here, with the API's JSON error body.
        // (Mid-request, the responder owns the connection; Hummingbird answers it.)
        guard error is HTTPParserError, requests == responses else {
            context.fireErrorCaught(error)
            return
        }
        let body = APIErrorBody(code: "bad_request",
                                error: "malformed HTTP request (\(error)); the control API takes HTTP/1.1 requests as relayctl sends them")
        let data = (try? ControlAPI.encoder().encode(body)) ?? Data(#"{"code":"bad_request","error":"malformed HTTP request"}"#.utf8)
        let head = HTTPResponse(status: .badRequest, headerFields: [
            .contentType: "application/json", .contentLength: String(data.count), .connection: "close",
        ])
        responses = requests  // nothing more will be read
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(ByteBuffer(bytes: data))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
