import Foundation
import Testing
@testable import RelayCore

@Suite("Monitoring keys of the config: [metrics], [notify.NAME], max_age, check_schedule; each mistake named")
struct MonitorConfigTests {
    static func parse(_ extra: String, client: String = "") throws(ConfigError) -> RelayConfig {
        try ConfigLoader.parse("""
            [relay]
            state_dir = "/tmp/s"

            [servers.vault]
            host = "b"
            user = "borg"
            key = "/k"

            [clients.web1]
            host = "t"
            user = "root"
            key = "/k"
            server = "vault"
            repository = "/r"
            paths = ["/etc"]
            \(client)

            \(extra)
            """, file: "relay.toml", checkFiles: false)
    }

    static func error(_ extra: String, client: String = "") -> String {
        do {
            _ = try parse(extra, client: client)
            return "no error"
        } catch {
            return error.description
        }
    }

    @Test("a full monitoring config parses")
    func full() throws {
        let c = try Self.parse("""
            [metrics]
            listen = ":9187"
            textfile = "/var/lib/node/borg-relay.prom"

            [notify.ops]
            kind = "webhook"
            url = "https://hooks.example/{client}"
            on = ["failed", "recovered"]
            clients = ["web1"]

            [notify.page]
            kind = "command"
            argv = ["/usr/local/bin/page", "--urgent"]
            timeout = 5
            """, client: "schedule = \"@daily\"\ncheck_schedule = \"0 4 * * 0\"\ncheck = \"repository\"\ncheck_max_duration = \"2h\"")
        #expect(c.metrics?.listen == ListenAddress(text: "127.0.0.1:9187"))
        #expect(c.metrics?.textfile == "/var/lib/node/borg-relay.prom")
        let ops = try #require(c.notifiers["ops"])
        #expect(ops.kind == .webhook && ops.on == [.failed, .recovered] && ops.clients == ["web1"])
        #expect(ops.wants(.failed, client: "web1") && !ops.wants(.failed, client: "db1") && !ops.wants(.started, client: "web1"))
        #expect(ops.wants(.test, client: nil))
        #expect(c.notifiers["page"]?.argv == ["/usr/local/bin/page", "--urgent"] && c.notifiers["page"]?.timeout == 5)
        let w = try #require(c.clients["web1"])
        #expect(w.checkScope == .repository && w.checkMaxDuration == 7200 && w.checkSchedule?.text == "0 4 * * 0")
        #expect(w.overdueAfter.map { Int($0) } == 172_800, "twice a daily schedule: \(String(describing: w.overdueAfter))")
    }

    @Test("mistakes are refused naming the table, the key and the fix", arguments: [
        ("[notify.x]\nkind = \"pager\"\nurl = \"https://a\"", "[notify.x] key 'kind'"),
        ("[notify.x]\nkind = \"webhook\"\nurl = \"ftp://a\"", "not an http:// or https:// URL"),
        ("[notify.x]\nkind = \"webhook\"", "[notify.x] key 'url'"),
        ("[notify.x]\nkind = \"command\"\nargv = [\"page\"]", "absolute path"),
        ("[notify.x]\nkind = \"webhook\"\nurl = \"https://a\"\non = [\"exploded\"]", "'exploded' is not an event"),
        ("[notify.x]\nkind = \"webhook\"\nurl = \"https://a\"\nclients = [\"db9\"]", "db9"),
        ("[notify.x]\nkind = \"webhook\"\nurl = \"https://a\"\nheaders = 1", "[notify.x] key 'headers'"),
        ("[notify.\"a/b\"]\nkind = \"webhook\"\nurl = \"https://a\"", "not allowed"),
        ("[metrics]\nlisten = \"localhost\"", "not an address with a port"),
        ("[metrics]\nlisten = \"127.0.0.1:99999\"", "not an address with a port"),
        ("[metrics]", "publishes nowhere"),
        ("[metrics]\ntextfile = \"rel.prom\"", "textfile"),
    ])
    func refusals(_ text: String, _ expected: String) {
        let e = Self.error(text)
        #expect(e.contains(expected), "\(e)")
    }

