import Decoding
import Foundation
import Llama
import Tensor

/// Evaluates a `RecurrentDraftHead` one recurrent step at a time, for several rows at once (a beam
/// search's beams).
final class RecurrentHeadRunner {
    let model: LlamaModel
    let head: DraftHead
    private let weights: DraftWeights
    private let input: WeightMatrix
    private let recurrent: WeightMatrix
    private let recurrentBias: [Float]
    private let blocks: [WeightMatrix]
    private let blockBiases: [[Float]]
    private let projection: WeightMatrix
    private let embedded: FloatMatrix
    private let product: FloatMatrix
    /// Rows of [h ⊕ s], then the residual blocks' outputs over them.
    private let joined: FloatMatrix
    private let blockOutput: FloatMatrix
    private let projected: FloatMatrix
    private let batch: ActivationBatch

    init(_ w: RecurrentDraftHead, model: LlamaModel) {
        self.model = model
        let d = model.config.hiddenSize, rows = DraftHead.maxRows
        let weights = DraftWeights()
        self.weights = weights
        input = weights.matrix(w.input, rows: d, columns: d)
        recurrent = weights.matrix(w.recurrent, rows: d, columns: d)
        recurrentBias = w.recurrentBias
        blocks = w.blockWeights.map { weights.matrix($0, rows: 2 * d, columns: 2 * d) }
        blockBiases = w.blockBiases
        projection = weights.matrix(w.projection, rows: d, columns: 2 * d)
        head = DraftHead(model: model, normWeights: w.norm, vocabulary: w.draftVocabulary)
        embedded = FloatMatrix(capacity: rows, columns: d)
        product = FloatMatrix(capacity: rows, columns: d)
        joined = FloatMatrix(capacity: rows, columns: 2 * d)
        blockOutput = FloatMatrix(capacity: rows, columns: 2 * d)
        projected = FloatMatrix(capacity: rows, columns: d)
        batch = ActivationBatch(capacity: rows * 2 * d)
    }

    /// One step for `tokens.count` rows: row i's previous draft token `tokens[i]` and previous
    /// recurrent state (row i of `previous`; nil: zeros) give its next state (row i of `next`) and its
    /// draft logits (row i of `head.logits`). `h` (`hiddenSize` floats) is the full model's
    /// normalised final state, shared by all rows.
    func step(tokens: [Int32], previous: FloatMatrix?, h: UnsafePointer<Float>, into next: FloatMatrix, pool: ThreadPool) {
        let n = tokens.count, d = model.config.hiddenSize
        precondition((1...DraftHead.maxRows).contains(n) && previous !== next)
        model.embed(tokens, into: embedded)
        batch.set(embedded.pointer, count: n, columns: d)
        input.multiply(batch, into: next.pointer, pool: pool)
        if let previous {
            batch.set(previous.pointer, count: n, columns: d)
            recurrent.multiply(batch, into: product.pointer, pool: pool)
            VectorOps.add(next.pointer, product.pointer, count: n * d)
        }
        for i in 0..<n {
            let s = next.row(i)
            VectorOps.add(s, recurrentBias, count: d)
            silu(s, count: d)
            let x = joined.row(i)
            x.update(from: h, count: d)
            (x + d).update(from: s, count: d)
        }
        next.rows = n
        for (weight, bias) in zip(blocks, blockBiases) {
            batch.set(joined.pointer, count: n, columns: 2 * d)
            weight.multiply(batch, into: blockOutput.pointer, pool: pool)
            for i in 0..<n {
                let y = blockOutput.row(i)
                VectorOps.add(y, bias, count: 2 * d)
                silu(y, count: 2 * d)
                VectorOps.add(joined.row(i), y, count: 2 * d)
            }
        }
        batch.set(joined.pointer, count: n, columns: 2 * d)
        projection.multiply(batch, into: projected.pointer, pool: pool)
        head.evaluate(projected.pointer, count: n, pool: pool)
    }

    private func silu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { x[i] = x[i] / (1 + expf(-x[i])) }
    }
}

/// ReDrafter as a drafter: the recurrent head drafts from the full model's last final state. Greedy,
/// a beam search keeps the `beamWidth` most likely continuations (by the head's summed
/// log-probabilities) for `beamLength` tokens, and the beams, merged where they share a beginning, are
/// verified as one tree: the longest prefix the full model agrees with wins. Sampling, the head's
/// tokens are drawn as one chain from its processed distribution and kept with the draft, so the
/// core's speculative sampling keeps the full model's distribution exactly (the reference's beams are
/// not exact when sampling).
public final class ReDrafter: Drafter {
    public let beamWidth: Int
    public let beamLength: Int
    let runner: RecurrentHeadRunner
    /// The full model's normalised final state at the last accepted position (nil before the first).
    private let finalState: FloatMatrix
    private var hasFinalState = false
    /// Recurrent states of the beams, this step's and the next's.
    private var states: FloatMatrix
    private var nextStates: FloatMatrix
    private let processed: FloatMatrix

