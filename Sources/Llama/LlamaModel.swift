import Foundation
import KernelsC
import ModelFormats
import Tensor

/// Weights of a pre-norm self-attention block. Matrices are `rows × columns` = output × input size.
/// Used by every decoder layer and by Kangaroo's adapter.
public struct AttentionWeights: @unchecked Sendable {
    public let norm: [Float]          // [hidden]
    public let query: WeightMatrix    // [heads·headSize × hidden], rows ordered for adjacent-pair RoPE
    public let key: WeightMatrix      // [kvHeads·headSize × hidden], likewise
    public let value: WeightMatrix    // [kvHeads·headSize × hidden]
    public let output: WeightMatrix   // [hidden × heads·headSize]

    public init(norm: [Float], query: WeightMatrix, key: WeightMatrix, value: WeightMatrix, output: WeightMatrix) {
        self.norm = norm
        self.query = query
        self.key = key
        self.value = value
        self.output = output
    }
}

/// Weights of a pre-norm SwiGLU feed-forward block.
public struct FeedForwardWeights: @unchecked Sendable {
    public let norm: [Float]                // [hidden]
    public let gate: WeightMatrix           // [ffn × hidden]
    public let up: WeightMatrix             // [ffn × hidden]
    public let down: WeightMatrix           // [hidden × ffn]

    public init(norm: [Float], gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix) {
        self.norm = norm
        self.gate = gate
        self.up = up
        self.down = down
    }
}

/// Weights of one decoder layer.
struct LlamaLayerWeights: @unchecked Sendable {
    let attention: AttentionWeights
    let feedForward: FeedForwardWeights
}

public enum LlamaError: Error, CustomStringConvertible, Equatable {
    case tokenOutOfRange(Int32, vocabularySize: Int)
    case contextFull(needed: Int, capacity: Int)

    public var description: String {
        switch self {
        case let .tokenOutOfRange(id, size): "token id \(id) is outside the vocabulary (0..<\(size))"
        case let .contextFull(needed, capacity):
            "the sequence needs \(needed) positions but the context holds \(capacity); use a shorter prompt, fewer --max-tokens or a larger --context"
        }
    }
}

/// A Llama-family transformer whose weights stay in the memory-mapped GGUF file.
///
/// The forward pass is exposed by layer range so that a speculative decoder can split it:
/// `embed` → `forward(layers: 0..<ℓ)` → `forward(layers: ℓ..<L)` → `logits`. Plain decoding is the
/// same calls with one range `0..<L`.
public final class LlamaModel: @unchecked Sendable {
    public let config: LlamaConfig
    public let gguf: GGUFFile
    let tokenEmbedding: WeightMatrix // [vocab × hidden]
    let layers: [LlamaLayerWeights]
    /// The attention weights of decoder layer `index` (Kangaroo's adapter can start from a copy).
    public func attentionWeights(layer index: Int) -> AttentionWeights { layers[index].attention }
    public func feedForwardWeights(layer index: Int) -> FeedForwardWeights { layers[index].feedForward }
    public let outputNorm: [Float]   // [hidden]
    public let output: WeightMatrix  // [vocab × hidden]; the token embedding when tied; see forLogits()
    /// RoPE inverse frequencies `base^(-2i/headSize)`, i < headSize/2.
    let inverseFrequencies: [Double]

    public convenience init(path: String) throws {
        try self.init(gguf: GGUFFile(path: path))
    }

