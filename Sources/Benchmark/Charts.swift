import Foundation

/// Small SVG charts for benchmark reports: bars per category and lines over an index, with axes,
/// labels and a legend, readable in any browser.
public enum Charts {
    public struct Series: Sendable {
        public var name: String
        public var values: [Double]

        public init(name: String, values: [Double]) {
            self.name = name
            self.values = values
        }
    }

    static let palette = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]
    static let width = 720.0, height = 400.0, left = 70.0, right = 160.0, top = 50.0, bottom = 60.0

    /// Grouped bars: one group per label, one bar per series.
    public static func bars(title: String, labels: [String], series: [Series], yLabel: String, reference: Double? = nil) -> String {
        let maxValue = max(series.flatMap(\.values).max() ?? 1, reference ?? 0) * 1.15
        var body = frame(title: title, yLabel: yLabel, maxValue: maxValue)
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        let groupWidth = plotWidth / Double(max(labels.count, 1))
        let barWidth = groupWidth * 0.8 / Double(max(series.count, 1))
        for (g, label) in labels.enumerated() {
            let x0 = left + Double(g) * groupWidth + groupWidth * 0.1
            for (s, item) in series.enumerated() where g < item.values.count {
                let value = item.values[g]
                let h = plotHeight * value / maxValue
                body += "<rect class=\"bar\" data-series=\"\(escape(item.name))\" x=\"\(f(x0 + Double(s) * barWidth))\" y=\"\(f(top + plotHeight - h))\" width=\"\(f(barWidth * 0.95))\" height=\"\(f(h))\" fill=\"\(palette[s % palette.count])\"><title>\(escape(item.name)) \(escape(label)): \(String(format: "%.2f", value))</title></rect>\n"
            }
            body += "<text x=\"\(f(x0 + groupWidth * 0.4))\" y=\"\(f(height - bottom + 18))\" text-anchor=\"middle\" font-size=\"11\">\(escape(label))</text>\n"
        }
        if let reference {
            let y = top + plotHeight - plotHeight * reference / maxValue
            body += "<line x1=\"\(f(left))\" x2=\"\(f(width - right))\" y1=\"\(f(y))\" y2=\"\(f(y))\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>\n"
        }
        return document(body + legend(series.map(\.name)))
    }

    /// Lines over x = 1…n, one per series.
    public static func lines(title: String, xLabel: String, series: [Series], yLabel: String, maxValue: Double = 1) -> String {
        var body = frame(title: title, yLabel: yLabel, maxValue: maxValue)
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        let count = series.map(\.values.count).max() ?? 1
        func x(_ i: Int) -> Double { left + (count > 1 ? plotWidth * Double(i) / Double(count - 1) : plotWidth / 2) }
        for i in 0..<count {
            body += "<text x=\"\(f(x(i)))\" y=\"\(f(height - bottom + 18))\" text-anchor=\"middle\" font-size=\"11\">\(i + 1)</text>\n"
        }
        body += "<text x=\"\(f(left + plotWidth / 2))\" y=\"\(f(height - 12))\" text-anchor=\"middle\" font-size=\"12\">\(escape(xLabel))</text>\n"
        for (s, item) in series.enumerated() {
            let points = item.values.enumerated().map { "\(f(x($0.offset))),\(f(top + plotHeight - plotHeight * $0.element / maxValue))" }
            body += "<polyline class=\"line\" data-series=\"\(escape(item.name))\" fill=\"none\" stroke=\"\(palette[s % palette.count])\" stroke-width=\"2\" points=\"\(points.joined(separator: " "))\"/>\n"
        }
        return document(body + legend(series.map(\.name)))
    }

    private static func frame(title: String, yLabel: String, maxValue: Double) -> String {
        let plotHeight = height - top - bottom
        var out = "<rect width=\"\(f(width))\" height=\"\(f(height))\" fill=\"white\"/>\n"
        out += "<text x=\"\(f(width / 2))\" y=\"28\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">\(escape(title))</text>\n"
        for i in 0...4 {
            let value = maxValue * Double(i) / 4, y = top + plotHeight - plotHeight * Double(i) / 4
            out += "<line x1=\"\(f(left))\" x2=\"\(f(width - right))\" y1=\"\(f(y))\" y2=\"\(f(y))\" stroke=\"#ddd\"/>\n"
            out += "<text x=\"\(f(left - 6))\" y=\"\(f(y + 4))\" text-anchor=\"end\" font-size=\"11\">\(String(format: "%.2f", value))</text>\n"
        }
        out += "<text transform=\"translate(16 \(f(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">\(escape(yLabel))</text>\n"
        return out
    }

    private static func legend(_ names: [String]) -> String {
        names.enumerated().map { i, name in
            let y = top + Double(i) * 20
            return "<rect x=\"\(f(width - right + 15))\" y=\"\(f(y))\" width=\"12\" height=\"12\" fill=\"\(palette[i % palette.count])\"/><text x=\"\(f(width - right + 32))\" y=\"\(f(y + 10))\" font-size=\"12\">\(escape(name))</text>\n"
        }.joined()
    }

    private static func document(_ body: String) -> String {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(f(width))\" height=\"\(f(height))\" viewBox=\"0 0 \(f(width)) \(f(height))\" font-family=\"sans-serif\">\n\(body)</svg>\n"
    }

    private static func f(_ value: Double) -> String { String(format: "%.1f", value) }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}

extension BenchmarkMetrics {
    /// The report's charts, by file name: speedup per task, accepted-length histogram, CTAR curves.
    public static func charts(_ run: BenchmarkRun, baseline: String = "plain") -> [String: String] {
        let rows = groups(run, baseline: baseline)
        let speculative = run.decoders.filter { $0 != baseline }
        let taskNames = rows.map(\.group).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        var charts: [String: String] = [:]
        charts["speedup.svg"] = Charts.bars(
            title: "Speedup over \(baseline) decoding per task", labels: taskNames,
            series: speculative.map { d in
                Charts.Series(name: d, values: taskNames.map { t in rows.first { $0.group == t && $0.decoder == d }?.speedup ?? 0 })
            },
            yLabel: "speedup (×)", reference: 1)
        let histograms = speculative.map { d -> Charts.Series in
            var counts: [Double] = []
            for r in run.records where r.decoder == d {
                if counts.count < r.acceptedDrafts.count { counts += Array(repeating: 0, count: r.acceptedDrafts.count - counts.count) }
                for (a, n) in r.acceptedDrafts.enumerated() { counts[a] += Double(n) }
            }
            let total = counts.reduce(0, +)
            return Charts.Series(name: d, values: counts.map { total > 0 ? $0 / total : 0 })
        }
        let lengths = (1...max(1, histograms.map(\.values.count).max() ?? 1)).map(String.init)
        charts["accepted-length.svg"] = Charts.bars(
            title: "Tokens committed per round (share of rounds)", labels: lengths, series: histograms, yLabel: "share of rounds")
        charts["ctar.svg"] = Charts.lines(
            title: "CTAR(w): share of rounds committing more than w tokens", xLabel: "w",
            series: speculative.compactMap { d in
                rows.first { $0.group == "overall" && $0.decoder == d }.map { Charts.Series(name: d, values: $0.ctar) }
            },
            yLabel: "share of rounds")
        return charts
    }
}
