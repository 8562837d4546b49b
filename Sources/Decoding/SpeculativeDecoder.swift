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
    public let contextCapacity: Int
    let sequence: DecodingSequence
    let scratch: ForwardScratch
    /// Prompt states during `start`; then the round's rows through the remaining layers.
    let states: FloatMatrix

    /// `maxDrafts` bounds the round's buffers; `contextCapacity` defaults to `LlamaConfig.defaultContext`
    /// (at most the model's).
    public init(model: LlamaModel, drafter: (any Drafter)?, name: String, maxDrafts: Int = 16, contextCapacity: Int? = nil,
                acceptance: AcceptanceRule = SpeculativeSamplingRule(), pool: ThreadPool = .shared) {
        let c = model.config
        self.name = name
        let capacity = c.context(contextCapacity)
        self.contextCapacity = capacity
        let maxDrafts = drafter == nil ? 0 : maxDrafts
        scratch = ForwardScratch(config: c, tokens: max(64, maxDrafts + 1), contextCapacity: capacity, pool: pool)
        sequence = DecodingSequence(model: model, drafter: drafter, maxDrafts: maxDrafts, contextCapacity: capacity,
                                    scratch: scratch, acceptance: acceptance)
        states = FloatMatrix(capacity: max(capacity, maxDrafts + 1), columns: c.hiddenSize)
    }

    /// Plain autoregressive decoding: one full forward pass per token.
    public static func plain(model: LlamaModel, contextCapacity: Int? = nil, pool: ThreadPool = .shared) -> SpeculativeDecoder {
        SpeculativeDecoder(model: model, drafter: nil, name: "plain", contextCapacity: contextCapacity, pool: pool)
    }

    public var model: LlamaModel { sequence.model }
    public var drafter: (any Drafter)? { sequence.drafter }
    public var statistics: SpeculativeStatistics { sequence.statistics }
    public var committedLength: Int { sequence.committedLength }
    public var cachedPromptTokens: Int { sequence.cachedPromptTokens }

    /// Tokens each decoder layer processed since `start`.
    public var layerTokenCounts: [Int] { scratch.layerTokenCounts }

    public var speculativeStatistics: SpeculativeStatistics? { drafter == nil ? nil : statistics }

    /// Forgets the sequence's cache: the next `start` processes its whole prompt (benchmarks of
    /// prompt processing).
    public func forgetCache() { sequence.forgetCache() }

    public func start(prompt: [Int32], sampler: inout Sampler) throws -> DecodedRound {
        scratch.layerTokenCounts = Array(repeating: 0, count: model.config.layerCount)
        return try sequence.start(prompt: prompt, sampler: &sampler, states: states)
    }

    public func next(sampler: inout Sampler, limit: Int) throws -> DecodedRound {
        try sequence.draft(limit: limit, sampler: &sampler)
        var samplers = [sampler]
        defer { sampler = samplers[0] }
        return try DecodingSequence.verify([sequence], hidden: states, logits: sequence.logits, scratch: scratch,
                                           samplers: &samplers)[0]
    }
}

/// Several sequences decoded together: each has its own cache, drafter and round, and every round's
/// candidates of all of them are verified in one forward (the matrix products over all rows, attention
/// per sequence). A row's bits do not depend on what else is in the batch, so each sequence's output
/// is what it gets alone, token for token, and with the same seed when sampling.
public final class BatchDecoder {
    public let model: LlamaModel
    /// Positions each sequence's context holds.
    public let contextCapacity: Int
    /// Drafts each sequence may verify in a round at most.
    public let maxDrafts: Int
    let sequences: [DecodingSequence]
    let scratch: ForwardScratch
    let states: FloatMatrix
    let logits: FloatMatrix