    public init(gguf: GGUFFile) throws {
        let config = try LlamaConfig(gguf: gguf)
        self.config = config
        self.gguf = gguf
        let d = config.hiddenSize
        tokenEmbedding = try gguf.matrix("token_embd.weight", rows: config.vocabularySize, columns: d)
        outputNorm = try gguf.vector("output_norm.weight", count: d)
        output = (gguf.tensor("output.weight") == nil
            ? tokenEmbedding
            : try gguf.matrix("output.weight", rows: config.vocabularySize, columns: d)).forLogits()
        var layers: [LlamaLayerWeights] = []
        for i in 0..<config.layerCount {
            let p = "blk.\(i)."
            layers.append(LlamaLayerWeights(
                attention: AttentionWeights(
                    norm: try gguf.vector(p + "attn_norm.weight", count: d),
                    query: try gguf.matrix(p + "attn_q.weight", rows: config.querySize, columns: d).repacked(),
                    key: try gguf.matrix(p + "attn_k.weight", rows: config.kvSize, columns: d).repacked(),
                    value: try gguf.matrix(p + "attn_v.weight", rows: config.kvSize, columns: d).repacked(),
                    output: try gguf.matrix(p + "attn_output.weight", rows: d, columns: config.querySize).repacked()),
                feedForward: FeedForwardWeights(
                    norm: try gguf.vector(p + "ffn_norm.weight", count: d),
                    gate: try gguf.matrix(p + "ffn_gate.weight", rows: config.feedForwardSize, columns: d).repacked(),
                    up: try gguf.matrix(p + "ffn_up.weight", rows: config.feedForwardSize, columns: d).repacked(),
                    down: try gguf.matrix(p + "ffn_down.weight", rows: d, columns: config.feedForwardSize).repacked())))
        }
        self.layers = layers
        inverseFrequencies = (0..<(config.headSize / 2)).map {
            pow(Double(config.ropeBase), -2 * Double($0) / Double(config.headSize))
        }
    }

    /// Bytes of weights one decode step reads: every layer's matrices, the output head and one
    /// embedding row.
    public var weightBytesPerToken: Int {
        let matrices = layers.flatMap {
            [$0.attention.query, $0.attention.key, $0.attention.value, $0.attention.output,
             $0.feedForward.gate, $0.feedForward.up, $0.feedForward.down]
        } + [output]
        return matrices.reduce(0) { $0 + $1.rows * $1.rowBytes } + tokenEmbedding.rowBytes
    }

    /// Checks that every id is inside the vocabulary.
    public func validate(_ tokens: [Int32]) throws(LlamaError) {
        for id in tokens where id < 0 || Int(id) >= config.vocabularySize {
            throw .tokenOutOfRange(id, vocabularySize: config.vocabularySize)
        }
    }

    /// Writes the embeddings of `tokens` into rows `0..<tokens.count` of `hidden` and sets its row count.
    public func embed(_ tokens: some Collection<Int32>, into hidden: FloatMatrix) {
        precondition(tokens.count <= hidden.capacity && hidden.columns == config.hiddenSize)
        for (row, token) in tokens.enumerated() {
            precondition(token >= 0 && Int(token) < config.vocabularySize, "token id \(token) outside the vocabulary")
            tokenEmbedding.dequantizeRow(Int(token), into: hidden.row(row))
        }
        hidden.rows = tokens.count
    }

    /// Runs decoder layers `layers` over the `hidden.rows` token states in place. The tokens take the
    /// positions following what `cache` holds for those layers (which must be equal across the range);
    /// their keys and values are appended to the cache.
    public func forward(layers range: Range<Int>, hidden: FloatMatrix, cache: KVCache, scratch: ForwardScratch) throws(LlamaError) {
        guard !range.isEmpty, hidden.rows > 0 else { return }
        let start = cache.length(of: range.lowerBound)
        for layer in range { precondition(cache.length(of: layer) == start, "KV cache lengths differ inside a layer range") }
        guard start + hidden.rows <= cache.capacity else {
            throw .contextFull(needed: start + hidden.rows, capacity: cache.capacity)
        }
        var chunkStart = 0
        while chunkStart < hidden.rows {
            let count = min(scratch.capacity, hidden.rows - chunkStart)
            let states = hidden.row(chunkStart)
            for layer in range {
                scratch.layerTokenCounts[layer] += count
                attentionBlock(layers[layer].attention, states: states, count: count, position: start + chunkStart,
                               cache: cache, cacheLayer: layer, scratch: scratch)
                feedForwardBlock(layers[layer].feedForward, states: states, count: count, scratch: scratch)
            }
            chunkStart += count
        }
    }

