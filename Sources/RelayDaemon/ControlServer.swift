import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import RelayCore
import Synchronization

/// The request context of the control API: Hummingbird's core context plus the
/// connection, for the peer's credentials, and the peer's uid once the guard knows it.
struct ControlContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel
    var peerUID: uid_t?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    var maxUploadSize: Int { ControlAPI.maxRequestBody }
}

/// Who may use the control socket, and for what (`ControlAccess`), with the peer's groups
/// looked up. The kernel tells who the peer is (SO_PEERCRED); the file mode (0660, group
/// socket_group) is the first gate, this is the second.
struct PeerPolicy: Sendable {
    let access: ControlAccess

    /// The peer's groups: its primary group, its process's supplementary groups where /proc
    /// shows them, and the group database's (ProtectProc=invisible hides other users'
    /// processes).
    static func groups(uid: uid_t, gid: gid_t, pid: Int32) -> Set<gid_t> {
        Set([gid] + processGroups(pid) + supplementaryGroups(of: uid))
    }

    /// The "Groups:" line of /proc/PID/status.
    static func processGroups(_ pid: Int32) -> [gid_t] {
        guard pid > 0, let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Groups:") }) else { return [] }
        return line.dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { gid_t($0) }
    }

    static func supplementaryGroups(of uid: uid_t) -> [gid_t] {
        guard let pw = getpwuid(uid) else { return [] }
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(pw.pointee.pw_name, pw.pointee.pw_gid, &groups, &count) == -1 {
            groups = [gid_t](repeating: 0, count: Int(count))
            _ = getgrouplist(pw.pointee.pw_name, pw.pointee.pw_gid, &groups, &count)
        }
        return Array(groups.prefix(Int(max(0, count))))
    }
}

/// Which uid submitted which run (in memory, the newest 10000), so that a member of the
/// socket group reads the output of their own runs only.
final class RunOwners: Sendable {
    private struct State {
        var owner: [String: uid_t] = [:]
        var order: [String] = []
    }
    private let state = Mutex(State())
    static let limit = 10_000

    func record(_ ids: [String], uid: uid_t) {
        state.withLock { s in
            for id in ids where s.owner.updateValue(uid, forKey: id) == nil { s.order.append(id) }
            if s.order.count > Self.limit {
                let drop = s.order.count - Self.limit
                for id in s.order.prefix(drop) { s.owner.removeValue(forKey: id) }
                s.order.removeFirst(drop)
            }
        }
    }

    func owner(of id: String) -> uid_t? { state.withLock { $0.owner[id] } }
}

/// `struct ucred` of SO_PEERCRED (glibc shows it only under _GNU_SOURCE): pid, uid, gid.
struct PeerCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

/// Who is at the other end of a request's connection; nil when that cannot be told.
typealias PeerLookup = @Sendable (any Channel) async -> Result<PeerCredentials, PeerLookupError>

struct PeerLookupError: Error, CustomStringConvertible {
    let description: String
}

enum PeerLookups {
    /// The kernel's answer for the unix socket's connection (SO_PEERCRED).
    static let socket: PeerLookup = { channel in
        guard let provider = channel as? SocketOptionProvider else { return .failure(PeerLookupError(description: "not a socket")) }
        do {
            let cred: PeerCredentials = try await provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET),
                                                                                 name: SocketOptionName(SO_PEERCRED)).get()
            return .success(cred)
        } catch {
            return .failure(PeerLookupError(description: "\(error)"))
        }
    }
}

