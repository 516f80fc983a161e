import Foundation

/// Whether the agent can listen on a TCP address, asked before its servers start, so that
/// a port in use stops the agent with the config key that names it instead of a bare
/// "bind: Address already in use" from deep inside the HTTP server.
public enum ListenProbe {
    /// nil when every address the host resolves to can be bound; else why not.
    public static func problem(host: String, port: Int) -> String? {
        var hints = addrinfo()
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        hints.ai_socktype = LinuxSocket.stream
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            return "cannot resolve \(host): \(String(cString: gai_strerror(rc)))"
        }
        defer { freeaddrinfo(first) }
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let a = entry {
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype | LinuxSocket.cloexec, a.pointee.ai_protocol)
            if fd >= 0 {
                var one: Int32 = 1
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
                let bound = bind(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0
                let err = errno
                close(fd)
                if !bound {
                    return err == EADDRINUSE ? "the port is in use by another program"
                        : err == EADDRNOTAVAIL ? "\(host) is not an address of this host"
                        : String(cString: strerror(err))
                }
            }
            entry = a.pointee.ai_next
        }
        return nil
    }
}