    /// The final norm of one hidden state (`hiddenSize` floats): what the output head reads, and
    /// Kangaroo's deep state.
    public func normalizeOutput(_ state: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        VectorOps.rmsNorm(state, weight: outputNorm, eps: config.rmsNormEpsilon, count: config.hiddenSize, into: out)
    }

    /// Final norm and output head for rows `rows` of `hidden`; logits go to rows `0..<rows.count` of `logits`.
    public func logits(_ hidden: FloatMatrix, rows: Range<Int>, into logits: FloatMatrix, scratch: ForwardScratch) {
        precondition(logits.columns == config.vocabularySize && rows.count <= logits.capacity)
        var done = 0
        while done < rows.count {
            let count = min(scratch.capacity, rows.count - done)
            for t in 0..<count { normalizeOutput(hidden.row(rows.lowerBound + done + t), into: scratch.normed.row(t)) }
            scratch.input.set(scratch.normed.pointer, count: count, columns: config.hiddenSize)
            output.multiply(scratch.input, into: logits.row(done), pool: scratch.pool)
            done += count
        }
        logits.rows = rows.count
    }

    /// Pre-norm attention with residual over `count` token states (`states`, rows of `hiddenSize`) at
    /// positions `position ..< position + count`: `states += Wo · Attention(RoPE(Wq·n), RoPE(Wk·n), Wv·n)`
    /// with `n = RMSNorm(states)`. Keys and values are appended to layer `cacheLayer` of `cache`, which
    /// must hold exactly `position` entries there. `count` may not exceed `scratch.capacity`.
    public func attentionBlock(_ w: AttentionWeights, states: UnsafeMutablePointer<Float>, count: Int, position: Int,
                               cache: KVCache, cacheLayer: Int, scratch: ForwardScratch) {
        precondition(count <= scratch.capacity && cache.length(of: cacheLayer) == position)
        let c = config
        let d = c.hiddenSize
        let normed = scratch.normed.pointer
        scratch.prepareRoPE(start: position, count: count, inverseFrequencies: inverseFrequencies)
        for t in 0..<count {
            VectorOps.rmsNorm(states + t * d, weight: w.norm, eps: c.rmsNormEpsilon, count: d, into: normed + t * d)
        }
        let input = scratch.input, pool = scratch.pool
        input.set(normed, count: count, columns: d)
        input.multiply(w.query, into: scratch.query.pointer, w.key, into: scratch.key.pointer,
                       w.value, into: scratch.value.pointer, pool: pool)
        for t in 0..<count {
            let cos = scratch.ropeCos.row(t), sin = scratch.ropeSin.row(t)
            VectorOps.rope(scratch.query.row(t), heads: c.headCount, headSize: c.headSize, cos: cos, sin: sin)
            VectorOps.rope(scratch.key.row(t), heads: c.kvHeadCount, headSize: c.headSize, cos: cos, sin: sin)
            cache.storeKey(scratch.key.row(t), layer: cacheLayer, position: position + t)
            cache.storeValue(scratch.value.row(t), layer: cacheLayer, position: position + t)
        }
        cache.setLength(position + count, layer: cacheLayer)
        attention(layer: cacheLayer, count: count, position: position, cache: cache, scratch: scratch)
        input.set(scratch.attention.pointer, count: count, columns: c.querySize)
        w.output.multiply(input, into: scratch.projection.pointer, pool: pool)
        VectorOps.add(states, scratch.projection.pointer, count: count * d)
    }

