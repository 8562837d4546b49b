import Decoding
import Llama
import Tensor

/// Runs a `KangarooAdapter` on exit-layer hidden states, with its own one-layer KV cache.
///
/// Invariant: the cache holds the adapter's keys and values for positions `0..<length`; `feed`
/// appends the next positions. The decoder rolls it back by `truncate` like the model's caches.
public final class AdapterRunner: ExitStateDraftModel, @unchecked Sendable {
    public let adapter: KangarooAdapter
    let model: LlamaModel
    let attention: AttentionWeights
    let feedForward: FeedForwardWeights?
    let deepProjection: WeightMatrix?
    /// Adds the previous position's exit state to each input (nil: the adapter takes none).
    let previousProjection: WeightMatrix?
    /// The exit states fed so far, one row behind their positions (kept when the adapter takes the
    /// previous state, so that after a rollback each input finds its true predecessor): row p + 1 holds
    /// position p's for p < length, row 0 stays zero (position 0 has no predecessor). So the
    /// predecessors of positions length… are the rows length…, contiguous.
    private let fedStates: FloatMatrix?
    private let previousInput: ActivationBatch
    private let previousProjected: FloatMatrix
    let cache: KVCache
    let states: FloatMatrix
    public let head: DraftHead
    /// The deep state as a product input, and its projection.
    private let deepInput: ActivationBatch
    private let projected: FloatMatrix
    private let weights: DraftWeights
    /// Draft trees: the current round's rows so far, each one's parent among them (nil: the round's
    /// first row), the position that row took, and the predecessors' exit states of a level.
    private var roundParents: [Int?] = []
    private var roundBase = 0
    private let predecessors: FloatMatrix
    /// Block drafters: the block queries, and a block's rows (the newest position's, then the queries').
    private let blockQueries: FloatMatrix?
    private let blockRows: FloatMatrix
    private let blockFeedForward: FeedForwardWeights?

    public init(adapter: KangarooAdapter, model: LlamaModel, contextCapacity: Int, chunk: Int) {
        self.adapter = adapter
        self.model = model
        let c = model.config
        let weights = DraftWeights()
        func matrix(_ values: [Float], rows: Int, columns: Int) -> WeightMatrix { weights.matrix(values, rows: rows, columns: columns) }
        attention = AttentionWeights(norm: adapter.inputNorm,
                                     query: matrix(adapter.query, rows: c.querySize, columns: c.hiddenSize),
                                     key: matrix(adapter.key, rows: c.kvSize, columns: c.hiddenSize),
                                     value: matrix(adapter.value, rows: c.kvSize, columns: c.hiddenSize),
                                     output: matrix(adapter.output, rows: c.hiddenSize, columns: c.querySize))
        feedForward = adapter.feedForward.map { f in
            FeedForwardWeights(norm: f.norm, gate: matrix(f.gate, rows: f.size, columns: c.hiddenSize),
                               up: matrix(f.up, rows: f.size, columns: c.hiddenSize),
                               down: matrix(f.down, rows: c.hiddenSize, columns: f.size))
        }
        deepProjection = adapter.deepProjection.map { matrix($0, rows: c.hiddenSize, columns: c.hiddenSize) }
        previousProjection = adapter.previousProjection.map { matrix($0, rows: c.hiddenSize, columns: c.hiddenSize) }
        fedStates = adapter.previousProjection == nil ? nil : FloatMatrix(capacity: contextCapacity + 1, columns: c.hiddenSize)
        previousInput = ActivationBatch(capacity: chunk * c.hiddenSize)
        previousProjected = FloatMatrix(capacity: chunk, columns: c.hiddenSize)
        deepInput = ActivationBatch(capacity: c.hiddenSize)
        projected = FloatMatrix(capacity: 1, columns: c.hiddenSize)
        self.weights = weights
        predecessors = FloatMatrix(capacity: DraftHead.maxRows, columns: c.hiddenSize)
        blockQueries = adapter.blockQueries.map { queries in
            let matrix = FloatMatrix(capacity: adapter.blockSize, columns: c.hiddenSize)
            queries.withUnsafeBufferPointer { matrix.pointer.update(from: $0.baseAddress!, count: queries.count) }
            matrix.rows = adapter.blockSize
            return matrix
        }
        blockRows = FloatMatrix(capacity: adapter.blockSize + 1, columns: c.hiddenSize)
        blockFeedForward = adapter.blockFeedForward.map { f in
            FeedForwardWeights(norm: f.norm, gate: matrix(f.gate, rows: f.size, columns: c.hiddenSize),
                               up: matrix(f.up, rows: f.size, columns: c.hiddenSize),
                               down: matrix(f.down, rows: c.hiddenSize, columns: f.size))
        }
        cache = KVCache(config: c, capacity: contextCapacity, layerCount: 1)
        states = FloatMatrix(capacity: chunk, columns: c.hiddenSize)
        head = DraftHead(model: model, normWeights: adapter.norm, vocabulary: adapter.draftVocabulary)
    }

