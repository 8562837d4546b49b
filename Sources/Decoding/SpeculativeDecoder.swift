import Adapter
import Foundation
import Llama
import Tensor

/// Settings of self-speculative decoding.
public struct SpeculativeOptions: Sendable, Equatable {
    /// Layers `0..<exitLayer` form the shallow sub-network that feeds the drafter.
    public var exitLayer: Int
    /// Drafting stops once a draft's top-1 probability is below this.
    public var threshold: Float
    /// γ: drafts per round at most.
    public var maxDraft: Int
    /// Whether the draft that fell below the threshold is dropped instead of verified (the paper
    /// verifies it). Dropping saves its verification width, which costs more than its rare acceptance
    /// brings when drafts are weak; either way the output is unchanged.
    public var dropsUncertainDraft: Bool
    /// Back-off after failed drafting (not in the paper): after a round in which drafts were made and
    /// none was accepted, the next 1, then 2, 4, … rounds (at most this many) decode one token without
    /// drafting, until a round accepts a draft again. Such a round costs what a plain step costs, where
    /// a failed draft costs the drafter's work on top. 0 drafts every round, as the paper does. Output
    /// is unchanged either way.
    public var maxBackoff: Int
    /// Copy drafts (not in the paper; 0: off): when the last `copyNgram` tokens occurred earlier in the
    /// prompt or output, the tokens that followed them there are drafted (see `CopyLookup`): at the start
    /// of a round all at once (up to γ, fewer when the match is short; also in a back-off), the drafter
    /// going on after them; later in a round one instead of the drafter's, with full confidence. The
    /// drafter still sees every position. Output unchanged.
    public var copyNgram: Int

    /// The values the decoder accepts (the server checks per-request settings against them too).
    public static let thresholdRange: ClosedRange<Float> = 0...1
    public static let copyNgramRange = 0...64

    public init(exitLayer: Int = 2, threshold: Float = 0.6, maxDraft: Int = 6, dropsUncertainDraft: Bool = false,
                maxBackoff: Int = 0, copyNgram: Int = 0) {
        self.exitLayer = exitLayer
        self.threshold = threshold
        self.maxDraft = maxDraft
        self.dropsUncertainDraft = dropsUncertainDraft
        self.maxBackoff = maxBackoff
        self.copyNgram = copyNgram
    }
}

public enum SpeculativeError: Error, CustomStringConvertible {
    case invalidOptions(String)

    public var description: String {
        switch self {
        case let .invalidOptions(reason): reason
        }
    }
}

/// Whether a sampled draft token is accepted, given its probability `p` under the full model's and
/// `q` under the draft's processed distribution, and a uniform draw `u` ∈ [0, 1).
public protocol AcceptanceRule: Sendable {
    func accepts(p: Float, q: Float, uniform u: Float) -> Bool
}

/// Speculative sampling (Leviathan et al. 2023; Chen et al. 2023): accept with probability
/// min(1, p/q); on rejection the token is drawn from normalise(max(0, p − q)). The output then has
/// exactly the full model's distribution.
public struct SpeculativeSamplingRule: AcceptanceRule {
    public init() {}

    public func accepts(p: Float, q: Float, uniform u: Float) -> Bool {
        u * q < p
    }
}

/// Kangaroo self-speculative decoding, and the layer-skip baseline that drafts without an adapter.
///
/// A round: the pending token and each draft go once through layers `0..<ℓ`, their exit-layer states
/// are kept in `exitStates`; the drafter (adapter + head, or the model's final norm + head) proposes
/// the next draft until γ drafts or a draft below the confidence threshold. Then layers `ℓ..<L` run
/// once over all kept states [pending, d1…dk], the longest prefix on which the full model agrees is
/// accepted, and the full model's next token is appended. Every cache is rolled back by length.
/// The shallow layers never run twice for a position. With copy drafts, a round whose text so far
/// continues an earlier passage drafts that passage's next tokens first, running the shallow layers
/// over them in one batch.
///
/// Lossless for greedy decoding: the deep layers see exactly the states plain decoding computes (the
/// kernels give each token the same bits in a batch as alone), so the full model's choices, and with
/// them the output, are plain decoding's.
public final class SpeculativeDecoder: Decoder {
    public enum Drafter {
        case adapter(KangarooAdapter)
        case layerSkip
    }

    public let name: String
    public let model: LlamaModel
    public private(set) var options: SpeculativeOptions
    /// The largest γ the buffers were made for.
    public let maxDraftCapacity: Int
    public let contextCapacity: Int
    public private(set) var statistics: SpeculativeStatistics