    /// Pre-norm SwiGLU feed-forward with residual over `count` token states (used by the decoder
    /// layers and by an adapter with a feed-forward block). `count` may not exceed `scratch.capacity`.
    /// SwiGLU and the quantisation of the down projection's input run in the gate/up job, each thread on
    /// the 32-feature blocks of both products it has just computed (`ActivationBatch.multiplySwiGLU`).
    /// On the calling thread, they read the other core's half of both products first. Forward over n
    /// tokens, the two ways alternating repeat by repeat in one process: with the host busy, n = 8
    /// 7.79 / 7.70 / 7.59 → 7.36 / 7.32 / 7.29 ms (three runs); on a quiet host, five runs, the mean
    /// ratio was 1.00 at n = 1, 1.00 at n = 4 and 0.99 at n = 8. (An earlier session measured the same
    /// idea 4–5% slower at n = 8.)
    public func feedForwardBlock(_ w: FeedForwardWeights, states: UnsafeMutablePointer<Float>, count: Int, scratch: ForwardScratch) {
        precondition(count <= scratch.capacity && w.gate.rows <= config.feedForwardSize, "feed-forward block wider than the scratch")
        let c = config
        let d = c.hiddenSize
        let normed = scratch.normed.pointer, input = scratch.input, pool = scratch.pool
        for t in 0..<count {
            VectorOps.rmsNorm(states + t * d, weight: w.norm, eps: c.rmsNormEpsilon, count: d, into: normed + t * d)
        }
        input.set(normed, count: count, columns: d)
        let activated = scratch.feedForwardInput
        input.multiplySwiGLU(w.gate, w.up, into: scratch.gate.pointer, up: scratch.up.pointer, next: activated, for: w.down,
                             pool: pool)
        w.down.multiply(activated, into: scratch.projection.pointer, pool: pool)
        VectorOps.add(states, scratch.projection.pointer, count: count * d)
    }

    /// Causal grouped-query attention of `count` new tokens against the cache of layer `layer`.
    /// Writes `scratch.attention` (rows of `heads × headSize`).
    private func attention(layer: Int, count: Int, position: Int, cache: KVCache, scratch: ForwardScratch) {
        let job = scratch.attentionJob
        job.layer = layer
        job.position = position
        job.cache = cache
        job.count = count
        let pool = scratch.pool, kvHeads = config.kvHeadCount
        let splitFrom = scratch.splitAttentionLength ?? AttentionJob.splitLength(newTokens: count)
        // The split way keeps every new token's scores at once: the scratch has rows for 16 tokens.
        if count <= AttentionJob.maxRowsPerItem && position + count >= splitFrom {
            let chunks = (position + count + AttentionJob.positionsPerChunk - 1) / AttentionJob.positionsPerChunk
            job.phase = .scores
            pool.run(job, count: chunks * kvHeads, grain: 1)
            job.phase = .softmax
            pool.run(job, count: count * config.headCount, grain: 1)
            job.phase = .values
            pool.run(job, count: cache.valueSlices * kvHeads, grain: 1)
        } else {
            job.phase = .items
            job.rowsPerItem = AttentionJob.rowsPerItem(count: count)
            let runs = (count + job.rowsPerItem - 1) / job.rowsPerItem
            pool.run(job, count: runs * kvHeads, grain: 1)
        }
    }
}

/// Attention, split across the pool; one per scratch, reused. Two ways, with the same bits for every
/// token (each score, softmax and value sum is the same operations either way, see KernelsC.h):
///
/// **Items** (phase `.items`): (run of new tokens, kv head) items. The query heads of the run's tokens
/// that share the kv head are computed together, so each key and value is read once for all of them.
/// Causality: token t sees positions 0…position + t. The run's scores are computed up to its last
/// token's length (a token's extra ones are never read); its value sums run over the positions all its
/// tokens see, then each later token adds its own few, which gives the bits of one sum
/// (kq_attention_values adds in order): a token's result does not depend on the run.
///
/// **Split** (phases `.scores`, `.softmax`, `.values`, for a few new tokens over a long context): this
/// model's 3 kv heads make 3 items, which two threads share 2 : 1, and reading the cache is most of a
/// step's time at long contexts. So the scores are computed in (chunk of positions, kv head) items, the
/// softmax one vector at a time, and the value sums in (slice of the head's lanes, kv head) items: both
/// threads stream half of the cache, and each key and value is still read once for all new tokens.
/// Forward over n tokens from a warm cache, the two ways alternating repeat by repeat in one process
/// (`bench speed` patched for it), split against items, two runs each:
/// - n=1: 512 positions −2 / −1%, 768 −5 / −2%, 1,024 −4 / −5%, 1,536 −6 / −7%, 2,048 −3 / −10%;
/// - n=2: 512 +1 / +1%, 768 −2 / −4%, 1,024 −4 / −5%, 1,536 −9 / −7%, 2,048 −7 / −10%;
/// - n=4: 512 to 1,536 0 to +2.5%, 2,048 −5 / −2%, 3,000 −8 / −9% (before the cache's value slices);
/// - n=8: 512 to 1,536 +3 to +6%, 2,048 +4 / 0%, 3,000 −3 / −13%; n=16 at 3,000 −14%.
final class AttentionJob: ParallelJob {
    enum Phase { case items, scores, softmax, values }

