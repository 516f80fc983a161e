import Foundation
import Testing
@testable import RelayCore

/// One vector of Tests/Vectors/borg-arguments.json: checked here against `BorgArguments` and,
/// by Tests/Vectors/check-guard.py, against the client guard.
struct BorgArgumentVector: Decodable {
    let argv: [String]
    let allowed: Bool
    let why: String?
    let restore: Bool?
}

@Suite("borg argument grammar (relayctl borg, restore, the client guard)")
struct BorgArgumentsTests {
    static let vectorsDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Vectors").standardized.path

    static func vectors() throws -> [BorgArgumentVector] {
        let data = try Data(contentsOf: URL(fileURLWithPath: vectorsDir + "/borg-arguments.json"))
        return try JSONDecoder().decode([BorgArgumentVector].self, from: data)
    }

    @Test("every vector: allowed ones parse (and their normalised argv again, unchanged), refused ones name the reason")
    func vectorsAgainstSwift() throws {
        let vectors = try Self.vectors()
        #expect(vectors.count >= 60)
        #expect(vectors.contains { $0.allowed } && vectors.contains { !$0.allowed })
        var mismatches: [String] = []
        for (n, v) in vectors.enumerated() {
            let context: BorgArguments.Context = v.restore == true ? .restore : .request
            let where_ = "vector \(n) \(v.argv)\(v.restore == true ? " (restore)" : "")"
            do {
                let parsed = try BorgArguments.parse(v.argv, context: context)
                if !v.allowed {
                    mismatches.append("\(where_): expected refused (\(v.why ?? "")), allowed as \(parsed.argv)")
                } else {
                    let again = try BorgArguments.parse(parsed.argv, context: context)
                    if again.argv != parsed.argv { mismatches.append("\(where_): normalised \(parsed.argv) re-parses as \(again.argv)") }
                }
            } catch {
                if v.allowed {
                    mismatches.append("\(where_): expected allowed, refused: \(error)")
                } else if let why = v.why, !error.description.contains(why) {
                    mismatches.append("\(where_): refused, but the reason lacks '\(why)': \(error)")
                }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) mismatches:\n\(mismatches.joined(separator: "\n"))")
    }

    /// Runs Tests/Vectors/check-guard.py with `arguments`; its exit status and output.
    static func checkGuard(_ arguments: [String]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = [vectorsDir + "/check-guard.py"] + arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }

    @Test("the client guard agrees on every vector (check-guard.py loads the guard and feeds it all of them)")
    func vectorsAgainstGuard() throws {
        let (status, text) = try Self.checkGuard([])
        #expect(status == 0, "the guard disagrees with the vectors:\n\(text)")
        #expect(text.contains("0 mismatches"), "\(text)")
    }

    @Test("differential: 3000 random argvs (options, their prefixes, values, positionals, odd Unicode) get the same verdict and the same message from BorgArguments and the guard")
    func differentialAgainstGuard() throws {
        var rng = FuzzTests.XorShift(state: 0x9E37_79B9_7F4A_7C15)
        let spellings = Set(BorgArguments.tables.values.flatMap { $0.map(\.spelling) }).sorted()
        let values = ["1", "0", "-1", "abc", "\u{663}", "x y", "{path}{NL}", "-", "--", "", "::A", "::", "::-a", "/repo",
                      "ssh://h/r::A", "a\nb", "a\u{0}b", "\r", "é", "-\u{301}x", "\u{338}x", "web-*", "etc/hosts", "B", "sh -c 'x'", String(repeating: "long-", count: 14),
                      "{a.b}", "{0}", "{}", "{{x}}{y!r}", "{size:{w}}", "{p[1]}"]
        let commands = BorgArguments.commands + ["delete", "create", "LIST", "--rsh=x", "", "extract\u{301}"]
        func token() -> String {
            switch Int.random(in: 0..<10, using: &rng) {
            case 0...3:
                return spellings.randomElement(using: &rng)!
            case 4:
                let o = spellings.randomElement(using: &rng)!
                return String(o.prefix(Int.random(in: 1...o.count, using: &rng)))
            case 5:
                let o = spellings.randomElement(using: &rng)!
                return o + "=" + values.randomElement(using: &rng)!
            case 6:
                return ["-nv", "-eX", "-e=X", "-vp", "---rsh", "-\u{301}", "--rsh\u{338}=x"].randomElement(using: &rng)!
            default:
                return values.randomElement(using: &rng)!
            }
        }
        var vectors: [[String: AnyEncodable]] = []
        var allowed = 0
        for _ in 0..<3000 {
            var argv = [commands.randomElement(using: &rng)!]
            for _ in 0..<Int.random(in: 0...6, using: &rng) { argv.append(token()) }
            let restore = Int.random(in: 0..<5, using: &rng) == 0
            var v: [String: AnyEncodable] = ["argv": AnyEncodable(argv), "restore": AnyEncodable(restore)]
            do {
                let parsed = try BorgArguments.parse(argv, context: restore ? .restore : .request)
                let again = try BorgArguments.parse(parsed.argv, context: restore ? .restore : .request)
                #expect(again.argv == parsed.argv, "\(argv)")
                v["allowed"] = AnyEncodable(true)
                allowed += 1
            } catch {
                v["allowed"] = AnyEncodable(false)
                v["why"] = AnyEncodable(error.description)  // the whole message: the guard's must be equal
            }
            vectors.append(v)
        }
        #expect(allowed > 50, "too few allowed argvs to compare")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("borg-arguments-random-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: file) }
        try JSONEncoder().encode(vectors).write(to: file)
        let (status, text) = try Self.checkGuard([Self.vectorsDir + "/../../contrib/guard/borg-relay-guard", file.path])
        #expect(status == 0, "the guard and BorgArguments disagree:\n\(text.prefix(4000))")
        #expect(text.contains("3000 vectors, 0 mismatches"), "\(text.suffix(500))")
    }

    @Test("normalised argv: options in full with =, short options expanded, then -- and the positionals")
    func normalised() throws {
        #expect(try BorgArguments.parse(["list", "::A", "--short", "-e", "*.log", "etc"]).argv
                == ["list", "--short", "--exclude=*.log", "--", "::A", "etc"])
        #expect(try BorgArguments.parse(["extract", "-n", "-v", "--strip-components", "2", "::A"]).argv
                == ["extract", "--dry-run", "--info", "--strip-components=2", "--", "::A"])
        #expect(try BorgArguments.parse(["info"]).argv == ["info"])
        #expect(try BorgArguments.parse(["export-tar", "::A", "-"]).argv == ["export-tar", "--", "::A", "-"])
    }

    @Test("the refusal names the argument and why, as the issue's examples")
    func messages() {
        func refusal(_ argv: [String]) -> String {
            do { _ = try BorgArguments.parse(argv); return "allowed" } catch { return error.description }
        }
        #expect(refusal(["list", "--rsh=sh -c 'id > /tmp/x; eval exec $BORG_RSH'", "::A"])
                == "'--rsh=sh -c 'id > /tmp/x; eval exec $BORG_RSH'': borg list option --rsh runs a program on the client; options from a request may only read the repository")
        #expect(refusal(["list", "--rs=x"]) == "'--rs=x': abbreviated option, borg list would read it as --rsh; abbreviations are refused on purpose, spell options in full")
        #expect(refusal(["list", String(repeating: "x", count: 100)]).hasPrefix("'" + String(repeating: "x", count: 60) + "…': "))
    }

    @Test("relayctl borg requests go through the grammar; the workload carries the normalised argv")
    func operationRequests() throws {
        let cfg = try ConfigLoader.parse(FuzzTests.seedConfig, file: "t.toml", checkFiles: false)
        let client = try #require(cfg.clients["web1"])
        let server = cfg.server(for: client)
        func validate(_ op: OperationRequest) -> String? {
            do { try op.validate(client: client, server: server, file: "t.toml"); return nil } catch { return error.description }
        }
        #expect(validate(OperationRequest(kind: .borg, args: ["list", "--short", "::A"])) == nil)
        #expect(validate(OperationRequest(kind: .borg, args: ["list", "::A", "--rsh=touch /tmp/x"]))?.contains("option --rsh runs a program") == true)
        #expect(validate(OperationRequest(kind: .borg, args: ["extract", "--", "::A", "p", "--dry-run"]))?.contains("needs --stdout") == true)
        #expect(validate(OperationRequest(kind: .borg, args: []))?.contains("give the borg command after --") == true)
        let w = try OperationRequest(kind: .borg, args: ["list", "::A", "--short"]).clientWorkload(client: "web1", runID: "r")
        #expect(w == .borg(kind: .borg, arguments: ["list", "--short", "--", "::A"], workDir: nil))
        #expect(throws: OperationError.self) {
            _ = try OperationRequest(kind: .borg, args: ["list", "--rsh=x"]).clientWorkload(client: "web1", runID: "r")
        }
    }

    @Test("restore: its extract has the restore shape; paths with a newline or only slashes are refused")
    func restoreRequests() throws {
        let cfg = try ConfigLoader.parse(FuzzTests.seedConfig, file: "t.toml", checkFiles: false)
        let client = try #require(cfg.clients["web1"])
        let server = cfg.server(for: client)
        func validate(_ op: OperationRequest) -> String? {
            do { try op.validate(client: client, server: server, file: "t.toml"); return nil } catch { return error.description }
        }
        #expect(validate(OperationRequest(kind: .restore, archive: "A", paths: ["/etc/hosts"])) == nil)
        #expect(validate(OperationRequest(kind: .restore, archive: "A", dryRun: true)) == nil)
        #expect(validate(OperationRequest(kind: .restore, archive: "A", paths: ["etc/x\ny"]))?.contains("newline") == true)
        #expect(validate(OperationRequest(kind: .restore, archive: "A", paths: ["/"]))?.contains("give no path") == true)
        let w = try OperationRequest(kind: .restore, archive: "A", paths: ["/etc/hosts"]).clientWorkload(client: "web1", runID: "r")
        #expect(w == .borg(kind: .restore, arguments: ["extract", "--log-json", "--progress", "--numeric-ids", "--", "::A", "etc/hosts"],
                           workDir: "/var/tmp/borg-relay-restore-web1-r"))
    }
}

/// A JSON value of any encodable type (the random vectors mix strings, bools and arrays).
struct AnyEncodable: Encodable {
    let encode: @Sendable (Encoder) throws -> Void
    init<T: Encodable & Sendable>(_ value: T) { encode = { try value.encode(to: $0) } }
    func encode(to encoder: Encoder) throws { try encode(encoder) }
}
