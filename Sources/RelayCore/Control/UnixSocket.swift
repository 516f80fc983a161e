import Foundation

/// Small helpers for the control socket's path, shared by the agent and relayctl.
public enum UnixSocket {
    /// Tries to connect to the stream socket at `path`: 0 if something listens there,
    /// else the errno (ENOENT no such file, ECONNREFUSED nobody listening, EACCES no
    /// permission, ENAMETOOLONG path too long for a socket).
    public static func probe(_ path: String) -> Int32 {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return ENAMETOOLONG }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, len) }
        }
        return rc == 0 ? 0 : errno
    }
}
