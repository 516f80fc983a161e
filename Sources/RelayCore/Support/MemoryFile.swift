import CRelaySys
import Foundation

/// A file that lives only in memory (memfd_create): a child's stdin with bytes already
/// prepared (the sealed state bundle for `borg create -`), without a file on disk and
/// without a thread feeding a pipe.
public enum MemoryFile {
    /// A close-on-exec descriptor of a memory file holding `bytes`, at offset 0. The caller closes it.
    public static func make(_ bytes: [UInt8], name: String) throws(SystemError) -> Int32 {
        let fd = relay_memfd_cloexec(name)
        guard fd >= 0 else { throw SystemError("memfd_create failed: \(String(cString: strerror(errno)))") }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let e = String(cString: strerror(errno))
                close(fd)
                throw SystemError("writing a memory file failed: \(e)")
            }
            done += n
        }
        guard lseek(fd, 0, SEEK_SET) == 0 else {
            close(fd)
            throw SystemError("lseek on a memory file failed: \(String(cString: strerror(errno)))")
        }
        return fd
    }
}