    /// Positions the adapter has seen.
    public var length: Int { cache.length(of: 0) }

    public func reset() { cache.reset() }

    public func truncate(to length: Int) { cache.truncate(to: length) }

    /// Whether `evaluate` uses a deep state.
    public var takesDeepState: Bool { deepProjection != nil }

    public var keepsCache: Bool { true }

    /// Runs the adapter's attention over rows `rows` of `exitStates` (positions `length…`), appending
    /// their keys and values to its cache and leaving the results in `states` rows `0..<` the last
    /// chunk's size. What follows the attention only matters where a draft is made (`evaluate`).
    public func feed(_ exitStates: FloatMatrix, rows: Range<Int>, scratch: ForwardScratch) {
        var start = rows.lowerBound
        while start < rows.upperBound {
            let count = min(states.capacity, scratch.capacity, rows.upperBound - start)
            for i in 0..<count { states.copyRow(from: exitStates, row: start + i, to: i) }
            states.rows = count
            if let previousProjection, let fedStates { addPreviousStates(previousProjection, fedStates, count: count, scratch: scratch) }
            model.attentionBlock(attention, states: states.pointer, count: count, position: length,
                                 cache: cache, cacheLayer: 0, scratch: scratch)
            start += count
        }
    }

    /// Keeps `states`' rows (positions length…) and adds to each the projected exit state of the
    /// position before.
    private func addPreviousStates(_ projection: WeightMatrix, _ fed: FloatMatrix, count: Int, scratch: ForwardScratch) {
        let d = states.columns
        for i in 0..<count { fed.copyRow(from: states, row: i, to: length + i + 1) }
        previousInput.set(fed.row(length), count: count, columns: d)
        projection.multiply(previousInput, into: previousProjected.pointer, pool: scratch.pool)
        VectorOps.add(states.pointer, previousProjected.pointer, count: count * d)
    }

    /// Feeds rows `rows` of `exitStates` and evaluates the rest of the adapter and the draft head on the
    /// last one. `deepState` (`hiddenSize` floats: the full model's normalised final state at the
    /// position before) is added through the deep projection when the adapter has one; nil withholds it.
    public func evaluate(_ exitStates: FloatMatrix, rows: Range<Int>, deepState: UnsafePointer<Float>? = nil,
                         scratch: ForwardScratch) {
        feed(exitStates, rows: rows, scratch: scratch)
        let last = states.row(states.rows - 1)
        if let deepProjection, let deepState {
            deepInput.set(deepState, count: 1, columns: projected.columns)
            deepProjection.multiply(deepInput, into: projected.pointer, pool: scratch.pool)
            for i in 0..<projected.columns { last[i] += projected.pointer[i] }
        }
        if let feedForward { model.feedForwardBlock(feedForward, states: last, count: 1, scratch: scratch) }
        head.evaluate(last, pool: scratch.pool)
    }

