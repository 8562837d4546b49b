import Adapter
import Foundation
import Llama
import Tensor

/// How well an adapter's draft distribution q matches the full model's p, by teacher forcing.
public struct AgreementStatistics: Sendable, Equatable {
    public var positions = 0
    /// Share of positions where argmax q = argmax p (greedy acceptance of one draft).
    public var top1Agreement = 0.0
    /// Mean of Σ_v min(p(v), q(v)) at temperature 1: the acceptance probability of speculative sampling.
    public var expectedAcceptance = 0.0
    /// Top-1 agreement by the draft's confidence (its top probability, what Kangaroo's threshold η is
    /// compared with), in bins of width 0.1: how often a draft drafted at confidence ≥ η is accepted.
    public var byConfidence = Array(repeating: ConfidenceBin(), count: 10)

    public struct ConfidenceBin: Sendable, Equatable {
        public var positions = 0
        public var agreements = 0
    }

    public init() {}

    mutating func add(agree: Bool, overlap: Double, confidence: Float) {
        top1Agreement = (top1Agreement * Double(positions) + (agree ? 1 : 0)) / Double(positions + 1)
        expectedAcceptance = (expectedAcceptance * Double(positions) + overlap) / Double(positions + 1)
        positions += 1
        let bin = min(max(Int(confidence * 10), 0), 9)
        byConfidence[bin].positions += 1
        if agree { byConfidence[bin].agreements += 1 }
    }

    /// Share of positions drafted at confidence ≥ `threshold` (a multiple of 0.1), and the top-1
    /// agreement among them.
    public func atConfidence(atLeast threshold: Double) -> (share: Double, agreement: Double) {
        let bins = byConfidence[min(max(Int((threshold * 10).rounded()), 0), 10)...]
        let count = bins.reduce(0) { $0 + $1.positions }, agreed = bins.reduce(0) { $0 + $1.agreements }
        return (Double(count) / Double(max(positions, 1)), Double(agreed) / Double(max(count, 1)))
    }
}

/// Teacher-forced comparison of the adapter's drafts with the full model on token sequences.
public struct AdapterEvaluator {
    public let model: LlamaModel
    public let adapter: KangarooAdapter

    public init(model: LlamaModel, adapter: KangarooAdapter) {
        self.model = model
        self.adapter = adapter
    }

    /// Statistics over every position of every sequence (each predicts the next token), from position
    /// `firstScored[i]` on in sequence i when given (earlier positions are context only). An adapter
    /// with a deep state gets it at every position, so this measures a round's first draft.
    public func agreement(on sequences: [[Int32]], firstScored: [Int]? = nil,
                          progress: (Int) -> Void = { _ in }) throws -> AgreementStatistics {
        let c = model.config
        let longest = sequences.map(\.count).max() ?? 1
        let cache = KVCache(config: c, capacity: longest)
        let scratch = ForwardScratch(config: c, contextCapacity: longest)
        let hidden = FloatMatrix(capacity: longest, columns: c.hiddenSize)
        let exitStates = FloatMatrix(capacity: longest, columns: c.hiddenSize)
        let deepState = FloatMatrix(capacity: 1, columns: c.hiddenSize)
        let runner = AdapterRunner(adapter: adapter, model: model, contextCapacity: longest, chunk: 1)
        let chunk = 16
        let logits = FloatMatrix(capacity: chunk, columns: c.vocabularySize)
        var q = [Float](repeating: 0, count: c.vocabularySize)
        var p = [Float](repeating: 0, count: c.vocabularySize)
        var stats = AgreementStatistics()
        for (index, tokens) in sequences.enumerated() where tokens.count > 1 {
            try model.validate(tokens)
            cache.reset()
            runner.reset()
            model.embed(tokens, into: hidden)
            try model.forward(layers: 0..<adapter.config.exitLayer, hidden: hidden, cache: cache, scratch: scratch)
            for t in 0..<(tokens.count - 1) { exitStates.copyRow(from: hidden, row: t, to: t) }
            exitStates.rows = tokens.count - 1
            try model.forward(layers: adapter.config.exitLayer..<c.layerCount, hidden: hidden, cache: cache, scratch: scratch)
            // Draft distributions, one position at a time through the adapter's own cache, each with the
            // deep state of the position before (as a round's first draft has it).
            var drafts: [[Float]] = []
            var draftTop: [Int32] = []
            var confidence: [Float] = []
            for t in 0..<(tokens.count - 1) {
                if t > 0 { model.normalizeOutput(hidden.row(t - 1), into: deepState.pointer) }
                runner.evaluate(exitStates, rows: t..<(t + 1), deepState: t > 0 ? deepState.pointer : nil, scratch: scratch)
                let head = runner.head
                Self.softmax(head.logits.pointer, count: head.rowCount, into: &q)
                var dense = [Float](repeating: 0, count: c.vocabularySize)
                for r in 0..<head.rowCount { dense[Int(head.tokenID(row: r))] = q[r] }
                drafts.append(dense)
                let top = VectorOps.argmax(head.logits.pointer, count: head.rowCount)
                draftTop.append(head.tokenID(row: top))
                confidence.append(q[top])
            }
            for start in stride(from: 0, to: tokens.count - 1, by: chunk) {
                let rows = start..<min(start + chunk, tokens.count - 1)
                model.logits(hidden, rows: rows, into: logits, scratch: scratch)
                for t in rows where t >= firstScored?[index] ?? 0 {
                    let row = logits.row(t - start)
                    Self.softmax(row, count: c.vocabularySize, into: &p)
                    var overlap: Double = 0
                    for v in 0..<c.vocabularySize { overlap += Double(min(p[v], drafts[t][v])) }
                    stats.add(agree: Int(draftTop[t]) == VectorOps.argmax(row, count: c.vocabularySize), overlap: overlap,
                              confidence: confidence[t])
                }
            }
            progress(index + 1)
        }
        return stats
    }

    static func softmax(_ logits: UnsafePointer<Float>, count: Int, into out: inout [Float]) {
        out.withUnsafeMutableBufferPointer { buffer in
            buffer.baseAddress!.update(from: logits, count: count)
            VectorOps.softmax(buffer.baseAddress!, count: count)
        }
    }
}