    /// Most tokens in one item (bounds the scratch).
    static let maxRowsPerItem = 16

    /// Tokens per item: half of them (at most 16), so that the items still split evenly over two
    /// threads (this model has 3 kv heads). Forward over n tokens at a 3,000-token context, the three
    /// ways alternating repeat by repeat in one process, median of 40 repeats in ms, two runs:
    /// - one token an item (as before): n=2 19.1 / 18.6, n=4 26.7 / 24.2, n=8 42.2 / 35.6;
    /// - all tokens in one item: 19.7 / 19.4, 24.9 / 22.5, 37.3 / 32.3;
    /// - halves (chosen): 18.8 / 18.4, 24.5 / 23.1, 34.4 / 32.1.
    /// Prefill of 512 and 1,024 tokens is unchanged (within noise).
    static func rowsPerItem(count: Int) -> Int { min(max(1, (count + 1) / 2), maxRowsPerItem) }

    /// Positions of a scores item in the split way (whole key tiles).
    static let positionsPerChunk = 256

    /// The split way from this many positions on (the last new token's), by the figures above: below,
    /// its two extra rounds of the pool cost more than the balance brings.
    static func splitLength(newTokens: Int) -> Int { newTokens <= 2 ? 768 : 2048 }

    let config: LlamaConfig
    unowned(unsafe) let scratch: ForwardScratch
    /// Set for each call; not retained, so the threads do not bounce its reference count.
    unowned(unsafe) var cache: KVCache?
    var phase = Phase.items
    var layer = 0
    /// Position of the first new token.
    var position = 0
    /// New tokens, and how many consecutive ones an item covers (`.items`).
    var count = 0
    var rowsPerItem = 1
    /// Query heads per kv head.
    let groupSize: Int

    init(config: LlamaConfig, scratch: ForwardScratch) {
        self.config = config
        self.scratch = scratch
        groupSize = config.headCount / config.kvHeadCount
    }

    func run(_ range: Range<Int>, part: Int) {
        guard let cache else { return }
        switch phase {
        case .items: runItems(range, part: part, cache: cache)
        case .scores: runScores(range, part: part, cache: cache)
        case .softmax: runSoftmax(range)
        case .values: runValues(range, part: part, cache: cache)
        }
    }

    private func runItems(_ range: Range<Int>, part: Int, cache: KVCache) {
        let c = config
        let headSize = c.headSize
        let scale = 1 / Float(headSize).squareRoot()
        let stride = scratch.scores.columns
        let scores = scratch.scores.row(part * groupSize * Self.maxRowsPerItem)
        // The item's queries gathered (`rows × groupSize` vectors of headSize, contiguous) and room for its
        // value sums.
        let queries = scratch.attentionQueries.row(part), outputs = scratch.attentionOutputs.row(part)
        for item in range {
            let kvHead = item % c.kvHeadCount, first = item / c.kvHeadCount * rowsPerItem
            let rows = min(count, first + rowsPerItem) - first, vectors = rows * groupSize
            gatherQueries(kvHead: kvHead, tokens: first..<(first + rows), into: queries)
            // Positions the run's first and last tokens see.
            let common = position + first + 1, longest = position + first + rows
            kq_attention_scores(queries, Int32(vectors), cache.keyTiles(layer: layer, kvHead: kvHead), Int32(longest),
                                Int32(headSize), scale, scores, stride)
            for v in 0..<vectors { VectorOps.softmax(scores + v * stride, count: common + v / groupSize) }
            for slice in 0..<cache.valueSlices {
                sumValues(scores, tokens: first..<(first + rows), kvHead: kvHead, slice: slice, cache: cache, outputs: outputs)
            }
        }
    }

