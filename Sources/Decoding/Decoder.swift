import Llama
import Tensor

/// Tokens produced by one step (plain decoding) or one round (speculative decoding), with the full
/// model's logits from which each was chosen: row `i` of `logits` belongs to `tokens[i]`.
public struct DecodedRound {
    public var tokens: [Int32]
    public var logits: FloatMatrix
}

/// A way of producing tokens from a model. Decoders differ in how many model passes a token costs,
/// never in which tokens come out: for greedy decoding every decoder yields plain decoding's tokens.
public protocol Decoder: AnyObject {
    /// Name reported in statistics (`plain`, `kangaroo`, …).
    var name: String { get }
    /// Positions the context can hold.
    var contextCapacity: Int { get }
    /// Forgets any previous sequence, processes `prompt`, and returns the first generated token.
    func start(prompt: [Int32], sampler: inout Sampler) throws -> DecodedRound
    /// Feeds the tokens of the previous round (already committed) and produces the next round.
    /// `limit` caps how many tokens the round may commit (at least 1).
    func next(sampler: inout Sampler, limit: Int) throws -> DecodedRound
    /// Positions already committed to the context (prompt plus generated tokens fed so far).
    var committedLength: Int { get }
    /// Drafting and acceptance figures of the last generation (nil for plain decoding).
    var speculativeStatistics: SpeculativeStatistics? { get }
}

/// Plain autoregressive decoding: one full forward pass per token.
public final class PlainDecoder: Decoder {
    public let name = "plain"
    public let model: LlamaModel
    public let contextCapacity: Int
    let cache: KVCache
    let scratch: ForwardScratch
    let hidden: FloatMatrix
    let logits: FloatMatrix
    private var pending: Int32?

    public init(model: LlamaModel, contextCapacity: Int? = nil, pool: ThreadPool = .shared) {
        self.model = model
        let capacity = min(contextCapacity ?? model.config.contextLength, model.config.contextLength)
        self.contextCapacity = capacity
        cache = KVCache(config: model.config, capacity: capacity)
        scratch = ForwardScratch(config: model.config, contextCapacity: capacity, pool: pool)
        hidden = FloatMatrix(capacity: capacity, columns: model.config.hiddenSize)
        logits = FloatMatrix(capacity: 1, columns: model.config.vocabularySize)
    }

    public var committedLength: Int { cache.length(of: 0) }

    /// Tokens each decoder layer processed since `start`.
    public var layerTokenCounts: [Int] { scratch.layerTokenCounts }

    public var speculativeStatistics: SpeculativeStatistics? { nil }

    public func start(prompt: [Int32], sampler: inout Sampler) throws -> DecodedRound {
        precondition(!prompt.isEmpty, "the prompt must hold at least one token")
        try model.validate(prompt)
        guard prompt.count < contextCapacity else {
            throw LlamaError.contextFull(needed: prompt.count + 1, capacity: contextCapacity)
        }
        cache.reset()
        scratch.layerTokenCounts = Array(repeating: 0, count: model.config.layerCount)
        model.embed(prompt, into: hidden)
        try model.forward(layers: 0..<model.config.layerCount, hidden: hidden, cache: cache, scratch: scratch)
        return try emit(from: hidden.rows - 1, sampler: &sampler)
    }

    public func next(sampler: inout Sampler, limit: Int) throws -> DecodedRound {
        guard let token = pending else { preconditionFailure("next() before start()") }
        model.embed(CollectionOfOne(token), into: hidden)
        try model.forward(layers: 0..<model.config.layerCount, hidden: hidden, cache: cache, scratch: scratch)
        return try emit(from: 0, sampler: &sampler)
    }

    private func emit(from row: Int, sampler: inout Sampler) throws -> DecodedRound {
        model.logits(hidden, rows: row..<row + 1, into: logits, scratch: scratch)
        let token = sampler.sample(logits.row(0), count: logits.columns)
        pending = token
        return DecodedRound(tokens: [token], logits: logits)
    }
}
