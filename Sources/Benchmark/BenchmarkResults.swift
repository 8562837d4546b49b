import Foundation

/// One decoder's generation for one turn of one question.
public struct TurnRecord: Codable, Sendable, Equatable {
    public var questionID: Int
    public var category: String
    public var taskGroup: String
    public var turn: Int
    public var decoder: String
    public var promptTokens: Int
    public var tokenIDs: [Int32]
    /// Prefill and decoding, as Spec-Bench times a turn.
    public var seconds: Double
    /// The prefill's share of `seconds` (nil in results written before it was recorded).
    public var prefillSeconds: Double?
    public var rounds: Int
    /// `acceptedDrafts[a]`: rounds that accepted `a` drafts.
    public var acceptedDrafts: [Int]
    public var draftSeconds: Double
    public var verifySeconds: Double

    public init(questionID: Int, category: String, taskGroup: String, turn: Int, decoder: String, promptTokens: Int,
                tokenIDs: [Int32], seconds: Double, rounds: Int, acceptedDrafts: [Int], draftSeconds: Double, verifySeconds: Double,
                prefillSeconds: Double? = nil) {
        self.questionID = questionID
        self.category = category
        self.taskGroup = taskGroup
        self.turn = turn
        self.decoder = decoder
        self.promptTokens = promptTokens
        self.tokenIDs = tokenIDs
        self.seconds = seconds
        self.prefillSeconds = prefillSeconds
        self.rounds = rounds
        self.acceptedDrafts = acceptedDrafts
        self.draftSeconds = draftSeconds
        self.verifySeconds = verifySeconds
    }

    enum CodingKeys: String, CodingKey {
        case questionID = "question_id", category, taskGroup = "task_group", turn, decoder
        case promptTokens = "prompt_tokens", tokenIDs = "token_ids", seconds, prefillSeconds = "prefill_seconds", rounds
        case acceptedDrafts = "accepted_drafts", draftSeconds = "draft_seconds", verifySeconds = "verify_seconds"
    }
}

/// Everything a benchmark run produced: its settings and every per-turn record, so that reports can
/// be recomputed.
public struct BenchmarkRun: Codable, Sendable {
    public var settings: [String: String]
    public var decoders: [String]
    public var records: [TurnRecord]
    /// Decoders run with a lossy option (relaxed verification): their outputs may differ from the
    /// baseline's by design, and the report counts how often they do not.
    public var lossyDecoders: [String]?

    public init(settings: [String: String], decoders: [String], records: [TurnRecord], lossyDecoders: [String] = []) {
        self.settings = settings
        self.decoders = decoders
        self.records = records
        self.lossyDecoders = lossyDecoders.isEmpty ? nil : lossyDecoders
    }
}

/// Per task group and decoder: the figures of the report table.
public struct GroupMetrics: Sendable, Equatable {
    public var group: String
    public var decoder: String
    public var turns: Int
    public var tokens: Int
    public var seconds: Double
    /// Total tokens over total time.
    public var tokensPerSecond: Double
    /// Ratio of tokens/s to the baseline decoder's on the same turns (Spec-Bench's ratio of means).
    public var speedup: Double?
    /// The same ratio with the prefill left out of both decoders' times (nil unless every record has its
    /// prefill time). Speculative decoding does not speed up the prefill, which weighs most where
    /// prompts are long.
    public var decodeSpeedup: Double?
    public var meanAcceptedTokens: Double?
    /// CTAR(w), w = 1…γ.
    public var ctar: [Double]
    /// Share of speculative time spent drafting.
    public var draftShare: Double?
}

/// A decoder whose tokens differ from the baseline's for the same turn.
public struct Mismatch: Sendable, Equatable, CustomStringConvertible {
    public var questionID: Int
    public var turn: Int
    public var decoder: String
    /// First differing position.
    public var position: Int

    public init(questionID: Int, turn: Int, decoder: String, position: Int) {
        self.questionID = questionID
        self.turn = turn
        self.decoder = decoder
        self.position = position
    }

    public var description: String {
        "question \(questionID) turn \(turn): \(decoder) differs from the baseline at generated token \(position)"
    }
}

