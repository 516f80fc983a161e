import Foundation

/// What `relayctl check` learns by talking borg's own RPC protocol to the forced command on
/// B, with the key the relay uses: borg's version there, whether the repository exists and
/// may be opened, and whether the server really is append-only.
///
/// The append-only probe writes nothing, on either kind of server:
/// 1. `delete` of a random object id that is not in the repository. Borg starts a
///    transaction (exclusive lock, index loaded) and answers ObjectNotFound; nothing is
///    written.
/// 2. `check(repair=True)`. Borg's `Repository.check` first refuses repair in append-only
///    mode (ValueError "… is in append-only mode"); otherwise its next step is
///    `assert not self._active_txn`, which fails because step 1 left a transaction open.
///    Both answers come before the check touches anything (borg 1.2.x and 1.4.x).
/// 3. End of input: borg serve closes the repository (rollback) and exits.
/// The second step is only sent when the first answered exactly ObjectNotFound, and only
/// to borg 1.2.x or 1.4.x, whose `check` is known to work this way.
public struct BorgServeProbe: Sendable, Equatable {
    public enum Repository: Sendable, Equatable {
        case opened
        case missing(String)
        case notAllowed(String)
        case locked(String)
        case failed(String)
    }

    public enum AppendOnly: Sendable, Equatable {
        case enforced
        case notEnforced
        case unknown(String)
    }

    /// e.g. "1.2.4"; nil when the server did not say.
    public var serverVersion: String?
    public var repository: Repository
    public var appendOnly: AppendOnly

    /// True for the borg versions whose check/delete order the probe relies on.
    static func knownSeries(_ version: String?) -> Bool {
        guard let v = version else { return false }
        return v.hasPrefix("1.2.") || v.hasPrefix("1.4.")
    }
}

/// One answer of borg serve: a result or the name and message of the exception it raised.
enum BorgRPCReply: Equatable {
    case result(MsgPack)
    case exception(class: String, message: String)
}

/// A borg serve conversation over one exec channel (blocking; setup tools only).
final class BorgRPCChannel {
    private let session: SSHSession
    private let channel: SSHChannel
    private var inbox: [UInt8] = []
    private var stderrText: [UInt8] = []
    private var nextID: Int64 = 1
    private let timeout: TimeInterval

    init(session: SSHSession, timeout: TimeInterval) throws(SSHError) {
        self.session = session
        self.timeout = timeout
        // The forced command replaces whatever is asked for; borg serve is what it must run.
        channel = try session.startExec("borg serve", label: "borg serve probe")
    }

    /// What the server wrote on stderr so far (its log lines, or a shell's complaint).
    var serverMessages: String { String(decoding: stderrText.prefix(4000), as: UTF8.self) }

    func call(_ method: String, _ args: MsgPack) throws(SSHError) -> BorgRPCReply {
        let id = nextID
        nextID += 1
        let request: MsgPack = ["i": .int(id), "m": .string(method), "a": args]
        try write(request.encoded)
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let decoded: (MsgPack, Int)?
            do {
                decoded = try MsgPack.decode(inbox)
            } catch {
                throw SSHError.channel(host: session.label, what: "reading borg serve's answer to \(method)", detail: "\(error)")
            }
            if let (value, used) = decoded {
                inbox.removeFirst(used)
                guard value["i"]?.integer == id else { continue }
                if let r = value["r"] { return .result(r) }
                let cls = value["exception_class"]?.text ?? "unknown exception"
                let short = value["exception_short"]?.elements?.compactMap(\.text).joined() ?? ""
                let args = value["exception_args"]?.elements?.compactMap(\.text).joined(separator: " ") ?? ""
                let message = (short.isEmpty ? args : short).trimmingCharacters(in: .whitespacesAndNewlines)
                return .exception(class: cls, message: message)
            }
            guard inbox.count < 1 << 20 else {
                throw SSHError.channel(host: session.label, what: "reading borg serve's answer to \(method)", detail: "answer larger than 1 MiB")
            }
            guard Date() < deadline else {
                throw SSHError.channel(host: session.label, what: "waiting for borg serve's answer to \(method)",
                                       detail: "no answer within \(Int(timeout)) s\(messagesSuffix)")
            }
            if try !readSome() {
                throw SSHError.channel(host: session.label, what: "waiting for borg serve's answer to \(method)",
                                       detail: "the server closed the channel\(messagesSuffix)")
            }
        }
    }

    private var messagesSuffix: String {
        let m = serverMessages.trimmingCharacters(in: .whitespacesAndNewlines)
        return m.isEmpty ? "" : " (server said: \(m.prefix(300)))"
    }

    private func write(_ bytes: [UInt8]) throws(SSHError) {
        var failed: SSHError?
        bytes.withUnsafeBytes { b in
            do throws(SSHError) { try channel.writeAll(b, what: "writing to borg serve") } catch { failed = error }
        }
        if let failed { throw failed }
    }

    /// Reads what is there (waiting up to 200 ms); false once the channel is at its end.
    private func readSome() throws(SSHError) -> Bool {
        let r = try channel.readSome()
        inbox += r.stdout
        if stderrText.count < 1 << 16 { stderrText += r.stderr }
        return r.open
    }

    /// Sends EOF and waits (briefly) for borg serve to close the repository and exit, so
    /// its lock is gone when the probe returns.
    func finish() {
        channel.finish(within: 10)
        channel.close()
        channel.free()
    }
}

