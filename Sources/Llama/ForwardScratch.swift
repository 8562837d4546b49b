import Foundation
import Tensor

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
    /// The sequences and tree rows of the chunk being processed.
    let layout: BatchLayout
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
        layout = BatchLayout(capacity: capacity)
        preparedPositions = Array(repeating: -1, count: capacity)
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

    /// The position whose RoPE angles are in each row of `ropeCos`/`ropeSin` (-1: none yet).
    private var preparedPositions: [Int]

    /// Cosines and sines of the RoPE angles of row `t` at position `positions[t]` for `t < count`,
    /// computed in double precision; rows that already hold their position are kept.
    func prepareRoPE(positions: UnsafePointer<Int>, count: Int, inverseFrequencies: [Double]) {
        for t in 0..<count where preparedPositions[t] != positions[t] {
            preparedPositions[t] = positions[t]
            let cos = ropeCos.row(t), sin = ropeSin.row(t)
            for (i, frequency) in inverseFrequencies.enumerated() {
                let angle = Double(positions[t]) * frequency
                cos[i] = Float(Foundation.cos(angle))
                sin[i] = Float(Foundation.sin(angle))
            }
        }
    }
}
