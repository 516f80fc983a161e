import Foundation
import Testing
@testable import RelayCore

@Suite("config show: the effective configuration reads back as the same configuration; secrets are not shown")
struct ConfigDocumentTests {
    static let text = """
        [relay]
        state_dir = "/var/lib/r"
        max_parallel = 7
        socket_group = "ops"

        [metrics]
        listen = ":9187"

        [servers.vault]
        host = "b.example.net"
        user = "borg"
        key = "/k/b"
        maintenance_key = "/k/m"

        [jumps.gw]
        host = "gw.example.net"
        port = 2222
        user = "relay"
        key = "/k/gw"

        [clients."web1.prod"]
        host = "t.example.net"
        user = "root"
        key = "/k/t"
        via = ["gw"]
        server = "vault"
        repository = "/srv/borg/web1"
        paths = ["/etc", "/home/a \\"quoted\\" dir"]
        exclude = ["*.tmp"]
        schedule = "30 2 * * *"
        retention = { daily = 7, within = "2d" }
        pre = ["/usr/local/bin/dump", "--all"]
        max_age = "26h"
        check_schedule = "@weekly"
        check = "repository"
        check_max_duration = "2h"

        [notify.ops]
        kind = "ntfy"
        url = "https://ntfy.example.net/"
        on = ["overdue", "failed"]
        """

    @Test("every key with its default, read back by the loader: the same configuration")
    func roundTrip() throws {
        let c = try ConfigLoader.parse(Self.text, file: "relay.toml", checkFiles: false)
        let shown = ConfigDocument.toml(c)
        #expect(shown.contains("history_keep_runs = 1000") && shown.contains("transport = \"tcp\"") && shown.contains("lock_wait = 300"), "\(shown)")
        #expect(shown.contains("[clients.\"web1.prod\"]"))
        let again = try ConfigLoader.parse(shown, file: "relay.toml", checkFiles: false)
        #expect(again == c, "\(shown)")
        // And the document of the document is the document.
        #expect(ConfigDocument.toml(again) == shown)
    }

    @Test("JSON: tables by name, every default; the sealed passphrase and a URL's token are not shown")
    func jsonAndSecrets() throws {
        let sealed = "sealed:" + Data(repeating: 0xAB, count: 80).base64EncodedString()
        let text = Self.text.replacingOccurrences(of: "repository = \"/srv/borg/web1\"", with: "repository = \"/srv/borg/web1\"\npassphrase = \"\(sealed)\"")
            .replacingOccurrences(of: "url = \"https://ntfy.example.net/\"", with: "url = \"https://hc.example.net/ping/SECRET-TOKEN-123/{client}\"")
        let c = try ConfigLoader.parse(text, file: "relay.toml", checkFiles: false)
        let json = String(decoding: ConfigDocument.json(c), as: UTF8.self)
        let toml = ConfigDocument.toml(c)
        for shown in [json, toml] {
            #expect(!shown.contains("SECRET-TOKEN-123"), "\(shown)")
            #expect(!shown.contains(String(sealed.dropFirst("sealed:".count))), "the whole sealed value is shown")
            #expect(shown.contains("sealed:q6urq6ur…") && shown.contains("https://hc.example.net/***"), "\(shown)")
        }
        let o = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let relay = try #require(o["relay"] as? [String: Any])
        #expect(relay["max_parallel"] as? Int == 7 && relay["connect_timeout"] as? Int == 30)
        let client = try #require((o["clients"] as? [String: Any])?["web1.prod"] as? [String: Any])
        #expect(client["port"] as? Int == 22 && client["check_max_duration"] as? String == "7200s")
        #expect((client["retention"] as? [String: Any])?["daily"] as? Int == 7)
    }

    @Test("TOML strings: quotes, backslashes and control characters are escaped")
    func quoting() {
        #expect(ConfigDocument.quote("a\"b\\c\nd\u{1}") == "\"a\\\"b\\\\c\\nd\\u0001\"")
    }
}
