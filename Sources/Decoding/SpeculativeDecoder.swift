import Adapter
import Foundation
import Llama
import Tensor

/// Settings of self-speculative decoding.
public struct SpeculativeOptions: Sendable, Equatable {
    /// Layers `0..<exitLayer` form the shallow sub-network that feeds the drafter.
    public var exitLayer: Int
    /// Drafting stops once a draft's top-1 probability is below this (that draft is still verified).
    public var threshold: Float
    /// γ: drafts per round at most.
    public var maxDraft: Int

    public init(exitLayer: Int = 2, threshold: Float = 0.6, maxDraft: Int = 6) {
        self.exitLayer = exitLayer
        self.threshold = threshold
        self.maxDraft = maxDraft
    }
}

public enum SpeculativeError: Error, CustomStringConvertible {
    case invalidOptions(String)
    case samplingUnsupported

    public var description: String {
        switch self {
        case let .invalidOptions(reason): reason
        case .samplingUnsupported: "speculative decoders support greedy decoding only so far (use --temperature 0 or --decoder plain)"
        }
    }
}

/// Kangaroo self-speculative decoding, and the layer-skip baseline that drafts without an adapter.
///
/// A round: the pending token and each draft go once through layers `0..<ℓ`, their exit-layer states
/// are kept in `exitStates`; the drafter (adapter + head, or the model's final norm + head) proposes
/// the next draft until γ drafts or a draft below the confidence threshold. Then layers `ℓ..<L` run
/// once over all kept states [pending, d1…dk], the longest prefix on which the full model agrees is
/// accepted, and the full model's next token is appended. Every cache is rolled back by length.
/// The shallow layers never run twice for a position.
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
    public let options: SpeculativeOptions
    public let contextCapacity: Int
    public private(set) var statistics: SpeculativeStatistics

    let cache: KVCache
    let scratch: ForwardScratch
    let adapter: AdapterRunner?
    let layerSkipHead: DraftHead?
    /// Prompt states during `start`; exit-layer states of the round's positions during `next`.
    let states: FloatMatrix
    let exitStates: FloatMatrix
    let logits: FloatMatrix
    /// Exit states of committed positions that the adapter has not seen yet: the last token of a round
    /// whose drafts were all accepted went through the shallow layers but not the adapter ("lag by
    /// one"); the next draft step feeds them together with the newest state.
    let lagging: FloatMatrix
    private var pending: Int32 = 0
    private var drafts: [Int32] = []

    public init(model: LlamaModel, drafter: Drafter, options: SpeculativeOptions, contextCapacity: Int? = nil,
                pool: ThreadPool = .shared) throws {
        let c = model.config
        guard (1...c.layerCount).contains(options.exitLayer) else {
            throw SpeculativeError.invalidOptions("--exit-layer must be between 1 and \(c.layerCount)")
        }
        guard (0...64).contains(options.maxDraft) else { throw SpeculativeError.invalidOptions("--max-draft must be between 0 and 64") }
        guard (0...1).contains(options.threshold) else { throw SpeculativeError.invalidOptions("--threshold must be between 0 and 1") }
        self.model = model
        self.options = options
        let capacity = min(contextCapacity ?? c.contextLength, c.contextLength)
        self.contextCapacity = capacity
        statistics = SpeculativeStatistics(maxDraft: options.maxDraft)
        cache = KVCache(config: c, capacity: capacity)
        scratch = ForwardScratch(config: c, tokens: max(64, options.maxDraft + 2), contextCapacity: capacity, pool: pool)
        states = FloatMatrix(capacity: capacity, columns: c.hiddenSize)
        exitStates = FloatMatrix(capacity: options.maxDraft + 1, columns: c.hiddenSize)
        logits = FloatMatrix(capacity: options.maxDraft + 1, columns: c.vocabularySize)
        lagging = FloatMatrix(capacity: 4, columns: c.hiddenSize)
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
    }

    public var committedLength: Int { cache.length(of: 0) }

    /// Tokens each decoder layer processed since `start`.
    public var layerTokenCounts: [Int] { scratch.layerTokenCounts }

    public var speculativeStatistics: SpeculativeStatistics? { statistics }

    private var shallow: Range<Int> { 0..<options.exitLayer }
    private var deep: Range<Int> { options.exitLayer..<model.config.layerCount }

    public func start(prompt: [Int32], sampler: inout Sampler) throws -> DecodedRound {
        guard sampler.options.isGreedy else { throw SpeculativeError.samplingUnsupported }
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
        model.embed(prompt, into: states)
        try model.forward(layers: shallow, hidden: states, cache: cache, scratch: scratch)
        adapter?.feed(states, rows: 0..<states.rows, scratch: scratch)
        try model.forward(layers: deep, hidden: states, cache: cache, scratch: scratch)
        model.logits(states, rows: (states.rows - 1)..<states.rows, into: logits, scratch: scratch)
        pending = sampler.sample(logits.row(0), count: logits.columns)
        return DecodedRound(tokens: [pending], logits: logits)
    }

    public func next(sampler: inout Sampler, limit: Int) throws -> DecodedRound {
        let clock = ContinuousClock()
        let begin = clock.now
        let position = committedLength
        // Positions position…position+k must fit, and no more than `limit` tokens are wanted.
        let maxDrafts = max(0, min(options.maxDraft, limit - 1, contextCapacity - position - 1))

        // Drafting: every token of the round goes through the shallow layers exactly once.
        drafts.removeAll(keepingCapacity: true)
        exitStates.rows = 0
        var token = pending
        var stop = maxDrafts == 0
        while true {
            try runShallow(token)
            if stop { break }
            let (draft, confidence) = proposeDraft()
            statistics.draftSteps += 1
            drafts.append(draft)
            token = draft
            stop = confidence < options.threshold || drafts.count == maxDrafts
        }
        let drafted = clock.now

        // Verification: the deep layers once over [pending, d1…dk].
        try model.forward(layers: deep, hidden: exitStates, cache: cache, scratch: scratch)
        model.logits(exitStates, rows: 0..<exitStates.rows, into: logits, scratch: scratch)
        var accepted = 0
        while accepted < drafts.count, drafts[accepted] == Sampler.argmax(logits.row(accepted), count: logits.columns) {
            accepted += 1
        }
        let next = sampler.sample(logits.row(accepted), count: logits.columns)
        var tokens = Array(drafts[0..<accepted])
        tokens.append(next)

        // Roll back: positions position…position+accepted hold committed tokens.
        let keep = position + accepted + 1
        cache.truncate(to: keep)
        if let adapter {
            // The adapter saw exit states 0..<drafts.count of this round (one per draft step).
            if accepted == drafts.count {
                // The round's last committed position (row `accepted`) is unseen: it lags by one.
                if lagging.rows == lagging.capacity { flushLagging(adapter) }
                lagging.copyRow(from: exitStates, row: accepted, to: lagging.rows)
                lagging.rows += 1
            } else {
                adapter.truncate(to: keep)
            }
        }
        pending = next
        statistics.record(accepted: accepted)
        statistics.draftSeconds += (drafted - begin).seconds
        statistics.verifySeconds += (clock.now - drafted).seconds
        return DecodedRound(tokens: tokens, logits: logits)
    }

    /// Runs `token` through the shallow layers at the next position and keeps its exit state.
    private func runShallow(_ token: Int32) throws {
        let row = exitStates.rows
        model.embed(CollectionOfOne(token), into: states)
        try model.forward(layers: shallow, hidden: states, cache: cache, scratch: scratch)
        exitStates.copyRow(from: states, row: 0, to: row)
        exitStates.rows = row + 1
    }

    private func flushLagging(_ adapter: AdapterRunner) {
        guard lagging.rows > 0 else { return }
        adapter.feed(lagging, rows: 0..<lagging.rows, scratch: scratch)
        lagging.rows = 0
    }

    /// The drafter's token and confidence for the newest exit state.
    private func proposeDraft() -> (Int32, Float) {
        let newest = exitStates.rows - 1
        if let adapter {
            flushLagging(adapter)
            return adapter.draft(exitStates, rows: newest..<(newest + 1), scratch: scratch)
        }
        return layerSkipHead!.draft(exitStates.row(newest), pool: scratch.pool)
    }
}
