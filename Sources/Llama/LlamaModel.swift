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
    /// Added to the projections (Qwen2): [heads·headSize], [kvHeads·headSize], [kvHeads·headSize].
    public let queryBias, keyBias, valueBias: [Float]?
    /// RMSNorm weights of every query and key head before RoPE (Qwen3): [headSize] each.
    public let queryNorm, keyNorm: [Float]?

    public init(norm: [Float], query: WeightMatrix, key: WeightMatrix, value: WeightMatrix, output: WeightMatrix,
                queryBias: [Float]? = nil, keyBias: [Float]? = nil, valueBias: [Float]? = nil,
                queryNorm: [Float]? = nil, keyNorm: [Float]? = nil) {
        self.norm = norm
        self.query = query
        self.key = key
        self.value = value
        self.output = output
        self.queryBias = queryBias
        self.keyBias = keyBias
        self.valueBias = valueBias
        self.queryNorm = queryNorm
        self.keyNorm = keyNorm
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
            "the sequence needs \(needed) positions but the context holds \(capacity)"
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
        let biases = config.architecture == .qwen2, headNorms = config.architecture == .qwen3
        for i in 0..<config.layerCount {
            let p = "blk.\(i)."
            func vector(_ name: String, count: Int, if present: Bool) throws -> [Float]? {
                present ? try gguf.vector(p + name, count: count) : nil
            }
            layers.append(LlamaLayerWeights(
                attention: AttentionWeights(
                    norm: try gguf.vector(p + "attn_norm.weight", count: d),
                    query: try gguf.matrix(p + "attn_q.weight", rows: config.querySize, columns: d).repacked(),
                    key: try gguf.matrix(p + "attn_k.weight", rows: config.kvSize, columns: d).repacked(),
                    value: try gguf.matrix(p + "attn_v.weight", rows: config.kvSize, columns: d).repacked(),
                    output: try gguf.matrix(p + "attn_output.weight", rows: d, columns: config.querySize).repacked(),
                    queryBias: try vector("attn_q.bias", count: config.querySize, if: biases),
                    keyBias: try vector("attn_k.bias", count: config.kvSize, if: biases),
                    valueBias: try vector("attn_v.bias", count: config.kvSize, if: biases),
                    queryNorm: try vector("attn_q_norm.weight", count: config.headSize, if: headNorms),
                    keyNorm: try vector("attn_k_norm.weight", count: config.headSize, if: headNorms)),
                feedForward: FeedForwardWeights(
                    norm: try gguf.vector(p + "ffn_norm.weight", count: d),
                    gate: try gguf.matrix(p + "ffn_gate.weight", rows: config.feedForwardSize, columns: d).repacked(),
                    up: try gguf.matrix(p + "ffn_up.weight", rows: config.feedForwardSize, columns: d).repacked(),
                    down: try gguf.matrix(p + "ffn_down.weight", rows: d, columns: config.feedForwardSize).repacked())))
        }
        self.layers = layers
        // Llama 3.x files carry a frequency divisor per pair (`rope_freqs`), as llama.cpp applies it.
        let divisors = gguf.tensor("rope_freqs.weight") == nil
            ? [Float](repeating: 1, count: config.headSize / 2)
            : try gguf.vector("rope_freqs.weight", count: config.headSize / 2)
        inverseFrequencies = (0..<(config.headSize / 2)).map {
            pow(Double(config.ropeBase), -2 * Double($0) / Double(config.headSize)) * Double(config.ropeFrequencyScale)
                / Double(divisors[$0])
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

    /// Writes the embeddings of `tokens` into rows `row..<row + tokens.count` of `hidden` and sets its
    /// row count to the end of them.
    public func embed(_ tokens: some Collection<Int32>, into hidden: FloatMatrix, at row: Int = 0) {
        precondition(row + tokens.count <= hidden.capacity && hidden.columns == config.hiddenSize)
        for (i, token) in tokens.enumerated() {
            precondition(token >= 0 && Int(token) < config.vocabularySize, "token id \(token) outside the vocabulary")
            tokenEmbedding.dequantizeRow(Int(token), into: hidden.row(row + i))
        }
        hidden.rows = row + tokens.count
    }

    /// Runs decoder layers `layers` over the `hidden.rows` token states in place. The tokens take the
    /// positions following what `cache` holds for those layers (which must be equal across the range);
    /// their keys and values are appended to the cache.
    public func forward(layers range: Range<Int>, hidden: FloatMatrix, cache: KVCache, scratch: ForwardScratch) throws(LlamaError) {
        try forward(layers: range, hidden: hidden, batch: [BatchSequence(cache: cache, count: hidden.rows)], scratch: scratch)
    }

    /// Runs decoder layers `layers` over the rows of `hidden` in place, for several sequences and
    /// token trees at once: the batch's sequences take consecutive rows in its order. A sequence's row
    /// `i` has its key and value stored at position `base + i` of its cache (`base`: what the cache
    /// holds for those layers, equal across the range, less the tree's rows already in it), but
    /// attends as `TokenTree` says, at position `base + depth`. Each row gets the bits it would get alone in a linear forward along its path.
    /// A tree's positions past its accepted path are dropped with `KVCache.keepPath`.
    public func forward(layers range: Range<Int>, hidden: FloatMatrix, batch: [BatchSequence], scratch: ForwardScratch) throws(LlamaError) {
        guard !range.isEmpty, hidden.rows > 0 else { return }
        precondition(batch.reduce(0) { $0 + $1.count } == hidden.rows, "the batch's sequences do not cover the rows")
        var bases: [Int] = []
        bases.reserveCapacity(batch.count)
        for sequence in batch {
            let length = sequence.cache.length(of: range.lowerBound)
            for layer in range {
                precondition(sequence.cache.length(of: layer) == length, "KV cache lengths differ inside a layer range")
            }
            precondition(length >= sequence.first, "a tree's earlier rows are not in the cache")
            guard length + sequence.count <= sequence.cache.capacity else {
                throw .contextFull(needed: length + sequence.count, capacity: sequence.cache.capacity)
            }
            bases.append(length - sequence.first)
        }
        var chunkStart = 0
        while chunkStart < hidden.rows {
            let count = min(scratch.capacity, hidden.rows - chunkStart)
            scratch.layout.set(batch, bases: bases, rows: chunkStart..<(chunkStart + count))
            let states = hidden.row(chunkStart)
            for layer in range {
                scratch.layerTokenCounts[layer] += count
                attentionBlock(layers[layer].attention, states: states, count: count, cacheLayer: layer, scratch: scratch)
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
        scratch.layout.setChain(cache: cache, base: position, count: count)
        attentionBlock(w, states: states, count: count, cacheLayer: cacheLayer, scratch: scratch)
    }

    /// The attention block over the rows of one sequence (`sequence.count` states at `states`, at most
    /// `scratch.capacity`), which may be tree rows, in layer `cacheLayer` of its cache: a drafter's own
    /// attention layer (Kangaroo's adapter) over a draft tree, each row seeing its committed positions,
    /// its ancestors and itself.
    public func attentionBlock(_ w: AttentionWeights, states: UnsafeMutablePointer<Float>, sequence: BatchSequence,
                               cacheLayer: Int, scratch: ForwardScratch) {
        let length = sequence.cache.length(of: cacheLayer)
        precondition(sequence.count <= scratch.capacity && length >= sequence.first)
        scratch.layout.set([sequence], bases: [length - sequence.first], rows: 0..<sequence.count)
        attentionBlock(w, states: states, count: sequence.count, cacheLayer: cacheLayer, scratch: scratch)
    }

    /// The attention block over the chunk `scratch.layout` describes.
    private func attentionBlock(_ w: AttentionWeights, states: UnsafeMutablePointer<Float>, count: Int, cacheLayer: Int,
                                scratch: ForwardScratch) {
        let c = config
        let d = c.hiddenSize
        let normed = scratch.normed.pointer, layout = scratch.layout
        scratch.prepareRoPE(positions: layout.positions, count: count, inverseFrequencies: inverseFrequencies)
        for t in 0..<count {
            VectorOps.rmsNorm(states + t * d, weight: w.norm, eps: c.rmsNormEpsilon, count: d, into: normed + t * d)
        }
        let input = scratch.input, pool = scratch.pool
        input.set(normed, count: count, columns: d)
        input.multiply(w.query, into: scratch.query.pointer, w.key, into: scratch.key.pointer,
                       w.value, into: scratch.value.pointer, pool: pool)
        for t in 0..<count {
            let query = scratch.query.row(t), key = scratch.key.row(t)
            if let bias = w.queryBias { VectorOps.add(query, bias, count: c.querySize) }
            if let bias = w.keyBias { VectorOps.add(key, bias, count: c.kvSize) }
            if let bias = w.valueBias { VectorOps.add(scratch.value.row(t), bias, count: c.kvSize) }
            if let norm = w.queryNorm { normalizeHeads(query, heads: c.headCount, weight: norm) }
            if let norm = w.keyNorm { normalizeHeads(key, heads: c.kvHeadCount, weight: norm) }
            let cos = scratch.ropeCos.row(t), sin = scratch.ropeSin.row(t)
            let adjacent = c.architecture.ropeStyle == .adjacentPairs
            VectorOps.rope(query, heads: c.headCount, headSize: c.headSize, cos: cos, sin: sin, pairsAdjacent: adjacent)
            VectorOps.rope(key, heads: c.kvHeadCount, headSize: c.headSize, cos: cos, sin: sin, pairsAdjacent: adjacent)
        }
        for s in 0..<layout.segmentCount {
            let segment = layout.segments[s], cache = segment.cache, slot = segment.base + segment.first
            precondition(cache.length(of: cacheLayer) == slot, "the KV cache does not end where the batch starts")
            for i in 0..<segment.count {
                cache.storeKey(scratch.key.row(segment.row + i), layer: cacheLayer, position: slot + i)
                cache.storeValue(scratch.value.row(segment.row + i), layer: cacheLayer, position: slot + i)
            }
            cache.setLength(slot + segment.count, layer: cacheLayer)
        }
        attention(layer: cacheLayer, scratch: scratch)
        input.set(scratch.attention.pointer, count: count, columns: c.querySize)
        w.output.multiply(input, into: scratch.projection.pointer, pool: pool)
        VectorOps.add(states, scratch.projection.pointer, count: count * d)
    }

    /// RMSNorm of each head of `x` in place (Qwen3's query and key norms).
    private func normalizeHeads(_ x: UnsafeMutablePointer<Float>, heads: Int, weight: [Float]) {
        let size = config.headSize
        withUnsafeTemporaryAllocation(of: Float.self, capacity: size) { head in
            for h in 0..<heads {
                head.baseAddress!.update(from: x + h * size, count: size)
                VectorOps.rmsNorm(head.baseAddress!, weight: weight, eps: config.rmsNormEpsilon, count: size, into: x + h * size)
            }
        }
    }

    /// Pre-norm SwiGLU feed-forward with residual over `count` token states (used by the decoder
    /// layers and by an adapter with a feed-forward block). `count` may not exceed `scratch.capacity`.
    /// SwiGLU and the quantisation of the down projection's input run in the gate/up job, each thread on
    /// the 32-feature blocks of both products it has just computed (`ActivationBatch.multiplySwiGLU`).
    /// On the calling thread, they read the other core's half of both products first. So only the
    /// int8 blocks of the down product's input cross the cores (docs/measurements.md).
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

    /// Grouped-query attention of the chunk's rows against their caches' layer `layer`, each row over
    /// its sequence's committed positions, its ancestors and itself. Writes `scratch.attention` (rows of
    /// `heads × headSize`).
    private func attention(layer: Int, scratch: ForwardScratch) {
        let job = scratch.attentionJob, layout = scratch.layout
        job.layer = layer
        let pool = scratch.pool, kvHeads = config.kvHeadCount
        // The split way keeps every new token's scores at once: the scratch has rows for 16 tokens. It
        // serves one sequence; several make enough items for the threads anyway.
        if layout.segmentCount == 1, case let segment = layout.segments[0], segment.count <= AttentionJob.maxRowsPerItem,
           segment.base + segment.first + segment.count
               >= scratch.splitAttentionLength ?? AttentionJob.splitLength(newTokens: segment.count) {
            let chunks = (segment.base + segment.first + segment.count + AttentionJob.positionsPerChunk - 1)
                / AttentionJob.positionsPerChunk
            job.phase = .scores
            pool.run(job, count: chunks * kvHeads, grain: 1)
            job.phase = .softmax
            pool.run(job, count: segment.count * config.headCount, grain: 1)
            job.phase = .values
            pool.run(job, count: segment.cache.valueSlices * kvHeads, grain: 1)
        } else {
            job.phase = .items
            layout.makeRuns()
            pool.run(job, count: layout.runCount * kvHeads, grain: 1)
        }
    }
}