extension SSHSession {
    /// Runs the probe described at `BorgServeProbe` against `repository` (an absolute path on
    /// B, as the relay's borg names it).
    func probeBorgServe(repository: String, timeout: TimeInterval = 30) throws(SSHError) -> BorgServeProbe {
        let rpc = try BorgRPCChannel(session: self, timeout: timeout)
        defer { rpc.finish() }
        var probe = BorgServeProbe(serverVersion: nil, repository: .failed("not tried"), appendOnly: .unknown("not tried"))

        let clientVersion: MsgPack = [1, 2, 4]
        switch try rpc.call("negotiate", ["client_data": ["client_version": clientVersion]]) {
        case .result(let r):
            if let parts = r["server_version"]?.elements {
                probe.serverVersion = parts.prefix(3).map { p -> String in
                    if let i = p.integer { return String(i) }
                    return p.text ?? "?"
                }.joined(separator: ".")
            }
        case .exception(let cls, let message):
            probe.repository = .failed("negotiate: \(cls) \(message)")
            return probe
        }

        let open: MsgPack = ["path": .string(repository), "create": false, "lock_wait": 1, "lock": true,
                             "exclusive": true, "append_only": false, "make_parent_dirs": false]
        switch try rpc.call("open", open) {
        case .result:
            probe.repository = .opened
        case .exception(let cls, let message):
            switch cls {
            case "DoesNotExist": probe.repository = .missing(message)
            case "PathNotAllowed": probe.repository = .notAllowed(message)
            case let c where c.hasPrefix("Lock"): probe.repository = .locked(message)
            default: probe.repository = .failed("\(cls): \(message)")
            }
            probe.appendOnly = .unknown("the repository could not be opened")
            return probe
        }

        guard BorgServeProbe.knownSeries(probe.serverVersion) else {
            probe.appendOnly = .unknown("the probe knows borg 1.2.x and 1.4.x; the server runs \(probe.serverVersion ?? "an unknown version")")
            return probe
        }
        let absent = MsgPack.bytes((0..<32).map { _ in UInt8.random(in: 0...255) })
        switch try rpc.call("delete", ["id": absent]) {
        case .exception("ObjectNotFound", _):
            break
        case .result:
            probe.appendOnly = .unknown("deleting an absent object succeeded, which borg never does")
            return probe
        case .exception(let cls, let message):
            probe.appendOnly = .unknown("starting a transaction failed: \(cls) \(message)")
            return probe
        }
        switch try rpc.call("check", ["repair": true, "save_space": false, "max_duration": 0]) {
        case .exception("ValueError", let message) where message.contains("append-only"):
            probe.appendOnly = .enforced
        case .exception("AssertionError", _):
            probe.appendOnly = .notEnforced
        case .exception(let cls, let message):
            probe.appendOnly = .unknown("unexpected answer \(cls) \(message)")
        case .result:
            probe.appendOnly = .unknown("the check ran")
        }
        return probe
    }
}