    let cache: KVCache
    let scratch: ForwardScratch
    /// The adapter and its cache (nil for layer-skip drafting).
    public let adapter: AdapterRunner?
    let layerSkipHead: DraftHead?
    /// Prompt states during `start`; the newest token's state during drafting.
    let states: FloatMatrix
    /// Exit-layer states of the round's positions [pending, d1…dk]; they stay exit states (the adapter
    /// may still have to see the last one), so the deep layers run on a copy, `verified`.
    let exitStates: FloatMatrix
    let verified: FloatMatrix
    let logits: FloatMatrix
    /// Exit states of committed positions that the adapter has not seen yet: the last token of a round
    /// whose drafts were all accepted went through the shallow layers but not the adapter ("lag by
    /// one"); the next draft step feeds them before the newest state.
    let lagging: FloatMatrix
    /// The full model's final state at the position before the pending token, normalised by its output
    /// norm: the deep state of the round's first draft, for adapters that take one.
    let deepState: FloatMatrix
    private var pending: Int32 = 0
    private var drafts: [Int32] = []
    /// The round's [pending, c1…cm] (copies, if any) for the shallow layers, kept to avoid an allocation per round.
    private var roundTokens: [Int32] = []
    /// Back-off state: the length of the current back-off, and the rounds of it still to decode
    /// without drafting.
    private var backoff = 0
    private var roundsWithoutDrafting = 0
    /// Copy drafts' view of the text: the prompt and every token decoded, ending with `pending`.
    private var copyLookup: CopyLookup?

    /// How sampled drafts are accepted (greedy decoding compares tokens instead).
    let acceptance: AcceptanceRule
    /// Sampling: the draft's processed distribution for each draft of the round, dense over the vocabulary.
    let draftProbabilities: FloatMatrix
    /// Sampling: the full model's processed distribution at one position, and the draft head's rows.
    let targetProbabilities: FloatMatrix
    let headProbabilities: FloatMatrix

    public init(model: LlamaModel, drafter: Drafter, options: SpeculativeOptions, contextCapacity: Int? = nil,
                acceptance: AcceptanceRule = SpeculativeSamplingRule(), pool: ThreadPool = .shared) throws {
        let c = model.config
        guard (1...c.layerCount).contains(options.exitLayer) else {
            throw SpeculativeError.invalidOptions("--exit-layer must be between 1 and \(c.layerCount)")
        }
        guard (0...64).contains(options.maxDraft) else { throw SpeculativeError.invalidOptions("--max-draft must be between 0 and 64") }
        guard SpeculativeOptions.thresholdRange.contains(options.threshold) else { throw SpeculativeError.invalidOptions("--threshold must be between 0 and 1") }
        guard (0...1024).contains(options.maxBackoff) else { throw SpeculativeError.invalidOptions("--max-backoff must be between 0 and 1024") }
        guard SpeculativeOptions.copyNgramRange.contains(options.copyNgram) else { throw SpeculativeError.invalidOptions("--copy-ngram must be between 0 and \(SpeculativeOptions.copyNgramRange.upperBound)") }
        self.model = model
        self.options = options
        maxDraftCapacity = max(options.maxDraft, 16)
        let capacity = min(contextCapacity ?? c.contextLength, c.contextLength)
        self.contextCapacity = capacity
        statistics = SpeculativeStatistics(maxDraft: options.maxDraft)
        cache = KVCache(config: c, capacity: capacity)
        scratch = ForwardScratch(config: c, tokens: max(64, maxDraftCapacity + 2), contextCapacity: capacity, pool: pool)
        states = FloatMatrix(capacity: capacity, columns: c.hiddenSize)
        exitStates = FloatMatrix(capacity: maxDraftCapacity + 1, columns: c.hiddenSize)
        verified = FloatMatrix(capacity: maxDraftCapacity + 1, columns: c.hiddenSize)
        logits = FloatMatrix(capacity: maxDraftCapacity + 1, columns: c.vocabularySize)
        lagging = FloatMatrix(capacity: 4, columns: c.hiddenSize)
        deepState = FloatMatrix(capacity: 1, columns: c.hiddenSize)
        self.acceptance = acceptance
        draftProbabilities = FloatMatrix(capacity: maxDraftCapacity, columns: c.vocabularySize)
        targetProbabilities = FloatMatrix(capacity: 1, columns: c.vocabularySize)
        switch drafter {
        case let .adapter(weights):
            guard weights.config.exitLayer == options.exitLayer else {
                throw SpeculativeError.invalidOptions("the adapter was trained for exit layer \(weights.config.exitLayer), not \(options.exitLayer)")
            }
            name = "kangaroo"
            adapter = AdapterRunner(adapter: weights, model: model, contextCapacity: capacity, chunk: scratch.capacity)
            layerSkipHead = nil
        case .layerSkip:
            name = "layerskip"
            adapter = nil
            layerSkipHead = DraftHead(model: model, normWeights: model.outputNorm)
        }
        headProbabilities = FloatMatrix(capacity: 1, columns: (adapter?.head ?? layerSkipHead!).rowCount)
        copyLookup = options.copyNgram > 0 ? CopyLookup(n: options.copyNgram) : nil
    }

