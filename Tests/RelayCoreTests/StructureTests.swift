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
}
