import Foundation
import Llama
import Tensor

/// Turns one hidden state into a draft token: RMSNorm with `normWeights`, then the model's LM head
/// (or the rows of a sub-vocabulary), argmax, and the top token's softmax probability (the confidence
/// that Kangaroo's early exit compares with its threshold).
public final class DraftHead: @unchecked Sendable {
    let normWeights: [Float]
    let eps: Float
    let head: WeightMatrix
    /// Token id of each head row when the head is a sub-vocabulary.
    let ids: [Int32]?
    private let ownedRows: UnsafeMutableRawPointer?
    private let normed: FloatMatrix
    private let input: ActivationBatch
    public let logits: FloatMatrix

    public init(model: LlamaModel, normWeights: [Float], vocabulary: [Int32]? = nil) {
        self.normWeights = normWeights
        eps = model.config.rmsNormEpsilon
        let full = model.output
        if let vocabulary {
            // Copy the chosen rows once, so the draft step reads only them.
            let rows = UnsafeMutableRawPointer.allocate(byteCount: vocabulary.count * full.rowBytes, alignment: 64)
            for (i, id) in vocabulary.enumerated() {
                (rows + i * full.rowBytes).copyMemory(from: full.row(Int(id)), byteCount: full.rowBytes)
            }
            head = WeightMatrix(type: full.type, rows: vocabulary.count, columns: full.columns, data: rows).forLogits()
            ownedRows = rows
            ids = vocabulary
        } else {
            head = full
            ownedRows = nil
            ids = nil
        }
        normed = FloatMatrix(capacity: Self.maxRows, columns: model.config.hiddenSize)
        input = ActivationBatch(capacity: Self.maxRows * model.config.hiddenSize)
        logits = FloatMatrix(capacity: Self.maxRows, columns: head.rows)
    }

    deinit { ownedRows?.deallocate() }

    /// Rows of the head: the draft vocabulary's size.
    public var rowCount: Int { head.rows }

    /// The token id of head row `row`.
    public func tokenID(row: Int) -> Int32 { ids?[row] ?? Int32(row) }

    /// States one `evaluate` takes at most (a draft tree's level).
    public static let maxRows = 16

    /// Computes `logits` row `i` (one logit per head row) for the state at `states + i × hiddenSize`,
    /// for `count` consecutive states.
    public func evaluate(_ states: UnsafePointer<Float>, count: Int = 1, pool: ThreadPool) {
        precondition((1...Self.maxRows).contains(count))
        let d = normed.columns
        for i in 0..<count {
            VectorOps.rmsNorm(states + i * d, weight: normWeights, eps: eps, count: d, into: normed.row(i))
        }
        input.set(normed.pointer, count: count, columns: d)
        head.multiply(input, into: logits.pointer, pool: pool)
        logits.rows = count
    }

    /// The most likely token of the last `evaluate` and its softmax probability (the confidence that
    /// Kangaroo's early exit compares with its threshold).
    public func greedyDraft(row index: Int = 0) -> (token: Int32, confidence: Float) {
        let row = logits.row(index), count = head.rows
        let best = VectorOps.argmax(row, count: count)
        var sum: Float = 0
        let top = row[best]
        for i in 0..<count { sum += expf(row[i] - top) }
        return (tokenID(row: best), 1 / sum)
    }

    /// The draft of row `index` of the last `evaluate` and its confidence (top-1 probability): greedy,
    /// the most likely token; sampling, a token drawn from the row's processed distribution (computed
    /// in `buffer`, `rowCount` floats), which is kept dense in `round` as the distribution of the node
    /// added next, which must be this draft.
    public func draft(row index: Int = 0, sampler: inout Sampler, round: DraftRound,
                      buffer q: UnsafeMutablePointer<Float>) -> (token: Int32, confidence: Float) {
        if sampler.options.isGreedy { return greedyDraft(row: index) }
        let rows = head.rows
        sampler.process(logits.row(index), count: rows, into: q)
        var confidence: Float = 0
        for r in 0..<rows { confidence = max(confidence, q[r]) }
        let drawn = Int(sampler.draw(q, count: rows))
        let dense = round.probabilities.row(round.count)
        dense.initialize(repeating: 0, count: round.probabilities.columns)
        for r in 0..<rows { dense[Int(tokenID(row: r))] = q[r] }
        return (tokenID(row: drawn), confidence)
    }

    /// The `k` most likely tokens of row `index` of the last `evaluate`, most likely first, with their
    /// softmax probabilities (a draft tree's children, greedy).
    public func topDrafts(_ k: Int, row index: Int) -> [(token: Int32, probability: Float)] {
        let row = logits.row(index), count = head.rows
        let top = row[VectorOps.argmax(row, count: count)]
        var sum: Float = 0
        for i in 0..<count { sum += expf(row[i] - top) }
        var best: [(row: Int, logit: Float)] = []
        for i in 0..<count where best.count < k || row[i] > best[best.count - 1].logit {
            let place = best.firstIndex { row[i] > $0.logit } ?? best.count
            best.insert((i, row[i]), at: place)
            if best.count > k { best.removeLast() }
        }
        return best.map { (tokenID(row: $0.row), expf($0.logit - top) / sum) }
    }
}
