import Foundation
import Logging
import Testing
@testable import RelayCore

/// Property tests with random mutations: the config parser and the control API's request
/// decoding must turn any input into a value or a clear error, never a crash or a hang.
/// Bounded in CI (RELAY_FUZZ_SECONDS, default 10 s each); run longer by hand, e.g.
/// `RELAY_FUZZ_SECONDS=600 swift test --filter Fuzz`. RELAY_FUZZ_SEED replays a run.
@Suite("Fuzz: config parser and control API decoding")
struct FuzzTests {
    struct XorShift: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
    }

    static var seconds: Double { Double(ProcessInfo.processInfo.environment["RELAY_FUZZ_SECONDS"] ?? "") ?? 10 }
    /// A fixed default seed keeps CI repeatable (this sequence ran clean for well over the
    /// CI budget); RELAY_FUZZ_SEED=random explores, any number replays.
    static func seed() -> UInt64 {
        let text = ProcessInfo.processInfo.environment["RELAY_FUZZ_SEED"] ?? "6"
        return text == "random" ? UInt64.random(in: 1...UInt64.max) : (UInt64(text) ?? 6)
    }

    static let tokens: [String] = [
        "[", "]", "[[", "]]", "=", "\"", "'", "'''", "\"\"\"", "{", "}", ",", ".", "\n", "\r\n", "\t", " ", "#",
        "\\", "\\u0000", "\\uD800", "\u{0}", "\u{FEFF}", "é", "😀", "inf", "nan", "-inf", "1e999", "-0", "0x7fffffffffffffff",
        "99999999999999999999", "true", "false", "1979-05-27T07:32:00Z", "[relay]", "[servers.vault]", "[clients.web1]",
        "[jumps.j]", "via = [\"j\"]", "key = \"/k\"", "port = 70000", "schedule = \"*/0 * * * *\"", "retention = {}",
        "pre = []", "transport = \"unix\"", "passphrase = \"sealed:!!\"", "paths = [1]", "x = 1",
        String(repeating: "a", count: 5000), String(repeating: "[", count: 300), String(repeating: "{a=", count: 200),
    ]

    static func mutate(_ s: String, _ rng: inout XorShift) -> String {
        var b = Array(s.utf8)
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let pos = b.isEmpty ? 0 : Int.random(in: 0..<b.count, using: &rng)
            switch Int.random(in: 0..<6, using: &rng) {
            case 0 where !b.isEmpty: b[pos] = UInt8.random(in: 0...255, using: &rng)
            case 1 where !b.isEmpty: b.removeSubrange(pos..<min(b.count, pos + Int.random(in: 1...40, using: &rng)))
            case 2: b.insert(contentsOf: Array(tokens.randomElement(using: &rng)!.utf8), at: pos)
            case 3 where !b.isEmpty:
                let end = min(b.count, pos + Int.random(in: 1...200, using: &rng))
                b.insert(contentsOf: b[pos..<end], at: pos)
            case 4: b = Array(b.prefix(pos))
            default: b.insert(contentsOf: Array("\n\(tokens.randomElement(using: &rng)!)\n".utf8), at: pos)
            }
        }
        return String(decoding: b, as: UTF8.self)
    }

    static let seedConfig = """
        [relay]
        state_dir = "/var/lib/borg-relay"
        max_parallel = 4
        keepalive_interval = 30

        [servers.vault]
        host = "backup.example.net"
        port = 22
        user = "borg"
        key = "/etc/borg-relay/keys/vault"
        maintenance_key = "/etc/borg-relay/keys/maint"

        [jumps.gw]
        host = "gw.example.net"
        user = "relay"
        key = "/k"

        [clients.web1]
        host = "web1.example.net"
        user = "root"
        key = "/etc/borg-relay/keys/web1"
        server = "vault"
        repository = "/srv/borg/web1"
        paths = ["/etc", "/var/www"]
        exclude = ["/var/www/cache"]
        compression = "zstd,3"
        archive = "{hostname}-{now}"
        schedule = "30 2 * * 1-5"
        jitter = 600
        catch_up = true
        retention = { daily = 7, weekly = 4, within = "2d" }
        pre = ["sh", "-c", "echo x"]
        post = "/usr/bin/true"
        """

    /// Inputs that once crashed the parser (toml++ aborted on them), kept as regressions.
    @Test func regressionInputs() {
        for input in ["i=\"\"\nr=0\n[\u{FFFD}", "[é", "[[é]]", "[ é]", "x\u{0}=1", "[,", "[ #", "p=[}", "x = [\n}", "x=[1,}"] {
            do {
                _ = try ConfigLoader.parse(input, file: "fuzz.toml", checkFiles: false)
                Issue.record("accepted: \(input.debugDescription)")
            } catch {
                guard case .syntax = error.kind else {
                    Issue.record("not a syntax error: \(error)")
                    continue
                }
                #expect(error.description.hasPrefix("fuzz.toml:"))
            }
        }
    }

    @Test func configParserNeverCrashes() {
        let seed = Self.seed()
        print("config fuzz seed \(seed)")
        var rng = XorShift(state: seed)
        let deadline = Date().addingTimeInterval(Self.seconds)
        var corpus = [Self.seedConfig]
        var runs = 0, accepted = 0
        while Date() < deadline {
            let input = Self.mutate(corpus.randomElement(using: &rng)!, &rng)
            runs += 1
            if let last = ProcessInfo.processInfo.environment["RELAY_FUZZ_LAST"] {
                try? Data(input.utf8).write(to: URL(fileURLWithPath: last))  // to find a crashing input
            }
            do {
                _ = try ConfigLoader.parse(input, file: "fuzz.toml", checkFiles: false)
                accepted += 1
                if corpus.count < 64 { corpus.append(input) }
            } catch {
                let text = error.description
                if text.isEmpty || !text.hasPrefix("fuzz.toml") {
                    Issue.record("an error that does not name the file: \(text) (seed \(seed))")
                    return
                }
            }
        }
        print("config fuzz: \(runs) inputs, \(accepted) accepted")
        #expect(runs > 100)
    }

    @Test func controlRequestsNeverCrash() throws {
        let seed = Self.seed()
        print("control API fuzz seed \(seed)")
        var rng = XorShift(state: seed)
        let cfg = try ConfigLoader.parse(Self.seedConfig, file: "fuzz.toml", checkFiles: false)
        let client = cfg.clients["web1"]!
        let server = cfg.server(for: client)
        let seeds = [
            #"{"clients":["web1"],"queue":true}"#,
            #"{"clients":["web1"],"passphrase":{"key_id":"k","sealed":"AAAA"}}"#,
            #"{"clients":["web1"],"operation":{"kind":"restore","archive":"a","paths":["/etc"],"to":"/var/tmp/x","dry_run":true}}"#,
            #"{"clients":["web1"],"operation":{"kind":"borg","args":["list","::a"]}}"#,
            #"{"clients":["web1"],"operation":{"kind":"prune","dry_run":true,"compact":true}}"#,
            #"{"clients":[],"all":true,"operation":{"kind":"init","encryption":"repokey-blake2"}}"#,
        ]
        let deadline = Date().addingTimeInterval(Self.seconds)
        var runs = 0, decoded = 0
        while Date() < deadline {
            let input = Self.mutate(seeds.randomElement(using: &rng)!, &rng)
            runs += 1
            guard let req = try? ControlAPI.decoder().decode(RunRequest.self, from: Data(input.utf8)) else { continue }
            decoded += 1
            if let op = req.operation {
                try? op.validate(client: client, server: server, file: "fuzz.toml")
                _ = try? op.plan()
                _ = try? op.clientWorkload(client: "web1", runID: "r")
            }
            _ = try? ControlAPI.encoder().encode(req)
        }
        print("control API fuzz: \(runs) inputs, \(decoded) decoded")
        #expect(runs > 100)
    }
}
