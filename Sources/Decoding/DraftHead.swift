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
        normed = FloatMatrix(capacity: 1, columns: model.config.hiddenSize)
        input = ActivationBatch(capacity: model.config.hiddenSize)
        logits = FloatMatrix(capacity: 1, columns: head.rows)
    }

    deinit { ownedRows?.deallocate() }

    /// Rows of the head: the draft vocabulary's size.
    public var rowCount: Int { head.rows }

    /// The token id of head row `row`.
    public func tokenID(row: Int) -> Int32 { ids?[row] ?? Int32(row) }

    /// Computes `logits` (one per head row) for `state`.
    public func evaluate(_ state: UnsafePointer<Float>, pool: ThreadPool) {
        VectorOps.rmsNorm(state, weight: normWeights, eps: eps, count: normed.columns, into: normed.pointer)
        input.set(normed.pointer, count: 1, columns: normed.columns)
        head.multiply(input, into: logits.pointer, pool: pool)
        logits.rows = 1
    }

    /// The most likely token of the last `evaluate` and its softmax probability (the confidence that
    /// Kangaroo's early exit compares with its threshold).
    public func greedyDraft() -> (token: Int32, confidence: Float) {
        let row = logits.pointer, count = head.rows
        let best = VectorOps.argmax(row, count: count)
        var sum: Float = 0
        let top = row[best]
        for i in 0..<count { sum += expf(row[i] - top) }
        return (tokenID(row: best), 1 / sum)
    }
}
