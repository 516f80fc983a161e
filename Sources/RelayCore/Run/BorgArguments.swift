/// The borg arguments a request may give (`relayctl borg`, and the extract of a restore): a
/// grammar per command, an allowlist of options and positionals, read the way borg's argparse
/// reads an argv. Anything outside it is refused with a message naming the argument.
///
/// What is allowed: the read-only commands list, info, diff, extract (with --stdout or
/// --dry-run; a restore extracts into its directory) and export-tar (to `-`), options that
/// only shape what is read or shown, archives as `::NAME`, paths inside the archive. Never:
/// options that run a program (--rsh, --remote-path, --tar-filter), write or read a file of
/// the caller's naming (--debug-profile, --patterns-from, --exclude-from), debugging and
/// connection tuning, --bypass-lock, --umask; abbreviated long options (argparse would
/// expand `--rs` to `--rsh`), clustered or attached short options, a separate value starting
/// with `-`, a repository location, a second `--`, NUL, CR or a newline in any argument.
///
/// The client guard (contrib/guard/borg-relay-guard, `parse_borg_arguments`) enforces the
/// same grammar on T; Tests/Vectors/borg-arguments.json is checked against both. All
/// comparisons are on Unicode scalars, as Python compares strings (Swift's `String ==`
/// would treat canonically equivalent spellings as equal, and graphemes can hide a `=`).
public struct BorgArguments: Sendable, Equatable {
    /// Where the arguments come from.
    public enum Context: Sendable {
        /// `relayctl borg`: extract needs --stdout or --dry-run.
        case request
        /// The relay's restore: borg extract only, into the restore directory.
        case restore
    }

    public let command: String
    /// The options in their full spelling: `--name` or `--name=value`.
    public let options: [String]
    /// The positionals as given (archive, second archive or FILE, paths).
    public let positionals: [String]

    /// The argv that means the same to borg, and leaves no room for reading it otherwise:
    /// the command, the options in full with `=`, then `--` and the positionals.
    public var argv: [String] {
        [command] + options + (positionals.isEmpty ? [] : ["--"] + positionals)
    }

    public static let commands = ["diff", "export-tar", "extract", "info", "list"]

