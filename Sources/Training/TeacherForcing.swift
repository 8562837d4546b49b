import Foundation
import Llama
import Tensor

/// Training examples made by teacher forcing with the engine's own forward pass: for each position
/// of a token sequence, the exit-layer hidden state and the full model's next-token distribution,
/// kept compactly as its top `k` tokens.
public struct TeacherForcedSequence: Sendable {
    /// `count × hidden` exit-layer states.
    public var states: [Float]
    /// `count × hidden` final states after the output norm (the deep states: row t is what the position
    /// after t sees). Empty unless asked for.
    public var deepStates: [Float] = []
    /// `count × k` token ids and probabilities of the full model's most likely next tokens.
    public var topIDs: [Int32]
    public var topProbabilities: [Float]
    public var count: Int
    public var k: Int
    /// Positions before this one are context only: they feed the adapter's attention but carry no
    /// target (the prompt of a self-distilled answer, whose words are not the model's).
    public var firstTarget = 0
}

public struct TeacherForcing {
    public let model: LlamaModel
    public let exitLayer: Int
    public let k: Int
    /// Whether to keep the deep states (for adapters that take them).
    public let keepsDeepStates: Bool

    public init(model: LlamaModel, exitLayer: Int, k: Int = 32, keepsDeepStates: Bool = false) {
        self.model = model
        self.exitLayer = exitLayer
        self.k = k
        self.keepsDeepStates = keepsDeepStates
    }

    /// Runs the model over `tokens` (all but the last position predict a next token); positions before
    /// `firstTarget` are context only.
    public func run(_ tokens: [Int32], firstTarget: Int = 0) throws -> TeacherForcedSequence {
        let c = model.config
        try model.validate(tokens)
        let count = tokens.count - 1
        let cache = KVCache(config: c, capacity: tokens.count)
        let scratch = ForwardScratch(config: c, contextCapacity: tokens.count)
        let hidden = FloatMatrix(capacity: tokens.count, columns: c.hiddenSize)
        model.embed(tokens, into: hidden)
        try model.forward(layers: 0..<exitLayer, hidden: hidden, cache: cache, scratch: scratch)
        let states = Array(UnsafeBufferPointer(start: hidden.pointer, count: count * c.hiddenSize))
        try model.forward(layers: exitLayer..<c.layerCount, hidden: hidden, cache: cache, scratch: scratch)
        var deepStates: [Float] = []
        if keepsDeepStates {
            // An empty array's buffer may still have a base address, so only a full one is written.
            deepStates = [Float](repeating: 0, count: count * c.hiddenSize)
            deepStates.withUnsafeMutableBufferPointer { out in
                for t in 0..<count { model.normalizeOutput(hidden.row(t), into: out.baseAddress! + t * c.hiddenSize) }
            }
        }
        let chunk = 16
        let logits = FloatMatrix(capacity: chunk, columns: c.vocabularySize)
        var ids = [Int32](), probabilities = [Float]()
        ids.reserveCapacity(count * k)
        probabilities.reserveCapacity(count * k)
        for start in stride(from: 0, to: count, by: chunk) {
            let rows = start..<min(start + chunk, count)
            model.logits(hidden, rows: rows, into: logits, scratch: scratch)
            for t in rows {
                let row = logits.row(t - start)
                VectorOps.softmax(row, count: c.vocabularySize)
                let top = (0..<c.vocabularySize).partialTop(k) { row[$0] }
                for id in top {
                    ids.append(Int32(id))
                    probabilities.append(row[id])
                }
            }
        }
        return TeacherForcedSequence(states: states, deepStates: deepStates, topIDs: ids, topProbabilities: probabilities, count: count, k: k,
                                     firstTarget: min(max(firstTarget, 0), count))
    }
}

extension Range<Int> {
    /// The `k` elements with the largest `value`, largest first.
    func partialTop(_ k: Int, value: (Int) -> Float) -> [Int] {
        var best: [(Int, Float)] = []
        best.reserveCapacity(k + 1)
        for i in self {
            let v = value(i)
            if best.count == k, v <= best[k - 1].1 { continue }
            let at = best.firstIndex { $0.1 < v } ?? best.count
            best.insert((i, v), at: at)
            if best.count > k { best.removeLast() }
        }
        return best.map(\.0)
    }
}
