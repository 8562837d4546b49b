import Foundation
import Llama
import Tensor

/// Decoding by drafting and verifying, for any drafter; with none, plain decoding.
///
/// A round: the drafter adds candidates (a chain or a tree) under the pending token, possibly running
/// the model's first layers over them; the model runs its remaining layers once over [pending,
/// candidates…] as a tree; the verifier keeps the longest path the full model agrees with (greedy) or
/// accepts by multi-candidate speculative sampling, and adds the full model's own next token; the
/// accepted path's keys and values move to consecutive positions and the rest is dropped.
///
/// Lossless: each row of the tree gets the bits a linear forward along its path gives (see
/// `LlamaModel.forward(layers:hidden:batch:scratch:)`), so the full model's choices, and with them the
/// greedy output, are plain decoding's; speculative sampling keeps the full model's distribution.
public final class SpeculativeDecoder: Decoder {
    public let name: String
    public let model: LlamaModel
    public let drafter: (any Drafter)?
    public let contextCapacity: Int
    /// Most drafts one round verifies.
    public let maxDrafts: Int
    public private(set) var statistics: SpeculativeStatistics

    let cache: KVCache
    let scratch: ForwardScratch
    let round: DraftRound
    /// Prompt states during `start`; then the round's rows through the remaining layers.
    let states: FloatMatrix
    let logits: FloatMatrix
    /// A tree round's logits in the order of its committed tokens (a chain's are already in order).
    let pathLogits: FloatMatrix
    /// How sampled drafts are accepted (greedy decoding compares tokens instead).
    let acceptance: AcceptanceRule
    /// Sampling: the full model's processed distribution at one position, updated to the residual
    /// after each rejected candidate.
    let target: FloatMatrix
    private var pending: Int32 = 0

    /// `maxDrafts` bounds the round's buffers; `contextCapacity` defaults to the model's context.
    public init(model: LlamaModel, drafter: (any Drafter)?, name: String, maxDrafts: Int = 16, contextCapacity: Int? = nil,
                acceptance: AcceptanceRule = SpeculativeSamplingRule(), pool: ThreadPool = .shared) {
        precondition(maxDrafts >= 0)
        let c = model.config
        self.name = name
        self.model = model
        self.drafter = drafter
        self.maxDrafts = drafter == nil ? 0 : maxDrafts
        let capacity = min(contextCapacity ?? c.contextLength, c.contextLength)
        self.contextCapacity = capacity
        self.acceptance = acceptance
        statistics = SpeculativeStatistics(maxDraft: self.maxDrafts)
        cache = KVCache(config: c, capacity: capacity)
        scratch = ForwardScratch(config: c, tokens: max(64, self.maxDrafts + 1), contextCapacity: capacity, pool: pool)
        round = DraftRound(model: model, cache: cache, scratch: scratch, capacity: max(1, self.maxDrafts))
        states = FloatMatrix(capacity: max(capacity, self.maxDrafts + 1), columns: c.hiddenSize)
        logits = FloatMatrix(capacity: self.maxDrafts + 1, columns: c.vocabularySize)
        pathLogits = FloatMatrix(capacity: self.maxDrafts + 1, columns: c.vocabularySize)
        target = FloatMatrix(capacity: 1, columns: c.vocabularySize)
    }

    /// Plain autoregressive decoding: one full forward pass per token.
    public static func plain(model: LlamaModel, contextCapacity: Int? = nil, pool: ThreadPool = .shared) -> SpeculativeDecoder {
        SpeculativeDecoder(model: model, drafter: nil, name: "plain", contextCapacity: contextCapacity, pool: pool)
    }

    public var committedLength: Int { cache.length(of: model.config.layerCount - 1) }

    /// Tokens each decoder layer processed since `start`.
    public var layerTokenCounts: [Int] { scratch.layerTokenCounts }

    public var speculativeStatistics: SpeculativeStatistics? { drafter == nil ? nil : statistics }

    public func start(prompt: [Int32], sampler: inout Sampler) throws -> DecodedRound {
        precondition(!prompt.isEmpty, "the prompt must hold at least one token")
        try model.validate(prompt)
        guard prompt.count < contextCapacity else {
            throw LlamaError.contextFull(needed: prompt.count + 1, capacity: contextCapacity)
        }
        let layers = model.config.layerCount
        statistics = SpeculativeStatistics(maxDraft: maxDrafts)
        cache.reset()
        scratch.layerTokenCounts = Array(repeating: 0, count: layers)
        model.embed(prompt, into: states)
        // The prompt goes through the layers the drafter observes, which it sees, then the others.
        let observed = min(drafter?.observedLayers ?? 0, layers)
        try model.forward(layers: 0..<observed, hidden: states, cache: cache, scratch: scratch)
        try drafter?.begin(prompt: prompt, observed: observed > 0 ? states : nil, round: round)
        try model.forward(layers: observed..<layers, hidden: states, cache: cache, scratch: scratch)
        let last = states.rows - 1
        model.logits(states, rows: last..<(last + 1), into: logits, scratch: scratch)
        pending = sampler.sample(logits.row(0), count: logits.columns)
        drafter?.accept(RoundOutcome(round: nil, path: [], tokens: [pending], finalState: states.row(last)))
        return DecodedRound(tokens: [pending], logits: logits)
    }

