import Adapter
import Foundation
import Llama
import ModelFormats
import Tensor

public struct RecurrentHeadTrainingOptions: Sendable {
    public var steps = 2000
    public var learningRate = 1e-3
    public var warmup = 100
    /// Drafts per step, each from a random position of the data.
    public var batch = 32
    /// Draft tokens each draft is trained on (the multi-step loss).
    public var depth = 4
    /// Head rows: the most frequent target tokens (0: the whole vocabulary).
    public var draftVocabulary = 8192
    public var weightDecay = 0.0
    public var clipNorm = 1.0
    public var seed: UInt64 = 1

    public init() {}
}

/// Trains a ReDrafter head on teacher-forced sequences of the model's own text: each step takes
/// `batch` random positions p and trains the head to draft, from the full model's final state at p
/// and the tokens after it, the full model's distributions at p + 1 … p + depth (`RecurrentHeadLoss`).
public final class RecurrentHeadTrainer {
    public let model: LlamaModel
    public let options: RecurrentHeadTrainingOptions
    public private(set) var weights: RecurrentHeadTensors<Float>
    public private(set) var optimiser: AdamW<Float>
    let base: RecurrentDraftHead
    /// Draft vocabulary (token ids) and its head rows, dequantised: `ids.count × d`.
    public let vocabulary: [Int32]
    let head: [Float]
    let columns: [Int32: Int]
    let tokens: [[Int32]]
    let examples: [TeacherForcedSequence]
    /// Start positions (sequence, p) whose depth tokens are all in the sequence's targeted part.
    let starts: [(sequence: Int, position: Int)]
    private var random: SplitMix64

    /// `examples[i]` is `tokens[i]` teacher-forced with its deep states kept.
    public init(model: LlamaModel, start: RecurrentDraftHead, tokens: [[Int32]], examples: [TeacherForcedSequence],
                options: RecurrentHeadTrainingOptions) {
        precondition(tokens.count == examples.count && examples.allSatisfy { $0.deepStates.count == $0.count * model.config.hiddenSize },
                     "each sequence needs its teacher-forced deep states")
        self.model = model
        self.options = options
        base = start
        weights = RecurrentHeadTensors(start)
        optimiser = AdamW(weightDecay: Float(options.weightDecay), clipNorm: Float(options.clipNorm))
        vocabulary = start.draftVocabulary
            ?? AdapterTrainer.frequentTokens(examples, limit: options.draftVocabulary, vocabularySize: model.config.vocabularySize)
        head = AdapterTrainer.headRows(of: model, ids: vocabulary)
        columns = Dictionary(uniqueKeysWithValues: vocabulary.enumerated().map { ($1, $0) })
        self.tokens = tokens
        self.examples = examples
        var starts: [(Int, Int)] = []
        for (i, e) in examples.enumerated() where e.count > options.depth {
            for p in max(e.firstTarget - 1, 0)...(e.count - 1 - options.depth) { starts.append((i, p)) }
        }
        self.starts = starts
        random = SplitMix64(seed: options.seed)
    }

    /// Drafts the data offers.
    public var startCount: Int { starts.count }

    /// Row `row` of `example`'s top-k distribution over the draft vocabulary, renormalised (zeros
    /// when none of its tokens is in the vocabulary).
    func target(_ example: TeacherForcedSequence, row: Int, into dense: inout [Float], at offset: Int) {
        var total: Float = 0
        for j in 0..<example.k {
            if let column = columns[example.topIDs[row * example.k + j]] {
                dense[offset + column] = example.topProbabilities[row * example.k + j]
                total += example.topProbabilities[row * example.k + j]
            }
        }
        if total > 0 { for v in 0..<vocabulary.count { dense[offset + v] /= total } }
    }

    /// One step on `batch` random drafts; agreement is the head's top-1 against the full model's at
    /// the first draft token.
    public func step() -> TrainingProgress {
        let d = model.config.hiddenSize, v = vocabulary.count, rows = options.batch, depth = options.depth
        var finalStates = [Float](repeating: 0, count: rows * d)
        var stepTokens = [[Int32]](repeating: [], count: depth)
        var targets = [[Float]](repeating: [Float](repeating: 0, count: rows * v), count: depth)
        for r in 0..<rows {
            let (i, p) = starts[Int(random.next() % UInt64(starts.count))]
            let e = examples[i]
            for c in 0..<d { finalStates[r * d + c] = e.deepStates[p * d + c] }
            for j in 0..<depth {
                stepTokens[j].append(tokens[i][p + 1 + j])
                target(e, row: p + 1 + j, into: &targets[j], at: r * v)
            }
        }
        let embedded = FloatMatrix(capacity: rows, columns: d)
        let embeddings = stepTokens.map { ids in
            model.embed(ids, into: embedded)
            return Array(UnsafeBufferPointer(start: embedded.pointer, count: rows * d))
        }
        let loss = RecurrentHeadLoss<Float>(hidden: d, eps: model.config.rmsNormEpsilon)
        let (value, gradients, logits) = loss.evaluate(weights, finalStates: finalStates, embeddings: embeddings, targets: targets,
                                                       head: head, vocabulary: v)
        let schedule = LearningRateSchedule(peak: options.learningRate, warmup: options.warmup, total: options.steps)
        let rate = schedule.rate(at: optimiser.step)
        optimiser.update(&weights, gradients: gradients, rate: Float(rate))
        var agree = 0, targeted = 0
        logits[0].withUnsafeBufferPointer { l in
            targets[0].withUnsafeBufferPointer { t in
                for r in 0..<rows where t[(r * v)..<((r + 1) * v)].contains(where: { $0 > 0 }) {
                    targeted += 1
                    if VectorOps.argmax(l.baseAddress! + r * v, count: v) == VectorOps.argmax(t.baseAddress! + r * v, count: v) { agree += 1 }
                }
            }
        }
        return TrainingProgress(step: optimiser.step, loss: Double(value), agreement: Double(agree) / Double(max(targeted, 1)),
                                learningRate: rate)
    }