    public var committedLength: Int { cache.length(of: 0) }

    /// Changes the threshold, γ and the copy n-gram (0: no copy drafts) for the next generations (the
    /// exit layer is fixed).
    public func configure(threshold: Float, maxDraft: Int, copyNgram: Int) throws {
        guard SpeculativeOptions.thresholdRange.contains(threshold) else { throw SpeculativeError.invalidOptions("threshold must be between 0 and 1") }
        guard (0...maxDraftCapacity).contains(maxDraft) else {
            throw SpeculativeError.invalidOptions("max_draft must be between 0 and \(maxDraftCapacity)")
        }
        guard SpeculativeOptions.copyNgramRange.contains(copyNgram) else { throw SpeculativeError.invalidOptions("copy_ngram must be between 0 and \(SpeculativeOptions.copyNgramRange.upperBound)") }
        options.threshold = threshold
        options.maxDraft = maxDraft
        if copyNgram != options.copyNgram {
            options.copyNgram = copyNgram
            copyLookup = copyNgram > 0 ? CopyLookup(n: copyNgram) : nil
        }
    }

    /// Tokens each decoder layer processed since `start`.
    public var layerTokenCounts: [Int] { scratch.layerTokenCounts }

    public var speculativeStatistics: SpeculativeStatistics? { statistics }

    private var shallow: Range<Int> { 0..<options.exitLayer }
    private var deep: Range<Int> { options.exitLayer..<model.config.layerCount }

    public func start(prompt: [Int32], sampler: inout Sampler) throws -> DecodedRound {
        precondition(!prompt.isEmpty, "the prompt must hold at least one token")
        try model.validate(prompt)
        guard prompt.count < contextCapacity else {
            throw LlamaError.contextFull(needed: prompt.count + 1, capacity: contextCapacity)
        }
        statistics = SpeculativeStatistics(maxDraft: options.maxDraft)
        cache.reset()
        scratch.layerTokenCounts = Array(repeating: 0, count: model.config.layerCount)
        adapter?.reset()
        lagging.rows = 0
        backoff = 0
        roundsWithoutDrafting = 0
        model.embed(prompt, into: states)
        try model.forward(layers: shallow, hidden: states, cache: cache, scratch: scratch)
        adapter?.feed(states, rows: 0..<states.rows, scratch: scratch)
        try model.forward(layers: deep, hidden: states, cache: cache, scratch: scratch)
        keepDeepState(states.row(states.rows - 1))
        model.logits(states, rows: (states.rows - 1)..<states.rows, into: logits, scratch: scratch)
        pending = sampler.sample(logits.row(0), count: logits.columns)
        copyLookup?.reset(to: prompt, capacity: contextCapacity)
        copyLookup?.commit(CollectionOfOne(pending))
        return DecodedRound(tokens: [pending], logits: logits)
    }

