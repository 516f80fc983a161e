import Foundation
import Testing

/// Rules of the code's shape that the compiler does not enforce.
@Suite("Code structure: C libraries stay in the folders that own them")
struct StructureTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../..").standardized

    /// Every Swift source under Sources/ with its path relative to the package.
    static func sources() throws -> [(path: String, text: String)] {
        let base = root.appendingPathComponent("Sources")
        guard let walker = FileManager.default.enumerator(atPath: base.path) else { return [] }
        var found: [(String, String)] = []
        for case let rel as String in walker where rel.hasSuffix(".swift") {
            found.append(("Sources/" + rel, try String(contentsOf: base.appendingPathComponent(rel), encoding: .utf8)))
        }
        return found
    }

    @Test("import CLibSSH only under Sources/RelayCore/SSH, CSodium only under Vault, CRelaySys only under Support")
    func cModulesStayHome() throws {
        let owners = ["CLibSSH": "Sources/RelayCore/SSH/", "CSodium": "Sources/RelayCore/Vault/", "CRelaySys": "Sources/RelayCore/Support/"]
        let files = try Self.sources()
        #expect(files.count > 50, "found only \(files.count) sources under \(Self.root.path)")
        var misplaced: [String] = []
        for (path, text) in files {
            for line in text.split(separator: "\n") where line.hasPrefix("import ") || line.contains(" import ") {
                let words = line.split(separator: " ")
                guard let i = words.firstIndex(of: "import"), i + 1 < words.count else { continue }
                let module = String(words[i + 1])
                if let home = owners[module], !path.hasPrefix(home) { misplaced.append("\(path): import \(module)") }
            }
        }
        #expect(misplaced.isEmpty, "outside their folder: \(misplaced)")
        // The rule can fail: the owners themselves do import them.
        #expect(files.contains { $0.path.hasPrefix("Sources/RelayCore/SSH/") && $0.text.contains("import CLibSSH") })
    }

    /// The folders of RelayCore and the folders each one's code names a type of.
    static func folderGraph() throws -> [String: Set<String>] {
        let core = try sources().filter { $0.path.hasPrefix("Sources/RelayCore/") }
        func folder(_ path: String) -> String { String(path.split(separator: "/")[2]) }
        // Types declared at the top level (nested ones, such as CodingKeys, are indented).
        let declaration = /(?:^|\n)(?:public |final |private |fileprivate |internal |indirect )*(?:class|struct|enum|protocol|actor|typealias) +([A-Z][A-Za-z0-9]*)/
        var owner: [String: String] = [:]
        for (path, text) in core {
            for m in text.matches(of: declaration) { owner[String(m.1)] = folder(path) }
        }
        var graph: [String: Set<String>] = [:]
        for (path, text) in core {
            let from = folder(path)
            graph[from, default: []].formUnion([])
            // Code only: comments and string literals do not make a dependency.
            let code = text.split(separator: "\n").map { line -> String in
                var l = String(line)
                if let c = l.range(of: "//") { l = String(l[..<c.lowerBound]) }
                return l.replacing(/"(?:[^"\\]|\\.)*"/, with: "\"\"")
            }.joined(separator: "\n")
            for word in code.matches(of: /[A-Z][A-Za-z0-9]*/) {
                if let to = owner[String(word.0)], to != from { graph[from, default: []].insert(to) }
            }
        }
        return graph
    }

    @Test("RelayCore's folders depend on each other without cycles (Support and Config at the bottom, Control at the top)")
    func noFolderCycles() throws {
        let graph = try Self.folderGraph()
        #expect(graph.keys.count >= 8, "folders: \(graph.keys.sorted())")
        // Depth-first search; an edge back to a folder on the current path closes a cycle.
        var cycles: Set<String> = []
        var done: Set<String> = []
        func visit(_ node: String, _ path: [String]) {
            for next in graph[node, default: []].sorted() {
                if let i = path.firstIndex(of: next) {
                    cycles.insert((path[i...] + [next]).joined(separator: " → "))
                } else if !done.contains(next) {
                    visit(next, path + [next])
                }
            }
            done.insert(node)
        }
        for start in graph.keys.sorted() where !done.contains(start) { visit(start, [start]) }
        #expect(cycles.isEmpty, "folder cycles: \(cycles.sorted())")
        #expect(graph["Support", default: []].isEmpty, "Support depends on \(graph["Support", default: []].sorted())")
        // The check sees real dependencies (it can fail).
        #expect(graph["Run", default: []].contains("SSH"))
    }
}
