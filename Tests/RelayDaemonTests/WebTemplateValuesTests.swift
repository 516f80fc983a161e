import Foundation
import Mustache
import Testing
@testable import RelayCore
@testable import RelayDaemon

/// The fleet page's values answer the template directly (no Mirror): every stored property
/// must be answered, with the same value Mirror would give.
@Suite("Status page template values: every field answered without Mirror")
struct WebTemplateValuesTests {
    static func check(_ value: some MustacheParent) {
        for child in Mirror(reflecting: value).children {
            guard let label = child.label else { continue }
            let direct = value.child(named: label)
            #expect(String(describing: direct.map { $0 } as Any) == String(describing: unwrap(child.value) as Any),
                    "\(type(of: value)).\(label)")
            #expect(direct != nil || unwrap(child.value) == nil, "\(type(of: value)).\(label) is not answered")
        }
        #expect(value.child(named: "noSuchField") == nil)
    }

    static func unwrap(_ v: Any) -> Any? {
        let m = Mirror(reflecting: v)
        guard m.displayStyle == .optional else { return v }
        return m.children.first?.value
    }

    @Test("PageFrame, FleetPageView, FleetRowView, StripCellView, TimeText and CountView")
    func everyField() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let t = TimeText(now, now: now)
        var row = FleetRowView(name: "web1", health: "ok", healthClass: "ok", server: "vault",
                               strip: [StripCellView(mark: "success", label: "x")], stripHTML: "<li></li>", stripSummary: "s")
        row.lastSuccess = t
        row.lastRun = "r"
        row.lastRunState = "succeeded"
        row.lastError = "e"
        row.lastOriginal = "1 B"
        row.lastDeduplicated = "2 B"
        row.lastArchive = "a"
        row.nextRun = t
        row.schedule = "0 2 * * *"
        row.lastCheck = "passed"
        row.lastCheckClass = "ok"
        row.current = "c"
        row.currentRun = "cr"
        let page = FleetPageView(relay: "r", generated: t, running: 1, queued: 2, maxParallel: 3, clientCount: 4,
                                 counts: [CountView(label: "ok", cssClass: "ok", count: 1)], rows: [row])
        var frame = PageFrame(title: "t", relay: "r", user: "u", csrf: "c", canAct: true, refresh: 5)
        frame.fleet = page
        frame.message = MessageView(heading: "h", text: "x", cssClass: "c", back: nil)
        Self.check(frame)
        Self.check(page)
        Self.check(row)
        Self.check(row.strip[0])
        Self.check(t)
        Self.check(page.counts[0])
        // And with the optionals empty.
        Self.check(FleetRowView(name: "web2", health: "failed", healthClass: "failed", server: "vault", strip: [], stripHTML: "", stripSummary: ""))
    }
}