    /// `slots` sequences at most, each drafting at most `maxDrafts` candidates a round (0: plain
    /// decoding only).
    public init(model: LlamaModel, slots: Int, maxDrafts: Int = 16, contextCapacity: Int,
                acceptance: AcceptanceRule = SpeculativeSamplingRule(), pool: ThreadPool = .shared) {
        precondition(slots >= 1 && maxDrafts >= 0)
        let c = model.config
        self.model = model
        let capacity = c.context(contextCapacity)
        self.contextCapacity = capacity
        self.maxDrafts = maxDrafts
        let rows = slots * (maxDrafts + 1)
        let scratch = ForwardScratch(config: c, tokens: max(64, rows), contextCapacity: capacity, pool: pool)
        self.scratch = scratch
        sequences = (0..<slots).map { _ in
            DecodingSequence(model: model, drafter: nil, maxDrafts: maxDrafts, contextCapacity: capacity, scratch: scratch,
                             acceptance: acceptance)
        }
        states = FloatMatrix(capacity: max(capacity, rows), columns: c.hiddenSize)
        logits = FloatMatrix(capacity: rows, columns: c.vocabularySize)
    }

    public var slots: Int { sequences.count }

    /// Positions committed in slot `slot`'s sequence.
    public func committedLength(slot: Int) -> Int { sequences[slot].committedLength }

    /// Whether slot `slot`'s sequence drafts.
    public func drafts(slot: Int) -> Bool { sequences[slot].drafter != nil }

    /// Drafting and acceptance figures of slot `slot`'s sequence since its start (nil for plain decoding).
    public func speculativeStatistics(slot: Int) -> SpeculativeStatistics? {
        sequences[slot].drafter == nil ? nil : sequences[slot].statistics
    }

    /// Starts a new sequence in slot `slot` (forgetting the one there), drafting with `drafter` (nil:
    /// plain decoding); `prefill` processes `prompt`.
    public func begin(slot: Int, prompt: [Int32], drafter: (any Drafter)?) throws {
        sequences[slot].drafter = drafter
        try sequences[slot].begin(prompt: prompt)
    }

    /// Prompt tokens of slot `slot`'s sequence kept from the one before it in the slot.
    public func cachedPromptTokens(slot: Int) -> Int { sequences[slot].cachedPromptTokens }

    /// Prompt tokens its cache would keep if slot `slot` took `prompt` next with `drafter` (nil: plain).
    public func reusablePromptTokens(slot: Int, prompt: [Int32], drafter: (any Drafter)?) -> Int {
        sequences[slot].reusablePromptTokens(prompt, drafter: drafter)
    }

    /// Prompt tokens of slot `slot` not processed yet.
    public func promptTokensLeft(slot: Int) -> Int { sequences[slot].promptTokensLeft }

    /// Processes up to `limit` more tokens of slot `slot`'s prompt; after its last, returns the first
    /// token. Chunks give the bits the whole prompt at once gives.
    public func prefill(slot: Int, limit: Int, sampler: inout Sampler) throws -> DecodedRound? {
        try sequences[slot].prefill(limit: limit, sampler: &sampler, states: states)
    }

    /// One round for each slot in `slots` (each with its tokens still wanted in `limits` and its sampler
    /// in `samplers`, by slot): drafting per sequence, then one verification forward for all.
    public func next(slots: [Int], limits: [Int], samplers: inout [Sampler]) throws -> [DecodedRound] {
        for (slot, limit) in zip(slots, limits) { sequences[slot].startRound(limit: limit) }
        try DecodingSequence.runPendingRows(slots.map { sequences[$0] }, hidden: states, scratch: scratch)
        for slot in slots { try sequences[slot].propose(sampler: &samplers[slot]) }
        var chosen = slots.map { samplers[$0] }
        defer { for (i, slot) in slots.enumerated() { samplers[slot] = chosen[i] } }
        return try DecodingSequence.verify(slots.map { sequences[$0] }, hidden: states, logits: logits, scratch: scratch,
                                           samplers: &chosen)
    }
}