    public init(head: RecurrentDraftHead, model: LlamaModel, beamWidth: Int, beamLength: Int) throws {
        guard SpeculativeOptions.beamWidthRange.contains(beamWidth) else { throw SpeculativeError.invalidSetting("beam width") }
        guard SpeculativeOptions.beamLengthRange.contains(beamLength) else { throw SpeculativeError.invalidSetting("beam length") }
        self.beamWidth = beamWidth
        self.beamLength = beamLength
        runner = RecurrentHeadRunner(head, model: model)
        let d = model.config.hiddenSize
        finalState = FloatMatrix(capacity: 1, columns: d)
        states = FloatMatrix(capacity: DraftHead.maxRows, columns: d)
        nextStates = FloatMatrix(capacity: DraftHead.maxRows, columns: d)
        processed = FloatMatrix(capacity: 1, columns: runner.head.rowCount)
    }

    public var observedLayers: Int? { nil }

    public func begin(prompt: [Int32], round: DraftRound) throws {
        hasFinalState = false
    }

    public func accept(_ outcome: RoundOutcome) {
        runner.model.normalizeOutput(outcome.finalState, into: finalState.pointer)
        hasFinalState = true
    }

    public func propose(_ round: DraftRound, sampler: inout Sampler) throws {
        guard hasFinalState, round.limit > 0 else { return }
        if sampler.options.isGreedy { beamSearch(round) } else { sampledChain(round, sampler: &sampler) }
    }

    private func step(_ tokens: [Int32], first: Bool, round: DraftRound) {
        runner.step(tokens: tokens, previous: first ? nil : states, h: finalState.pointer, into: nextStates, pool: round.scratch.pool)
        round.draftSteps += tokens.count
    }

    /// The beams' tokens, most likely first, merged into the round as a prefix tree.
    private func beamSearch(_ round: DraftRound) {
        struct Beam {
            var tokens: [Int32]
            var logProbability: Float
        }
        let head = runner.head, width = min(beamWidth, round.limit)
        var beams = [Beam(tokens: [], logProbability: 0)]
        for depth in 0..<min(beamLength, round.limit) {
            step(beams.map { $0.tokens.last ?? round.pending }, first: depth == 0, round: round)
            var candidates: [(beam: Int, token: Int32, logProbability: Float)] = []
            for (i, beam) in beams.enumerated() {
                for draft in head.topDrafts(width, row: i) {
                    candidates.append((i, draft.token, beam.logProbability + logf(draft.probability)))
                }
            }
            candidates.sort { $0.logProbability > $1.logProbability }
            let kept = candidates.prefix(width)
            for (row, candidate) in kept.enumerated() { states.copyRow(from: nextStates, row: candidate.beam, to: row) }
            states.rows = kept.count
            beams = kept.map { Beam(tokens: beams[$0.beam].tokens + [$0.token], logProbability: $0.logProbability) }
        }
        var children: [Int: [Int32: Int]] = [:]  // by parent node (-1: the pending token)
        for beam in beams {
            var parent: Int? = nil
            for token in beam.tokens {
                if let node = children[parent ?? -1]?[token] {
                    parent = node
                    continue
                }
                guard round.count < round.limit else { return }
                let node = round.add(token, parent: parent)
                children[parent ?? -1, default: [:]][token] = node
                parent = node
            }
        }
    }

    /// One chain drawn from the head's processed distributions, each kept (dense) for verification.
    private func sampledChain(_ round: DraftRound, sampler: inout Sampler) {
        let head = runner.head, rows = head.rowCount, q = processed.pointer
        var token = round.pending
        for depth in 0..<min(beamLength, round.limit) {
            step([token], first: depth == 0, round: round)
            swap(&states, &nextStates)
            sampler.process(head.logits.row(0), count: rows, into: q)
            token = head.tokenID(row: Int(sampler.draw(q, count: rows)))
            let node = round.add(token, parent: depth == 0 ? nil : round.count - 1)
            let dense = round.probabilities.row(node)
            dense.initialize(repeating: 0, count: round.probabilities.columns)
            for r in 0..<rows { dense[Int(head.tokenID(row: r))] = q[r] }
        }
    }
}
