import Foundation
import Testing
@testable import RelayCore
@testable import RelayDaemon

@Suite("Control socket: roles, the connection cap, names, stale run files")
struct ControlAccessTests {
    // The agent runs as uid 900; the socket's group is 901, the admin group 902.
    let access = ControlAccess(agentUID: 900, socketGID: 901, socketGroupName: "borg-relay",
                               adminGID: 902, adminGroupName: "borg-relay-admin")
    let member: (uid: uid_t, groups: Set<gid_t>) = (1000, [1000, 901])
    let admin: (uid: uid_t, groups: Set<gid_t>) = (1001, [1001, 901, 902])

    @Test func requestsAreClassifiedByMethodAndPath() {
        #expect(ControlAction.classify(method: "GET", path: "/v1/status") == .status)
        #expect(ControlAction.classify(method: "GET", path: "/v1/runs") == .runs)
        #expect(ControlAction.classify(method: "GET", path: "/v1/runs/R1") == .runs)
        #expect(ControlAction.classify(method: "GET", path: "/v1/runs/R1/log") == .log)
        #expect(ControlAction.classify(method: "GET", path: "/v1/runs/R1/output") == .output(runID: "R1"))
        #expect(ControlAction.classify(method: "GET", path: "//v1//runs/R1/output/raw") == .output(runID: "R1"))
        #expect(ControlAction.classify(method: "POST", path: "/v1/runs") == .submit(operation: nil))
        #expect(ControlAction.classify(method: "POST", path: "/v1/runs/R1/cancel") == .cancel)
        #expect(ControlAction.classify(method: "POST", path: "/v1/keys") == .newKey)
        #expect(ControlAction.classify(method: "POST", path: "/v1/state/backup") == .stateBackup)
        #expect(ControlAction.classify(method: "GET", path: "/v1/state/backup") == .other)
        // Anything else is "other" (admins only), including the right path with another method.
        #expect(ControlAction.classify(method: "DELETE", path: "/v1/runs/R1") == .other)
        #expect(ControlAction.classify(method: "POST", path: "/v1/status") == .other)
        #expect(ControlAction.classify(method: "GET", path: "/v2/status") == .other)
        #expect(ControlAction.classify(method: "GET", path: "/v1/runs/R1/output/raw/x") == .other)
        // The operation comes from the body, decoded as the route decodes it.
        func body(_ r: RunRequest) -> Data { try! ControlAPI.encoder().encode(r) }
        #expect(ControlAction.submit(body: body(RunRequest(clients: ["web1"]))) == .submit(operation: nil))
        #expect(ControlAction.submit(body: body(RunRequest(clients: ["web1"], operation: OperationRequest(kind: .restore, archive: "a"))))
                == .submit(operation: .restore))
        #expect(ControlAction.submit(body: Data("{not json".utf8)) == .unreadableSubmit)
    }

    @Test func rolesFollowUidAndGroups() {
        #expect(access.role(uid: 0, groups: []) == .admin)
        #expect(access.role(uid: 900, groups: []) == .admin)
        #expect(access.role(uid: admin.uid, groups: admin.groups) == .admin)
        #expect(access.role(uid: 1002, groups: [902]) == .admin)  // admin group alone counts as admin
        #expect(access.role(uid: member.uid, groups: member.groups) == .member)
        #expect(access.role(uid: 65534, groups: [65534]) == .none)
        // Without admin_group nobody but root and the agent's user is an admin.
        let noAdmin = ControlAccess(agentUID: 900, socketGID: 901, socketGroupName: "borg-relay", adminGID: nil, adminGroupName: nil)
        #expect(noAdmin.role(uid: admin.uid, groups: admin.groups) == .member)
    }

    @Test func membersMayReadAndBackUpButNotRestoreOrRunBorg() {
        func decide(_ a: ControlAction, owner: uid_t? = nil) -> ControlAccess.Decision {
            access.decide(uid: member.uid, groups: member.groups, action: a, runOwner: owner)
        }
        for a: ControlAction in [.status, .runs, .log, .cancel, .newKey, .submit(operation: nil),
                                 .submit(operation: .list), .submit(operation: .info), .unreadableSubmit] {
            #expect(decide(a) == .allow, "\(a)")
        }
        #expect(decide(.output(runID: "R1"), owner: member.uid) == .allow)
        // The relay's own state backup is the admins' (root, the agent's user, admin_group).
        guard case .refuse(let why) = decide(.stateBackup) else { Issue.record("a member may back up the relay's state"); return }
        #expect(why.contains("state backup") && why.contains("borg-relay-admin"), "\(why)")
        #expect(access.decide(uid: admin.uid, groups: admin.groups, action: .stateBackup, runOwner: nil) == .allow)
        // An operation that does not exist is not a request at all (the route answers 400).
        #expect(ControlAction.submit(body: Data(#"{"clients":["web1"],"operation":{"kind":"nonsense"}}"#.utf8)) == .unreadableSubmit)
        for kind: RunKind in [.restore, .borg, .keyExport, .initialize, .prune, .compact, .check] {
            guard case .refuse(let why) = decide(.submit(operation: kind)) else {
                Issue.record("\(kind) was allowed for a member")
                continue
            }
            #expect(why.contains("needs membership in group borg-relay-admin ([relay] admin_group), or root / the agent's user"), "\(why)")
        }
        guard case .refuse(let check) = decide(.submit(operation: .check)) else { return }
        #expect(check.hasPrefix("check --repository needs"))
        // Another user's output (or one whose owner the agent does not know) is refused.
        guard case .refuse(let other) = decide(.output(runID: "R1"), owner: 4242) else {
            Issue.record("another user's output was allowed")
            return
        }
        #expect(other.contains("R1") && other.contains("borg-relay-admin"), "\(other)")
        #expect(decide(.output(runID: "R1"), owner: nil) != .allow)
        #expect(decide(.other) != .allow)
    }

    @Test func adminsRootAndTheAgentMayDoEverything() {
        let all: [ControlAction] = [.status, .runs, .log, .cancel, .newKey, .output(runID: "R"), .other,
                                    .submit(operation: nil), .submit(operation: .restore), .submit(operation: .borg),
                                    .submit(operation: .keyExport), .submit(operation: .compact)]
        for (uid, groups) in [(uid_t(0), Set<gid_t>()), (900, []), (admin.uid, admin.groups)] {
            for a in all {
                #expect(access.decide(uid: uid, groups: groups, action: a, runOwner: 4242) == .allow, "uid \(uid): \(a)")
            }
        }
    }

    @Test func strangersAreRefusedEverything() {
        guard case .refuse(let why) = access.decide(uid: 65534, groups: [65534], action: .status, runOwner: nil) else {
            Issue.record("a stranger was allowed")
            return
        }
        #expect(why.contains("may not use this socket") && why.contains("borg-relay ([relay] socket_group)"), "\(why)")
    }

    @Test func withoutAdminGroupTheRefusalSaysSo() {
        let noAdmin = ControlAccess(agentUID: 900, socketGID: 901, socketGroupName: "borg-relay", adminGID: nil, adminGroupName: nil)
        guard case .refuse(let why) = noAdmin.decide(uid: 1000, groups: [901], action: .submit(operation: .restore), runOwner: nil) else {
            Issue.record("restore was allowed")
            return
        }
        #expect(why.contains("restore needs root or the agent's user (uid 900)") && why.contains("admin_group is not set"), "\(why)")
    }

    // MARK: - The connection cap

    func open(_ specs: [(UInt64, uid_t, UInt64?)]) -> [ConnectionCap.Open] {
        specs.map { ConnectionCap.Open(id: $0.0, uid: $0.1, idleSince: $0.2) }
    }

    @Test func underTheCapsEverythingIsAccepted() {
        let cap = ConnectionCap(total: 4, perPeer: 2)
        #expect(cap.admit(uid: 1, open: []) == .accept(closing: []))
        #expect(cap.admit(uid: 1, open: open([(1, 1, 5), (2, 2, nil)])) == .accept(closing: []))
    }

    @Test func overThePerPeerCapThePeersOldestIdleGoes() {
        let cap = ConnectionCap(total: 100, perPeer: 3)
        // uid 1 has three: one busy, two idle (since 7 and 3); another uid's older idle one stays.
        let o = open([(1, 1, nil), (2, 1, 7), (3, 1, 3), (4, 2, 1)])
        #expect(cap.admit(uid: 1, open: o) == .accept(closing: [3]))
        // All of the peer's are busy: the new one is closed at once.
        guard case .refuse(let why) = cap.admit(uid: 1, open: open([(1, 1, nil), (2, 1, nil), (3, 1, nil), (4, 2, 1)])) else {
            Issue.record("a peer over its cap with only busy connections got in")
            return
        }
        #expect(why.contains("uid 1") && why.contains("at most 3 per user"), "\(why)")
    }

    @Test func overTheTotalCapTheBusiestPeersOldestIdleGoes() {
        let cap = ConnectionCap(total: 5, perPeer: 5)
        // uid 7 holds three, uid 8 two; uid 9 arrives. uid 7's oldest idle (id 2, since 4) goes,
        // not uid 8's older one (since 1).
        let o = open([(1, 7, nil), (2, 7, 4), (3, 7, 6), (4, 8, 1), (5, 8, 2)])
        #expect(cap.admit(uid: 9, open: o) == .accept(closing: [2]))
        // The busiest peer has nothing idle: the next one's oldest idle goes.
        let busy7 = open([(1, 7, nil), (2, 7, nil), (3, 7, nil), (4, 8, 1), (5, 8, 2)])
        #expect(cap.admit(uid: 9, open: busy7) == .accept(closing: [4]))
        // Everything busy: refused.
        let allBusy = open([(1, 7, nil), (2, 7, nil), (3, 7, nil), (4, 8, nil), (5, 8, nil)])
        guard case .refuse = cap.admit(uid: 9, open: allBusy) else {
            Issue.record("a connection over the total cap got in with everything busy")
            return
        }
    }

    @Test func aFloodFromOnePeerStaysWithinItsCap() {
        // 3000 idle connections from uid 0, one at a time: never more than perPeer open.
        let cap = ConnectionCap.standard
        var openNow: [ConnectionCap.Open] = []
        var tick: UInt64 = 0
        for id in 1...3000 {
            tick += 1
            guard case .accept(let closing) = cap.admit(uid: 0, open: openNow) else {
                Issue.record("refused at \(id)")
                return
            }
            openNow.removeAll { closing.contains($0.id) }
            openNow.append(.init(id: UInt64(id), uid: 0, idleSince: tick))
            #expect(openNow.count <= cap.perPeer)
        }
        // Another user still gets in, without closing anything.
        #expect(cap.admit(uid: 1000, open: openNow) == .accept(closing: []))
    }

    // MARK: - Names

    // MARK: - Stale run files

    @Test func staleRunFilesAreTheAgentsOwnOfFinishedRuns() {
        let id = "20261202T093000-ab12cd", running = "20261202T093100-0000ff", foreign = "20261202T093200-123456"
        let entries: [StaleRunFiles.Entry] = [
            .init(name: "borg-relay-\(id)-Xy12Z9", isDirectory: true, uid: 900),
            .init(name: "borg-relay-\(id).list", isDirectory: false, uid: 900),
            .init(name: "borg-relay-\(running)-AAAAAA", isDirectory: true, uid: 900),   // still running
            .init(name: "borg-relay-\(foreign)-BBBBBB", isDirectory: true, uid: 900),   // not in this history
            .init(name: "borg-relay-\(id)-CCCCCC", isDirectory: true, uid: 1000),       // another user's
            .init(name: "borg-relay-sock-\(id)", isDirectory: true, uid: 900),          // T's socket dirs
            .init(name: "borg-relay-\(id)-Xy12Z9", isDirectory: false, uid: 900),       // not a directory
            .init(name: "borg-relay-it-x-\(id)", isDirectory: true, uid: 900),
        ]
        let known = [id: "interrupted", running: "running"]
        let stale = StaleRunFiles.select(entries, agentUID: 900) { known[$0].map { $0 != "running" } ?? false }
        #expect(stale == ["borg-relay-\(id)-Xy12Z9", "borg-relay-\(id).list"])
        #expect(StaleRunFiles.runID(of: .init(name: "borg-relay-\(id)-Xy12Z9", isDirectory: true, uid: 0)) == id)
    }
}