    public func next(sampler: inout Sampler, limit: Int) throws -> DecodedRound {
        let clock = ContinuousClock()
        let begin = clock.now
        let position = committedLength
        // Positions position…position+k must fit, and no more than `limit` tokens are wanted.
        var maxDrafts = max(0, min(options.maxDraft, limit - 1, contextCapacity - position - 1))
        drafts.removeAll(keepingCapacity: true)
        exitStates.rows = 0
        // Whether the adapter has seen the exit state of the round's last row (a dropped draft's
        // proposal fed it); otherwise that row lags by one when the whole round is accepted.
        var adapterSawLastRow = false
        // A copy round, also during a back-off (copies are right far more often than failed drafts):
        // when the text continues an earlier passage, its next tokens are the first drafts, and the
        // shallow layers run over [pending, c1…cm] in one batch.
        copyLookup?.appendChain(to: &drafts, limit: maxDrafts)
        let copyRound = !drafts.isEmpty
        if copyRound {
            if !sampler.options.isGreedy {
                // All of a copy draft's probability is on its token.
                for (i, copy) in drafts.enumerated() { setCopyProbabilities(row: i, token: copy) }
            }
            statistics.copiedDrafts += drafts.count
        }
        // In a back-off the drafter does not draft; a copy round counts as one of its rounds, and does
        // not change it (that is the drafter's).
        if roundsWithoutDrafting > 0 {
            roundsWithoutDrafting -= 1
            maxDrafts = drafts.count
        }
        // Then drafting step by step, after the copies if any: every token of the round goes through
        // the shallow layers exactly once.
        roundTokens.removeAll(keepingCapacity: true)
        roundTokens.append(pending)
        roundTokens.append(contentsOf: drafts)
        try runShallow(roundTokens)
        if copyRound { feedAdapter(rows: 0..<drafts.count) }
        var stop = drafts.count >= maxDrafts
        while !stop {
            let (draft, confidence) = proposeDraft(&sampler)
            statistics.draftSteps += 1
            if confidence < options.threshold && options.dropsUncertainDraft {
                adapterSawLastRow = true
                break
            }
            drafts.append(draft)
            try runShallow(CollectionOfOne(draft))
            stop = confidence < options.threshold || drafts.count == maxDrafts
        }
        let drafted = clock.now

        // Verification: the deep layers once over [pending, d1…dk].
        for row in 0..<exitStates.rows { verified.copyRow(from: exitStates, row: row, to: row) }
        verified.rows = exitStates.rows
        try model.forward(layers: deep, hidden: verified, cache: cache, scratch: scratch)
        model.logits(verified, rows: 0..<verified.rows, into: logits, scratch: scratch)
        let (accepted, next) = sampler.options.isGreedy ? verifyGreedy(&sampler) : verifySampled(&sampler)
        keepDeepState(verified.row(accepted))
        var tokens = Array(drafts[0..<accepted])
        tokens.append(next)
        copyLookup?.commit(tokens)

        // Roll back: positions position…position+accepted hold committed tokens.
        let keep = position + accepted + 1
        cache.truncate(to: keep)
        if let adapter {
            // The adapter saw exit states 0..<drafts.count of this round (one per draft step), and
            // row drafts.count too when a draft was dropped.
            if accepted == drafts.count && !adapterSawLastRow {
                // The round's last committed position (row `accepted`) is unseen: it lags by one.
                if lagging.rows == lagging.capacity { flushLagging(adapter) }
                lagging.copyRow(from: exitStates, row: accepted, to: lagging.rows)
                lagging.rows += 1
            } else {
                adapter.truncate(to: keep)
            }
        }
        if maxDrafts > 0 && !copyRound { backOff(accepted: accepted) }
        pending = next
        statistics.record(accepted: accepted)
        statistics.draftSeconds += (drafted - begin).seconds
        statistics.verifySeconds += (clock.now - drafted).seconds
        return DecodedRound(tokens: tokens, logits: logits)
    }

    /// Updates the back-off after a round that could draft: doubles it (from 1, capped at
    /// `maxBackoff`) when nothing was accepted, ends it otherwise.
    private func backOff(accepted: Int) {
        if accepted == 0 {
            backoff = min(max(1, 2 * backoff), options.maxBackoff)
            roundsWithoutDrafting = backoff
        } else {
            backoff = 0
        }
    }

    /// Keeps the normalised final state of the last committed position (`final`: a row after the deep layers).
    private func keepDeepState(_ final: UnsafePointer<Float>) {
        guard adapter?.takesDeepState == true else { return }
        model.normalizeOutput(final, into: deepState.pointer)
    }

    /// Runs `tokens` through the shallow layers at the next positions and keeps their exit states.
    private func runShallow(_ tokens: some Collection<Int32>) throws {
        let row = exitStates.rows
        model.embed(tokens, into: states)
        try model.forward(layers: shallow, hidden: states, cache: cache, scratch: scratch)
        for i in 0..<tokens.count { exitStates.copyRow(from: states, row: i, to: row + i) }
        exitStates.rows = row + tokens.count
    }

    /// Feeds the adapter (if any) rows `rows` of `exitStates`, after the lagging ones, without drafting.
    private func feedAdapter(rows: Range<Int>) {
        guard let adapter else { return }
        flushLagging(adapter)
        adapter.feed(exitStates, rows: rows, scratch: scratch)
    }