    @Test("client keys: max_age, check and check_max_duration are checked")
    func clientRefusals() {
        #expect(Self.error("", client: "max_age = \"soon\"").contains("'soon' is not a duration"))
        #expect(Self.error("", client: "check_schedule = \"@weekly\"\ncheck = \"everything\"").contains("not a check scope"))
        #expect(Self.error("", client: "check_schedule = \"@weekly\"\ncheck = \"archives\"\ncheck_max_duration = \"1h\"").contains("check = \"repository\""))
        #expect(Self.error("", client: "check = \"data\"").contains("add check_schedule"))
        #expect(Self.error("", client: "check_schedule = \"61 * * * *\"").contains("check_schedule"))
    }

    @Test("listen addresses: host:port, [v6]:port, :port and port for loopback; loopback is told apart")
    func listen() {
        #expect(ListenAddress(text: "0.0.0.0:9187").map { ($0.host, $0.port, $0.isLoopback) }! == ("0.0.0.0", 9187, false))
        #expect(ListenAddress(text: "[::1]:9187").map { ($0.host, $0.isLoopback) }! == ("::1", true))
        #expect(ListenAddress(text: ":9187")?.host == "127.0.0.1")
        #expect(ListenAddress(text: "9187")?.host == "127.0.0.1")
        #expect(ListenAddress(text: "::1:9187") == nil && ListenAddress(text: "a b:1") == nil && ListenAddress(text: "h:0") == nil)
    }

    @Test("durations and schedule periods")
    func durations() throws {
        #expect(DurationText.seconds("26h") == 93600 && DurationText.seconds("1h30m") == 5400 && DurationText.seconds("2w") == 1_209_600)
        #expect(DurationText.seconds("5") == nil && DurationText.seconds("h") == nil && DurationText.seconds("0s") == nil && DurationText.seconds("") == nil)
        #expect(try CronSchedule("@hourly").period == 3600)
        #expect(try CronSchedule("30 2 * * *").period == 86400)
        #expect(try CronSchedule("0 2 * * 1-5").period == 3 * 86400, "Friday to Monday is the longest wait")
        #expect(try CronSchedule("0 3 1 6 *").period >= 365 * 86400, "a yearly schedule waits a year")
        #expect(try CronSchedule("0 0 31 2 *").period == 0, "never fires")
        let yearly = try Self.parse("", client: "schedule = \"0 3 1 6 *\"").clients["web1"]
        #expect((yearly?.overdueAfter ?? 0) >= 2 * 365 * 86400)
        #expect(try Self.parse("", client: "schedule = \"@daily\"\nmax_age = \"5s\"").clients["web1"]?.overdueAfter == 5)
        #expect(try Self.parse("").clients["web1"]?.overdueAfter == nil)
    }

    @Test("check arguments: scope, partial checks, verify-data; mismatches refused")
    func checkArguments() throws {
        #expect(try OperationRequest(kind: .check).checkArguments(repository: "R") == ["check", "--", "R"])
        #expect(try OperationRequest(kind: .check, scope: .repository, maxDuration: 60).checkArguments(repository: "R")
                == ["check", "--repository-only", "--max-duration", "60", "--", "R"])
        #expect(try OperationRequest(kind: .check, scope: .archives).checkArguments(repository: "R") == ["check", "--archives-only", "--", "R"])
        #expect(try OperationRequest(kind: .check, scope: .data).checkArguments(repository: "R") == ["check", "--verify-data", "--", "R"])
        #expect(throws: OperationError.self) { try OperationRequest(kind: .check, scope: .archives, maxDuration: 60).checkArguments(repository: "R") }
        #expect(throws: OperationError.self) { try OperationRequest(kind: .check, maxDuration: 60).checkArguments(repository: "R") }
        #expect(throws: OperationError.self) { try OperationRequest(kind: .check, verifyData: true, scope: .repository).checkArguments(repository: "R") }
    }

    @Test("unreachable is a connect failure of that host only")
    func unreachable() {
        let label = "client web1"
        #expect(SSHError.connect(host: "client web1 (root@t:22)", detail: "refused").isUnreachable(label: label))
        #expect(SSHError.timedOut(host: "client web1 (root@t:22)", what: "connecting (TCP and key exchange)", seconds: 30, key: "connect_timeout", detail: "").isUnreachable(label: label))
        #expect(!SSHError.connect(host: "client web10 (root@t:22)", detail: "refused").isUnreachable(label: label))
        #expect(!SSHError.connect(host: "server vault (b:22)", detail: "refused").isUnreachable(label: label))
        #expect(!SSHError.authDenied(host: "client web1 (root@t:22)", keyPath: "/k", fingerprint: "f", detail: "").isUnreachable(label: label))
    }
}
