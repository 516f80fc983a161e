import CRelaySys
import Foundation

/// A child process of the agent (borg on R), with a pidfd an event loop can poll for its end.
/// Owns the pid and the pidfd: `reap` collects the exit, `kill`s signal it, and `close`
/// (or deinit, as a backstop) kills and reaps a process still running.
final class LocalProcess {
    let pid: pid_t
    private(set) var pidFD: Int32
    /// How it ended: an exit status, or the number of the signal that killed it.
    private(set) var exitStatus: Int32?
    private(set) var exitSignal: Int32?

    var hasExited: Bool { exitStatus != nil || exitSignal != nil }

    /// posix_spawn with a clean signal state: stdin /dev/null, stdout to `stdoutPath` (0600,
    /// created) or /dev/null, stderr to `stderrFD`, `extraFD` (if any) as fd 3, and nothing
    /// else of the agent's (SSH sockets of other runs, the control socket).
    init(_ argv: [String], env: [String: String], stdinFD: Int32 = -1, stdoutPath: String?, stderrFD: Int32, extraFD: Int32) throws(SystemError) {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if stdinFD >= 0 {
            posix_spawn_file_actions_adddup2(&actions, stdinFD, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        if let out = stdoutPath {
            posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0o600)
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, stderrFD, 2)
        var fd3 = extraFD
        if fd3 == 3 { fd3 = fcntl(3, F_DUPFD_CLOEXEC, 10) }  // dup2 onto itself would keep CLOEXEC
        defer { if fd3 != extraFD { Glibc.close(fd3) } }
        if fd3 >= 0 { posix_spawn_file_actions_adddup2(&actions, fd3, 3) }
        relay_spawn_closefrom(&actions, fd3 >= 0 ? 4 : 3)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var all = sigset_t()
        sigfillset(&all)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var cArgs = argv.map { strdup($0) } + [nil]
        var cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, &attr, &cArgs, &cEnv)
        guard rc == 0 else {
            throw SystemError("cannot start \(argv[0]) on the relay: \(String(cString: strerror(rc))) (is borg installed on R?)")
        }
        self.pid = pid
        pidFD = relay_pidfd_open(pid)
        if pidFD < 0 {
            let e = String(cString: strerror(errno))
            Glibc.kill(pid, SIGKILL)
            var st: Int32 = 0
            waitpid(pid, &st, 0)
            exitSignal = SIGKILL
            throw SystemError("pidfd_open failed: \(e) (Linux 5.3 or newer is needed)")
        }
    }

    deinit { close() }

    /// Collects the exit if the process has ended (non-blocking); true once it has. The
    /// pidfd stays open (an event loop may still watch it) until `close`.
    @discardableResult
    func reap() -> Bool {
        guard !hasExited else { return true }
        var st: Int32 = 0
        guard waitpid(pid, &st, WNOHANG) == pid else { return false }
        if st & 0x7f == 0 { exitStatus = (st >> 8) & 0xff } else { exitSignal = st & 0x7f }
        return true
    }

    func signal(_ sig: Int32) {
        if !hasExited { Glibc.kill(pid, sig) }
    }

    /// Kills and reaps a process still running; closes the pidfd.
    func close() {
        if !hasExited {
            Glibc.kill(pid, SIGKILL)
            var st: Int32 = 0
            waitpid(pid, &st, 0)
            exitSignal = SIGKILL
        }
        if pidFD >= 0 {
            Glibc.close(pidFD)
            pidFD = -1
        }
    }

    /// A pipe, both ends close-on-exec.
    static func pipe() throws(SystemError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        guard relay_pipe_cloexec(&fds) == 0 else { throw SystemError("pipe failed: \(String(cString: strerror(errno)))") }
        return (fds[0], fds[1])
    }
}

extension UnixSocket {
    /// Accepts one waiting connection (close-on-exec); nil when none is waiting.
    static func accept(_ fd: Int32) -> Int32? {
        let conn = relay_accept_cloexec(fd)
        return conn >= 0 ? conn : nil
    }
}
