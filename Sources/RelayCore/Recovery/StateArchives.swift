import Foundation

/// The state repository's archive names, `relay-state-NAME-YYYYMMDDTHHMMSSZ`, and which
/// one a recovery takes (a value, no I/O).
public enum StateArchives {
    public static let prefix = "relay-state-"

    public static func name(relay: String, at date: Date) -> String {
        prefix + relay + "-" + stamp(date)
    }

    static func stamp(_ date: Date) -> String {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(identifier: "UTC")!
        let d = c.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        return String(format: "%04d%02d%02dT%02d%02d%02dZ", d.year!, d.month!, d.day!, d.hour!, d.minute!, d.second!)
    }

    /// The relay and time an archive name stands for; nil for any other name.
    public static func parse(_ name: String) -> (relay: String, stamp: String)? {
        guard name.hasPrefix(prefix), name.count > prefix.count + 17 else { return nil }
        let rest = name.dropFirst(prefix.count)
        let stamp = String(rest.suffix(16))
        let relay = String(rest.dropLast(17))
        guard rest.dropLast(16).hasSuffix("-"), stamp.wholeMatch(of: /[0-9]{8}T[0-9]{6}Z/) != nil, RelayName.isValid(relay) else {
            return nil
        }
        return (relay, stamp)
    }

    /// The newest bundle's archive among `names` (of `relay` when given). Several relays'
    /// bundles and no `relay`: an error naming them, since taking another relay's state
    /// would be wrong.
    public static func newest(_ names: [String], relay: String?, repository: String) throws(RecoveryError) -> String {
        let bundles = names.compactMap { n in parse(n).map { (name: n, relay: $0.relay, stamp: $0.stamp) } }
        guard !bundles.isEmpty else {
            throw .noBundle(repository: repository, detail: "it holds no relay-state-… archive (\(names.count) other archive(s)); is this the [relay] state_repository, and did a state backup ever succeed?")
        }
        let relays = Set(bundles.map(\.relay))
        let chosen: String
        if let relay {
            guard relays.contains(relay) else {
                throw .noBundle(repository: repository, detail: "it holds no bundle of relay '\(relay)' (it holds: \(relays.sorted().joined(separator: ", ")))")
            }
            chosen = relay
        } else {
            guard relays.count == 1 else {
                throw .noBundle(repository: repository, detail: "it holds the bundles of several relays (\(relays.sorted().joined(separator: ", "))); name one with --relay")
            }
            chosen = relays.first!
        }
        return bundles.filter { $0.relay == chosen }.max { ($0.stamp, $0.name) < ($1.stamp, $1.name) }!.name
    }
}