    public func next(sampler: inout Sampler, limit: Int) throws -> DecodedRound {
        let clock = ContinuousClock()
        let begin = clock.now
        let position = committedLength
        // No more than `limit` tokens are wanted, and prompt and output stay within the context (the
        // generation loop's rule): the round commits up to k + 1 tokens, the last of them not fed.
        round.reset(pending: pending, position: position, limit: max(0, min(maxDrafts, limit - 1, contextCapacity - position - 2)))
        try drafter?.propose(round, sampler: &sampler)
        if round.stateLayers > 0 { try round.runLayers(round.stateLayers) }
        let drafted = clock.now

        // Verification: the remaining layers once over [pending, drafts…], as a tree.
        let rows = round.count + 1
        if round.stateLayers > 0 {
            for row in 0..<rows { states.copyRow(from: round.states, row: row, to: row) }
            states.rows = rows
        } else {
            model.embed([pending] + round.tokens, into: states)
        }
        try model.forward(layers: round.stateLayers..<model.config.layerCount, hidden: states,
                          batch: [BatchSequence(cache: cache, tree: round.batchTree)], scratch: scratch)
        model.logits(states, rows: 0..<rows, into: logits, scratch: scratch)
        let (path, next) = sampler.options.isGreedy ? verifyGreedy() : verifySampled(&sampler)
        cache.keepPath([0] + path.map { $0 + 1 }, base: position)

        var tokens = path.map { round.tokens[$0] }
        tokens.append(next)
        let lastRow = path.last.map { $0 + 1 } ?? 0
        drafter?.accept(RoundOutcome(round: round, path: path, tokens: tokens, finalState: states.row(lastRow)))
        pending = next
        statistics.record(accepted: path.count)
        statistics.draftSteps += round.draftSteps
        statistics.copiedDrafts += round.copiedDrafts
        statistics.draftSeconds += (drafted - begin).seconds
        statistics.verifySeconds += (clock.now - drafted).seconds
        return DecodedRound(tokens: tokens, logits: logitsInOrder(path: path))
    }

    /// The logits each committed token was chosen from: row 0's, then each accepted node's.
    private func logitsInOrder(path: [Int]) -> FloatMatrix {
        if path.enumerated().allSatisfy({ $0.offset == $0.element }) { return logits }
        for (i, row) in ([0] + path.map { $0 + 1 }).enumerated() { pathLogits.copyRow(from: logits, row: row, to: i) }
        pathLogits.rows = path.count + 1
        return pathLogits
    }

    /// Each batch row's child nodes, in order (row 0: the pending token; node i: row i + 1).
    private func children() -> [[Int]] {
        var children = [[Int]](repeating: [], count: round.count + 1)
        for (node, parent) in round.parents.enumerated() { children[(parent ?? -1) + 1].append(node) }
        return children
    }

    /// Greedy verification: from the pending token down, the child whose token is the full model's
    /// argmax, while there is one; then the full model's token.
    private func verifyGreedy() -> (path: [Int], next: Int32) {
        let children = children(), vocabulary = logits.columns
        var path: [Int] = [], row = 0
        while true {
            let best = Sampler.argmax(logits.row(row), count: vocabulary)
            guard let child = children[row].first(where: { round.tokens[$0] == best }) else { return (path, best) }
            path.append(child)
            row = child + 1
        }
    }

    /// Multi-candidate speculative sampling (SpecInfer; recursive rejection sampling): at each row, the
    /// children are tried in turn, each accepted by the acceptance rule against the full model's
    /// distribution p, which after each rejection becomes normalise(max(0, p − q)) with q the rejected
    /// child's draft distribution; an accepted child's row comes next. When every child is rejected, the
    /// token is drawn from what p has become. Each child's q is the distribution its token was drawn
    /// from given the siblings before it, so the output has exactly the full model's distribution.
    private func verifySampled(_ sampler: inout Sampler) -> (path: [Int], next: Int32) {
        let children = children(), vocabulary = logits.columns, p = target.pointer
        var path: [Int] = [], row = 0
        descend: while true {
            sampler.process(logits.row(row), count: vocabulary, into: p)
            for child in children[row] {
                let q = round.probabilities.row(child), token = Int(round.tokens[child])
                if acceptance.accepts(p: p[token], q: q[token], uniform: sampler.uniform()) {
                    path.append(child)
                    row = child + 1
                    continue descend
                }
                var residual: Float = 0
                for v in 0..<vocabulary {
                    p[v] = max(0, p[v] - q[v])
                    residual += p[v]
                }
                // p = q exactly leaves nothing to correct: keep p itself.
                if residual <= 0 {
                    sampler.process(logits.row(row), count: vocabulary, into: p)
                } else {
                    for v in 0..<vocabulary { p[v] /= residual }
                }
            }
            return (path, sampler.draw(p, count: vocabulary))
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
