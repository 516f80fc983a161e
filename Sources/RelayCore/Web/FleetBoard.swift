import Foundation

/// A client's state on the fleet page, worst first (the order of `allCases`).
public enum ClientHealth: String, Sendable, Codable, CaseIterable, Comparable {
    case tamperAlarm = "tamper alarm"
    case failed
    case overdue
    case checkFailed = "check failed"
    case skipped
    case running
    case noBackupYet = "no backup yet"
    case ok

    var rank: Int { Self.allCases.firstIndex(of: self)! }

    public static func < (a: ClientHealth, b: ClientHealth) -> Bool { a.rank < b.rank }

    /// The one state shown for a client. A tamper alarm outranks everything (it stays until
    /// the operator clears it); then the last backup's failure, being overdue, the last
    /// check's failure, the last backup skipped (offline); a client with none of those is
    /// running when a run of it is going on, else ok, or "no backup yet" before its first.
    public static func of(lastBackup: RunState?, lastCheck: RunState?, tamper: Bool, overdue: Bool,
                          running: Bool) -> ClientHealth {
        if tamper { return .tamperAlarm }
        if lastBackup == .failed || lastBackup == .interrupted { return .failed }
        if overdue { return .overdue }
        if lastCheck == .failed || lastCheck == .interrupted { return .checkFailed }
        if lastBackup == .skipped { return .skipped }
        if running { return .running }
        if lastBackup == nil || lastBackup == .cancelled { return .noBackupYet }
        return .ok
    }
}

/// The fleet page's order: worst state first, then by name, so the same fleet always lists
/// the same way.
public enum FleetBoard {
    public static func sorted<Row>(_ rows: [Row], health: (Row) -> ClientHealth, name: (Row) -> String) -> [Row] {
        rows.sorted { a, b in
            let (ha, hb) = (health(a), health(b))
            return ha != hb ? ha < hb : name(a) < name(b)
        }
    }
}