    /// Checks `argv` (after the program name, e.g. `["list", "--short", "::A"]`).
    public static func parse(_ argv: [String], context: Context = .request) throws(OperationError) -> BorgArguments {
        for a in argv where a.unicodeScalars.contains(where: { $0 == "\0" || $0 == "\n" || $0 == "\r" }) {
            throw .invalid("\(show(a)): an argument may not contain NUL, CR or a newline")
        }
        let list = commands.joined(separator: ", ")
        guard let cmd = argv.first else {
            throw .invalid("no borg command: give one of \(list), e.g. list ::ARCHIVE")
        }
        if context == .restore && !same(cmd, "extract") {
            throw .invalid("\(show(cmd)): a restore runs borg extract only")
        }
        guard let command = commands.first(where: { same($0, cmd) }), let table = Self.tables[command] else {
            throw .invalid("\(show(cmd)): not allowed as a borg command from a request; allowed: \(list) (they only read the repository)")
        }
        var options: [String] = [], positionals: [String] = []
        var ended = false
        var i = 1
        while i < argv.count {
            let a = argv[i]
            i += 1
            if ended {
                if same(a, "--") { throw .invalid("'--': only one -- may end the options") }
                positionals.append(a)
                continue
            }
            if same(a, "--") {
                ended = true
                continue
            }
            if same(a, "-") || !starts(a, "-") {
                positionals.append(a)
                continue
            }
            let name: String
            var value: String?
            if starts(a, "--") {
                if let eq = a.unicodeScalars.firstIndex(of: "=") {
                    name = String(a.unicodeScalars[..<eq])
                    value = String(a.unicodeScalars[a.unicodeScalars.index(after: eq)...])
                } else {
                    name = a
                }
                if lookup(table, name) == nil {
                    let spelled = table.map(\.spelling).filter { starts($0, "--") && starts($0, name) }
                        .sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
                    if spelled.count == 1 {
                        throw .invalid("\(show(a)): abbreviated option, borg \(command) would read it as \(spelled[0]); abbreviations are refused on purpose, spell options in full")
                    }
                    if !spelled.isEmpty {
                        throw .invalid("\(show(a)): abbreviated option, borg \(command) would read it as one of \(spelled.joined(separator: ", ")); abbreviations are refused on purpose, spell options in full")
                    }
                    throw .invalid("\(show(a)): borg \(command) has no option \(name)")
                }
            } else {
                name = a
                if lookup(table, name) == nil {
                    let short = String(String.UnicodeScalarView(a.unicodeScalars.prefix(2)))
                    if let s = lookup(table, short) {
                        if s.kind != .flag {
                            throw .invalid("\(show(a)): a value attached to \(short) is refused; give it as \(s.canonical)=VALUE")
                        }
                        throw .invalid("\(show(a)): combined short options are refused; give each option separately")
                    }
                    throw .invalid("\(show(a)): borg \(command) has no option \(name)")
                }
            }
            guard let spec = lookup(table, name) else { throw .invalid("\(show(a)): borg \(command) has no option \(name)") }
            if let refusal = spec.refusal {
                throw .invalid("\(show(a)): borg \(command) option \(name) \(refusal); options from a request may only read the repository")
            }
            if spec.kind == .flag {
                if value != nil { throw .invalid("\(show(a)): borg \(command) option \(name) takes no value") }
                options.append(spec.canonical)
                continue
            }
            var shown = show(a)
            if value == nil {
                guard i < argv.count else { throw .invalid("\(show(a)): borg \(command) option \(name) needs a value") }
                let v = argv[i]
                i += 1
                shown = show(a) + " " + show(v)
                if starts(v, "-") {
                    throw .invalid("\(shown): a separate value may not start with - (borg would read it as an option); write \(spec.canonical)=VALUE")
                }
                value = v
            }
            let v = value ?? ""
            if spec.kind == .count || spec.kind == .positive {
                let digits = v.utf8.count >= 1 && v.utf8.count <= 9 && v.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
                guard digits, let n = Int(v) else {
                    throw .invalid("\(shown): borg \(command) option \(name) needs a whole number")
                }
                if spec.kind == .positive && n < 1 {
                    throw .invalid("\(shown): borg \(command) option \(name) needs a whole number of at least 1")
                }
            }
            if ["--format", "--glob-archives", "--prefix"].contains(where: { same($0, spec.canonical) }), let field = badFormatField(v) {
                throw .invalid("\(shown): the format field \(show("{" + field + "}")) is not a plain key like {path} or {size:8} (attribute and index access are refused)")
            }
            options.append(spec.canonical + "=" + v)
        }

        var rest = positionals[...]
        let listing = command == "list" || command == "info"
        if let location = rest.first {
            rest = rest.dropFirst()
            guard starts(location, "::") else {
                throw .invalid("\(show(location)): borg \(command) takes an archive as ::ARCHIVE, not a repository location (the repository is the client's)")
            }
            let archive = String(String.UnicodeScalarView(location.unicodeScalars.dropFirst(2)))
            if archive.isEmpty && !listing {
                throw .invalid("\(show(location)): borg \(command) needs an archive, e.g. \(command) ::ARCHIVE")
            }
            if !archive.isEmpty && !isArchiveName(archive) {
                throw .invalid("\(show(location)): \(show(archive)) is not an archive name")
            }
        } else if !listing {
            throw .invalid("borg \(command) needs an archive, e.g. \(command) ::ARCHIVE")
        }
        if command == "diff" {
            guard let second = rest.first else {
                throw .invalid("borg diff needs a second archive, e.g. diff ::ARCHIVE1 ARCHIVE2")
            }
            rest = rest.dropFirst()
            if !isArchiveName(second) {
                throw .invalid("\(show(second)): the second archive of borg diff is a bare archive name, e.g. diff ::ARCHIVE1 ARCHIVE2")
            }
        }
        if command == "export-tar" {
            guard let file = rest.first else {
                throw .invalid("borg export-tar needs FILE, and FILE must be - (stdout)")
            }
            rest = rest.dropFirst()
            if !same(file, "-") {
                throw .invalid("\(show(file)): borg export-tar may only write to stdout: FILE must be -")
            }
        }
        if command == "info", let extra = rest.first {
            throw .invalid("\(show(extra)): borg info takes nothing after the archive")
        }
        if rest.contains(where: \.isEmpty) {
            throw .invalid("'': an empty path")
        }
        if command == "extract" && context == .request
            && !options.contains(where: { same($0, "--stdout") || same($0, "--dry-run") }) {
            throw .invalid("borg extract from a request needs --stdout (or --dry-run); to restore files use relayctl restore")
        }
        return BorgArguments(command: command, options: options, positionals: positionals)
    }

