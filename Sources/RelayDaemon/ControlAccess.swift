import Foundation
import RelayCore

/// What a control request asks for, as far as the roles care.
enum ControlAction: Equatable, Sendable {
    case status
    /// `GET /v1/runs`, `GET /v1/runs/ID`.
    case runs
    case log
    /// `GET /v1/runs/ID/output` and `/output/raw`: borg's stdout of that run.
    case output(runID: String)
    case cancel
    /// `POST /v1/keys`: a one-time key for `--passphrase-stdin`.
    case newKey
    /// `POST /v1/runs`: a backup (`operation` nil) or an operation of that kind.
    case submit(operation: RunKind?)
    /// `POST /v1/state/backup`: back the relay's own state up now (admins only: it reads
    /// every key, if only to seal them).
    case stateBackup
    /// `POST /v1/runs` whose body is not a run request: the route refuses it (400).
    case unreadableSubmit
    /// Anything else (the router answers 404 or 405 to those it does not know).
    case other

    /// Classifies a request by method and path (empty segments ignored, as the router does).
    /// `POST /v1/runs` is `.submit`; its operation comes from the body (`submit(body:)`).
    static func classify(method: String, path: String) -> ControlAction {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard parts.first == String(ControlAPI.prefix.dropFirst()) else { return .other }
        let p = Array(parts.dropFirst())
        switch (method, p.count) {
        case ("GET", 1) where p[0] == "status": return .status
        case ("GET", 1) where p[0] == "runs": return .runs
        case ("GET", 2) where p[0] == "runs": return .runs
        case ("GET", 3) where p[0] == "runs" && p[2] == "log": return .log
        case ("GET", 3) where p[0] == "runs" && p[2] == "output": return .output(runID: p[1])
        case ("GET", 4) where p[0] == "runs" && p[2] == "output" && p[3] == "raw": return .output(runID: p[1])
        case ("POST", 1) where p[0] == "keys": return .newKey
        case ("POST", 1) where p[0] == "runs": return .submit(operation: nil)
        case ("POST", 3) where p[0] == "runs" && p[2] == "cancel": return .cancel
        case ("POST", 2) where p[0] == "state" && p[1] == "backup": return .stateBackup
        default: return .other
        }
    }

    /// `POST /v1/runs` with its body decoded as the route decodes it.
    static func submit(body: Data) -> ControlAction {
        guard let req = try? ControlAPI.decoder().decode(RunRequest.self, from: body) else { return .unreadableSubmit }
        return .submit(operation: req.operation?.kind)
    }
}

/// Who may do what on the control socket. The kernel names the peer (SO_PEERCRED); this
/// value decides, without I/O.
///
/// - root, the agent's user and members of `admin_group`: everything.
/// - members of `socket_group` (the socket's group): status, runs, log, run (backups, and the
///   one-time key of `--passphrase-stdin`), cancel, list and info, and the output of runs
///   they submitted themselves.
/// - anyone else: nothing (the socket's mode 0660 stops them first).
struct ControlAccess: Sendable, Equatable {
    let agentUID: uid_t
    let socketGID: gid_t
    let socketGroupName: String
    let adminGID: gid_t?
    let adminGroupName: String?

    enum Role: Equatable, Sendable {
        case admin
        case member
        case none
    }

    enum Decision: Equatable, Sendable {
        case allow
        case refuse(String)
    }

    /// Operation kinds a member of the socket group may submit (they only read).
    static let memberOperations: Set<RunKind> = [.list, .info]

    func role(uid: uid_t, groups: Set<gid_t>) -> Role {
        if uid == 0 || uid == agentUID { return .admin }
        if let a = adminGID, groups.contains(a) { return .admin }
        if groups.contains(socketGID) { return .member }
        return .none
    }

