import Foundation

/// Checks of a file the agent reads (key files, the vault): readable, and private to the
/// agent's user.
public enum FileCheck {
    /// Why a secret file's mode is unsafe (readable or writable by group or others, or
    /// owned by another user), or nil if it is fine.
    public static func loosePermissions(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        if st.st_mode & 0o077 != 0 {
            return String(format: "mode %04o lets group or others read it; run chmod 600 %@", st.st_mode & 0o7777, path)
        }
        if st.st_uid != geteuid() {
            return "owned by uid \(st.st_uid), not by the agent's user (uid \(geteuid())); chown it"
        }
        return nil
    }

    /// Why `path` cannot be opened for reading, or nil if it can.
    public static func unreadableReason(_ path: String) -> String? {
        var st = stat()
        if stat(path, &st) != 0 {
            return String(cString: strerror(errno))
        }
        if (st.st_mode & S_IFMT) != S_IFREG {
            return "not a regular file"
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            return String(cString: strerror(errno))
        }
        close(fd)
        return nil
    }
}

extension FileCheck {
    /// Writes `bytes` to `path` so that a reader sees the old content or the new, never a
    /// part: a new temporary file in the same directory (an unpredictable name, created
    /// exclusively: nothing planted there, no FIFO nor link, is opened), fsync'd, then renamed
    /// over `path`.
    public static func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t, owner: (uid: uid_t, gid: gid_t)? = nil) throws(SystemError) {
        let dir = (path as NSString).deletingLastPathComponent
        let tmp = "\(dir.isEmpty ? "." : dir)/.\((path as NSString).lastPathComponent).\(UInt64.random(in: 0...UInt64.max)).tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemError("cannot write \(tmp): \(String(cString: strerror(errno))) (does \(dir) exist and may the agent write there?)") }
        var done = 0
        var failure: String?
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                failure = String(cString: strerror(errno))
                break
            }
            done += n
        }
        if failure == nil && fchmod(fd, mode) != 0 { failure = String(cString: strerror(errno)) }
        if failure == nil, let o = owner, fchown(fd, o.uid, o.gid) != 0 { failure = String(cString: strerror(errno)) }
        if failure == nil && fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
        close(fd)
        if failure == nil && rename(tmp, path) != 0 { failure = String(cString: strerror(errno)) }
        if let failure {
            unlink(tmp)
            throw SystemError("cannot write \(path): \(failure)")
        }
    }
}

extension FileCheck {
    /// Replaces the existing file at `path` atomically, keeping its mode, owner and group.
    public static func replace(_ path: String, with bytes: [UInt8]) throws(SystemError) {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw SystemError("\(path) is not a regular file (a symlink is not replaced)")
        }
        try writeAtomically(bytes, to: path, mode: st.st_mode & 0o7777, owner: (st.st_uid, st.st_gid))
    }
}