/// Refuses peers and requests the roles do not allow (403 naming the group); turns every
/// error into a JSON body.
struct GuardMiddleware: RouterMiddleware {
    typealias Context = ControlContext
    let policy: PeerPolicy
    let owners: RunOwners
    let logger: Logger
    let peer: PeerLookup

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let cred: PeerCredentials
        switch await peer(context.channel) {
        case .success(let c):
            cred = c
        case .failure(let e):
            return jsonError(ControlError(status: 403, body: .init(code: "forbidden", error: "peer credentials unavailable: \(e)")))
        }
        let access = policy.access
        let groups = PeerPolicy.groups(uid: cred.uid, gid: cred.gid, pid: cred.pid)
        var request = request
        var action = ControlAction.classify(method: request.method.rawValue, path: request.uri.path)
        if case .submit = action, access.role(uid: cred.uid, groups: groups) == .member {
            // The operation's kind decides; the route reads the same bytes again.
            do {
                action = ControlAction.submit(body: Data(buffer: try await request.collectBody(upTo: context.maxUploadSize)))
            } catch is NIOTooManyBytesError {
                return jsonError(ControlError(status: 413, body: .init(code: "too_large",
                    error: "the request body is larger than \(ControlAPI.maxRequestBody) bytes")))
            }
        }
        var owner: uid_t?
        if case .output(let id) = action { owner = owners.owner(of: id) }
        if case .refuse(let why) = access.decide(uid: cred.uid, groups: groups, action: action, runOwner: owner) {
            logger.warning("control socket: refused a request from uid \(cred.uid) (pid \(cred.pid)), \(request.method) \(request.uri.path): \(why)")
            return jsonError(ControlError(status: 403, body: .init(code: "forbidden", error: why)))
        }
        var context = context
        context.peerUID = cred.uid
        do {
            return try await next(request, context)
        } catch let e as ControlError {
            return jsonError(e)
        } catch let e as HTTPError {
            let code = e.status.code
            return jsonError(ControlError(status: code, body: .init(code: code == 404 ? "not_found" : "bad_request",
                                                                    error: e.body ?? e.status.reasonPhrase)))
        } catch {
            logger.error("control API: \(request.method) \(request.uri.path): \(error)")
            return jsonError(ControlError.internalError("\(error)"))
        }
    }
}

func jsonResponse<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
    let data = (try? ControlAPI.encoder().encode(value)) ?? Data("{}".utf8)
    return Response(status: status, headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

func jsonError(_ e: ControlError) -> Response {
    jsonResponse(e.body, status: HTTPResponse.Status(code: e.status))
}

enum ControlRoutes {
    /// The control API's routes behind the guard. `peer` tells who is asking: the socket's
    /// peer credentials in the daemon, a fixed identity in the route tests.
    static func router(manager: RunManager, policy: PeerPolicy, logger: Logger,
                       peer: @escaping PeerLookup = PeerLookups.socket) -> Router<ControlContext> {
        let router = Router(context: ControlContext.self)
        let owners = RunOwners()
        router.add(middleware: GuardMiddleware(policy: policy, owners: owners, logger: logger, peer: peer))
        let v1 = router.group(RouterPath(ControlAPI.prefix))

        v1.get("status") { _, _ in
            jsonResponse(await manager.status())
        }
        v1.post("keys") { _, _ in
            jsonResponse(try await manager.newKey(), status: .created)
        }
        v1.post("runs") { request, context in
            let body: ByteBuffer
            do {
                body = try await request.body.collect(upTo: context.maxUploadSize)
            } catch is NIOTooManyBytesError {
                throw ControlError(status: 413, body: .init(code: "too_large",
                    error: "the request body is larger than \(ControlAPI.maxRequestBody) bytes"))
            }
            let req: RunRequest
            do {
                req = try ControlAPI.decoder().decode(RunRequest.self, from: Data(buffer: body))
            } catch {
                throw ControlError.badRequest("the body is not a valid run request (JSON with \"clients\": [...]): \(error)")
            }
            let runs = try await manager.submit(req, trigger: "api")
            if let uid = context.peerUID { owners.record(runs.map(\.id), uid: uid) }
            return jsonResponse(RunList(runs: runs), status: .accepted)
        }
        v1.get("runs") { request, _ in
            let q = request.uri.queryParameters
            var limit = 50
            if let l = q["limit"] {
                guard let n = Int(String(l)), (1...10_000).contains(n) else {
                    throw ControlError.badRequest("limit must be a number from 1 to 10000")
                }
                limit = n
            }
            let client = q["client"].map(String.init)
            return jsonResponse(RunList(runs: try await manager.runs(client: client, limit: limit)))
        }
        v1.get("runs/:id") { _, context in
            jsonResponse(try await manager.run(try runID(context)))
        }
        v1.get("runs/:id/log") { request, context in
            let offset = try offsetParameter(request)
            return jsonResponse(try await manager.log(try runID(context), offset: offset))
        }
        v1.get("runs/:id/output") { request, context in
            let offset = try offsetParameter(request)
            return jsonResponse(try await manager.output(try runID(context), offset: offset))
        }
        v1.get("runs/:id/output/raw") { request, context in
            let offset = try offsetParameter(request)
            let chunk = try await manager.rawOutput(try runID(context), offset: offset)
            var headers: HTTPFields = [.contentType: "application/octet-stream"]
            headers[HTTPField.Name(ControlAPI.nextOffsetHeader)!] = String(chunk.next)
            headers[HTTPField.Name(ControlAPI.completeHeader)!] = chunk.complete ? "1" : "0"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: chunk.bytes)))
        }
        v1.post("runs/:id/cancel") { _, context in
            jsonResponse(try await manager.cancel(try runID(context)))
        }
        v1.post("state/backup") { _, _ in
            let result = await manager.stateBackups.backup(trigger: "cli")
            return jsonResponse(result)
        }
        v1.post("notify/:name/test") { _, context in
            let name = context.parameters.get("name") ?? ""
            guard ConfigLoader.nameProblem(name) == nil else { throw ControlError.badRequest("'\(name)' is not a notifier name") }
            let text = try await manager.notify.test(name, relay: manager.relayName)
            return jsonResponse(NotifyTestResult(result: text))
        }
        return router
    }

    /// `?offset=N` of the log and output endpoints (0 when absent).
    static func offsetParameter(_ request: Request) throws -> Int {
        guard let o = request.uri.queryParameters["offset"] else { return 0 }
        guard let n = Int(String(o)), n >= 0 else { throw ControlError.badRequest("offset must be a number, 0 or more") }
        return n
    }

    static func runID(_ context: ControlContext) throws -> String {
        guard let id = context.parameters.get("id"), ControlAPI.isRunID(id) else {
            throw ControlError.badRequest("not a run id")
        }
        return id
    }
}