    /// The head with the current weights and the draft vocabulary.
    public func draftHead(origin: String) -> RecurrentDraftHead {
        var config = base.config
        config.origin = origin
        let w = weights
        return RecurrentDraftHead(config: config, input: w.input, recurrent: w.recurrent, recurrentBias: w.recurrentBias,
                                  blockWeights: w.blockWeights, blockBiases: w.blockBiases, projection: w.projection, norm: w.norm,
                                  draftVocabulary: vocabulary.count < model.config.vocabularySize ? vocabulary : nil)
    }

    /// Saves the head and the optimiser's state into `folder`.
    public func checkpoint(to folder: String, origin: String) throws {
        try draftHead(origin: origin).save(to: folder)
        try optimiser.save(to: folder)
    }

    /// Continues from a checkpoint written by `checkpoint` (same data and options).
    public func resume(from folder: String) throws {
        weights = RecurrentHeadTensors(try RecurrentDraftHead.load(from: folder, for: model))
        try optimiser.restore(from: folder, tensors: weights.tensors.count)
        for _ in 0..<(optimiser.step * options.batch) { _ = random.next() }
    }
}

/// How often a ReDrafter head's drafts match the full model, by teacher forcing: at each depth j
/// (drafting token p + 1 + j from the final state at p, the model's own tokens as inputs), the share of
/// positions where the full model's top token is the head's top token, and where it is among the
/// head's top 3 (what beams of width 3 can catch).
public struct RecurrentHeadAgreement: Sendable {
    public var positions: Int
    public var top1: [Double]
    public var top3: [Double]

    /// `sequences[i]` is scored from position `firstScored[i]` (its answer; nil: everywhere).
    public init(head: RecurrentDraftHead, model: LlamaModel, sequences: [[Int32]], firstScored: [Int]?, depth: Int) throws {
        let d = model.config.hiddenSize
        let vocabulary = head.draftVocabulary ?? (0..<Int32(model.config.vocabularySize)).map { $0 }
        let rows = AdapterTrainer.headRows(of: model, ids: vocabulary)
        let weights = RecurrentHeadTensors(head)
        let loss = RecurrentHeadLoss<Float>(hidden: d, eps: model.config.rmsNormEpsilon)
        let forcing = TeacherForcing(model: model, exitLayer: 1, keepsDeepStates: true)
        let embedded = FloatMatrix(capacity: 64, columns: d)
        var hits1 = [Int](repeating: 0, count: depth), hits3 = hits1, scored = 0
        for (i, tokens) in sequences.enumerated() {
            let e = try forcing.run(tokens)
            let first = max((firstScored?[i] ?? 0) - 1, 0)
            guard e.count - 1 - depth >= first else { continue }
            let starts = Array(first...(e.count - 1 - depth))
            for batch in stride(from: 0, to: starts.count, by: 64).map({ Array(starts[$0..<min($0 + 64, starts.count)]) }) {
                let n = batch.count
                var finalStates = [Float](repeating: 0, count: n * d)
                for (r, p) in batch.enumerated() { for c in 0..<d { finalStates[r * d + c] = e.deepStates[p * d + c] } }
                let embeddings = (0..<depth).map { j -> [Float] in
                    model.embed(batch.map { tokens[$0 + 1 + j] }, into: embedded)
                    return Array(UnsafeBufferPointer(start: embedded.pointer, count: n * d))
                }
                let logits = loss.evaluate(weights, finalStates: finalStates, embeddings: embeddings,
                                           targets: (0..<depth).map { _ in [Float](repeating: 0, count: n * vocabulary.count) },
                                           head: rows, vocabulary: vocabulary.count).logits
                for j in 0..<depth {
                    for (r, p) in batch.enumerated() {
                        let base = r * vocabulary.count
                        let best = (0..<vocabulary.count).partialTop(3) { logits[j][base + $0] }.map { vocabulary[$0] }
                        let target = e.topIDs[(p + 1 + j) * e.k]
                        if best.first == target { hits1[j] += 1 }
                        if best.contains(target) { hits3[j] += 1 }
                    }
                }
                scored += n
            }
        }
        positions = scored
        top1 = hits1.map { Double($0) / Double(max(scored, 1)) }
        top3 = hits3.map { Double($0) / Double(max(scored, 1)) }
    }
}
