import Benchmark
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing

@Suite("Spec-Bench harness")
struct BenchmarkTests {
    @Test("the real suite parses: 480 questions in 13 categories, 80 with two turns")
    func realSuite() throws {
        let questions = try SpecBench.load(path: Golden.sharedDirectory.appendingPathComponent("data/spec-bench/question.jsonl").path)
        #expect(questions.count == 480)
        #expect(Set(questions.map(\.category)).count == 13)
        #expect(questions.filter { $0.turns.count == 2 }.count == 80)
        #expect(Set(questions.map(\.taskGroup)) == Set(SpecBenchQuestion.taskGroups))
        let picked = SpecBench.select(questions, limit: 10, categories: ["mt_bench", "qa"])
        #expect(picked.count == 20)
        #expect(Set(picked.filter { $0.taskGroup == "mt_bench" }.map(\.category)).count == 8)  // round-robin over categories
    }

    @Test("a malformed line is reported with its line number")
    func malformed() {
        let text = """
        {"question_id": 1, "category": "qa", "turns": ["a"]}

        {"question_id": 2, "category": "qa", "turns": "not a list"}
        """
        do {
            _ = try SpecBench.parse(text, path: "q.jsonl")
            Issue.record("accepted a malformed line")
        } catch {
            #expect("\(error)".hasPrefix("q.jsonl:3:"))
        }
        #expect(throws: SpecBenchError.self) { try SpecBench.parse("{\"question_id\": 3, \"category\": \"qa\", \"turns\": []}") }
    }

    static func record(_ id: Int, _ group: String, _ decoder: String, tokens: Int, seconds: Double, accepted: [Int] = [],
                       ids: [Int32]? = nil) -> TurnRecord {
        TurnRecord(questionID: id, category: group, taskGroup: group, turn: 0, decoder: decoder, promptTokens: 10,
                   tokenIDs: ids ?? Array(repeating: 7, count: tokens), seconds: seconds, rounds: accepted.reduce(0, +),
                   acceptedDrafts: accepted, draftSeconds: seconds / 4, verifySeconds: seconds / 2)
    }

    static let run = BenchmarkRun(settings: [:], decoders: ["plain", "kangaroo"], records: [
        record(1, "qa", "plain", tokens: 100, seconds: 2),
        record(1, "qa", "kangaroo", tokens: 100, seconds: 1, accepted: [10, 20, 10]),  // rounds commit 1, 2, 3 tokens
        record(2, "rag", "plain", tokens: 50, seconds: 1),
        record(2, "rag", "kangaroo", tokens: 50, seconds: 1, accepted: [30, 0, 0]),
    ])

    @Test("metrics from hand-made records: tokens/s, speedup as a ratio of means, mean accepted tokens, CTAR")
    func metrics() throws {
        let rows = BenchmarkMetrics.groups(Self.run)
        let qa = try #require(rows.first { $0.group == "qa" && $0.decoder == "kangaroo" })
        #expect(qa.tokensPerSecond == 100)
        #expect(qa.speedup == 2)
        let expectedMean: Double = (10.0 * 1 + 20.0 * 2 + 10.0 * 3) / 40.0
        #expect(qa.meanAcceptedTokens == expectedMean)
        #expect(qa.ctar == [30.0 / 40, 10.0 / 40])
        #expect(qa.draftShare.map { abs($0 - 1.0 / 3) < 1e-12 } == true)
        let overall = try #require(rows.first { $0.group == "overall" && $0.decoder == "kangaroo" })
        // (150 tokens / 2 s) over (150 tokens / 3 s): the ratio of the means, not the mean of ratios.
        #expect(overall.speedup == 1.5)
        let overallMean: Double = (10.0 + 40.0 + 30.0 + 30.0) / 70.0
        #expect(overall.meanAcceptedTokens == overallMean)
    }

    @Test("the speedup after the prefill leaves each record's prefill time out, and needs it everywhere")
    func decodeSpeedup() throws {
        func withPrefill(_ record: TurnRecord, _ prefill: Double?) -> TurnRecord {
            var copy = record
            copy.prefillSeconds = prefill
            return copy
        }
        // qa: plain 100 tokens in 2 − 1 s, kangaroo 100 in 1 − 0.5 s; rag: 50 in 1 − 0.5 s each.
        var timed = Self.run
        timed.records = zip(Self.run.records, [1.0, 0.5, 0.5, 0.5]).map { withPrefill($0, $1) }
        let rows = BenchmarkMetrics.groups(timed)
        let qa = try #require(rows.first { $0.group == "qa" && $0.decoder == "kangaroo" })
        #expect(qa.speedup == 2)
        #expect(qa.decodeSpeedup == 2)
        let overall = try #require(rows.first { $0.group == "overall" && $0.decoder == "kangaroo" })
        // (150 tokens / 1 s) over (150 tokens / 1.5 s).
        #expect(overall.decodeSpeedup == 1.5)
        // A longer plain prefill (1.5 s of qa's 2 s) leaves plain 150 tokens in 1 s as well: no gain after
        // the prefill, though the whole times still give 1.5×.
        timed.records[0].prefillSeconds = 1.5
        let longer = try #require(BenchmarkMetrics.groups(timed).first { $0.group == "overall" && $0.decoder == "kangaroo" })
        #expect(longer.speedup == 1.5)
        #expect(longer.decodeSpeedup == 1)
        #expect(BenchmarkMetrics.markdown(timed).contains("| overall | kangaroo | 2 | 75.0 | 1.50× | 1.00× |"))
        // Older results without prefill times: no such ratio, a dash in the table.
        #expect(BenchmarkMetrics.groups(Self.run).allSatisfy { $0.decodeSpeedup == nil })
        #expect(BenchmarkMetrics.markdown(Self.run).contains("| overall | kangaroo | 2 | 75.0 | 1.50× | – |"))
    }

    @Test("the losslessness check catches a planted difference")
    func planted() {
        #expect(BenchmarkMetrics.mismatches(Self.run).isEmpty)
        var broken = Self.run
        broken.records[3] = Self.record(2, "rag", "kangaroo", tokens: 50, seconds: 1, accepted: [30, 0, 0],
                                        ids: Array(repeating: 7, count: 20) + [8] + Array(repeating: 7, count: 29))
        let found = BenchmarkMetrics.mismatches(broken)
        #expect(found == [Mismatch(questionID: 2, turn: 0, decoder: "kangaroo", position: 20)])
        #expect(BenchmarkMetrics.markdown(broken).contains("| rag | kangaroo | 1 |"))
    }

    @Test("the SVG charts are well-formed XML with one series per speculative decoder")
    func charts() throws {
        let charts = BenchmarkMetrics.charts(Self.run)
        #expect(Set(charts.keys) == ["speedup.svg", "accepted-length.svg", "ctar.svg"])
        for (name, svg) in charts {
            let delegate = SeriesCollector()
            let parser = XMLParser(data: Data(svg.utf8))
            parser.delegate = delegate
            #expect(parser.parse(), "\(name) is not well-formed: \(String(describing: parser.parserError))")
            #expect(delegate.series == ["kangaroo"], "\(name)")
            #expect(delegate.root == "svg")
        }
        #expect(charts["speedup.svg"]!.contains("qa"))
    }
}

/// Collects the `data-series` attributes and the root element of an SVG.
final class SeriesCollector: NSObject, XMLParserDelegate {
    var series = Set<String>()
    var root: String?

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        if root == nil { root = name }
        if let value = attributes["data-series"] { series.insert(value) }
    }
}
