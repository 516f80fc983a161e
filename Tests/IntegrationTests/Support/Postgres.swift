import Foundation
import Testing

/// A PostgreSQL server of Debian's `postgresql` package, started by a test in a temporary
/// directory on 127.0.0.1 with password (SCRAM) authentication, and stopped by its PID. As
/// root it runs as the `postgres` user (PostgreSQL refuses root), through setpriv, which
/// execs it: the PID is the postmaster's. With `netns` it runs inside that network namespace
/// (through `ip netns exec`, which execs too), listening on its loopback and `listen`.
final class PostgresServer {
    let dir: String
    let port: Int
    let user = "relay"
    let database = "borg_relay"
    /// The role's password, in a 0600 file (`[relay] database_password_file`).
    let passwordFile: String
    private let password: String
    private var process: Spawned?
    private let bin: String
    private let runAs: [String]
    /// `ip netns exec NS` when the server runs in a namespace (psql and pg_dump run there too).
    private let inNamespace: [String]
    private let listen: [String]

    var url: String { url(host: "127.0.0.1") }
    func url(host: String) -> String { "postgresql://\(user)@\(host):\(port)/\(database)?sslmode=disable" }
    var logPath: String { "\(dir)/postgres.log" }

    init(in parent: String, netns: String? = nil, listen: [String] = []) throws {
        inNamespace = netns.map { ["/usr/sbin/ip", "netns", "exec", $0] } ?? []
        self.listen = listen
        guard let bin = Self.binDir() else {
            throw FixtureError("PostgreSQL's programs are not in /usr/lib/postgresql/*/bin: run scripts/setup (Debian's postgresql)")
        }
        self.bin = bin
        dir = "\(parent)/postgres"
        port = Proc.freePort()
        password = UUID().uuidString
        passwordFile = "\(parent)/pg-password"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try (password + "\n").write(toFile: passwordFile, atomically: true, encoding: .utf8)
        chmod(passwordFile, 0o600)
        let pwInit = "\(dir)/initpw"
        try password.write(toFile: pwInit, atomically: true, encoding: .utf8)
        if geteuid() == 0 {
            guard let pw = getpwnam("postgres") else { throw FixtureError("no user 'postgres' (Debian's postgresql creates it)") }
            chown(dir, pw.pointee.pw_uid, pw.pointee.pw_gid)
            chown(pwInit, pw.pointee.pw_uid, pw.pointee.pw_gid)
            chmod(parent, 0o755)
            runAs = ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        } else {
            runAs = []
        }
        let initdb = runAs + ["\(bin)/initdb", "-D", "\(dir)/data", "-U", user, "--auth=scram-sha-256",
                              "--pwfile=\(pwInit)", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
        try Proc.check(initdb[0], Array(initdb.dropFirst()))
        unlink(pwInit)
        // initdb admits loopback only; the namespace's addresses are the test's own links.
        for address in listen {
            let hba = try FileHandle(forWritingTo: URL(fileURLWithPath: "\(dir)/data/pg_hba.conf"))
            try hba.seekToEnd()
            try hba.write(contentsOf: Data("host all all \(address)/24 scram-sha-256\n".utf8))
            try hba.close()
        }
        try start()
        try psqlCheck("CREATE DATABASE \(database)", database: "postgres")
    }

    deinit { stop() }

    static func binDir() -> String? {
        let base = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).compactMap(Int.init).sorted()
        guard let v = versions.last else { return nil }
        let bin = "\(base)/\(v)/bin"
        return FileManager.default.fileExists(atPath: "\(bin)/postgres") ? bin : nil
    }

    /// Starts (or starts again) the server on the same port and data; waits until it answers.
    func start() throws {
        let argv = inNamespace + runAs + ["\(bin)/postgres", "-D", "\(dir)/data", "-p", "\(port)",
                                          "-h", (["127.0.0.1"] + listen).joined(separator: ","), "-k", "",
                            "-c", "fsync=off", "-c", "max_connections=200"]
        process = try Spawned(argv[0], Array(argv.dropFirst()), stdin: "/dev/null", stdout: logPath, stderr: logPath)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let p = process, !p.isRunning() { throw FixtureError("postgres ended at start: \(log)") }
            if inNamespace.isEmpty ? Proc.canConnect(port: port) : true,
               (try? psql("SELECT 1", database: "postgres").status) == 0 { return }
            usleep(100_000)
        }
        throw FixtureError("postgres did not answer within 30 s: \(log)")
    }

    /// Fast shutdown (SIGINT: open connections are closed), reaped.
    func stop() {
        guard let p = process else { return }
        p.kill(SIGINT)
        if p.wait(timeout: 30) == nil {
            p.kill(SIGKILL)
            _ = p.wait(timeout: 10)
        }
        process = nil
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// psql with the role's password in its environment (not in argv).
    func psql(_ sql: String, database: String? = nil) throws -> ProcessResult {
        var env = ProcessInfo.processInfo.environment
        env["PGPASSWORD"] = password
        let argv = inNamespace + ["\(bin)/psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", "\(port)",
                                  "-U", user, "-d", database ?? self.database, "-c", sql]
        return try Proc.run(argv[0], Array(argv.dropFirst()), env: env)
    }

    @discardableResult
    func psqlCheck(_ sql: String, database: String? = nil) throws -> String {
        let r = try psql(sql, database: database)
        guard r.status == 0 else { throw FixtureError("psql \(sql): \(r.output)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The whole database as pg_dump writes it (the role's password in its environment).
    func dump() throws -> String {
        var env = ProcessInfo.processInfo.environment
        env["PGPASSWORD"] = password
        let argv = inNamespace + ["\(bin)/pg_dump", "-h", "127.0.0.1", "-p", "\(port)", "-U", user, "-d", database]
        let r = try Proc.run(argv[0], Array(argv.dropFirst()), env: env)
        guard r.status == 0 else { throw FixtureError("pg_dump: \(r.stderr)") }
        return r.stdout
    }

    /// Rows of one query, each a list of its '|'-separated fields.
    func rows(_ sql: String) throws -> [[String]] {
        try psqlCheck(sql).split(separator: "\n").map { $0.split(separator: "|", omittingEmptySubsequences: false).map(String.init) }
    }
}
