import Foundation

/// `state_dir/web-password`: the status page's login password as an Argon2id hash, one line,
/// mode 0600, owned by the state directory's owner (the agent's user), so that root can set
/// it and the agent can read it.
public enum WebPasswordFile {
    /// Hashes `password` and replaces the file (temporary file and rename: a reader never
    /// sees half a hash). Returns the file's path.
    @discardableResult
    public static func store(_ password: SecretBytes, stateDir: String) throws(VaultError) -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: stateDir, isDirectory: &isDir), isDir.boolValue else {
            throw VaultError.writeFailed(path: WebSettings.passwordPath(stateDir: stateDir), reason: "state_dir \(stateDir) does not exist: start relay-agent once (it creates it) or create it, owned by the agent's user")
        }
        let hash = try PasswordHash.hash(password)
        let path = WebSettings.passwordPath(stateDir: stateDir)
        let temp = path + ".tmp-\(getpid())"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw VaultError.writeFailed(path: temp, reason: "\(String(cString: strerror(errno))); run relayctl web passwd as root or as the agent's user")
        }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(temp) }
        }
        let bytes = Array((hash + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else {
            throw VaultError.writeFailed(path: temp, reason: String(cString: strerror(errno)))
        }
        var st = stat()
        if stat(stateDir, &st) == 0 && geteuid() == 0 && st.st_uid != 0 {
            guard fchown(fd, st.st_uid, st.st_gid) == 0 else {
                throw VaultError.writeFailed(path: temp, reason: "cannot give it to the owner of \(stateDir): \(String(cString: strerror(errno)))")
            }
        }
        guard rename(temp, path) == 0 else {
            throw VaultError.writeFailed(path: path, reason: String(cString: strerror(errno)))
        }
        ok = true
        return path
    }
}