    /// `runOwner`: the uid that submitted the run named by an `.output` action, if known.
    func decide(uid: uid_t, groups: Set<gid_t>, action: ControlAction, runOwner: uid_t?) -> Decision {
        switch role(uid: uid, groups: groups) {
        case .admin:
            return .allow
        case .none:
            return .refuse("uid \(uid) may not use this socket: only root, the agent's user (uid \(agentUID)) and members of group \(socketGroupName) ([relay] socket_group)\(adminGroupName.map { " or \($0) ([relay] admin_group)" } ?? "") may")
        case .member:
            switch action {
            case .status, .runs, .log, .cancel, .newKey, .unreadableSubmit:
                return .allow
            case .submit(nil):
                return .allow
            case .submit(let kind?):
                if Self.memberOperations.contains(kind) { return .allow }
                return .refuse(adminOnly(Self.describe(kind)))
            case .output(let id):
                if runOwner == uid { return .allow }
                return .refuse("the output of run \(id) is not yours: only the user who started it, \(adminWho) may read it")
            case .stateBackup:
                return .refuse(adminOnly("state backup"))
            case .other:
                return .refuse(adminOnly("this request"))
            }
        }
    }

    /// How a kind is called in messages (check of the repository: `check --repository`).
    static func describe(_ kind: RunKind) -> String {
        switch kind {
        case .check: return "check --repository"
        default: return kind.rawValue
        }
    }

    var adminWho: String {
        if let a = adminGroupName { return "members of group \(a) ([relay] admin_group), root or the agent's user (uid \(agentUID))" }
        return "root or the agent's user (uid \(agentUID)) (set [relay] admin_group to name a group)"
    }

    func adminOnly(_ what: String) -> String {
        if let a = adminGroupName {
            return "\(what) needs membership in group \(a) ([relay] admin_group), or root / the agent's user (uid \(agentUID))"
        }
        return "\(what) needs root or the agent's user (uid \(agentUID)); [relay] admin_group is not set, so no group may"
    }
}

/// The cap on open control connections, as a decision without I/O. When a connection
/// arrives over a cap, idle connections (no request in progress) are closed to make room,
/// oldest idle first: over the per-peer cap, the peer's own; over the total cap, one of the
/// peer holding the most connections. When no idle connection can go, the new one is closed.
struct ConnectionCap: Sendable, Equatable {
    var total: Int
    var perPeer: Int

    static let standard = ConnectionCap(total: 256, perPeer: 64)

    struct Open: Sendable, Equatable {
        var id: UInt64
        var uid: uid_t
        /// A sequence number of when it last became idle; nil while a request is in progress.
        var idleSince: UInt64?
    }

    enum Decision: Equatable, Sendable {
        /// Take the new connection, after closing these.
        case accept(closing: [UInt64])
        /// Close the new connection at once.
        case refuse(String)
    }

    func admit(uid: uid_t, open: [Open]) -> Decision {
        var closing: [UInt64] = []
        func oldestIdle(_ among: [Open]) -> Open? {
            among.filter { $0.idleSince != nil && !closing.contains($0.id) }.min { ($0.idleSince!, $0.id) < ($1.idleSince!, $1.id) }
        }
        let mine = open.filter { $0.uid == uid }
        if mine.count >= perPeer {
            guard let victim = oldestIdle(mine) else {
                return .refuse("uid \(uid) has \(mine.count) control connections open, all busy (at most \(perPeer) per user)")
            }
            closing.append(victim.id)
        }
        if open.count - closing.count >= total {
            // The busiest peer gives up its oldest idle connection first.
            var byUID: [uid_t: Int] = [:]
            for o in open where !closing.contains(o.id) { byUID[o.uid, default: 0] += 1 }
            let order = byUID.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map(\.key)
            var victim: Open?
            for u in order {
                if let v = oldestIdle(open.filter { $0.uid == u }) { victim = v; break }
            }
            guard let v = victim else {
                return .refuse("\(open.count) control connections are open, all busy (at most \(total))")
            }
            closing.append(v.id)
        }
        return .accept(closing: closing)
    }
}
