import Foundation
import Testing

/// The result of a finished process.
struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var output: String { stdout + stderr }
}

enum Proc {
    /// Directory holding relay-agent and relayctl: RELAY_BIN_DIR, else next to the test binary.
    static let binDir: String = {
        if let d = ProcessInfo.processInfo.environment["RELAY_BIN_DIR"] { return d }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        while dir.path != "/" && !FileManager.default.fileExists(atPath: dir.appendingPathComponent("relay-agent").path) {
            dir = dir.deletingLastPathComponent()
        }
        return dir.path
    }()

    static func binary(_ name: String) throws -> String {
        let p = binDir + "/" + name
        guard FileManager.default.isExecutableFile(atPath: p) else {
            throw FixtureError("\(p) not found: run `swift build` before `swift test`, or set RELAY_BIN_DIR")
        }
        return p
    }

    /// Runs a program to completion (killed after `timeout` seconds) with output in files,
    /// so large output cannot deadlock a pipe.
    @discardableResult
    static func run(_ exe: String, _ args: [String], env: [String: String]? = nil, stdin: Data? = nil,
                    cwd: String? = nil, timeout: TimeInterval = 600) throws -> ProcessResult {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("proc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let outPath = tmp.appendingPathComponent("out").path, errPath = tmp.appendingPathComponent("err").path
        var inPath = "/dev/null"
        if let stdin {
            inPath = tmp.appendingPathComponent("in").path
            try stdin.write(to: URL(fileURLWithPath: inPath))
        }
        let child = try Spawned(exe, args, env: env, stdin: inPath, stdout: outPath, stderr: errPath, cwd: cwd)
        guard let status = child.wait(timeout: timeout) else {
            child.kill(SIGKILL)
            _ = child.wait(timeout: 10)
            throw FixtureError("\(exe) \(args.joined(separator: " ")) did not finish within \(Int(timeout)) s")
        }
        return ProcessResult(status: status,
                             stdout: String(decoding: try Data(contentsOf: URL(fileURLWithPath: outPath)), as: UTF8.self),
                             stderr: String(decoding: try Data(contentsOf: URL(fileURLWithPath: errPath)), as: UTF8.self))
    }

    /// Runs and requires exit 0.
    @discardableResult
    static func check(_ exe: String, _ args: [String], env: [String: String]? = nil, stdin: Data? = nil,
                      cwd: String? = nil) throws -> ProcessResult {
        let r = try run(exe, args, env: env, stdin: stdin, cwd: cwd)
        guard r.status == 0 else {
            throw FixtureError("\(exe) \(args.joined(separator: " ")) exited \(r.status): \(r.output)")
        }
        return r
    }
}

/// A child process started with posix_spawn and reaped with waitpid by this object alone.
final class Spawned {
    let pid: pid_t
    private var status: Int32?

    init(_ exe: String, _ args: [String], env: [String: String]? = nil, stdin: String, stdout: String,
         stderr: String, cwd: String? = nil) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, stdin, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // Default signal dispositions and an empty mask in the child.
        var all = sigset_t()
        sigfillset(&all)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        let environment = (env ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        // A working directory through coreutils' env -C (posix_spawn has no portable chdir).
        let argv = cwd.map { ["/usr/bin/env", "-C", $0, exe] } ?? [exe]
        let program = argv[0]
        var cArgs = (argv + args).map { strdup($0) } + [nil]
        var cEnv = environment.map { strdup($0) } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var p: pid_t = 0
        let rc = posix_spawn(&p, program, &actions, &attr, &cArgs, &cEnv)
        guard rc == 0 else { throw FixtureError("cannot start \(exe): \(String(cString: strerror(rc)))") }
        pid = p
    }

    func isRunning() -> Bool {
        if status != nil { return false }
        var st: Int32 = 0
        if waitpid(pid, &st, WNOHANG) == pid { status = Self.decode(st); return false }
        return true
    }

    /// Exit status (128+signal when killed), or nil on timeout.
    func wait(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning() {
            if Date() > deadline { return nil }
            usleep(10_000)
        }
        return status
    }

    func kill(_ sig: Int32) {
        if status == nil { Glibc.kill(pid, sig) }
    }

    /// SIGTERM, `grace` seconds to end, then SIGKILL; reaped either way.
    func terminate(grace: TimeInterval) {
        guard isRunning() else { return }
        kill(SIGTERM)
        if wait(timeout: grace) == nil {
            kill(SIGKILL)
            _ = wait(timeout: 10)
        }
    }

    private static func decode(_ st: Int32) -> Int32 {
        let sig = st & 0x7f
        return sig == 0 ? (st >> 8) & 0xff : 128 + sig
    }

    deinit {
        if isRunning() {
            kill(SIGKILL)
            _ = wait(timeout: 5)
        }
    }
}

extension Proc {
    static func commandLine(_ pid: Int32) -> String {
        guard let d = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "" }
        return String(decoding: d.map { $0 == 0 ? 32 : $0 }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
    }

    /// Direct children of `pid`, from /proc.
    static func children(of pid: Int32) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var out: [Int32] = []
        for e in entries {
            guard let p = Int32(e),
                  let stat = try? String(contentsOfFile: "/proc/\(e)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, Int32(fields[1]) == pid { out.append(p) }
        }
        return out
    }

    /// All descendants of `pid`.
    static func descendants(of pid: Int32) -> [Int32] {
        var all: [Int32] = []
        var queue = [pid]
        while let p = queue.popLast() {
            let c = children(of: p)
            all += c
            queue += c
        }
        return all
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// True if something accepts TCP connections on 127.0.0.1:port.
    static func canConnect(port: Int, host: String = "127.0.0.1") -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr(host)
        addr.sin_port = UInt16(port).bigEndian
        let rc = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return rc == 0
    }
}

struct FixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
