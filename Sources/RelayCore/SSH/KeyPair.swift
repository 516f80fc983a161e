import CLibSSH
import Foundation

/// A new SSH key pair for the relay (`relayctl add-client`), made with libssh: ed25519, no
/// passphrase. The private key goes from libssh's buffer straight to its file (created, never
/// overwritten, 0600) and the buffer is wiped: it is never a Swift string.
public enum KeyPair {
    /// Creates `path` (the private key) and `path.pub`; returns the public line
    /// (`ssh-ed25519 BASE64 COMMENT`). Refuses when either file exists; leaves neither behind
    /// when it fails.
    public static func createEd25519(path: String, comment: String) throws(SSHError) -> String {
        func failure(_ detail: String) -> SSHError { .keyFile(host: "relay", path: path, detail: detail) }
        var key: ssh_key?
        guard ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &key) == SSH_OK, let k = key else { throw failure("libssh could not generate an ed25519 key") }
        defer { ssh_key_free(k) }
        var pubB64: UnsafeMutablePointer<CChar>?
        guard ssh_pki_export_pubkey_base64(k, &pubB64) == SSH_OK, let pb = pubB64 else { throw failure("cannot encode the public key") }
        let publicLine = "ssh-ed25519 \(String(cString: pb)) \(comment)"
        ssh_string_free_char(pb)
        var privText: UnsafeMutablePointer<CChar>?
        guard ssh_pki_export_privkey_base64(k, nil, nil, nil, &privText) == SSH_OK, let priv = privText else {
            throw failure("cannot encode the private key")
        }
        let length = strlen(priv)
        defer {
            explicit_bzero(priv, length)
            ssh_string_free_char(priv)
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw failure(errno == EEXIST ? "it exists already; nothing was overwritten (choose --key, or remove it)" : String(cString: strerror(errno))) }
        var done = 0
        var ok = true
        while done < length {
            let n = write(fd, priv + done, length - done)
            if n < 0 { if errno == EINTR { continue }; ok = false; break }
            done += n
        }
        if ok && priv[length - 1] != 0x0A { ok = write(fd, "\n", 1) == 1 }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok else {
            unlink(path)
            throw failure("writing it failed: \(String(cString: strerror(errno)))")
        }
        let pubFD = open(path + ".pub", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        let line = Array((publicLine + "\n").utf8)
        guard pubFD >= 0, write(pubFD, line, line.count) == line.count else {
            let e = String(cString: strerror(errno))
            if pubFD >= 0 { close(pubFD); unlink(path + ".pub") }
            unlink(path)
            throw SSHError.keyFile(host: "relay", path: path + ".pub", detail: "cannot write it: \(e)")
        }
        close(pubFD)
        return publicLine
    }
}