    /// The value sums of the cache's value slice `slice` of kv head `kvHead`'s query heads for `tokens`, from their
    /// probabilities (`scores`: token r's group at rows `r · groupSize…`, `scores.columns` apart), into
    /// their rows of `scratch.attention`; `outputs` is room for them. The first token's sums run over the
    /// positions it sees, those of each later token continue over its few more (the bits of one sum).
    private func sumValues(_ scores: UnsafePointer<Float>, tokens: Range<Int>, kvHead: Int, slice: Int, cache: KVCache,
                           outputs: UnsafeMutablePointer<Float>) {
        let c = config, vectors = tokens.count * groupSize
        let lanes = cache.valueSliceWidth, stride = scratch.scores.columns, common = position + tokens.lowerBound + 1
        let values = cache.values(layer: layer, kvHead: kvHead, slice: slice)
        outputs.initialize(repeating: 0, count: vectors * lanes)
        kq_attention_values(scores, stride, Int32(vectors), values, lanes, Int32(common), Int32(lanes), outputs)
        for r in 1..<max(tokens.count, 1) {
            kq_attention_values(scores + r * groupSize * stride + common, stride, Int32(groupSize), values + common * lanes,
                                lanes, Int32(r), Int32(lanes), outputs + r * groupSize * lanes)
        }
        for v in 0..<vectors {
            let token = tokens.lowerBound + v / groupSize, queryHead = kvHead * groupSize + v % groupSize
            (scratch.attention.row(token) + queryHead * c.headSize + slice * lanes).update(from: outputs + v * lanes, count: lanes)
        }
    }

    /// Copies the query heads of kv head `kvHead` for `tokens` into `queries`, `headSize` floats apart.
    private func gatherQueries(kvHead: Int, tokens: Range<Int>, into queries: UnsafeMutablePointer<Float>) {
        let groupWidth = groupSize * config.headSize
        for (r, t) in tokens.enumerated() {
            (queries + r * groupWidth).update(from: scratch.query.row(t) + kvHead * groupWidth, count: groupWidth)
        }
    }

    /// The split way's score rows: kv head k's vectors (token r, query head g of the group) are rows
    /// `(k · count + r) · groupSize + g` of `scratch.scores`.
    private func splitScoresRow(kvHead: Int) -> UnsafeMutablePointer<Float> {
        scratch.scores.row(kvHead * count * groupSize)
    }

    /// (chunk of positions, kv head) items: the scores of every new token's query heads over the chunk,
    /// up to the last token's length.
    private func runScores(_ range: Range<Int>, part: Int, cache: KVCache) {
        let c = config, chunk = Self.positionsPerChunk
        let queries = scratch.attentionQueries.row(part), longest = position + count
        for item in range {
            let kvHead = item % c.kvHeadCount, start = item / c.kvHeadCount * chunk
            gatherQueries(kvHead: kvHead, tokens: 0..<count, into: queries)
            kq_attention_scores(queries, Int32(count * groupSize),
                                cache.keyTiles(layer: layer, kvHead: kvHead) + start * c.headSize,
                                Int32(min(chunk, longest - start)), Int32(c.headSize), 1 / Float(c.headSize).squareRoot(),
                                splitScoresRow(kvHead: kvHead) + start, scratch.scores.columns)
        }
    }

    /// One item per score row: its softmax over the positions its token sees.
    private func runSoftmax(_ range: Range<Int>) {
        for row in range {
            let token = row % (count * groupSize) / groupSize
            VectorOps.softmax(scratch.scores.row(row), count: position + token + 1)
        }
    }

    /// (slice of lanes, kv head) items: every new token's value sums for those lanes of the group's heads.
    private func runValues(_ range: Range<Int>, part: Int, cache: KVCache) {
        for item in range {
            let kvHead = item % config.kvHeadCount
            sumValues(splitScoresRow(kvHead: kvHead), tokens: 0..<count, kvHead: kvHead, slice: item / config.kvHeadCount,
                      cache: cache, outputs: scratch.attentionOutputs.row(part))
        }
    }
}

