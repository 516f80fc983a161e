import Foundation
import Testing
@testable import RelayCore

@Suite("Config: names of clients, servers and jumps; the socket and admin groups")
struct ConfigNamesTests {
    @Test func namesAreCheckedAtLoad() throws {
        #expect(ConfigLoader.nameProblem("web1") == nil)
        #expect(ConfigLoader.nameProblem("web-1.example_2") == nil)
        #expect(ConfigLoader.nameProblem("../x") != nil)
        #expect(ConfigLoader.nameProblem(".hidden") != nil)
        #expect(ConfigLoader.nameProblem("a/b") != nil)
        #expect(ConfigLoader.nameProblem("a b") != nil)
        #expect(ConfigLoader.nameProblem("") != nil)
        #expect(ConfigLoader.nameProblem("wéb") != nil)
        #expect(ConfigLoader.nameProblem("a\nb") != nil)
        let f = try ConfigLoaderTests.Files()
        let good = f.valid()
        for (table, bad) in [("clients", "../x"), ("clients", ".web"), ("servers", "a/b"), ("jumps", "j 1")] {
            var text = good
            switch table {
            case "clients":
                text = text.replacingOccurrences(of: "[clients.web1]", with: "[clients.\"\(bad)\"]")
            case "servers":
                text = text.replacingOccurrences(of: "[servers.vault]", with: "[servers.\"\(bad)\"]")
            default:
                text += "\n[jumps.\"\(bad)\"]\nhost = \"j\"\nuser = \"u\"\nkey = \"\(f.dir)/key\"\n"
            }
            do {
                _ = try ConfigLoader.parse(text, file: "relay.toml")
                Issue.record("[\(table)] '\(bad)' was accepted")
            } catch {
                #expect(error.table == table, "\(error)")
                #expect(error.description.contains("'\(bad)'") && error.description.contains("[A-Za-z0-9._-]+")
                        && error.description.contains("not start with '.'"), "\(error)")
            }
        }
    }

    @Test func socketAndAdminGroupsAreGroupNames() throws {
        let f = try ConfigLoaderTests.Files()
        let c = try ConfigLoader.parse(f.valid(relay: "socket_group = \"root\"\nadmin_group = \"0\""), file: "relay.toml")
        #expect(c.relay.socketGroup == "root" && c.relay.adminGroup == "0")
        #expect(try ConfigLoader.parse(f.valid(), file: "relay.toml").relay.socketGroup == nil)
        for bad in ["a b", "../x", "-x", ""] {
            #expect(throws: ConfigError.self, "\(bad)") {
                _ = try ConfigLoader.parse(f.valid(relay: "admin_group = \"\(bad)\""), file: "relay.toml")
            }
        }
        // A group that does not exist: refused when the host's files are checked, naming the key.
        do {
            _ = try ConfigLoader.parse(f.valid(relay: "admin_group = \"no-such-group-xq\""), file: "relay.toml")
            Issue.record("a missing group was accepted")
        } catch {
            #expect(error.key == "admin_group" && error.description.contains("groupadd no-such-group-xq"), "\(error)")
        }
        #expect(GroupLookup.gid(of: "root") == 0)
        #expect(GroupLookup.gid(of: "1234") == 1234)
        #expect(GroupLookup.name(of: 0) == "root")
    }

}
