import Adapter
import Foundation
import Llama
import ModelFormats
import Tensor

/// Settings of `AdapterTrainer`.
public struct TrainingOptions: Sendable {
    public var steps = 1000
    public var learningRate = 1e-3
    public var warmup = 50
    public var weightDecay = 0.0
    public var clipNorm = 1.0
    /// Rows of the draft head: the most frequent target tokens (0: the whole vocabulary).
    public var draftVocabulary = 8192
    public var seed: UInt64 = 1
    public var checkpointEvery = 100
    /// Adapters with a deep state: the share of positions trained without it, as drafts after a round's
    /// first are made at inference.
    public var deepStateDropout = 0.25

    public init() {}
}

/// One optimisation step's figures.
public struct TrainingProgress: Sendable {
    public var step: Int
    public var loss: Double
    /// Share of the step's positions where the adapter's top token is the full model's.
    public var agreement: Double
    public var learningRate: Double
}

/// Trains an adapter's tensors on teacher-forced sequences: soft cross-entropy between the full
/// model's distribution (its top-k, restricted to the draft vocabulary and renormalised) and the
/// adapter's, AdamW (β = 0.9, 0.95), warm-up then cosine decay, gradient clipping. One sequence a step,
/// in a seeded order. The base model is frozen.
public final class AdapterTrainer {
    public let model: LlamaModel
    public let options: TrainingOptions
    public private(set) var weights: AdapterTensors<Float>
    public private(set) var optimiser: AdamW<Float>
    let base: KangarooAdapter
    private(set) var shape: AdapterShape
    /// Draft vocabulary (token ids) and its head rows, dequantised: `ids.count × d`.
    public let vocabulary: [Int32]
    let head: [Float]
    let examples: [TeacherForcedSequence]
    private var order: [Int]

    public init(model: LlamaModel, start: KangarooAdapter, examples: [TeacherForcedSequence], options: TrainingOptions) {
        self.model = model
        self.options = options
        base = start
        let c = model.config
        shape = AdapterShape(hidden: c.hiddenSize, heads: c.headCount, kvHeads: c.kvHeadCount, headSize: c.headSize,
                             ropeBase: Double(c.ropeBase), eps: Double(c.rmsNormEpsilon), feedForward: start.feedForward?.size ?? 0,
                             deepState: start.deepProjection != nil, previousState: start.previousProjection != nil)
        shape.ropePairsAdjacent = c.architecture.ropeStyle == .adjacentPairs
        weights = Self.tensors(of: start)
        optimiser = AdamW(weightDecay: Float(options.weightDecay), clipNorm: Float(options.clipNorm))
        self.examples = examples
        let ids = Self.frequentTokens(examples, limit: options.draftVocabulary, vocabularySize: c.vocabularySize)
        vocabulary = ids
        head = Self.headRows(of: model, ids: ids)
        var random = SplitMix64(seed: options.seed)
        order = Array(examples.indices).shuffled(using: &random)
    }

    static func tensors(of adapter: KangarooAdapter) -> AdapterTensors<Float> {
        let f = adapter.feedForward
        return AdapterTensors(inputNorm: adapter.inputNorm, query: adapter.query, key: adapter.key, value: adapter.value,
                              output: adapter.output, norm: adapter.norm, feedForwardNorm: f?.norm ?? [], gate: f?.gate ?? [],
                              up: f?.up ?? [], down: f?.down ?? [], deepProjection: adapter.deepProjection ?? [],
                              previousProjection: adapter.previousProjection ?? [])
    }

    /// The frozen LM head's rows for `ids`, dequantised: `ids.count × hiddenSize` floats.
    static func headRows(of model: LlamaModel, ids: [Int32]) -> [Float] {
        let d = model.config.hiddenSize
        var rows = [Float](repeating: 0, count: ids.count * d)
        rows.withUnsafeMutableBufferPointer { buffer in
            for (i, id) in ids.enumerated() { model.output.dequantizeRow(Int(id), into: buffer.baseAddress! + i * d) }
        }
        return rows
    }

    /// Token ids ranked by how much target probability they carry (all ids when `limit` is 0 or larger).
    static func frequentTokens(_ examples: [TeacherForcedSequence], limit: Int, vocabularySize: Int) -> [Int32] {
        guard limit > 0, limit < vocabularySize else { return (0..<Int32(vocabularySize)).map { $0 } }
        var mass = [Double](repeating: 0, count: vocabularySize)
        for e in examples {
            for i in (e.firstTarget * e.k)..<(e.count * e.k) { mass[Int(e.topIDs[i])] += Double(e.topProbabilities[i]) }
        }
        let ranked = (0..<vocabularySize).sorted { mass[$0] > mass[$1] || (mass[$0] == mass[$1] && $0 < $1) }
        return ranked.prefix(limit).map { Int32($0) }.sorted()
    }

