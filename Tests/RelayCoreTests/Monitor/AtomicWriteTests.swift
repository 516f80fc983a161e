import Foundation
import Synchronization
import Testing
@testable import RelayCore

@Suite("Files written atomically (the metrics textfile, overdue.json, the config by add-client)")
struct AtomicWriteTests {
    @Test("a reader in a tight loop sees the old content or the new, whole, never a part, while large contents are rewritten")
    func neverPartial() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("atomic-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/metrics.prom"
        let a = [UInt8](repeating: UInt8(ascii: "a"), count: 2 * 1024 * 1024)
        let b = [UInt8](repeating: UInt8(ascii: "b"), count: 3 * 1024 * 1024 + 17)
        try FileCheck.writeAtomically(a, to: path, mode: 0o644)
        let stop = Mutex(false)
        let seen = Mutex<(reads: Int, bad: Int)>((0, 0))
        let reader = Thread {
            while !stop.withLock({ $0 }) {
                guard let d = FileManager.default.contents(atPath: path) else { seen.withLock { $0.bad += 1 }; continue }
                let ok = (d.count == a.count && d.first == UInt8(ascii: "a") && d.last == UInt8(ascii: "a"))
                    || (d.count == b.count && d.first == UInt8(ascii: "b") && d.last == UInt8(ascii: "b"))
                seen.withLock { $0.reads += 1; if !ok { $0.bad += 1 } }
            }
        }
        reader.start()
        for i in 0..<60 { try FileCheck.writeAtomically(i % 2 == 0 ? b : a, to: path, mode: 0o644) }
        stop.withLock { $0 = true }
        while !reader.isFinished { usleep(1000) }
        let (reads, bad) = seen.withLock { $0 }
        #expect(reads > 20, "the reader read \(reads) times")
        #expect(bad == 0, "\(bad) of \(reads) reads saw a missing or partial file")
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o644)
        // No temporary file is left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["metrics.prom"])
    }

    @Test("replace keeps the file's mode; a symlink is refused, not followed")
    func replace() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("replace-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/relay.toml"
        try Data("old".utf8).write(to: URL(fileURLWithPath: path))
        chmod(path, 0o640)
        try FileCheck.replace(path, with: Array("new".utf8))
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o640)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "new")
        let target = "\(dir)/target"
        try Data("target".utf8).write(to: URL(fileURLWithPath: target))
        symlink(target, "\(dir)/link")
        #expect(throws: SystemError.self) { try FileCheck.replace("\(dir)/link", with: Array("x".utf8)) }
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "target")
    }
}
