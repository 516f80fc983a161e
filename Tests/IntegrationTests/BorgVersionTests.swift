import Foundation
import RelayCore
import Synchronization
import Testing

/// Which borg runs where in one case of the matrix.
struct BorgPair: CustomTestStringConvertible, Sendable {
    let t14: Bool
    let b14: Bool
    /// R's borg (list on R, check's "borg on the relay") is 1.4 only where both peers are.
    var r14: Bool { t14 && b14 }
    var label: String { "T \(t14 ? "1.4" : "1.2") / B \(b14 ? "1.4" : "1.2")" }
    var testDescription: String { label }
    static let matrix = [BorgPair(t14: true, b14: false), BorgPair(t14: false, b14: true), BorgPair(t14: true, b14: true)]
}

private final class CommandLineWatch: Sendable {
    let seen = Mutex<[String: Set<String>]>([:])
    let stop = Atomic<Bool>(false)
    let done = Atomic<Bool>(false)
}

/// Command lines of the processes under some sshd listeners, collected while `body` runs
/// (every 10 ms), to show which borg executable really ran on B and on T.
func commandLinesWhile<R>(under hosts: [SSHD], _ body: () throws -> R) rethrows -> (R, [String: Set<String>]) {
    let w = CommandLineWatch()
    let pids = hosts.map { ($0.name, $0.process.pid) }
    let poller = Thread {
        while !w.stop.load(ordering: .acquiring) {
            for (name, pid) in pids {
                let lines = Proc.descendants(of: pid).map(Proc.commandLine)
                w.seen.withLock { $0[name, default: []].formUnion(lines) }
            }
            usleep(10_000)
        }
        w.done.store(true, ordering: .releasing)
    }
    poller.start()
    defer {
        w.stop.store(true, ordering: .releasing)
        while !w.done.load(ordering: .acquiring) { usleep(5_000) }
    }
    let r = try body()
    return (r, w.seen.withLock { $0 })
}

/// borg 1.2 (Debian 12) and borg 1.4 (PyPI, scripts/borg14's cached venv) on either side of the
/// relay: a relayed backup read back byte for byte, a restore through the relay, `relayctl
/// list` on R and check's append-only probe, on small data.
@Suite("borg 1.2 / 1.4 matrix (real sshd, real borg 1.2 and 1.4)", .serialized,
       .enabled(if: Borgs.v14 != nil, Comment(rawValue: Borgs.v14Missing)))
