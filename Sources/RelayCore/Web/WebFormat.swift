import Foundation

/// How the status page writes sizes, durations and times. Pure: the caller gives `now`.
public enum WebFormat {
    /// IEC units, three significant figures: "512 B", "1.50 KiB", "23.4 MiB", "1.02 TiB".
    public static func bytes(_ n: Int64) -> String {
        if n < 0 { return "-" + bytes(n == Int64.min ? Int64.max : -n) }
        if n < 1024 { return "\(n) B" }
        let units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var v = Double(n) / 1024
        var i = 0
        while v >= 1024 && i < units.count - 1 {
            v /= 1024
            i += 1
        }
        let text = v >= 100 ? String(format: "%.0f", v) : v >= 10 ? String(format: "%.1f", v) : String(format: "%.2f", v)
        return "\(text) \(units[i])"
    }

    /// "0.4 s", "12 s", "3 min 5 s", "2 h 7 min", "3 d 4 h".
    public static func duration(_ seconds: TimeInterval) -> String {
        guard seconds.isFinite else { return "–" }
        let s = max(0, seconds)
        if s < 10 { return String(format: "%.1f s", s) }
        let whole = Int(s.rounded())
        if whole < 60 { return "\(whole) s" }
        if whole < 3600 { return "\(whole / 60) min \(whole % 60) s" }
        if whole < 86_400 { return "\(whole / 3600) h \((whole % 3600) / 60) min" }
        return "\(whole / 86_400) d \((whole % 86_400) / 3600) h"
    }

    /// "just now", "5 min ago", "3 h ago", "2 d ago"; "in 4 h" for the future.
    public static func relative(_ date: Date, now: Date) -> String {
        let d = now.timeIntervalSince(date)
        let a = abs(d)
        let text: String
        if a < 45 { return "just now" }
        if a < 3600 { text = "\(max(1, Int((a / 60).rounded()))) min" }
        else if a < 86_400 { text = "\(Int((a / 3600).rounded(.down))) h" }
        else { text = "\(Int((a / 86_400).rounded(.down))) d" }
        return d >= 0 ? "\(text) ago" : "in \(text)"
    }

    /// ISO 8601 in UTC, for `<time datetime>` (the page's script shows it in the browser's zone).
    public static func iso(_ date: Date) -> String {
        var f = Date.ISO8601FormatStyle()
        f.timeZone = TimeZone(identifier: "UTC")!
        return date.formatted(f)
    }

    /// "2026-12-03 06:14 UTC": what the page shows before (or without) its script.
    public static func absolute(_ date: Date) -> String {
        // gmtime_r: a Calendar per call made this the costliest part of a 200-client page.
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var tm = tm()
        guard gmtime_r(&t, &tm) != nil else { return "?" }
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(tm.tm_year + 1900)-\(two(tm.tm_mon + 1))-\(two(tm.tm_mday)) \(two(tm.tm_hour)):\(two(tm.tm_min)) UTC"
    }
}

/// A time as the page shows it: `<time datetime="iso" title="absolute">relative</time>`.
public struct TimeText: Sendable, Equatable {
    public var iso: String
    public var absolute: String
    public var relative: String

    public init(_ date: Date, now: Date) {
        iso = WebFormat.iso(date)
        absolute = WebFormat.absolute(date)
        relative = WebFormat.relative(date, now: now)
    }
}
