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
    /// Block drafters: the positions per step after which the block queries draft (drawn at random
    /// among those whose block lies within the answer).
    public var blockAnchors = 48
    /// Block drafters: the block queries' learning rate, as a multiple of the others' (they are a few
    /// vectors at the scale of exit states, which a rate fit for the weights would move too slowly).
    public var blockQueryRateScale = 10.0
    /// Block drafters: whether the adapter's own tensors train too (false: only the block's, so that a
    /// round's first draft stays the adapter's).
    public var trainsAdapter = false

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
        shape.blockSize = start.blockSize
        shape.blockFeedForward = start.blockFeedForward?.size ?? 0
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
                              previousProjection: adapter.previousProjection ?? [], blockQueries: adapter.blockQueries ?? [],
                              blockFeedForwardNorm: adapter.blockFeedForward?.norm ?? [], blockGate: adapter.blockFeedForward?.gate ?? [],
                              blockUp: adapter.blockFeedForward?.up ?? [], blockDown: adapter.blockFeedForward?.down ?? [])
    }

    /// Starting block queries for `k` positions (added to the newest exit state): seeded noise of a
    /// tenth of the exit states' RMS, so that they differ.
    public static func initialBlockQueries(k: Int, examples: [TeacherForcedSequence], hidden d: Int, seed: UInt64) -> [Float] {
        var squares = 0.0, count = 0
        for e in examples {
            for x in e.states.prefix(e.count * d) { squares += Double(x) * Double(x) }
            count += e.count * d
        }
        let rms = (squares / Double(max(count, 1))).squareRoot()
        var random = SplitMix64(seed: seed)
        return (0..<(k * d)).map { _ in Float(0.1 * rms * (random.nextUnit() * 2 - 1)) }
    }

    /// Block drafters: `count` positions of `example` after which a whole block has targets, seeded by `step`.
    func anchors(_ example: TeacherForcedSequence, step: Int) -> [Int] {
        guard shape.blockSize > 0 else { return [] }
        let first = max(example.firstTarget - 1, 0), last = example.count - 1 - shape.blockSize
        guard last >= first else { return [] }
        var random = SplitMix64(seed: options.seed &* 0xD1B5_4A32_D192_ED03 &+ UInt64(step))
        return Array(Array(first...last).shuffled(using: &random).prefix(options.blockAnchors)).sorted()
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
        let anchors = anchors(example, step: optimiser.step)
        // A block's rows get the deep state its anchor's row sees (the final state before it), never withheld.
        let d = shape.hidden
        let anchorDeepStates = shape.deepState && !anchors.isEmpty
            ? anchors.flatMap { a in a == 0 ? [Float](repeating: 0, count: d) : Array(example.deepStates[((a - 1) * d)..<(a * d)]) }
            : nil
        let (value, gradients, logits) = loss.evaluate(weights, states: example.states, start: 0, targets: target, head: head,
                                                       vocabulary: vocabulary.count,
                                                       deepStates: deepStates(example, step: optimiser.step), anchors: anchors,
                                                       anchorDeepStates: anchorDeepStates,
                                                       contextLoss: shape.blockSize == 0 || options.trainsAdapter)
        let schedule = LearningRateSchedule(peak: options.learningRate, warmup: options.warmup, total: options.steps)
        let rate = schedule.rate(at: optimiser.step)
        let scales = AdapterTensors<Float>.tensorNames.map { name -> Float in
            if name == "block queries" { return Float(options.blockQueryRateScale) }
            return shape.blockSize > 0 && !options.trainsAdapter && !AdapterTensors<Float>.blockTensorNames.contains(name) ? 0 : 1
        }
        optimiser.update(&weights, gradients: gradients, rate: Float(rate), rateScales: scales)
        // Agreement of the sequence's rows (an adapter), or of the block rows (a block drafter): logits
        // row r against target row `targetRows[r]`.
        let k = shape.blockSize
        let rows: [(logits: Int, target: Int)] = k == 0
            ? (example.firstTarget..<example.count).map { ($0, $0) }
            : anchors.enumerated().flatMap { n, a in (1...k).map { j in (example.count + n * k + j - 1, a + j) } }
        var agree = 0
        let v = vocabulary.count
        logits.withUnsafeBufferPointer { l in
            target.withUnsafeBufferPointer { p in
                for row in rows where VectorOps.argmax(l.baseAddress! + row.logits * v, count: v) == VectorOps.argmax(p.baseAddress! + row.target * v, count: v) {
                    agree += 1
                }
            }
        }
        return TrainingProgress(step: optimiser.step, loss: Double(value), agreement: Double(agree) / Double(max(rows.count, 1)),
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
                               draftVocabulary: vocabulary.count < model.config.vocabularySize ? vocabulary : nil,
                               blockQueries: shape.blockSize > 0 ? w.blockQueries : nil,
                               blockFeedForward: shape.blockFeedForward > 0
                                   ? KangarooAdapter.FeedForward(norm: w.blockFeedForwardNorm, gate: w.blockGate, up: w.blockUp, down: w.blockDown)
                                   : nil)
    }

    /// The files' stem: the adapter's, or the block drafter's.
    var fileName: String { shape.blockSize > 0 ? KangarooAdapter.blockDrafterName : KangarooAdapter.adapterName }

    // MARK: Checkpoints

    /// Saves the adapter and the optimiser's state into `folder`.
    public func checkpoint(to folder: String, origin: String) throws {
        try adapter(origin: origin).save(to: folder, name: fileName)
        try optimiser.save(to: folder)
    }

    /// Continues from a checkpoint written by `checkpoint` (same data and options).
    public func resume(from folder: String) throws {
        weights = Self.tensors(of: try KangarooAdapter.load(from: folder, for: model, name: fileName))
        try optimiser.restore(from: folder, tensors: weights.tensors.count)
    }
}