struct BorgVersionTests {
    @Test("backup (archive listed, extract identical), restore through the relay, list on R, check's append-only probe",
          arguments: BorgPair.matrix)
    func matrix(_ pair: BorgPair) throws {
        let v14 = try #require(Borgs.v14, "\(Borgs.v14Missing)")
        let v12Version = try Proc.check(Borgs.system, ["--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        func borg(_ is14: Bool) -> String { is14 ? v14 : Borgs.system }
        // The command line of the python process a borg script becomes: its shebang's
        // interpreter, then the script's path (so a shell line naming the path does not count).
        func marker(_ is14: Bool) -> String {
            let script = is14 ? v14 : Borgs.system
            let first = (try? String(contentsOfFile: script, encoding: .utf8))?.split(separator: "\n").first ?? ""
            return "\(first.dropFirst(2).trimmingCharacters(in: .whitespaces)) \(script) "
        }
        func version(_ is14: Bool) -> String { is14 ? "borg \(Borgs.v14Version)" : v12Version }

        // The repository is created by B's borg, as B's admin would; T's borg_path is the venv's
        // borg for 1.4 (and not set for 1.2: T runs `borg` from its PATH).
        let s = try Sandbox(name: "borgver-\(pair.t14 ? "t14" : "t12")-\(pair.b14 ? "b14" : "b12")",
                            bBorg: pair.b14 ? v14 : "borg", tBorg: pair.t14 ? v14 : nil, localBorg: borg(pair.b14))
        defer { s.close() }
        s.relayExtra = ["socket = \"\(s.dir)/relay/control.sock\""]
        try FileManager.default.createDirectory(atPath: "\(s.dataDir)/sub dir", withIntermediateDirectories: true)
        try Data("borg matrix \(pair.label)\n".utf8).write(to: URL(fileURLWithPath: "\(s.dataDir)/hello.txt"))
        try writeRandomFile("\(s.dataDir)/sub dir/random.bin", count: 3 * 1024 * 1024 + 17)
        try FileManager.default.createSymbolicLink(atPath: "\(s.dataDir)/link", withDestinationPath: "hello.txt")
        try s.configure()

        // R's borg: a wrapper first in the daemon's and relayctl's PATH that logs each call and
        // runs the chosen borg, so the test can tell that R's borg ran and which one.
        let rBin = "\(s.dir)/r-bin", rLog = "\(s.dir)/r-borg.log"
        try FileManager.default.createDirectory(atPath: rBin, withIntermediateDirectories: true)
        try "#!/bin/sh\necho \"$*\" >> \(Shell.quote(rLog))\nexec \(Shell.quote(borg(pair.r14))) \"$@\"\n"
            .write(toFile: "\(rBin)/borg", atomically: true, encoding: .utf8)
        chmod("\(rBin)/borg", 0o755)
        var rEnv = ProcessInfo.processInfo.environment
        rEnv["PATH"] = rBin + ":" + (rEnv["PATH"] ?? "/usr/bin:/bin")

        // 1. A relayed backup: borg create ran with T's borg, borg serve with B's; the archive
        //    is listed by the test's borg and extracts byte-identical.
        let (run, seen) = try commandLinesWhile(under: [s.t, s.b]) { try s.runAgent(["--json"]) }
        #expect(run.status == 0, "\(pair.label): relay-agent run failed: \(run.output)")
        let report = try #require(try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.output)")
        let name = try #require((report["archive"] as? [String: Any])?["name"] as? String, "\(run.stdout)")
        let tLines = seen["t", default: []], bLines = seen["b", default: []]
        #expect(tLines.contains { $0.hasPrefix(marker(pair.t14) + "create ") }, "\(pair.label): T's borg create was not \(marker(pair.t14)): \(tLines)")
        #expect(bLines.contains { $0.hasPrefix(marker(pair.b14) + "serve --append-only ") }, "\(pair.label): B did not run \(marker(pair.b14))serve: \(bLines)")
        // Read back with the other side's borg than the one that created the repository.
        s.localBorg = borg(!pair.b14)
        #expect(try s.archives() == [name])
        let extracted = "\(s.dir)/extract"
        try FileManager.default.createDirectory(atPath: extracted, withIntermediateDirectories: true)
        try s.borg(["extract", "\(s.repo)::\(name)"], cwd: extracted)
        #expect(TreeCompare.differences(s.dataDir, extracted + s.dataDir).isEmpty, "\(pair.label): extract differs")

        // 2. Through the daemon: a restore on T (T's borg) and list on R (R's borg).
        let d = try AgentDaemon(s, env: rEnv)
        defer { d.stop() }
        let target = "\(s.dir)/restored"
        let (restore, seenRestore) = try commandLinesWhile(under: [s.t]) { try d.ctl(["restore", "web1", name, "--to", target]) }
        #expect(restore.status == 0, "\(pair.label): restore: \(restore.output)\n\(d.log)")
        #expect(TreeCompare.differences(s.dataDir, target + s.dataDir).isEmpty, "\(pair.label): restore differs")
        #expect(seenRestore["t", default: []].contains { $0.hasPrefix(marker(pair.t14) + "extract ") },
                "\(pair.label): T did not restore with \(marker(pair.t14)): \(seenRestore)")
        let list = try d.ctl(["list", "web1"])
        #expect(list.status == 0 && list.stdout.contains(name), "\(pair.label): list: \(list.output)\n\(d.log)")
        let rCalls = (try? String(contentsOfFile: rLog, encoding: .utf8)) ?? ""
        #expect(rCalls.contains("list"), "\(pair.label): R's borg (\(borg(pair.r14))) did not run the list: \(rCalls)")
        #expect(d.stop() == 0)

        // 3. check: each side's version, and the append-only probe passes; without
        //    --append-only on B's line it fails, and the probe wrote nothing.
        let ctl = try Proc.binary("relayctl")
        let good = try Proc.run(ctl, ["check", "--config", s.configPath], env: rEnv)
        #expect(good.status == 0, "\(pair.label): \(good.output)")
        #expect(good.stdout.contains("ok    web1: server append-only"), "\(pair.label): \(good.stdout)")
        #expect(good.stdout.contains("borg on the server: \(version(pair.b14))"), "\(pair.label): \(good.stdout)")
        #expect(good.stdout.contains("borg on the relay: \(version(pair.r14))"), "\(pair.label): \(good.stdout)")
        let keys = "\(s.b.dir)/authorized_keys"
        let forced = try String(contentsOfFile: keys, encoding: .utf8)
        #expect(forced.contains("command=\"\(pair.b14 ? v14 : "borg") serve --append-only "))
        let before = try s.repositoryFiles()
        try forced.replacingOccurrences(of: " serve --append-only ", with: " serve ").write(toFile: keys, atomically: true, encoding: .utf8)
        let bad = try Proc.run(ctl, ["check", "--config", s.configPath], env: rEnv)
        #expect(bad.status == 1, "\(pair.label): \(bad.output)")
        #expect(bad.stdout.contains("fail  web1: server append-only: borg serve on vault is NOT append-only"), "\(pair.label): \(bad.stdout)")
        #expect(try s.repositoryFiles() == before, "\(pair.label): the probe changed the repository")
        #expect(try s.archives() == [name])
    }
}
