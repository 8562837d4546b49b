import Foundation
import Llama
import Tensor

/// Settings of the drafters that draft from the exit layer's states (Kangaroo, layer skip) and of
/// prompt lookup. The defaults are the project's defaults everywhere (CLI, server, benchmarks).
public struct SpeculativeOptions: Sendable, Equatable {
    /// Layers `0..<exitLayer` form the shallow sub-network that feeds the drafter.
    public var exitLayer: Int
    /// Drafting stops once a draft's top-1 probability is below this (η); in a tree, candidates below
    /// it are not expanded. Nil: by the round's shape (`defaultThreshold`).
    public var threshold: Float?
    /// γ: drafts per round at most.
    public var maxDraft: Int
    /// Whether the draft that fell below the threshold is dropped instead of verified (the paper
    /// verifies it). Dropping saves its verification width, which costs more than its rare acceptance
    /// brings when drafts are weak; either way the output is unchanged.
    public var dropsUncertainDraft: Bool
    /// Back-off after failed drafting (not in the paper): after a round in which drafts were made and
    /// none was accepted, the next 1, then 2, 4, … rounds (at most this many) decode one token without
    /// drafting, until a round accepts a draft again. Such a round costs what a plain step costs, where
    /// a failed draft costs the drafter's work on top. 0 drafts every round, as the paper does.
    public var maxBackoff: Int
    /// Copy drafts (prompt lookup; 0: off): when the last `copyNgram` tokens occurred earlier in the
    /// prompt or output, the tokens that followed them there are drafted (see `CopyLookup`): at the start
    /// of a round all at once (up to γ, fewer when the match is short; also in a back-off), the drafter
    /// going on after them; later in a round one instead of the drafter's, with full confidence. The
    /// drafter still sees every position. For `LookupDrafter`, the n-gram it looks up.
    public var copyNgram: Int
    /// Draft trees (0: a chain): the most nodes a round's tree may hold. The tree grows from the draft
    /// model's top candidates, best path probability first, while a node's probability repays what its
    /// row adds to the round's cost (`ForwardCosts`); nodes below η are not expanded further. Copy
    /// drafts form a branch of their own. Nil: by the decoding mode (`treeBudget(sampling:)`).
    public var treeBudget: Int?
    /// Draft trees: the candidates drawn under each expanded node, and the nodes expanded per level.
    public var treeWidth: Int
    /// ReDrafter: beams kept by its beam search, and their length (greedy; sampling draws one chain of
    /// that length).
    public var beamWidth: Int
    public var beamLength: Int

    /// η for a drafting shape when none is given: a chain ends at its first doubtful draft, so it
    /// stops before drafts that are rarely accepted (0.6); a tree keeps a doubtful draft's siblings
    /// beside it, so it expands down to 0.3, where calibrated trees did best (docs/measurements.md,
    /// "Draft trees").
    public static func defaultThreshold(treeBudget: Int) -> Float { treeBudget > 0 ? 0.3 : 0.6 }

    /// The tree a greedy round drafts when the budget is left to the mode. Sampled rounds draft a chain
    /// then: drawing a tree's candidates without replacement costs more drafting than its extra nodes
    /// are accepted (docs/measurements.md, "Draft trees").
    public static let greedyTreeBudget = 12

    /// The round's tree budget (0: a chain) for a greedy or a sampled round.
    public func treeBudget(sampling: Bool) -> Int { treeBudget ?? (sampling ? 0 : Self.greedyTreeBudget) }

    /// The round's η for its tree budget.
    public func threshold(treeBudget: Int) -> Float { threshold ?? Self.defaultThreshold(treeBudget: treeBudget) }

    /// The values the decoders accept.
    public static let exitLayerRange = 1...1024
    public static let thresholdRange: ClosedRange<Float> = 0...1
    public static let maxDraftRange = 0...16
    public static let maxBackoffRange = 0...1024
    public static let copyNgramRange = 0...64
    public static let treeBudgetRange = 0...16
    public static let treeWidthRange = 1...8
    public static let beamWidthRange = 1...16
    public static let beamLengthRange = 1...16

