import Llama
import Tensor

/// Proposes candidate tokens for one sequence, for the full model to verify (`SpeculativeDecoder`).
///
/// The decoder calls `begin` with the prompt, then (when the drafter observes layers) `observe` with
/// the prompt's states after them, chunk by chunk in order, then `accept` with the first token, then,
/// round after round, `propose` and `accept`. A drafter never
/// changes the output: the full model verifies every candidate, so a poor drafter costs speed only.
///
/// To plug in a new drafter, implement these three methods: add candidates to the `DraftRound` as a
/// chain or a tree (with their draft distributions when sampling), optionally run the model's first
/// layers over them through the round (their states are then reused by verification), and keep what
/// `accept` reports (the accepted path, the full model's token, its final state) for the next round.
public protocol Drafter: AnyObject {
    /// The layer count after which the drafter reads every committed position's state (Kangaroo's
    /// exit layer), handed to `observe` for the prompt; nil: it reads none.
    var observedLayers: Int? { get }
    /// A new sequence with `prompt`, before any of it is processed. `round` is the sequence's round,
    /// for its model and scratch.
    func begin(prompt: [Int32], round: DraftRound) throws
    /// The states after `observedLayers` layers of the prompt's next positions (all rows of `states`);
    /// a long prompt arrives in several chunks.
    func observe(_ states: FloatMatrix, round: DraftRound) throws
    /// A new sequence with `prompt` whose first `kept` positions are those of the sequence this drafter
    /// drafted for last (a conversation's next turn): they stay in the caches and are not processed
    /// again; `observe` gets the rest. Returns false when the drafter cannot keep them (then `begin`
    /// follows, and the whole prompt is processed).
    func resume(prompt: [Int32], keeping kept: Int, round: DraftRound) throws -> Bool
    /// Adds this round's candidates to `round` (none: the round decodes one token, as plain decoding).
    func propose(_ round: DraftRound, sampler: inout Sampler) throws
    /// What verification committed: after `begin`, the first token; after a round, its accepted path.
    func accept(_ outcome: RoundOutcome)
}

extension Drafter {
    /// A drafter that observes no layers gets no states.
    public func observe(_ states: FloatMatrix, round: DraftRound) throws {}

    /// A drafter that keeps nothing between rounds but what `begin` sets up resumes by beginning.
    public func resume(prompt: [Int32], keeping kept: Int, round: DraftRound) throws -> Bool {
        guard observedLayers == nil else { return false }
        try begin(prompt: prompt, round: round)
        return true
    }
}

/// What a round (or the prompt) committed.
public struct RoundOutcome {
    /// The round's drafts (nil after the prompt).
    public let round: DraftRound?
    /// Accepted nodes of the round's tree, from the top.
    public let path: [Int]
    /// Committed tokens: the accepted drafts, then the full model's own token.
    public let tokens: [Int32]
    /// The full model's final hidden state (before its output norm) at the position before the last
    /// committed token: what the full model knew when it chose that token.
    public let finalState: UnsafePointer<Float>
}

/// One round's candidates as a drafter builds them: a tree of draft tokens under the pending token
/// (the last committed token, not yet through the model). In the verification batch the pending token
/// is row 0 and node `i` is row `i + 1`. One per sequence, reused round after round.
public final class DraftRound {
    public let model: LlamaModel
    let cache: KVCache
    /// The sequence's forward scratch, for a drafter's own layers.
    public let scratch: ForwardScratch
    /// The last committed token, and its position (the committed length before it).
    public private(set) var pending: Int32 = 0
    public private(set) var position = 0
    /// Most nodes this round may hold (the decoder's capacity, the context and the tokens still wanted).
    public private(set) var limit = 0
    public private(set) var tokens: [Int32] = []
    /// Each node's parent node; nil: the pending token.
    public private(set) var parents: [Int?] = []
    /// Sampling: row `i` is node `i`'s draft distribution, dense over the vocabulary — the distribution
    /// its token was drawn from, given its parent and its earlier siblings (a copy's is all on its token).
    public let probabilities: FloatMatrix
    /// States of the batch rows [pending, nodes…] after layers `0..<stateLayers`, when the drafter ran
    /// them (`runLayers`); verification continues from them.
    public let states: FloatMatrix
    public private(set) var stateLayers = 0
    /// Figures for the statistics: head evaluations, and drafts that were copies.
    public var draftSteps = 0
    public var copiedDrafts = 0
    private let embedded: FloatMatrix