    /// SpecDec: feeds row `row` of `exitStates` (the newest position, p) and evaluates the draft head on
    /// it and on the block queries, which take positions p + 1 … p + k with that exit state plus their
    /// query vectors as inputs, and see the cache and the queries
    /// before them, as training placed them: `head.logits` row 0 drafts position p + 1, row j position
    /// p + 1 + j. The queries' keys and values are dropped afterwards. `deepState` goes to every row
    /// (the queries have nothing else from the deep layers), the block feed-forward block to the
    /// queries' rows.
    public func evaluateBlock(_ exitStates: FloatMatrix, row: Int, deepState: UnsafePointer<Float>?, scratch: ForwardScratch) {
        guard let blockQueries else { preconditionFailure("the adapter has no block queries") }
        let k = blockQueries.rows, d = states.columns
        feed(exitStates, rows: row..<(row + 1), scratch: scratch)
        blockRows.copyRow(from: states, row: 0, to: 0)
        let position = length
        // Each query's input: the newest position's exit state plus the query vector.
        for j in 0..<k {
            states.copyRow(from: blockQueries, row: j, to: j)
            VectorOps.add(states.row(j), exitStates.row(row), count: d)
        }
        states.rows = k
        model.attentionBlock(attention, states: states.pointer, count: k, position: position, cache: cache, cacheLayer: 0, scratch: scratch)
        cache.truncate(to: position)
        for j in 0..<k { blockRows.copyRow(from: states, row: j, to: j + 1) }
        blockRows.rows = k + 1
        if let deepProjection, let deepState {
            deepInput.set(deepState, count: 1, columns: d)
            deepProjection.multiply(deepInput, into: projected.pointer, pool: scratch.pool)
            for j in 0...k { VectorOps.add(blockRows.row(j), projected.pointer, count: d) }
        }
        if let feedForward { model.feedForwardBlock(feedForward, states: blockRows.pointer, count: k + 1, scratch: scratch) }
        if let blockFeedForward { model.feedForwardBlock(blockFeedForward, states: blockRows.row(1), count: k, scratch: scratch) }
        head.evaluate(blockRows.pointer, count: k + 1, pool: scratch.pool)
    }

    public func evaluateTree(_ exitStates: FloatMatrix, rows: [Int], parents: [Int?], deepState: UnsafePointer<Float>?,
                             scratch: ForwardScratch) {
        let count = rows.count, d = states.columns
        precondition(count <= min(states.capacity, scratch.capacity, DraftHead.maxRows) && count == parents.count)
        if parents[0] == nil {
            roundParents.removeAll(keepingCapacity: true)
            roundBase = length
        }
        let first = roundParents.count
        precondition(length == roundBase + first && parents.allSatisfy { ($0 ?? 0) < max(first, 1) },
                     "a tree row's parent must have been shown before")
        for (i, row) in rows.enumerated() { states.copyRow(from: exitStates, row: row, to: i) }
        states.rows = count
        if let previousProjection, let fedStates {
            // Row p + 1 of fedStates holds position p's exit state: a row's predecessor is its parent's,
            // or the last committed position's for the round's first row.
            for i in 0..<count {
                predecessors.copyRow(from: fedStates, row: parents[i].map { roundBase + $0 + 1 } ?? roundBase, to: i)
            }
            for i in 0..<count { fedStates.copyRow(from: states, row: i, to: roundBase + first + i + 1) }
            previousInput.set(predecessors.pointer, count: count, columns: d)
            previousProjection.multiply(previousInput, into: previousProjected.pointer, pool: scratch.pool)
            VectorOps.add(states.pointer, previousProjected.pointer, count: count * d)
        }
        roundParents += parents
        model.attentionBlock(attention, states: states.pointer,
                             sequence: BatchSequence(cache: cache, tree: TokenTree(parents: roundParents)!, from: first),
                             cacheLayer: 0, scratch: scratch)
        if let deepProjection, let deepState, parents[0] == nil {
            deepInput.set(deepState, count: 1, columns: d)
            deepProjection.multiply(deepInput, into: projected.pointer, pool: scratch.pool)
            VectorOps.add(states.pointer, projected.pointer, count: d)
        }
        if let feedForward { model.feedForwardBlock(feedForward, states: states.pointer, count: count, scratch: scratch) }
        head.evaluate(states.pointer, count: count, pool: scratch.pool)
    }

    public func keepPath(_ seen: [Int], base: Int) {
        precondition(base == roundBase || seen.isEmpty)
        cache.keepPath(seen, base: base)
        if let fedStates {
            for (k, index) in seen.enumerated() where index != k { fedStates.copyRow(from: fedStates, row: base + index + 1, to: base + k + 1) }
        }
        roundParents.removeAll(keepingCapacity: true)
    }
}