    /// The defaults, chosen by measurement (`kangaroo bench sweep`, `bench suite`; see
    /// docs/measurements.md): the paper's exit layer 2, η and policy (every draft verified, no
    /// back-off), γ 3, copy bigrams; ReDrafter one beam of two tokens.
    public init(exitLayer: Int = 2, threshold: Float? = defaultThreshold(treeBudget: 0), maxDraft: Int = 3, dropsUncertainDraft: Bool = false,
                maxBackoff: Int = 0, copyNgram: Int = 2, treeBudget: Int? = 0, treeWidth: Int = 3, beamWidth: Int = 1,
                beamLength: Int = 2) {
        self.exitLayer = exitLayer
        self.threshold = threshold
        self.maxDraft = maxDraft
        self.dropsUncertainDraft = dropsUncertainDraft
        self.maxBackoff = maxBackoff
        self.copyNgram = copyNgram
        self.treeBudget = treeBudget
        self.treeWidth = treeWidth
        self.beamWidth = beamWidth
        self.beamLength = beamLength
    }

    /// The first setting outside its range, named as the field is (callers word their own errors).
    public var invalidSetting: String? {
        if !Self.exitLayerRange.contains(exitLayer) { return "exit layer" }
        if let threshold, !Self.thresholdRange.contains(threshold) { return "threshold" }
        if !Self.maxDraftRange.contains(maxDraft) { return "max draft" }
        if !Self.maxBackoffRange.contains(maxBackoff) { return "max back-off" }
        if !Self.copyNgramRange.contains(copyNgram) { return "copy n-gram" }
        if let treeBudget, !Self.treeBudgetRange.contains(treeBudget) { return "tree budget" }
        if !Self.treeWidthRange.contains(treeWidth) { return "tree width" }
        if !Self.beamWidthRange.contains(beamWidth) { return "beam width" }
        if !Self.beamLengthRange.contains(beamLength) { return "beam length" }
        return nil
    }
}

public enum SpeculativeError: Error, CustomStringConvertible, Equatable {
    /// A setting outside its range (`SpeculativeOptions`' names), or an exit layer the model lacks.
    case invalidSetting(String)
    /// The adapter was trained for another exit layer.
    case exitLayerMismatch(adapter: Int, requested: Int)

    public var description: String {
        switch self {
        case let .invalidSetting(name): "the \(name) is outside its range"
        case let .exitLayerMismatch(adapter, requested): "the adapter was trained for exit layer \(adapter), not \(requested)"
        }
    }
}

/// What turns exit-layer states into draft distributions for `ExitLayerDrafter`: Kangaroo's adapter
/// (in the Adapter module), or the model's own final norm and head (layer skip).
public protocol ExitStateDraftModel: AnyObject {
    var head: DraftHead { get }
    /// Whether `evaluate` uses the full model's last verified final state.
    var takesDeepState: Bool { get }
    /// Whether it keeps a cache of the states it saw: then it must see every committed position, in
    /// order, and is rolled back like the model's caches.
    var keepsCache: Bool { get }
    /// Positions it has seen (with `keepsCache`).
    var length: Int { get }
    func reset()
    func truncate(to length: Int)
    /// Sees rows `rows` of `states` (the next positions) without drafting.
    func feed(_ states: FloatMatrix, rows: Range<Int>, scratch: ForwardScratch)
    /// Sees rows `rows` and evaluates `head` on the last; `deepState` (normalised) when given.
    func evaluate(_ states: FloatMatrix, rows: Range<Int>, deepState: UnsafePointer<Float>?, scratch: ForwardScratch)
    /// Draft trees: sees rows `rows` of `states` (at most `DraftHead.maxRows`), nodes of a round's
    /// tree, and evaluates `head` on each (logits row `i` for `rows[i]`). `parents[i]` is the parent of
    /// `rows[i]` as an index into the rows this round has shown it so far, in order; nil for the round's
    /// first row, the position after the committed ones, which alone takes `deepState`.
    func evaluateTree(_ states: FloatMatrix, rows: [Int], parents: [Int?], deepState: UnsafePointer<Float>?,
                      scratch: ForwardScratch)
    /// After a tree round that started at position `base`: the rows it was shown at indices `seen` (a
    /// path from the round's first row) become positions `base…`, and the rest is forgotten.
    func keepPath(_ seen: [Int], base: Int)
}

/// Layer skip's draft model: the model's own final norm and head on the exit state.
public final class LayerSkipHead: ExitStateDraftModel {
    public let head: DraftHead
    public var takesDeepState: Bool { false }
    public var keepsCache: Bool { false }
    public var length: Int { 0 }

    /// A tree level's states, side by side.
    private let gathered: FloatMatrix

    public init(model: LlamaModel) {
        head = DraftHead(model: model, normWeights: model.outputNorm)
        gathered = FloatMatrix(capacity: DraftHead.maxRows, columns: model.config.hiddenSize)
    }