public enum BenchmarkMetrics {
    /// Table rows per task group (and "overall"), for every decoder, against `baseline`.
    public static func groups(_ run: BenchmarkRun, baseline: String = "plain") -> [GroupMetrics] {
        var rows: [GroupMetrics] = []
        let groups = SpecBenchQuestion.taskGroups.filter { g in run.records.contains { $0.taskGroup == g } } + ["overall"]
        for group in groups {
            let records = run.records.filter { group == "overall" || $0.taskGroup == group }
            let baseRate = rate(records.filter { $0.decoder == baseline })
            let baseDecodeRate = decodeRate(records.filter { $0.decoder == baseline })
            for decoder in run.decoders {
                let mine = records.filter { $0.decoder == decoder }
                guard !mine.isEmpty else { continue }
                let tokens = mine.reduce(0) { $0 + $1.tokenIDs.count }
                let seconds = mine.reduce(0) { $0 + $1.seconds }
                let tps = rate(mine)
                let decodeSpeedup: Double? = if let mineRate = decodeRate(mine), let baseDecodeRate { mineRate / baseDecodeRate } else { nil }
                var accepted: [Int] = []
                for r in mine where !r.acceptedDrafts.isEmpty {
                    if accepted.count < r.acceptedDrafts.count { accepted += Array(repeating: 0, count: r.acceptedDrafts.count - accepted.count) }
                    for (a, n) in r.acceptedDrafts.enumerated() { accepted[a] += n }
                }
                let rounds = accepted.reduce(0, +)
                let mean = rounds > 0 ? Double(accepted.enumerated().reduce(0) { $0 + ($1.offset + 1) * $1.element }) / Double(rounds) : nil
                let ctar = rounds > 0 ? (1..<accepted.count).map { w in
                    Double(accepted.enumerated().filter { $0.offset + 1 > w }.reduce(0) { $0 + $1.element }) / Double(rounds)
                } : []
                let draft = mine.reduce(0) { $0 + $1.draftSeconds }, verify = mine.reduce(0) { $0 + $1.verifySeconds }
                rows.append(GroupMetrics(group: group, decoder: decoder, turns: mine.count, tokens: tokens, seconds: seconds,
                                         tokensPerSecond: tps, speedup: baseRate > 0 ? tps / baseRate : nil,
                                         decodeSpeedup: decodeSpeedup,
                                         meanAcceptedTokens: mean, ctar: ctar,
                                         draftShare: draft + verify > 0 ? draft / (draft + verify) : nil))
            }
        }
        return rows
    }

    static func rate(_ records: [TurnRecord]) -> Double {
        let seconds = records.reduce(0) { $0 + $1.seconds }
        return seconds > 0 ? Double(records.reduce(0) { $0 + $1.tokenIDs.count }) / seconds : 0
    }

    /// Tokens over the time after the prefill; nil if a record lacks its prefill time (or none is left).
    static func decodeRate(_ records: [TurnRecord]) -> Double? {
        var seconds = 0.0
        for r in records {
            guard let prefill = r.prefillSeconds else { return nil }
            seconds += r.seconds - prefill
        }
        return seconds > 0 ? Double(records.reduce(0) { $0 + $1.tokenIDs.count }) / seconds : nil
    }

    /// Every speculative record whose tokens differ from the baseline's for the same turn.
    public static func mismatches(_ run: BenchmarkRun, baseline: String = "plain") -> [Mismatch] {
        var base: [String: [Int32]] = [:]
        for r in run.records where r.decoder == baseline { base["\(r.questionID)/\(r.turn)"] = r.tokenIDs }
        let lossy = Set(run.lossyDecoders ?? [])
        return run.records.compactMap { r -> Mismatch? in
            guard r.decoder != baseline, !lossy.contains(r.decoder), let expected = base["\(r.questionID)/\(r.turn)"], expected != r.tokenIDs else { return nil }
            let position = zip(expected, r.tokenIDs).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(expected.count, r.tokenIDs.count)
            return Mismatch(questionID: r.questionID, turn: r.turn, decoder: r.decoder, position: position)
        }
    }

    /// A lossy decoder's turns whose tokens equal the baseline's, of all its turns with a baseline.
    public static func identicalTurns(_ run: BenchmarkRun, decoder: String, baseline: String = "plain") -> (identical: Int, turns: Int) {
        var base: [String: [Int32]] = [:]
        for r in run.records where r.decoder == baseline { base["\(r.questionID)/\(r.turn)"] = r.tokenIDs }
        let compared = run.records.filter { $0.decoder == decoder }.compactMap { r in base["\(r.questionID)/\(r.turn)"].map { $0 == r.tokenIDs } }
        return (compared.filter { $0 }.count, compared.count)
    }

    /// The Markdown table of `groups`.
    public static func markdown(_ run: BenchmarkRun, baseline: String = "plain") -> String {
        var out = "| task | decoder | turns | tokens/s | speedup | speedup after the prefill | mean accepted tokens | drafting share |\n|---|---|---:|---:|---:|---:|---:|---:|\n"
        for m in groups(run, baseline: baseline) {
            let speedup = m.speedup.map { String(format: "%.2f×", $0) } ?? "–"
            let decodeSpeedup = m.decodeSpeedup.map { String(format: "%.2f×", $0) } ?? "–"
            let accepted = m.meanAcceptedTokens.map { String(format: "%.2f", $0) } ?? "–"
            let share = m.draftShare.map { String(format: "%.0f%%", 100 * $0) } ?? "–"
            out += "| \(m.group) | \(m.decoder) | \(m.turns) | \(String(format: "%.1f", m.tokensPerSecond)) | \(speedup) | \(decodeSpeedup) | \(accepted) | \(share) |\n"
        }
        return out
    }
}