    /// The first replacement field of a --format value (or a -a/-P placeholder) that is not a
    /// plain key ({path}, {size:8}, {hostname}), nested ones included: attribute or index
    /// access (`{mtime.__init__.__globals__[os]}`) would let it read borg's memory and
    /// environment on T.
    static func badFormatField(_ format: String) -> String? {
        let s = Array(format.unicodeScalars)
        var i = 0
        while i < s.count {
            if s[i] != "{" {
                i += 1
            } else if i + 1 < s.count && s[i + 1] == "{" {
                i += 2
            } else {
                var j = i + 1
                while j < s.count && !"!:{}".unicodeScalars.contains(s[j]) { j += 1 }
                let field = s[(i + 1)..<j]
                func letter(_ c: Unicode.Scalar) -> Bool { ("a"..."z").contains(c) || ("A"..."Z").contains(c) || c == "_" }
                let plain = field.first.map(letter) == true && field.allSatisfy { letter($0) || ("0"..."9").contains($0) }
                if !plain { return String(String.UnicodeScalarView(field)) }
                i = j
            }
        }
        return nil
    }

    /// An archive name: not empty, at most 200 characters, no `/`, no `::`, not an option.
    static func isArchiveName(_ name: String) -> Bool {
        let n = name.unicodeScalars.count
        let bytes = Array(name.utf8)
        let doubleColon = bytes.indices.dropLast().contains { bytes[$0] == 0x3A && bytes[$0 + 1] == 0x3A }
        return n > 0 && n <= 200 && !name.unicodeScalars.contains("/") && !starts(name, "-") && !doubleColon
    }

    /// An argument as a refusal shows it: quoted, control characters escaped, at most 60
    /// characters (Unicode scalars, as the guard counts them).
    static func show(_ arg: String) -> String {
        var t = String.UnicodeScalarView()
        for s in arg.unicodeScalars {
            switch s {
            case "\0": t.append(contentsOf: "\\0".unicodeScalars)
            case "\n": t.append(contentsOf: "\\n".unicodeScalars)
            case "\r": t.append(contentsOf: "\\r".unicodeScalars)
            default: t.append(s)
            }
        }
        if t.count > 60 {
            t = String.UnicodeScalarView(t.prefix(60))
            t.append("…")
        }
        return "'" + String(t) + "'"
    }

    // MARK: - The grammar

    enum Kind: Sendable { case flag, text, count, positive }

    struct Spec: Sendable {
        let spelling: String
        let canonical: String
        let kind: Kind
        /// Why a request may not give it; nil when allowed.
        let refusal: String?
    }

    static func same(_ a: String, _ b: String) -> Bool { a.utf8.elementsEqual(b.utf8) }
    static func starts(_ a: String, _ prefix: String) -> Bool { a.utf8.starts(with: prefix.utf8) }
    static func lookup(_ table: [Spec], _ name: String) -> Spec? { table.first { same($0.spelling, name) } }

