import Foundation

/// Writes an opened bundle back (the I/O side of recovery): each file first under a
/// temporary name beside its destination (created exclusively, 0600, owned by `owner`),
/// then all of them renamed into place. Any failure removes every temporary file, every
/// file already renamed and every directory it made: nothing is written.
public enum StateRestore {
    public struct Owner: Sendable, Equatable {
        public var uid: uid_t
        public var gid: gid_t
        public init(uid: uid_t, gid: gid_t) {
            self.uid = uid
            self.gid = gid
        }
    }

    /// What is at `path` compared with what recovery would write.
    public static func existing(_ path: String, _ entry: StateEntry) -> RestorePlan.Existing {
        var st = stat()
        guard lstat(path, &st) == 0 else { return .absent }
        guard (st.st_mode & S_IFMT) == S_IFREG, Int(st.st_size) == entry.data.count else { return .different }
        switch entry.data {
        case .plain(let bytes):
            return FileManager.default.contents(atPath: path).map { Array($0) == bytes } == true ? .same : .different
        case .secret(let s):
            guard let current = try? SecretBytes.readFile(path) else { return .different }
            defer { current.wipe() }
            return current.equals(s) ? .same : .different
        }
    }

    /// Carries out `plan`; returns the paths written.
    @discardableResult
    public static func write(_ plan: RestorePlan, entries: [StateEntry], owner: Owner) throws(RecoveryError) -> [String] {
        var madeDirs: [String] = []
        var temps: [(temp: String, path: String)] = []
        var renamed: [String] = []
        func undo() {
            for t in temps { unlink(t.temp) }
            for p in renamed { unlink(p) }
            for d in madeDirs.reversed() { rmdir(d) }
        }
        do {
            for w in plan.writes {
                try makeDirectories((w.path as NSString).deletingLastPathComponent, owner: owner, made: &madeDirs)
                let dir = (w.path as NSString).deletingLastPathComponent
                let temp = "\(dir)/.\((w.path as NSString).lastPathComponent).recover-\(UInt64.random(in: 0...UInt64.max)).tmp"
                let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw RecoveryError.write(path: w.path, detail: String(cString: strerror(errno))) }
                temps.append((temp, w.path))
                var failure: String?
                let writeAll = { (b: UnsafeRawBufferPointer) in
                    var done = 0
                    while done < b.count {
                        let n = Glibc.write(fd, b.baseAddress! + done, b.count - done)
                        if n < 0 {
                            if errno == EINTR { continue }
                            failure = String(cString: strerror(errno))
                            return
                        }
                        done += n
                    }
                }
                switch entries[w.entry].data {
                case .plain(let bytes): bytes.withUnsafeBytes { writeAll($0) }
                case .secret(let s): s.withUnsafeBytes { writeAll($0) }
                }
                if failure == nil && fchmod(fd, w.mode) != 0 { failure = String(cString: strerror(errno)) }
                if failure == nil && (owner.uid != geteuid() || owner.gid != getegid()) && fchown(fd, owner.uid, owner.gid) != 0 {
                    failure = "cannot give it to uid \(owner.uid): \(String(cString: strerror(errno)))"
                }
                if failure == nil && fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
                close(fd)
                if let failure { throw RecoveryError.write(path: w.path, detail: failure) }
            }
            // Nothing may have appeared meanwhile; then all at once.
            for t in temps {
                var st = stat()
                if lstat(t.path, &st) == 0 { throw RecoveryError.wouldOverwrite(paths: [t.path]) }
            }
            for t in temps {
                guard rename(t.temp, t.path) == 0 else {
                    throw RecoveryError.write(path: t.path, detail: String(cString: strerror(errno)))
                }
                renamed.append(t.path)
            }
        } catch let e as RecoveryError {
            undo()
            throw e
        } catch {
            undo()
            throw .write(path: "state", detail: "\(error)")
        }
        return renamed
    }

    /// Creates `dir` and missing parents (0700, given to `owner`), recording each made.
    static func makeDirectories(_ dir: String, owner: Owner, made: inout [String]) throws(RecoveryError) {
        var st = stat()
        if stat(dir, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFDIR else { throw .write(path: dir, detail: "it exists and is not a directory") }
            return
        }
        let parent = (dir as NSString).deletingLastPathComponent
        if parent != dir && !parent.isEmpty { try makeDirectories(parent, owner: owner, made: &made) }
        guard mkdir(dir, 0o700) == 0 else { throw .write(path: dir, detail: "cannot create the directory: \(String(cString: strerror(errno)))") }
        made.append(dir)
        if (owner.uid != geteuid() || owner.gid != getegid()) && chown(dir, owner.uid, owner.gid) != 0 {
            throw .write(path: dir, detail: "cannot give it to uid \(owner.uid): \(String(cString: strerror(errno)))")
        }
    }
}