/// Prepares the socket's location: creates the directory (0755: relayctl users must
/// reach the socket, whose own mode 0660 decides), and removes a stale socket left by
/// an agent that died. A live agent on the path is an error.
enum ControlSocket {
    /// The roles from `[relay] socket_group` and `admin_group`. Without socket_group the
    /// socket keeps the agent's primary group (as created); without admin_group only root
    /// and the agent's user may use the admin operations.
    static func access(_ relay: RelaySettings) throws -> ControlAccess {
        func gid(_ name: String, _ key: String) throws -> gid_t {
            guard let g = GroupLookup.gid(of: name) else {
                throw RunError.setup("[relay] \(key): no group named '\(name)' on this host; create it (groupadd \(name)) or fix the name")
            }
            return g
        }
        let socketGID = try relay.socketGroup.map { try gid($0, "socket_group") } ?? getegid()
        if geteuid() != 0 && socketGID != getegid() && !currentGroups().contains(socketGID) {
            throw RunError.setup("[relay] socket_group: the agent's user is not a member of group \(relay.socketGroup ?? "") and cannot give the socket to it; add it (usermod -aG \(relay.socketGroup ?? "GROUP") USER) or leave socket_group unset")
        }
        let adminGID = try relay.adminGroup.map { try gid($0, "admin_group") }
        return ControlAccess(agentUID: geteuid(), socketGID: socketGID, socketGroupName: GroupLookup.name(of: socketGID),
                             adminGID: adminGID, adminGroupName: adminGID.map { GroupLookup.name(of: $0) })
    }

    /// This process's supplementary groups.
    static func currentGroups() -> [gid_t] {
        let n = getgroups(0, nil)
        guard n > 0 else { return [] }
        var groups = [gid_t](repeating: 0, count: Int(n))
        let got = getgroups(n, &groups)
        return Array(groups.prefix(Int(max(0, got))))
    }

    static func prepare(path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw RunError.setup("\(path) exists and is not a socket; remove it or set [relay] socket to another path")
        }
        if UnixSocket.probe(path) == 0 {
            throw RunError.setup("another relay-agent is already listening on \(path)")
        }
        unlink(path)
    }
}