/// One sequence's decoding state: its cache, drafter, round, pending token and statistics.
final class DecodingSequence {
    let model: LlamaModel
    /// Set between sequences (a batch slot serves requests with different drafters).
    var drafter: (any Drafter)?
    let maxDrafts: Int
    let contextCapacity: Int
    private(set) var statistics: SpeculativeStatistics
    let cache: KVCache
    let round: DraftRound
    /// This sequence's rows' logits; a tree round's in the order of its committed tokens (a chain's
    /// already are) in `pathLogits`.
    let logits: FloatMatrix
    let pathLogits: FloatMatrix
    /// How sampled drafts are accepted (greedy decoding compares tokens instead).
    let acceptance: AcceptanceRule
    /// Sampling: the full model's processed distribution at one position, updated to the residual
    /// after each rejected candidate.
    let target: FloatMatrix
    private var pending: Int32 = 0
    private(set) var draftSeconds = 0.0
    private var prompt: [Int32] = []
    private var prefilled = 0
    /// Prompt tokens of this sequence kept from the previous one.
    private(set) var cachedPromptTokens = 0
    /// The tokens at the cache's positions (and the pending one), in order, and the drafter that saw
    /// them; `cacheMatchesHistory` is false while work that may fail midway has changed the caches.
    private var history: [Int32] = []
    private var historyDrafter: (any Drafter)?
    private var cacheMatchesHistory = false

    init(model: LlamaModel, drafter: (any Drafter)?, maxDrafts: Int, contextCapacity: Int, scratch: ForwardScratch,
         acceptance: AcceptanceRule) {
        let c = model.config
        self.model = model
        self.drafter = drafter
        self.maxDrafts = maxDrafts
        self.contextCapacity = contextCapacity
        self.acceptance = acceptance
        statistics = SpeculativeStatistics()
        cache = KVCache(config: c, capacity: contextCapacity)
        round = DraftRound(model: model, cache: cache, scratch: scratch, capacity: max(1, maxDrafts))
        logits = FloatMatrix(capacity: maxDrafts + 1, columns: c.vocabularySize)
        pathLogits = FloatMatrix(capacity: maxDrafts + 1, columns: c.vocabularySize)
        target = FloatMatrix(capacity: 1, columns: c.vocabularySize)
    }

    var committedLength: Int { cache.length(of: model.config.layerCount - 1) }

    /// Starts a new sequence with `prompt` (in `states`, which must hold it) and returns the first token.
    func start(prompt: [Int32], sampler: inout Sampler, states: FloatMatrix) throws -> DecodedRound {
        try begin(prompt: prompt)
        return try prefill(limit: prompt.count, sampler: &sampler, states: states)!
    }

    /// Starts a new sequence with `prompt`, to be processed by `prefill`. The positions it shares with
    /// the previous sequence (decoded with the same drafter) stay in the caches: a conversation's next
    /// turn processes only what is new. Kept keys and values are the bits processing them again would
    /// give, so the output does not change.
    func begin(prompt: [Int32]) throws {
        precondition(!prompt.isEmpty, "the prompt must hold at least one token")
        try model.validate(prompt)
        guard prompt.count < contextCapacity else {
            throw LlamaError.contextFull(needed: prompt.count + 1, capacity: contextCapacity)
        }
        statistics = SpeculativeStatistics()
        var kept = reusablePromptTokens(prompt, drafter: drafter)
        if kept > 0, let drafter, !(try drafter.resume(prompt: prompt, keeping: kept, round: round)) { kept = 0 }
        cacheMatchesHistory = false
        if kept > 0 {
            cache.truncate(to: kept)
        } else {
            cache.reset()
            try drafter?.begin(prompt: prompt, round: round)
        }
        history = prompt
        historyDrafter = drafter
        cacheMatchesHistory = true
        self.prompt = prompt
        prefilled = kept
        cachedPromptTokens = kept
    }

    /// Makes the next `begin` process its whole prompt.
    func forgetCache() { cacheMatchesHistory = false }

    /// Prompt tokens `begin` would keep in the cache for `prompt` decoded with `drafter`, if it can.
    func reusablePromptTokens(_ prompt: [Int32], drafter: (any Drafter)?) -> Int {
        guard cacheMatchesHistory && drafter === historyDrafter else { return 0 }
        // At least the last prompt token is processed: its logits give the first token.
        return min(zip(history.prefix(committedLength), prompt).prefix { $0 == $1 }.count, max(0, prompt.count - 1))
    }

    /// Prompt tokens `begin` took that `prefill` has not processed yet.
    var promptTokensLeft: Int { prompt.count - prefilled }

