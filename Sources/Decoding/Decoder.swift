import Llama
import Tensor

/// Tokens produced by one step (plain decoding) or one round (speculative decoding), with the full
/// model's logits from which each was chosen: row `i` of `logits` belongs to `tokens[i]`.
public struct DecodedRound {
    public var tokens: [Int32]
    public var logits: FloatMatrix
    /// How many of the leading tokens were drafts the full model accepted (the rest it chose itself).
    public var drafted: Int
    /// Draft nodes the round verified (a chain's drafts, a tree's nodes).
    public var nodes: Int

    public init(tokens: [Int32], logits: FloatMatrix, drafted: Int = 0, nodes: Int = 0) {
        self.tokens = tokens
        self.logits = logits
        self.drafted = drafted
        self.nodes = nodes
    }
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
    /// Prompt tokens of the current sequence kept in the cache from the previous one, not processed
    /// again.
    var cachedPromptTokens: Int { get }
    /// Drafting and acceptance figures of the last generation (nil for plain decoding).
    var speculativeStatistics: SpeculativeStatistics? { get }
}
