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
    public static func parse(_ name: String) -> (relay: String, stamp: String, date: Date)? {
        guard name.hasPrefix(prefix), name.count > prefix.count + 17 else { return nil }
        let rest = name.dropFirst(prefix.count)
        let stamp = String(rest.suffix(16))
        let relay = String(rest.dropLast(17))
        guard rest.dropLast(16).hasSuffix("-"), stamp.wholeMatch(of: /[0-9]{8}T[0-9]{6}Z/) != nil, RelayName.isValid(relay),
              let date = date(stamp) else {
            return nil
        }
        return (relay, stamp, date)
    }

    /// The time a stamp stands for; nil unless it is a real UTC time (no 13th month, no 25th hour).
    static func date(_ stamp: String) -> Date? {
        let digits = stamp.filter(\.isNumber).map { Int(String($0))! }
        guard digits.count == 14 else { return nil }
        func n(_ i: Int, _ len: Int) -> Int { digits[i..<(i + len)].reduce(0) { $0 * 10 + $1 } }
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(identifier: "UTC")!
        let parts = DateComponents(year: n(0, 4), month: n(4, 2), day: n(6, 2), hour: n(8, 2), minute: n(10, 2), second: n(12, 2))
        guard let d = c.date(from: parts), self.stamp(d) == stamp else { return nil }
        return d
    }

    /// Why an archive's name does not belong to a bundle whose authenticated header says
    /// `relay` and `created` (a bundle is stored under the name made from the same moment);
    /// nil when it does.
    public static func mismatch(archive: String, relay: String, created: Date) -> String? {
        guard let (nameRelay, stamp, named) = parse(archive) else {
            return "is not named as a state bundle is (\(archive))"
        }
        if nameRelay != relay { return "is named for relay '\(nameRelay)' but holds the state of relay '\(relay)'" }
        if abs(named.timeIntervalSince(created)) > 2 {
            return "is named for \(stamp) but was made at \(self.stamp(created))"
        }
        return nil
    }

    /// The bundles' archives of one relay, newest first: of `relay` when given; with no
    /// `relay` and several relays' bundles, an error naming them (taking another relay's
    /// state would be wrong).
    /// Names stamped more than a day in the future are left out: no relay made them (a
    /// name chosen to be taken first).
    public static func candidates(_ names: [String], relay: String?, repository: String, now: Date = Date()) throws(RecoveryError) -> [String] {
        let horizon = now.addingTimeInterval(86_400)
        let bundles = names.compactMap { n in
            parse(n).flatMap { p in p.date <= horizon ? (name: n, relay: p.relay, stamp: p.stamp) : nil }
        }
        guard !bundles.isEmpty else {
            let future = names.filter { parse($0) != nil }
            if !future.isEmpty {
                throw .noBundle(repository: repository, detail: "its only relay-state-… archives are named more than a day in the future (\(future.sorted().joined(separator: ", "))): no relay made them; check the server's and this host's clocks, and who writes to the repository")
            }
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
        return bundles.filter { $0.relay == chosen }.sorted { ($0.stamp, $0.name) > ($1.stamp, $1.name) }.map(\.name)
    }
}
