import Foundation

/// A bar chart as an SVG element, drawn on the server (the status page carries no chart
/// library). It is an image with a text alternative: `<title>` and `<desc>` for the chart,
/// a `<title>` per bar (its label and value, which browsers show on hover and screen
/// readers read), and the page puts the same figures in a table next to it. Every text is
/// escaped. Pure: the same bars give the same bytes.
public struct SVGBarChart: Sendable {
    public struct Bar: Sendable, Equatable {
        public var label: String
        public var value: Double
        /// A CSS class for the bar (the run's state), from a fixed set the page styles.
        public var style: String

        public init(label: String, value: Double, style: String = "bar") {
            self.label = label
            self.value = value
            self.style = style
        }
    }

    public var id: String
    public var title: String
    public var width: Int
    public var height: Int
    /// How a value reads in a bar's title and the axis (bytes, seconds, …).
    public var format: @Sendable (Double) -> String

    /// The widest a bar's slot gets (the bar and its gap), in the SVG's units.
    public var maxSlot: Double

    public init(id: String, title: String, width: Int = 600, height: Int = 160, maxSlot: Double = .infinity,
                format: @escaping @Sendable (Double) -> String) {
        self.maxSlot = max(1, maxSlot)
        self.id = id
        self.title = title
        self.width = max(60, width)
        self.height = max(40, height)
        self.format = format
    }

    public func render(_ bars: [Bar]) -> String {
        let titleID = "\(Self.escape(id))-title"
        let descID = "\(Self.escape(id))-desc"
        let top = bars.map(\.value).filter { $0.isFinite }.max() ?? 0
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"\(Self.escape(id))\" viewBox=\"0 0 \(width) \(height)\" role=\"img\" aria-labelledby=\"\(titleID) \(descID)\">"
        out += "<title id=\"\(titleID)\">\(Self.escape(title))</title>"
        let summary = bars.isEmpty
            ? "No data yet."
            : "\(bars.count) values from \(Self.escape(bars.first!.label)) to \(Self.escape(bars.last!.label)); the largest is \(Self.escape(format(top)))."
        out += "<desc id=\"\(descID)\">\(summary)</desc>"
        guard !bars.isEmpty else {
            out += "<text x=\"\(width / 2)\" y=\"\(height / 2)\" text-anchor=\"middle\" class=\"empty\">no data yet</text></svg>"
            return out
        }
        let axis = 14  // room for the top value's label
        let plot = Double(height - axis)
        // Few bars stay bars (at most maxSlot wide each), from the left.
        let slot = min(Double(width) / Double(bars.count), maxSlot)
        let gap = slot > 4 ? 1.0 : 0.0
        out += "<text x=\"2\" y=\"11\" class=\"axis\">\(Self.escape(format(top)))</text>"
        out += "<line x1=\"0\" y1=\"\(axis)\" x2=\"\(width)\" y2=\"\(axis)\" class=\"grid\"/>"
        for (i, bar) in bars.enumerated() {
            let v = bar.value.isFinite ? max(0, bar.value) : 0
            let h = top > 0 ? (v / top) * plot : 0
            let x = Double(i) * slot
            out += "<rect class=\"\(Self.escape(bar.style))\" x=\"\(Self.fixed(x))\" y=\"\(Self.fixed(Double(height) - h))\" width=\"\(Self.fixed(max(0.5, slot - gap)))\" height=\"\(Self.fixed(h))\">"
            let shown = bar.value.isFinite ? format(bar.value) : "no value"
            out += "<title>\(Self.escape(bar.label)): \(Self.escape(shown))</title></rect>"
        }
        out += "</svg>"
        return out
    }

    /// Two decimals at most, no exponent: SVG reads it everywhere.
    static func fixed(_ v: Double) -> String {
        let r = (v * 100).rounded() / 100
        if r == r.rounded() { return String(Int(r)) }
        return String(format: "%.2f", r)
    }

    /// Text and attribute values for HTML and SVG: & < > " ' escaped. Works on the UTF-8
    /// bytes (every escaped character is ASCII), and returns the string itself when there is
    /// nothing to escape: the fleet page escapes thousands of labels.
    public static func escape(_ s: String) -> String {
        var needs = false
        for b in s.utf8 where b == 0x26 || b == 0x3C || b == 0x3E || b == 0x22 || b == 0x27 {
            needs = true
            break
        }
        guard needs else { return s }
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count + 16)
        for b in s.utf8 {
            switch b {
            case 0x26: out.append(contentsOf: Array("&amp;".utf8))
            case 0x3C: out.append(contentsOf: Array("&lt;".utf8))
            case 0x3E: out.append(contentsOf: Array("&gt;".utf8))
            case 0x22: out.append(contentsOf: Array("&quot;".utf8))
            case 0x27: out.append(contentsOf: Array("&#39;".utf8))
            default: out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