    /// Processes up to `limit` more prompt tokens (in `states`, which must hold them); after the last,
    /// returns the first token. A prompt processed in chunks gets the bits it gets in one: each
    /// position's row is computed alone, over the keys and values before it.
    func prefill(limit: Int, sampler: inout Sampler, states: FloatMatrix) throws -> DecodedRound? {
        precondition(limit > 0 && promptTokensLeft > 0, "no prompt to process")
        let layers = model.config.layerCount, scratch = round.scratch
        let end = min(prompt.count, prefilled + limit)
        model.embed(prompt[prefilled..<end], into: states)
        prefilled = end
        cacheMatchesHistory = false
        // The prompt goes through the layers the drafter observes, which it sees, then the others.
        let observed = min(drafter?.observedLayers ?? 0, layers)
        try model.forward(layers: 0..<observed, hidden: states, cache: cache, scratch: scratch)
        if observed > 0 { try drafter?.observe(states, round: round) }
        try model.forward(layers: observed..<layers, hidden: states, cache: cache, scratch: scratch)
        cacheMatchesHistory = true
        guard prefilled == prompt.count else { return nil }
        let last = states.rows - 1
        model.logits(states, rows: last..<(last + 1), into: logits, scratch: scratch)
        pending = sampler.sample(logits.row(0), count: logits.columns)
        history.append(pending)
        drafter?.accept(RoundOutcome(round: nil, path: [], tokens: [pending], finalState: states.row(last)))
        return DecodedRound(tokens: [pending], logits: logits)
    }

    /// The drafter's candidates for the next round, which commits at most `limit` tokens.
    func draft(limit: Int, sampler: inout Sampler) throws {
        startRound(limit: limit)
        try propose(sampler: &sampler)
    }

    /// Empties the round for the next, which commits at most `limit` tokens.
    func startRound(limit: Int) {
        cacheMatchesHistory = false
        let position = committedLength
        // Prompt and output stay within the context (the generation loop's rule): the round commits up
        // to k + 1 tokens, the last of them not fed.
        round.reset(pending: pending, position: position, limit: max(0, min(maxDrafts, limit - 1, contextCapacity - position - 2)))
        draftSeconds = 0
    }

    /// The drafter's candidates for the round `startRound` began.
    func propose(sampler: inout Sampler) throws {
        let roundStart = ContinuousClock.now
        try drafter?.propose(round, sampler: &sampler)
        if round.stateLayers > 0 { try round.runLayers(round.stateLayers) }
        draftSeconds += (ContinuousClock.now - roundStart).seconds
    }

    /// Runs the pending tokens of `sequences` (rounds just started) through the layers their drafters
    /// observe in one forward, as their drafters would one by one: a row's bits do not depend on the
    /// batch, and the drafters' `runLayers` then starts after these rows.
    static func runPendingRows(_ sequences: [DecodingSequence], hidden: FloatMatrix, scratch: ForwardScratch) throws {
        let byLayers = Dictionary(grouping: sequences.filter { $0.drafter?.observedLayers ?? 0 > 0 }) { $0.drafter!.observedLayers! }
        for (layers, group) in byLayers where group.count > 1 {
            let start = ContinuousClock.now
            let model = group[0].model
            model.embed(group.map(\.pending), into: hidden)
            try model.forward(layers: 0..<min(layers, model.config.layerCount), hidden: hidden,
                              batch: group.map { BatchSequence(cache: $0.cache, tree: $0.round.batchTree) }, scratch: scratch)
            for (row, sequence) in group.enumerated() {
                sequence.round.takePendingState(hidden, row: row, layers: layers)
            }
            let share = (ContinuousClock.now - start).seconds / Double(group.count)
            for sequence in group { sequence.draftSeconds += share }
        }
    }

    /// The round's rows: [pending, drafts…].
    var rowCount: Int { round.count + 1 }

    /// Writes the round's rows, as the layers from `layers` take them, into `hidden` from row `row`:
    /// the drafter's states when it ran layers, else the embeddings; when another sequence's drafter
    /// ran more layers, these rows are brought up to them first.
    func writeRows(into hidden: FloatMatrix, at row: Int, layers: Int, scratch: ForwardScratch) throws {
        if round.stateLayers > 0 {
            for i in 0..<rowCount { hidden.copyRow(from: round.states, row: i, to: row + i) }
            hidden.rows = row + rowCount
        } else {
            model.embed([pending] + round.tokens, into: hidden, at: row)
        }
        guard round.stateLayers < layers else { return }
        let own = FloatMatrix(capacity: rowCount, columns: hidden.columns)
        for i in 0..<rowCount { own.copyRow(from: hidden, row: row + i, to: i) }
        own.rows = rowCount
        try model.forward(layers: round.stateLayers..<layers, hidden: own, batch: [batchSequence], scratch: scratch)
        for i in 0..<rowCount { hidden.copyRow(from: own, row: i, to: row + i) }
    }