    private func flushLagging(_ adapter: AdapterRunner) {
        guard lagging.rows > 0 else { return }
        adapter.feed(lagging, rows: 0..<lagging.rows, scratch: scratch)
        lagging.rows = 0
    }

    /// Greedy verification: drafts are accepted while they equal the full model's argmax; the full
    /// model's token follows.
    private func verifyGreedy(_ sampler: inout Sampler) -> (accepted: Int, next: Int32) {
        var accepted = 0
        while accepted < drafts.count, drafts[accepted] == Sampler.argmax(logits.row(accepted), count: logits.columns) {
            accepted += 1
        }
        return (accepted, sampler.sample(logits.row(accepted), count: logits.columns))
    }

    /// Speculative sampling: each draft is accepted by the acceptance rule; the first rejected one is
    /// replaced by a draw from normalise(max(0, p − q)); after all are accepted, the next token is drawn
    /// from p.
    private func verifySampled(_ sampler: inout Sampler) -> (accepted: Int, next: Int32) {
        let vocabulary = logits.columns
        let p = targetProbabilities.pointer
        for (i, draft) in drafts.enumerated() {
            sampler.process(logits.row(i), count: vocabulary, into: p)
            let q = draftProbabilities.row(i)
            if acceptance.accepts(p: p[Int(draft)], q: q[Int(draft)], uniform: sampler.uniform()) { continue }
            var residual: Float = 0
            for v in 0..<vocabulary {
                p[v] = max(0, p[v] - q[v])
                residual += p[v]
            }
            // p = q exactly leaves nothing to correct: draw from p itself.
            if residual <= 0 { sampler.process(logits.row(i), count: vocabulary, into: p) }
            return (i, sampler.draw(p, count: vocabulary))
        }
        sampler.process(logits.row(drafts.count), count: vocabulary, into: p)
        return (drafts.count, sampler.draw(p, count: vocabulary))
    }

    /// The next draft for the newest exit state and its confidence: a copy draft (confidence 1) when
    /// the text so far (drafts included) allows one, else the drafter's proposal (see `proposeOwnDraft`).
    private func proposeDraft(_ sampler: inout Sampler) -> (token: Int32, confidence: Float) {
        guard let copy = copyLookup?.proposal(after: drafts) else { return proposeOwnDraft(&sampler) }
        // The adapter must still see the position (its cache covers every drafted row); its head, the
        // costly part of a draft step after the shallow layers, is skipped.
        feedAdapter(rows: (exitStates.rows - 1)..<exitStates.rows)
        statistics.copiedDrafts += 1
        if !sampler.options.isGreedy { setCopyProbabilities(row: drafts.count, token: copy) }
        return (copy, 1)
    }

    /// Sampling: the draft distribution of draft `row` when it is a copy (all on `token`).
    private func setCopyProbabilities(row: Int, token: Int32) {
        let dense = draftProbabilities.row(row)
        dense.initialize(repeating: 0, count: draftProbabilities.columns)
        dense[Int(token)] = 1
    }

    /// The drafter's next token and its confidence (top-1 probability of the draft distribution) for
    /// the newest exit state. When sampling, the draft is drawn from the processed draft distribution,
    /// which is kept (dense) for verification.
    private func proposeOwnDraft(_ sampler: inout Sampler) -> (Int32, Float) {
        let newest = exitStates.rows - 1
        let head: DraftHead
        if let adapter {
            flushLagging(adapter)
            // Only the round's first draft has a verified predecessor, hence a deep state.
            adapter.evaluate(exitStates, rows: newest..<(newest + 1), deepState: newest == 0 ? deepState.pointer : nil,
                             scratch: scratch)
            head = adapter.head
        } else {
            head = layerSkipHead!
            head.evaluate(exitStates.row(newest), pool: scratch.pool)
        }
        if sampler.options.isGreedy { return head.greedyDraft() }
        let rows = head.rowCount, q = headProbabilities.pointer
        sampler.process(head.logits.pointer, count: rows, into: q)
        var confidence: Float = 0
        for r in 0..<rows { confidence = max(confidence, q[r]) }
        let row = Int(sampler.draw(q, count: rows))
        let dense = draftProbabilities.row(drafts.count)
        dense.initialize(repeating: 0, count: draftProbabilities.columns)
        for r in 0..<rows { dense[Int(head.tokenID(row: r))] = q[r] }
        return (head.tokenID(row: row), confidence)
    }
}