    public func reset() {}
    public func truncate(to length: Int) {}
    public func feed(_ states: FloatMatrix, rows: Range<Int>, scratch: ForwardScratch) {}
    public func evaluate(_ states: FloatMatrix, rows: Range<Int>, deepState: UnsafePointer<Float>?, scratch: ForwardScratch) {
        head.evaluate(states.row(rows.upperBound - 1), pool: scratch.pool)
    }

    public func evaluateTree(_ states: FloatMatrix, rows: [Int], parents: [Int?], deepState: UnsafePointer<Float>?,
                             scratch: ForwardScratch) {
        for (i, row) in rows.enumerated() { gathered.copyRow(from: states, row: row, to: i) }
        head.evaluate(gathered.pointer, count: rows.count, pool: scratch.pool)
    }

    public func keepPath(_ seen: [Int], base: Int) {}
}

/// A drafter whose η, γ and copy n-gram can change between generations (the server's per-request
/// settings; a drafter ignores those it has no use for).
public protocol ConfigurableDrafter: Drafter {
    func configure(threshold: Float?, maxDraft: Int, copyNgram: Int) throws
}

/// Kangaroo's drafting (and layer skip's): each draft goes once through layers `0..<ℓ` (`runLayers`,
/// so verification reuses its exit state), and the draft model proposes the next token from that
/// state, until γ drafts or a draft below the confidence threshold η (kept and verified, as the paper
/// does, unless `dropsUncertainDraft`). With copy drafts, a round whose text continues an earlier
/// passage drafts that passage's next tokens first (the shallow layers over them in one batch).
///
/// A draft model with a cache sees every committed position: when a whole round is accepted, its last
/// position went through the shallow layers but not the draft model, and is fed at the next draft
/// step ("lag by one").
public final class ExitLayerDrafter: ConfigurableDrafter {
    public private(set) var options: SpeculativeOptions
    public let draftModel: ExitStateDraftModel
    let model: LlamaModel
    /// What wider forwards cost here: the draft tree's size follows them.
    public let costs: ForwardCosts
    /// Exit states of committed positions the draft model has not seen yet.
    private let lagging: FloatMatrix
    /// The full model's final state at the position before the pending token, normalised by its
    /// output norm: the deep state of a round's first draft.
    let deepState: FloatMatrix
    /// Sampling: the draft head's processed distribution.
    private let headProbabilities: FloatMatrix
    var copyLookup: CopyLookup?
    /// Draft trees: the batch rows the draft model saw this round, in order; when sampling, each
    /// one's processed draft distribution (by that order), and room to draw children from it.
    var seenRows: [Int] = []
    /// Draft trees: the path probability each node of this round was planned with (nil: a copy), and
    /// how often earlier nodes of such probabilities were accepted.
    var plannedProbabilities: [Float?] = []
    var calibration = TreeCalibration()
    let expandedProbabilities: FloatMatrix
    let drawBuffer: FloatMatrix
    private var backoff = 0
    private var roundsWithoutDrafting = 0
    /// This round: whether the draft model saw the last row's exit state (a dropped draft's proposal
    /// fed it), and whether the round could draft with the draft model (for the back-off).
    private var modelSawLastRow = false
    /// This round's tree budget (0: a chain) and η, by its decoding mode where the options leave them.
    private(set) var roundTreeBudget = 0
    private(set) var roundThreshold: Float = 0
    private var roundCouldDraft = false

    /// `costs` size draft trees (`options.treeBudget`); without a measurement, every row counts in full.
    public init(model: LlamaModel, draftModel: ExitStateDraftModel, options: SpeculativeOptions,
                costs: ForwardCosts = .proportional()) throws {
        if let name = options.invalidSetting { throw SpeculativeError.invalidSetting(name) }
        guard options.exitLayer <= model.config.layerCount else { throw SpeculativeError.invalidSetting("exit layer") }
        self.model = model
        self.draftModel = draftModel
        self.options = options
        self.costs = costs
        let d = model.config.hiddenSize
        lagging = FloatMatrix(capacity: 4, columns: d)
        let treeRows = SpeculativeOptions.treeBudgetRange.upperBound + 1
        expandedProbabilities = FloatMatrix(capacity: treeRows, columns: draftModel.head.rowCount)
        drawBuffer = FloatMatrix(capacity: 1, columns: draftModel.head.rowCount)
        deepState = FloatMatrix(capacity: 1, columns: d)
        headProbabilities = FloatMatrix(capacity: 1, columns: draftModel.head.rowCount)
        copyLookup = options.copyNgram > 0 ? CopyLookup(n: options.copyNgram) : nil
    }

