import Foundation

/// The SSH server a client (T) runs, as far as its key line is concerned: OpenSSH, or
/// Dropbear, whose authorized_keys knows fewer options and refuses a key whose line has
/// one it does not know ("Bad public key options").
public enum ClientSSHD: String, Sendable, Equatable, CaseIterable {
    case openssh
    case dropbear

    /// From the server's identification ("SSH-2.0-dropbear_2022.83", "OpenSSH_9.2p1 …"):
    /// Dropbear if it names dropbear, else OpenSSH's line (the one most servers take).
    public init(software: String) {
        self = software.lowercased().contains("dropbear") ? .dropbear : .openssh
    }

    /// The software part of an identification string: "SSH-2.0-dropbear_2022.83" →
    /// "dropbear_2022.83" (whitespace and control characters trimmed; nil when empty).
    public static func software(banner: String) -> String? {
        var text = Substring(banner)
        if text.hasPrefix("SSH-"), let dash = text.dropFirst(4).firstIndex(of: "-") {
            text = text[text.index(after: dash)...]
        }
        let clean = String(text.unicodeScalars.filter { $0.value >= 0x20 && $0.value < 0x7f })
            .trimmingCharacters(in: .whitespaces)
        return clean.isEmpty ? nil : String(clean.prefix(120))
    }
}