/// Scratch buffers for a forward pass over up to `capacity` tokens at a time, reused across calls
/// so that decoding does not allocate. One per decoding session (not shared between threads).
public final class ForwardScratch: @unchecked Sendable {
    public let capacity: Int
    public let pool: ThreadPool
    let normed, query, key, value, attention, projection, gate, up: FloatMatrix
    let ropeCos, ropeSin: FloatMatrix
    /// Attention scores: a row per query head of a kv group and token of an attention item, per worker
    /// thread, `contextCapacity` rounded up to whole key tiles.
    let scores: FloatMatrix
    /// Per worker thread: an attention item's queries and outputs (`AttentionJob`).
    let attentionQueries, attentionOutputs: FloatMatrix
    let input: ActivationBatch // the current matrix-product input, quantised once per input
    /// The down product's input, SwiGLU's output: written (and quantised) while `input` is still being read.
    let feedForwardInput: ActivationBatch
    private(set) lazy var attentionJob = AttentionJob(config: config, scratch: self)
    private let config: LlamaConfig

    /// Attention of a few new tokens that see at least this many positions takes `AttentionJob`'s split
    /// way; nil: `AttentionJob.splitLength`. Same bits either way (tests set it to compare the two).
    let splitAttentionLength: Int?

    public init(config: LlamaConfig, tokens capacity: Int = 64, contextCapacity: Int, pool: ThreadPool = .shared,
                splitAttentionLength: Int? = nil) {
        self.capacity = capacity
        self.splitAttentionLength = splitAttentionLength
        self.pool = pool
        self.config = config
        layerTokenCounts = Array(repeating: 0, count: config.layerCount)
        normed = FloatMatrix(capacity: capacity, columns: config.hiddenSize)
        query = FloatMatrix(capacity: capacity, columns: config.querySize)
        key = FloatMatrix(capacity: capacity, columns: config.kvSize)
        value = FloatMatrix(capacity: capacity, columns: config.kvSize)
        attention = FloatMatrix(capacity: capacity, columns: config.querySize)
        projection = FloatMatrix(capacity: capacity, columns: config.hiddenSize)
        gate = FloatMatrix(capacity: capacity, columns: config.feedForwardSize)
        up = FloatMatrix(capacity: capacity, columns: config.feedForwardSize)
        ropeCos = FloatMatrix(capacity: capacity, columns: config.headSize / 2)
        ropeSin = FloatMatrix(capacity: capacity, columns: config.headSize / 2)
        let itemVectors = config.headCount / config.kvHeadCount * AttentionJob.maxRowsPerItem
        scores = FloatMatrix(capacity: max(pool.threads * itemVectors, config.headCount * AttentionJob.maxRowsPerItem),
                             columns: (contextCapacity + 15) / 16 * 16)
        attentionQueries = FloatMatrix(capacity: pool.threads, columns: itemVectors * config.headSize)
        attentionOutputs = FloatMatrix(capacity: pool.threads, columns: itemVectors * config.headSize)
        input = ActivationBatch(capacity: capacity * max(config.hiddenSize, config.querySize))
        feedForwardInput = ActivationBatch(capacity: capacity * config.feedForwardSize)
    }

    /// Tokens each decoder layer has processed through this scratch (instrumentation: shows that a
    /// speculative decoder runs the shallow layers once per position).
    public var layerTokenCounts: [Int]

    /// The positions whose RoPE tables are in `ropeCos`/`ropeSin`.
    private var preparedPositions = 0..<0

    /// Cosines and sines of the RoPE angles for positions `start ..< start + count`, computed in double
    /// precision; kept while the next blocks ask for the same positions.
    func prepareRoPE(start: Int, count: Int, inverseFrequencies: [Double]) {
        if preparedPositions == start..<(start + count) { return }
        preparedPositions = start..<(start + count)
        for t in 0..<count {
            let cos = ropeCos.row(t), sin = ropeSin.row(t)
            for (i, frequency) in inverseFrequencies.enumerated() {
                let angle = Double(start + t) * frequency
                cos[i] = Float(Foundation.cos(angle))
                sin[i] = Float(Foundation.sin(angle))
            }
        }
    }
}