    /// Changes η, γ and the copy n-gram (0: none) for the next generations.
    public func configure(threshold: Float?, maxDraft: Int, copyNgram: Int) throws {
        var changed = options
        changed.threshold = threshold
        changed.maxDraft = maxDraft
        changed.copyNgram = copyNgram
        if let name = changed.invalidSetting { throw SpeculativeError.invalidSetting(name) }
        if copyNgram != options.copyNgram { copyLookup = copyNgram > 0 ? CopyLookup(n: copyNgram) : nil }
        options = changed
    }

    public var observedLayers: Int? { draftModel.keepsCache ? options.exitLayer : nil }

    public func begin(prompt: [Int32], round: DraftRound) throws {
        draftModel.reset()
        lagging.rows = 0
        startGeneration(prompt: prompt, round: round)
    }

    /// What every generation starts from, whether its prompt is new or continues the cache. The
    /// calibration starts afresh too: a sampled generation's draws depend on its trees' shapes, so a
    /// seeded request must not depend on the requests before it.
    private func startGeneration(prompt: [Int32], round: DraftRound) {
        backoff = 0
        roundsWithoutDrafting = 0
        calibration = TreeCalibration()
        copyLookup?.reset(to: prompt, capacity: round.cache.capacity)
    }

    /// The draft model keeps the positions it saw (those still lagging are shown to it first).
    public func resume(prompt: [Int32], keeping kept: Int, round: DraftRound) throws -> Bool {
        if draftModel.keepsCache {
            flushLagging(scratch: round.scratch)
            guard draftModel.length >= kept else { return false }
            draftModel.truncate(to: kept)
        }
        startGeneration(prompt: prompt, round: round)
        return true
    }

    public func observe(_ states: FloatMatrix, round: DraftRound) throws {
        draftModel.feed(states, rows: 0..<states.rows, scratch: round.scratch)
    }

    public func propose(_ round: DraftRound, sampler: inout Sampler) throws {
        roundTreeBudget = options.treeBudget(sampling: !sampler.options.isGreedy)
        roundThreshold = options.threshold(treeBudget: roundTreeBudget)
        if roundTreeBudget > 0 { return try proposeTree(round, sampler: &sampler) }
        var maxDrafts = min(options.maxDraft, round.limit)
        modelSawLastRow = false
        // A copy round, also during a back-off (copies are right far more often than failed drafts).
        var copies: [Int32] = []
        copyLookup?.appendChain(to: &copies, limit: maxDrafts)
        round.addCopies(copies, sampling: !sampler.options.isGreedy)
        let copyRound = !copies.isEmpty
        // In a back-off the draft model does not draft; a copy round counts as one of its rounds.
        if roundsWithoutDrafting > 0 {
            roundsWithoutDrafting -= 1
            maxDrafts = copies.count
        }
        roundCouldDraft = maxDrafts > 0 && !copyRound
        // Every token of the round goes through the shallow layers exactly once.
        try round.runLayers(options.exitLayer)
        if copyRound { feedModel(round, rows: 0..<copies.count) }
        var stop = round.count >= maxDrafts
        while !stop {
            let (draft, confidence, copied) = proposeDraft(round, sampler: &sampler)
            round.draftSteps += 1
            if confidence < roundThreshold && options.dropsUncertainDraft {
                modelSawLastRow = true
                break
            }
            let node = round.add(draft, parent: round.count == 0 ? nil : round.count - 1)
            if copied && !sampler.options.isGreedy { round.setCertain(node) }
            try round.runLayers(options.exitLayer)
            stop = confidence < roundThreshold || round.count == maxDrafts
        }
    }

    public func accept(_ outcome: RoundOutcome) {
        if draftModel.takesDeepState { model.normalizeOutput(outcome.finalState, into: deepState.pointer) }
        copyLookup?.commit(outcome.tokens)
        guard let round = outcome.round else { return }
        if roundTreeBudget > 0 { return acceptTree(round, path: outcome.path) }
        let accepted = outcome.path.count
        if draftModel.keepsCache {
            // The draft model saw the exit states of rows 0..<drafts (one per draft step), and row
            // `drafts` too when a draft was dropped.
            if accepted == round.count && !modelSawLastRow {
                lag(round.states, row: accepted, scratch: round.scratch)
            } else {
                draftModel.truncate(to: round.position + accepted + 1)
            }
        }
        if roundCouldDraft {
            // Back off (doubling from 1, at most maxBackoff) after a round that accepted nothing.
            if accepted == 0 {
                backoff = min(max(1, 2 * backoff), options.maxBackoff)
                roundsWithoutDrafting = backoff
            } else {
                backoff = 0
            }
        }
    }