    init(model: LlamaModel, cache: KVCache, scratch: ForwardScratch, capacity: Int) {
        self.model = model
        self.cache = cache
        self.scratch = scratch
        let c = model.config
        probabilities = FloatMatrix(capacity: capacity, columns: c.vocabularySize)
        states = FloatMatrix(capacity: capacity + 1, columns: c.hiddenSize)
        embedded = FloatMatrix(capacity: capacity + 1, columns: c.hiddenSize)
    }

    public var count: Int { tokens.count }

    func reset(pending: Int32, position: Int, limit: Int) {
        self.pending = pending
        self.position = position
        self.limit = limit
        tokens.removeAll(keepingCapacity: true)
        parents.removeAll(keepingCapacity: true)
        states.rows = 0
        stateLayers = 0
        draftSteps = 0
        copiedDrafts = 0
    }

    /// Adds a node under `parent` (nil: the pending token) and returns its index.
    @discardableResult
    public func add(_ token: Int32, parent: Int?) -> Int {
        precondition(count < limit, "the round holds at most \(limit) drafts")
        precondition(parent.map { (0..<count).contains($0) } ?? true, "a draft's parent must come before it")
        tokens.append(token)
        parents.append(parent)
        return count - 1
    }

    /// Adds `copies` as a chain after the last node (copied text, prompt lookup's drafts), each with all
    /// its draft probability on its token when `sampling`, and counts them as copies.
    public func addCopies(_ copies: [Int32], sampling: Bool) {
        for copy in copies {
            let node = add(copy, parent: count == 0 ? nil : count - 1)
            if sampling { setCertain(node) }
        }
        copiedDrafts += copies.count
    }

    /// Sampling: makes node `node`'s draft distribution all on its token (a draft made without a
    /// distribution, such as a copy).
    public func setCertain(_ node: Int) {
        let row = probabilities.row(node)
        row.initialize(repeating: 0, count: probabilities.columns)
        row[Int(tokens[node])] = 1
    }

    /// The verification batch's tree: the pending token, then the nodes.
    var batchTree: TokenTree { TokenTree(parents: [nil] + parents.map { ($0 ?? -1) + 1 })! }

    /// Takes the pending token's state after layers `0..<layers` (row `row` of `hidden`), which a batch
    /// ran for several rounds at once; its keys and values are in the cache already.
    func takePendingState(_ hidden: FloatMatrix, row: Int, layers: Int) {
        precondition(count == 0 && states.rows == 0, "the pending row comes first")
        states.copyRow(from: hidden, row: row, to: 0)
        states.rows = 1
        stateLayers = layers
    }

    /// Runs layers `0..<layers` over the batch rows not run yet (the pending token first, then the nodes
    /// added since), as part of the round's tree: their keys and values go to the sequence's cache,
    /// their states to `states`. Every call of a round runs the same layers.
    public func runLayers(_ layers: Int) throws {
        precondition(layers > 0 && (stateLayers == 0 || stateLayers == layers), "a round runs one range of layers")
        let first = states.rows
        guard first < count + 1 else { return }
        stateLayers = layers
        model.embed((first..<(count + 1)).map { $0 == 0 ? pending : tokens[$0 - 1] }, into: embedded)
        try model.forward(layers: 0..<layers, hidden: embedded,
                          batch: [BatchSequence(cache: cache, tree: batchTree, from: first)], scratch: scratch)
        for row in 0..<embedded.rows { states.copyRow(from: embedded, row: row, to: first + row) }
        states.rows = count + 1
    }
}