    private static let runs = "runs a program on the client"
    private static let debug = "is a debugging option"
    private static let link = "tunes the connection to the repository"
    private static let reads = "reads a file on the client"

    private static func specs(_ entries: [([String], Kind, String?)]) -> [Spec] {
        entries.flatMap { names, kind, refusal in
            let canonical = names.first { $0.hasPrefix("--") } ?? names[0]
            return names.map { Spec(spelling: $0, canonical: canonical, kind: kind, refusal: refusal) }
        }
    }

    /// Options of every command (borg 1.2 and 1.4, "common options").
    private static let common: [([String], Kind, String?)] = [
        (["-h", "--help"], .flag, "only prints borg's help"),
        (["--critical"], .flag, nil), (["--error"], .flag, nil), (["--warning"], .flag, nil),
        (["--info", "-v", "--verbose"], .flag, nil),
        (["--debug"], .flag, debug), (["--debug-topic"], .text, debug),
        (["-p", "--progress"], .flag, nil), (["--iec"], .flag, nil), (["--log-json"], .flag, nil),
        (["--lock-wait"], .count, nil), (["--bypass-lock"], .flag, "bypasses the repository lock"),
        (["--show-version"], .flag, nil), (["--show-rc"], .flag, nil),
        (["--umask"], .text, "sets the mode of files borg creates"),
        (["--remote-path"], .text, runs),
        (["--remote-ratelimit"], .text, link), (["--upload-ratelimit"], .text, link),
        (["--remote-buffer"], .text, link), (["--upload-buffer"], .text, link),
        (["--consider-part-files"], .flag, nil),
        (["--debug-profile"], .text, "writes a file at a chosen path on the client"),
        (["--rsh"], .text, runs),
    ]
    private static let archiveFilters: [([String], Kind, String?)] = [
        (["-P", "--prefix"], .text, nil), (["-a", "--glob-archives"], .text, nil), (["--sort-by"], .text, nil),
        (["--first"], .positive, nil), (["--last"], .positive, nil),
    ]
    private static let patterns: [([String], Kind, String?)] = [
        (["-e", "--exclude"], .text, nil), (["--pattern"], .text, nil),
        (["--exclude-from"], .text, reads), (["--patterns-from"], .text, reads),
    ]
    private static let numeric: [([String], Kind, String?)] = [
        (["--numeric-owner"], .flag, nil), (["--numeric-ids"], .flag, nil),
    ]

    /// Every option of each command that borg 1.2 or 1.4 knows, allowed or not (the refused
    /// ones are listed so that an abbreviation of them is recognised and named).
    static let tables: [String: [Spec]] = [
        "list": specs(common + [
            (["--consider-checkpoints"], .flag, nil), (["--short"], .flag, nil), (["--format"], .text, nil),
            (["--json"], .flag, nil), (["--json-lines"], .flag, nil),
        ] + archiveFilters + patterns),
        "info": specs(common + [(["--json"], .flag, nil)] + archiveFilters),
        "diff": specs(common + numeric + [
            (["--same-chunker-params"], .flag, nil), (["--sort"], .flag, nil), (["--sort-by"], .text, nil),
            (["--content-only"], .flag, nil), (["--json-lines"], .flag, nil),
        ] + patterns),
        "extract": specs(common + [(["--list"], .flag, nil), (["-n", "--dry-run"], .flag, nil)] + numeric + [
            (["--nobsdflags"], .flag, nil), (["--noflags"], .flag, nil), (["--noacls"], .flag, nil),
            (["--noxattrs"], .flag, nil), (["--stdout"], .flag, nil), (["--sparse"], .flag, nil),
        ] + patterns + [(["--strip-components"], .count, nil)]),
        "export-tar": specs(common + [(["--tar-filter"], .text, runs), (["--list"], .flag, nil)] + patterns
            + [(["--strip-components"], .count, nil)]),
    ]
}