    /// Feeds the draft model rows `rows` of the round's states, after the lagging ones, without drafting.
    private func feedModel(_ round: DraftRound, rows: Range<Int>) {
        flushLagging(scratch: round.scratch)
        draftModel.feed(round.states, rows: rows, scratch: round.scratch)
    }

    /// Keeps row `row` of `states`, a committed position's exit state, for the draft model to see later.
    func lag(_ states: FloatMatrix, row: Int, scratch: ForwardScratch) {
        if lagging.rows == lagging.capacity { flushLagging(scratch: scratch) }
        lagging.copyRow(from: states, row: row, to: lagging.rows)
        lagging.rows += 1
    }

    func flushLagging(scratch: ForwardScratch) {
        guard lagging.rows > 0 else { return }
        draftModel.feed(lagging, rows: 0..<lagging.rows, scratch: scratch)
        lagging.rows = 0
    }

    /// The next draft for the newest exit state, its confidence, and whether it is a copy: a copy
    /// (confidence 1) when the text so far (drafts included) allows one, else the draft model's.
    private func proposeDraft(_ round: DraftRound, sampler: inout Sampler) -> (Int32, Float, Bool) {
        if let copy = copyLookup?.proposal(after: round.tokens) {
            // The draft model must still see the position; its head, the costly part of a draft step
            // after the shallow layers, is skipped.
            if draftModel.keepsCache { feedModel(round, rows: (round.states.rows - 1)..<round.states.rows) }
            round.copiedDrafts += 1
            return (copy, 1, true)
        }
        let (token, confidence) = proposeOwnDraft(round, sampler: &sampler)
        return (token, confidence, false)
    }

    /// The draft model's next token and its confidence (top-1 probability of the draft distribution)
    /// for the newest exit state. When sampling, the draft is drawn from the processed draft
    /// distribution, which is kept (dense) in the round for verification.
    private func proposeOwnDraft(_ round: DraftRound, sampler: inout Sampler) -> (Int32, Float) {
        let newest = round.states.rows - 1
        flushLagging(scratch: round.scratch)
        // Only the round's first draft has a verified predecessor, hence a deep state.
        draftModel.evaluate(round.states, rows: newest..<(newest + 1),
                            deepState: newest == 0 && draftModel.takesDeepState ? deepState.pointer : nil, scratch: round.scratch)
        return draftModel.head.draft(sampler: &sampler, round: round, buffer: headProbabilities.pointer)
    }
}

/// Prompt lookup as a drafter of its own (llama.cpp's `lookup`, transformers'
/// `prompt_lookup_num_tokens`): when the last n tokens occurred earlier in the prompt or output, the
/// tokens that followed them there are the round's drafts. Works with any model, without an adapter.
public final class LookupDrafter: ConfigurableDrafter {
    public private(set) var maxDraft: Int
    private var lookup: CopyLookup

    public init(ngram: Int, maxDraft: Int) throws {
        try Self.check(ngram: ngram, maxDraft: maxDraft)
        lookup = CopyLookup(n: ngram)
        self.maxDraft = maxDraft
    }

    private static func check(ngram: Int, maxDraft: Int) throws {
        guard (1...SpeculativeOptions.copyNgramRange.upperBound).contains(ngram) else { throw SpeculativeError.invalidSetting("copy n-gram") }
        guard SpeculativeOptions.maxDraftRange.contains(maxDraft) else { throw SpeculativeError.invalidSetting("max draft") }
    }

    /// Changes γ and the n-gram for the next generations (η does not apply).
    public func configure(threshold: Float?, maxDraft: Int, copyNgram: Int) throws {
        try Self.check(ngram: copyNgram, maxDraft: maxDraft)
        self.maxDraft = maxDraft
        if copyNgram != lookup.n { lookup = CopyLookup(n: copyNgram) }
    }

    public var observedLayers: Int? { nil }

    public func begin(prompt: [Int32], round: DraftRound) throws {
        lookup.reset(to: prompt, capacity: round.cache.capacity)
    }

    public func propose(_ round: DraftRound, sampler: inout Sampler) throws {
        var copies: [Int32] = []
        lookup.appendChain(to: &copies, limit: min(maxDraft, round.limit))
        round.addCopies(copies, sampling: !sampler.options.isGreedy)
    }

    public func accept(_ outcome: RoundOutcome) { lookup.commit(outcome.tokens) }
}
