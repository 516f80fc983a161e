import Foundation

/// Runs a command on the relay to its end (a notifier's argv): `input` on its stdin, its
/// stderr kept (the last 4 KiB), killed after `timeout` seconds. Blocks the calling thread.
public enum CommandRunner {
    public struct Outcome: Sendable, Equatable {
        public var status: Int32?
        public var signal: Int32?
        public var timedOut: Bool
        public var stderr: String

        public var succeeded: Bool { status == 0 }

        public var description: String {
            if timedOut { return "did not end within its timeout and was killed" }
            if let s = signal { return "was killed by signal \(s)" }
            let err = stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            return "exited with status \(status ?? -1)\(err.isEmpty ? "" : ": \(err)")"
        }
    }

    public static func run(_ argv: [String], env: [String: String], input: Data, timeout: TimeInterval) throws(SystemError) -> Outcome {
        // stdin: the whole input in an unlinked file, so that no size blocks the relay and
        // a command that does not read it is no failure.
        let stdinFD = try inputFile(input)
        defer { close(stdinFD) }
        let (errRead, errWrite) = try LocalProcess.pipe()
        let process: LocalProcess
        do {
            process = try LocalProcess(argv, env: env, stdinFD: stdinFD, stdoutPath: nil, stderrFD: errWrite, extraFD: -1)
        } catch {
            close(errRead)
            close(errWrite)
            throw error
        }
        close(errWrite)
        defer { process.close() }
        _ = fcntl(errRead, F_SETFL, fcntl(errRead, F_GETFL) | O_NONBLOCK)
        defer { close(errRead) }
        var stderr: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        var errOpen = true
        while !process.reap() {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 {
                process.close()
                return Outcome(status: nil, signal: SIGKILL, timedOut: true, stderr: String(decoding: stderr, as: UTF8.self))
            }
            var fds = [pollfd(fd: process.pidFD, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: errOpen ? errRead : -1, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 2, Int32(min(left, 1) * 1000) + 1)
            if errOpen { errOpen = drain(errRead, into: &stderr) }
        }
        _ = drain(errRead, into: &stderr)
        return Outcome(status: process.exitStatus, signal: process.exitSignal, timedOut: false,
                       stderr: String(decoding: stderr, as: UTF8.self))
    }

    /// A file holding `input`, read from its start, already unlinked (0600 while it had a name).
    private static func inputFile(_ input: Data) throws(SystemError) -> Int32 {
        var template = Array((FileManager.default.temporaryDirectory.path + "/borg-relay-event-XXXXXX").utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw SystemError("cannot create a temporary file for a notifier's input: \(String(cString: strerror(errno)))") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        var done = 0
        let ok = input.withUnsafeBytes { b -> Bool in
            while done < b.count {
                let n = write(fd, b.baseAddress! + done, b.count - done)
                if n < 0 { if errno == EINTR { continue }; return false }
                done += n
            }
            return true
        }
        guard ok, lseek(fd, 0, SEEK_SET) == 0 else {
            close(fd)
            throw SystemError("cannot write a notifier's input: \(String(cString: strerror(errno)))")
        }
        return fd
    }

    /// Reads what is there (the last 4 KiB kept); false at end of file.
    private static func drain(_ fd: Int32, into buffer: inout [UInt8]) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n > 0 {
                buffer += chunk[0..<n]
                if buffer.count > 4096 { buffer.removeFirst(buffer.count - 4096) }
            } else {
                return n < 0 && (errno == EAGAIN || errno == EINTR)
            }
        }
    }
}
