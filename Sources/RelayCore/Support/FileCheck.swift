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
