import Foundation
import Testing

/// Compares two trees: names, types, file bytes, symlink targets.
enum TreeCompare {
    static func differences(_ a: String, _ b: String) -> [String] {
        var diffs: [String] = []
        let fm = FileManager.default
        func walk(_ rel: String) {
            let pa = a + rel, pb = b + rel
            var sa = stat(), sb = stat()
            guard lstat(pa, &sa) == 0 else { diffs.append("missing in original: \(rel)"); return }
            guard lstat(pb, &sb) == 0 else { diffs.append("missing in copy: \(rel)"); return }
            let ta = sa.st_mode & S_IFMT, tb = sb.st_mode & S_IFMT
            guard ta == tb else { diffs.append("type differs: \(rel)"); return }
            switch ta {
            case S_IFDIR:
                let ea = Set((try? fm.contentsOfDirectory(atPath: pa)) ?? [])
                let eb = Set((try? fm.contentsOfDirectory(atPath: pb)) ?? [])
                for extra in eb.subtracting(ea) { diffs.append("extra in copy: \(rel)/\(extra)") }
                for e in ea.sorted() { walk(rel + "/" + e) }
            case S_IFLNK:
                if (try? fm.destinationOfSymbolicLink(atPath: pa)) != (try? fm.destinationOfSymbolicLink(atPath: pb)) {
                    diffs.append("symlink target differs: \(rel)")
                }
            case S_IFREG:
                if sa.st_size != sb.st_size || !sameBytes(pa, pb) { diffs.append("content differs: \(rel)") }
            default:
                break
            }
        }
        walk("")
        return diffs
    }

    static func sameBytes(_ a: String, _ b: String) -> Bool {
        guard let ha = FileHandle(forReadingAtPath: a), let hb = FileHandle(forReadingAtPath: b) else { return false }
        defer { try? ha.close(); try? hb.close() }
        while true {
            let da = ha.readData(ofLength: 1 << 20), db = hb.readData(ofLength: 1 << 20)
            if da != db { return false }
            if da.isEmpty { return true }
        }
    }
}

/// Writes `count` random (incompressible) bytes from /dev/urandom to `path`.
func writeRandomFile(_ path: String, count: Int) throws {
    guard FileManager.default.createFile(atPath: path, contents: nil),
          let src = FileHandle(forReadingAtPath: "/dev/urandom") else {
        throw FixtureError("cannot create \(path)")
    }
    let dst = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    defer { try? src.close(); try? dst.close() }
    var left = count
    while left > 0 {
        let chunk = src.readData(ofLength: min(left, 1 << 20))
        guard !chunk.isEmpty else { throw FixtureError("/dev/urandom returned nothing") }
        dst.write(chunk)
        left -= chunk.count
    }
}