    var batchSequence: BatchSequence { BatchSequence(cache: cache, tree: round.batchTree) }

    /// Verifies every sequence's round in one forward: the layers after the furthest any drafter ran,
    /// over all rows, then the logits of all rows, then each sequence's verification with its own
    /// sampler (`samplers[i]` for `sequences[i]`).
    static func verify(_ sequences: [DecodingSequence], hidden: FloatMatrix, logits: FloatMatrix, scratch: ForwardScratch,
                       samplers: inout [Sampler]) throws -> [DecodedRound] {
        let model = sequences[0].model
        let layers = sequences.map(\.round.stateLayers).max()!
        var offsets: [Int] = []
        hidden.rows = 0
        for sequence in sequences {
            offsets.append(hidden.rows)
            try sequence.writeRows(into: hidden, at: hidden.rows, layers: layers, scratch: scratch)
        }
        let start = ContinuousClock.now
        try model.forward(layers: layers..<model.config.layerCount, hidden: hidden, batch: sequences.map(\.batchSequence),
                          scratch: scratch)
        model.logits(hidden, rows: 0..<hidden.rows, into: logits, scratch: scratch)
        let forwardSeconds = (ContinuousClock.now - start).seconds
        return sequences.indices.map { i in
            sequences[i].finishRound(logits: logits, hidden: hidden, at: offsets[i], forwardSeconds: forwardSeconds,
                                     sampler: &samplers[i])
        }
    }

    /// Verifies the round from its rows' logits and final states (rows `row…` of `logits` and
    /// `hidden`), keeps the accepted path in the cache, and tells the drafter.
    private func finishRound(logits shared: FloatMatrix, hidden: FloatMatrix, at row: Int, forwardSeconds: Double,
                             sampler: inout Sampler) -> DecodedRound {
        if shared !== logits {
            for i in 0..<rowCount { logits.copyRow(from: shared, row: row + i, to: i) }
        }
        logits.rows = rowCount
        let (path, next) = sampler.options.isGreedy ? verifyGreedy(relaxed: sampler.options.relaxed) : verifySampled(&sampler)
        let position = round.position
        cache.keepPath([0] + path.map { $0 + 1 }, base: position)
        var tokens = path.map { round.tokens[$0] }
        tokens.append(next)
        let lastRow = row + (path.last.map { $0 + 1 } ?? 0)
        drafter?.accept(RoundOutcome(round: round, path: path, tokens: tokens, finalState: hidden.row(lastRow)))
        pending = next
        history += tokens
        cacheMatchesHistory = true
        statistics.record(accepted: path.count)
        statistics.draftSteps += round.draftSteps
        statistics.draftedNodes += round.count
        statistics.copiedDrafts += round.copiedDrafts
        statistics.draftSeconds += draftSeconds
        statistics.verifySeconds += forwardSeconds
        return DecodedRound(tokens: tokens, logits: logitsInOrder(path: path), drafted: path.count, nodes: round.count)
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
    /// argmax, while there is one; then the full model's token. With `relaxed` (lossy), a child the
    /// relaxed rule accepts will do when none is the argmax.
    private func verifyGreedy(relaxed: RelaxedVerification?) -> (path: [Int], next: Int32) {
        let children = children(), vocabulary = logits.columns
        var path: [Int] = [], row = 0
        while true {
            let scores = logits.row(row)
            let best = Sampler.argmax(scores, count: vocabulary)
            let exact = children[row].first { round.tokens[$0] == best }
            let close = relaxed.flatMap { rule in
                children[row].filter { rule.accepts(round.tokens[$0], logits: scores, count: vocabulary, top: best) }
                    .max { scores[Int(round.tokens[$0])] < scores[Int(round.tokens[$1])] }
            }
            guard let child = exact ?? close else { return (path, best) }
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
