import Foundation

/// Small helpers for the control socket's path, shared by the agent and relayctl.
public enum UnixSocket {
    /// Tries to connect to the stream socket at `path`: 0 if something listens there,
    /// else the errno (ENOENT no such file, ECONNREFUSED nobody listening, EACCES no
    /// permission, ENAMETOOLONG path too long for a socket).
    public static func probe(_ path: String) -> Int32 {
        switch connect(path) {
        case .success(let fd):
            close(fd)
            return 0
        case .failure(let e):
            return e.code
        }
    }

    public struct Errno: Error { public let code: Int32 }

    /// A connected stream socket to `path` (close-on-exec), or the errno.
    public static func connect(_ path: String) -> Result<Int32, Errno> {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return .failure(Errno(code: ENAMETOOLONG)) }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(Errno(code: errno)) }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, len) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            return .failure(Errno(code: e))
        }
        return .success(fd)
    }
}
