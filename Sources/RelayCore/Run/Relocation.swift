import Foundation

/// borg's relocation check on the client: borg remembers where it last reached a
/// repository (`~/.config/borg/security/REPO_ID/location` under its BORG_BASE_DIR) and,
/// when it is reached under another location, asks "was previously located at …, continue?
/// [yN]". Through the relay nobody can answer (stdin carries the passphrase and then ends),
/// so borg aborts, often with a traceback. `relocated_ok = true` answers yes.
public struct RelocationNotice: Equatable, Sendable {
    /// Where borg reaches the repository now (the relay's `ssh://borg-relay/REPO`).
    public let current: String
    /// Where borg knew it before (a direct `ssh://…` or local path, say).
    public let previous: String

    /// Finds borg's question in one line of its stderr: a `--log-json` line
    /// (`"type": "question_prompt"`, msgid BORG_RELOCATED_REPO_ACCESS_IS_OK) or plain text.
    public static func find(in line: String) -> RelocationNotice? {
        guard line.contains("was previously located at") else { return nil }
        var text = line
        if line.hasPrefix("{"),
           let obj = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
           let message = obj["message"] as? String {
            text = message
        }
        // "Warning: The repository at location NEW was previously located at OLD\nDo you want to continue? [yN] "
        guard let at = text.range(of: "repository at location "),
              let was = text.range(of: " was previously located at ", range: at.upperBound..<text.endIndex) else {
            return nil
        }
        let current = String(text[at.upperBound..<was.lowerBound])
        var rest = text[was.upperBound...]
        if let end = rest.firstIndex(where: { $0 == "\n" || $0 == "\r" }) { rest = rest[..<end] }
        let previous = rest.trimmingCharacters(in: .whitespaces)
        guard !current.isEmpty, !previous.isEmpty else { return nil }
        return RelocationNotice(current: current, previous: previous)
    }

    /// The run's one-line error: what happened, both locations, and the fix.
    public func message(client: String) -> String {
        "borg on the client knew this repository as \(previous) and now reaches it as \(current) "
            + "(did the client back up to it directly before?), and stopped to ask whether to continue: if it is the same repository, "
            + "set relocated_ok = true in [clients.\(client)] for one run (borg then records the new location) and remove it again"
    }
}
