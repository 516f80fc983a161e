import Foundation

/// Unix-domain sockets: the control socket, the socket borg on R connects to, and systemd's
/// notify socket. `sockaddr_un` is set up here only.
public enum UnixSocket {
    public struct Errno: Error { public let code: Int32 }

    /// Calls `body` with the address of `path` (a leading "@" names the abstract namespace)
    /// and its length; ENAMETOOLONG when the path does not fit.
    static func withAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> Result<R, Errno> {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return .failure(Errno(code: ENAMETOOLONG)) }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        return .success(withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, len) }
        })
    }

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

    /// A connected stream socket to `path` (close-on-exec), or the errno.
    public static func connect(_ path: String) -> Result<Int32, Errno> {
        let fd = socket(AF_UNIX, LinuxSocket.stream | LinuxSocket.cloexec, 0)
        guard fd >= 0 else { return .failure(Errno(code: errno)) }
        let rc = withAddress(path) { Glibc.connect(fd, $0, $1) == 0 ? 0 : errno }
        switch rc {
        case .success(0):
            return .success(fd)
        case .success(let e):
            close(fd)
            return .failure(Errno(code: e))
        case .failure(let e):
            close(fd)
            return .failure(e)
        }
    }

    /// A listening stream socket at `path`, mode 0600, non-blocking and close-on-exec.
    static func listen(on path: String) throws(SystemError) -> Int32 {
        let fd = socket(AF_UNIX, LinuxSocket.stream | LinuxSocket.cloexec | LinuxSocket.nonblock, 0)
        guard fd >= 0 else { throw SystemError("socket failed: \(String(cString: strerror(errno)))") }
        let bound = withAddress(path) { bind(fd, $0, $1) == 0 ? 0 : errno }
        guard case .success(let e) = bound else {
            Glibc.close(fd)
            throw SystemError("the socket path \(path) is too long; set TMPDIR to a shorter directory")
        }
        guard e == 0, chmod(path, 0o600) == 0, Glibc.listen(fd, 1) == 0 else {
            let e = String(cString: strerror(e != 0 ? e : errno))
            Glibc.close(fd)
            throw SystemError("cannot listen on \(path): \(e)")
        }
        return fd
    }

    /// Sends one datagram to the socket at `path` (systemd's notify socket); false if it could not.
    public static func sendDatagram(_ message: [UInt8], to path: String) -> Bool {
        let fd = socket(AF_UNIX, LinuxSocket.datagram | LinuxSocket.cloexec, 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let sent = withAddress(path) { sendto(fd, message, message.count, LinuxSocket.noSignal, $0, $1) }
        if case .success(let n) = sent { return n == message.count }
        return false
    }
}

/// Linux's socket constants. Swift cannot see sys/socket.h's SOCK_* and MSG_* here: CLibSSH's
/// shim includes that header too, and the two copies hide each other outside SSH/. The
/// values are Linux's ABI (SOCK_CLOEXEC and SOCK_NONBLOCK are O_CLOEXEC and O_NONBLOCK).
enum LinuxSocket {
    static let stream: Int32 = 1
    static let datagram: Int32 = 2
    static let cloexec: Int32 = O_CLOEXEC
    static let nonblock: Int32 = O_NONBLOCK
    static let noSignal: Int32 = 0x4000
}