    /// Dense targets over the draft vocabulary for `example`: its top-k, restricted and renormalised;
    /// rows of context-only positions stay zero.
    func targets(_ example: TeacherForcedSequence) -> [Float] {
        let index = Dictionary(uniqueKeysWithValues: vocabulary.enumerated().map { ($1, $0) })
        var dense = [Float](repeating: 0, count: example.count * vocabulary.count)
        for t in example.firstTarget..<example.count {
            var total: Float = 0
            for j in 0..<example.k {
                let id = example.topIDs[t * example.k + j]
                if let column = index[id] {
                    dense[t * vocabulary.count + column] = example.topProbabilities[t * example.k + j]
                    total += example.topProbabilities[t * example.k + j]
                }
            }
            if total > 0 { for v in 0..<vocabulary.count { dense[t * vocabulary.count + v] /= total } }
        }
        return dense
    }

    /// Row t: the deep state position t sees (the final state at t − 1), or zeros at t = 0 and where a
    /// seeded draw withholds it. Nil for adapters without a deep state.
    func deepStates(_ example: TeacherForcedSequence, step: Int) -> [Float]? {
        guard shape.deepState else { return nil }
        precondition(example.deepStates.count == example.count * shape.hidden, "teacher forcing kept no deep states")
        let d = shape.hidden
        var random = SplitMix64(seed: options.seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(step))
        var rows = [Float](repeating: 0, count: example.count * d)
        for t in 1..<max(example.count, 1) where random.nextUnit() >= options.deepStateDropout {
            for c in 0..<d { rows[t * d + c] = example.deepStates[(t - 1) * d + c] }
        }
        return rows
    }

    /// Runs one step on the next sequence.
    public func step() -> TrainingProgress {
        let index = order[optimiser.step % order.count]
        let example = examples[index]
        let target = targets(example)
        let loss = AdapterLoss<Float>(shape: shape)
        let (value, gradients, logits) = loss.evaluate(weights, states: example.states, start: 0, targets: target, head: head,
                                                       vocabulary: vocabulary.count,
                                                       deepStates: deepStates(example, step: optimiser.step))
        let schedule = LearningRateSchedule(peak: options.learningRate, warmup: options.warmup, total: options.steps)
        let rate = schedule.rate(at: optimiser.step)
        optimiser.update(&weights, gradients: gradients, rate: Float(rate))
        var agree = 0
        let v = vocabulary.count
        logits.withUnsafeBufferPointer { l in
            target.withUnsafeBufferPointer { p in
                for t in example.firstTarget..<example.count where VectorOps.argmax(l.baseAddress! + t * v, count: v) == VectorOps.argmax(p.baseAddress! + t * v, count: v) {
                    agree += 1
                }
            }
        }
        return TrainingProgress(step: optimiser.step, loss: Double(value), agreement: Double(agree) / Double(max(example.count - example.firstTarget, 1)),
                                learningRate: rate)
    }

    /// The adapter with the current weights and the draft vocabulary.
    public func adapter(origin: String) -> KangarooAdapter {
        var config = base.config
        config.origin = origin
        let w = weights
        let feedForward = shape.feedForward > 0
            ? KangarooAdapter.FeedForward(norm: w.feedForwardNorm, gate: w.gate, up: w.up, down: w.down) : nil
        return KangarooAdapter(config: config, inputNorm: w.inputNorm, query: w.query, key: w.key, value: w.value,
                               output: w.output, norm: w.norm, feedForward: feedForward,
                               deepProjection: shape.deepState ? w.deepProjection : nil,
                               previousProjection: shape.previousState ? w.previousProjection : nil,
                               draftVocabulary: vocabulary.count < model.config.vocabularySize ? vocabulary : nil)
    }

    // MARK: Checkpoints

    /// Saves the adapter and the optimiser's state into `folder`.
    public func checkpoint(to folder: String, origin: String) throws {
        try adapter(origin: origin).save(to: folder)
        try optimiser.save(to: folder)
    }

    /// Continues from a checkpoint written by `checkpoint` (same data and options).
    public func resume(from folder: String) throws {
        weights = Self.tensors(of: try KangarooAdapter.load(from: folder, for: model))
        try optimiser.restore(from: folder, tensors: weights.tensors.count)
    }
}
