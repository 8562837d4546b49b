import Decoding
import Llama
import Tensor

/// SpecDec's drafting (Xia et al.) for a decoder-only model, in Kangaroo's setting: the pending token
/// goes through the shallow layers, and a block drafter (Kangaroo's adapter with k learned block
/// queries, SpecDec's [MASK] positions, each added to the token's exit state) drafts the next position
/// from it and the k after from the queries, all in one pass (`AdapterRunner.evaluateBlock`). The drafts form a chain, cut after the
/// first whose probability is below the threshold (that one is still verified, as Kangaroo's η) and
/// at γ; the full model verifies it exactly, so the output is plain decoding's.
///
/// The queries see each other causally, not fully as in SpecDec: with one attention layer their keys
/// and values are constants (no token reaches them), so seeing the later ones would add nothing, and
/// causal attention is what the model's attention kernel computes bit for bit.
public final class BlockDrafter: ConfigurableDrafter {
    public private(set) var options: SpeculativeOptions
    let runner: AdapterRunner
    let model: LlamaModel
    /// The full model's normalised final state at the position before the pending token.
    private let deepState: FloatMatrix
    private let headProbabilities: FloatMatrix

    public init(drafter: KangarooAdapter, model: LlamaModel, options: SpeculativeOptions, contextCapacity: Int) throws {
        precondition(drafter.blockSize > 0, "a block drafter has block queries")
        var options = options
        options.exitLayer = drafter.config.exitLayer
        if let name = options.invalidSetting { throw SpeculativeError.invalidSetting(name) }
        self.options = options
        self.model = model
        runner = AdapterRunner(adapter: drafter, model: model, contextCapacity: contextCapacity, chunk: 64)
        deepState = FloatMatrix(capacity: 1, columns: model.config.hiddenSize)
        headProbabilities = FloatMatrix(capacity: 1, columns: runner.head.rowCount)
    }

    /// Changes η and γ for the next generations (there are no copy drafts).
    public func configure(threshold: Float?, maxDraft: Int, copyNgram: Int) throws {
        var changed = options
        changed.threshold = threshold
        changed.maxDraft = maxDraft
        if let name = changed.invalidSetting { throw SpeculativeError.invalidSetting(name) }
        options = changed
    }

    public var observedLayers: Int? { options.exitLayer }

    public func begin(prompt: [Int32], round: DraftRound) throws { runner.reset() }

    public func resume(prompt: [Int32], keeping kept: Int, round: DraftRound) throws -> Bool {
        guard runner.length >= kept else { return false }
        runner.truncate(to: kept)
        return true
    }

    public func observe(_ states: FloatMatrix, round: DraftRound) throws {
        runner.feed(states, rows: 0..<states.rows, scratch: round.scratch)
    }

    public func propose(_ round: DraftRound, sampler: inout Sampler) throws {
        // The pending token's exit state joins the runner's cache whether or not the round drafts.
        try round.runLayers(options.exitLayer)
        let drafts = min(options.maxDraft, runner.adapter.blockSize + 1, round.limit)
        guard drafts > 0 else { return runner.feed(round.states, rows: 0..<1, scratch: round.scratch) }
        runner.evaluateBlock(round.states, row: 0, deepState: runner.takesDeepState ? deepState.pointer : nil, scratch: round.scratch)
        round.draftSteps += 1
        for i in 0..<drafts {
            // Sampling: each draft is drawn from its own position's distribution, kept for verification.
            let (token, confidence) = runner.head.draft(row: i, sampler: &sampler, round: round, buffer: headProbabilities.pointer)
            round.add(token, parent: i == 0 ? nil : i - 1)
            if confidence < options.threshold(treeBudget: 0) { break }
        }
    }

    public func accept(_ outcome: RoundOutcome) {
        if runner.takesDeepState { model.normalizeOutput(outcome.finalState, into: deepState.pointer) }
        // The runner saw the pending token; the accepted drafts' exit states, from the round, follow it.
        guard let round = outcome.round, !outcome.path.isEmpty else { return }
        runner.feed(round.states, rows: 1..<(1 + outcome.path.count), scratch: round.scratch)
    }
}
