import ArgumentParser
import Foundation
import RelayCore

/// `relay-agent connect SOCKET …`: the BORG_RSH connector of borg runs on the relay.
/// borg starts it as `relay-agent connect SOCKET HOST borg serve …`; it connects to the
/// run's private socket and copies stdin to it and it to stdout until both ends are done.
/// Everything after SOCKET is ignored: the agent on the other end decides what B runs.
struct ConnectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connect",
        abstract: "BORG_RSH connector for borg runs on the relay (used by the agent).",
        shouldDisplay: false
    )

    @Argument(help: "The run's private socket.")
    var socket: String

    @Argument(parsing: .captureForPassthrough, help: "Ignored (borg's host and remote command).")
    var ignored: [String] = []

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let fd: Int32
        switch UnixSocket.connect(socket) {
        case .success(let connected):
            fd = connected
        case .failure(let e):
            CLI.printError("relay-agent connect: \(socket): \(String(cString: strerror(e.code)))")
            throw ExitCode(255)
        }
        // Two copies, each blocking on its own thread: stdin → socket, socket → stdout.
        let up = Thread {
            Self.copy(from: 0, to: fd)
            shutdown(fd, Int32(SHUT_WR))
        }
        up.start()
        Self.copy(from: fd, to: 1)
        close(1)
        // borg closed our stdin or the agent closed the socket: either way we are done.
        Foundation.exit(0)
    }

    static func copy(from src: Int32, to dst: Int32) {
        var buf = [UInt8](repeating: 0, count: 256 * 1024)
        while true {
            let n = buf.withUnsafeMutableBytes { read(src, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            var off = 0
            while off < n {
                let w = buf.withUnsafeBytes { write(dst, $0.baseAddress! + off, n - off) }
                if w < 0 && errno == EINTR { continue }
                if w <= 0 { return }
                off += w
            }
        }
    }
}
