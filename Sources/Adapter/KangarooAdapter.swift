import Foundation
import Llama
import ModelFormats
import Tensor

/// Describes an adapter and the model it belongs to; stored as `adapter.json` beside the weights.
public struct AdapterConfig: Codable, Sendable, Equatable {
    /// Layers `0..<exitLayer` of the model feed the adapter.
    public var exitLayer: Int
    public var hiddenSize: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headSize: Int
    /// `general.name` of the model it was trained for, and `GGUFFile.fingerprint` of that file.
    public var modelName: String
    public var modelFingerprint: String
    /// How it was made (free text: training settings, or "random seed 1").
    public var origin: String
    /// Width of the adapter's feed-forward block; nil when it has none (the paper's adapter).
    public var feedForwardSize: Int?

    enum CodingKeys: String, CodingKey {
        case exitLayer = "exit_layer", hiddenSize = "hidden_size", headCount = "head_count"
        case kvHeadCount = "kv_head_count", headSize = "head_size", modelName = "model_name"
        case modelFingerprint = "model_fingerprint", origin, feedForwardSize = "feed_forward_size"
    }
}

public enum AdapterError: Error, Equatable, CustomStringConvertible {
    case missingFile(String)
    case missingTensor(String)
    case badShape(String, [Int], expected: [Int])
    case mismatch(String)

    public var description: String {
        switch self {
        case let .missingFile(path): "adapter file \(path) is missing"
        case let .missingTensor(name): "the adapter has no tensor '\(name)'"
        case let .badShape(name, shape, expected): "adapter tensor '\(name)' has shape \(shape), expected \(expected)"
        case let .mismatch(reason): "the adapter does not fit this model: \(reason)"
        }
    }
}

/// Kangaroo's adapter: [optionally + the projected previous exit state] → RMSNorm → self-attention (the model's head layout, RoPE at absolute positions)
/// with residual → [optionally + the projected deep state] → [optionally RMSNorm → SwiGLU feed-forward
/// with residual] → RMSNorm → the model's own LM head. It turns the exit-layer hidden state of the
/// shallow sub-network into a draft distribution. Weights are float32 and owned here.
///
/// The deep state (not in the paper; EAGLE's idea in Kangaroo's setting) is the full model's final
/// hidden state, normalised by its output norm, at the position before the drafting one. Verification
/// has just computed it for a round's first draft, so that draft sees what the deep layers knew; later
/// drafts of the round go without it (their predecessors are unverified), and training withholds it
/// at random so the adapter learns both cases.
///
/// The previous exit state (also beyond the paper) is the exit-layer state of the position before,
/// added to each input. With it, a key can carry its predecessor's token, so that one attention layer
/// can find where the current token occurred before and propose what followed it (copying).
///
/// Tensor names follow the reference checkpoint: `layers.0.input_layernorm.weight`,
/// `layers.0.self_attn.{q,k,v,o}_proj.weight` (rows × columns = output × input; q and k rows in the
/// GGUF adjacent-pair RoPE order, like the model's own), `norm.weight`; with a feed-forward block
/// also `layers.0.post_attention_layernorm.weight` and `layers.0.mlp.{gate,up,down}_proj.weight`;
/// with a deep state `deep_proj.weight` (d × d); with the previous exit state `prev_proj.weight`
/// (d × d); optionally `draft_vocab` (int32 token ids) restricting the draft head to a sub-vocabulary.
///
/// SpecDec's block drafter is such an adapter with `block_queries` (k × d): learned vectors that, added
/// to the newest position's exit state, take the k positions after it and draft them all in one pass (`AdapterRunner.
/// evaluateBlock`), and optionally a feed-forward block their rows alone go through (`block_mlp.norm.weight`,
/// `block_mlp.{gate,up,down}_proj.weight`). It is stored as `specdec.json` / `specdec.safetensors`
/// beside the adapter it extends: that file holds only the block's tensors (and the draft vocabulary).
public final class KangarooAdapter: @unchecked Sendable {
    public let config: AdapterConfig
    public private(set) var inputNorm: [Float]
    public private(set) var query: [Float], key: [Float], value: [Float], output: [Float]
    public private(set) var norm: [Float]
    public let feedForward: FeedForward?
    /// `[d × d]`: maps the deep state into the adapter's residual stream; nil when it takes none.
    public let deepProjection: [Float]?
    /// `[d × d]`: maps the previous position's exit state into each input; nil when it takes none.
    public let previousProjection: [Float]?
    /// Token ids the draft head scores (nil: the whole vocabulary).
    public let draftVocabulary: [Int32]?
    /// `[k × d]`: SpecDec's block queries (nil: none).
    public let blockQueries: [Float]?
    /// The feed-forward block of the block queries' rows (nil: none).
    public let blockFeedForward: FeedForward?

    /// The optional feed-forward block: `down · (silu(gate · n) ⊙ (up · n))` with `n = RMSNorm(x; norm)`.
    public struct FeedForward: Sendable {
        public var norm: [Float]  // [d]
        public var gate: [Float]  // [f × d]
        public var up: [Float]    // [f × d]
        public var down: [Float]  // [d × f]

        public init(norm: [Float], gate: [Float], up: [Float], down: [Float]) {
            (self.norm, self.gate, self.up, self.down) = (norm, gate, up, down)
        }

        public var size: Int { gate.count / max(norm.count, 1) }
    }

    /// The stem of an adapter's files, and of a block drafter's.
    public static let adapterName = "adapter"
    public static let blockDrafterName = "specdec"

    public init(config: AdapterConfig, inputNorm: [Float], query: [Float], key: [Float], value: [Float], output: [Float],
                norm: [Float], feedForward: FeedForward? = nil, deepProjection: [Float]? = nil, previousProjection: [Float]? = nil,
                draftVocabulary: [Int32]? = nil, blockQueries: [Float]? = nil, blockFeedForward: FeedForward? = nil) {
        let d = config.hiddenSize, qs = config.headCount * config.headSize, kv = config.kvHeadCount * config.headSize
        precondition(inputNorm.count == d && norm.count == d && query.count == qs * d && key.count == kv * d
                     && value.count == kv * d && output.count == d * qs, "adapter weights do not match the config")
        precondition(config.feedForwardSize == feedForward?.size, "the config's feed-forward size does not match the weights")
        if let f = feedForward {
            precondition(f.norm.count == d && f.gate.count == f.size * d && f.up.count == f.size * d && f.down.count == d * f.size,
                         "feed-forward weights do not match the config")
        }
        precondition(deepProjection.map { $0.count == d * d } ?? true, "the deep projection must be d × d")
        precondition(previousProjection.map { $0.count == d * d } ?? true, "the previous-state projection must be d × d")
        precondition(blockQueries.map { !$0.isEmpty && $0.count % d == 0 } ?? true, "block queries must be k × d")
        if let f = blockFeedForward {
            precondition(blockQueries != nil && f.norm.count == d && f.gate.count == f.size * d && f.up.count == f.size * d
                         && f.down.count == d * f.size, "block feed-forward weights do not match")
        }
        self.config = config
        self.inputNorm = inputNorm
        self.query = query
        self.key = key
        self.value = value
        self.output = output
        self.norm = norm
        self.feedForward = feedForward
        self.deepProjection = deepProjection
        self.previousProjection = previousProjection
        self.draftVocabulary = draftVocabulary
        self.blockQueries = blockQueries
        self.blockFeedForward = blockFeedForward
    }

    /// k: the positions a block drafter drafts in one pass after the newest (0: not a block drafter).
    public var blockSize: Int { (blockQueries?.count ?? 0) / config.hiddenSize }

    /// This adapter with a feed-forward block for the block queries' rows only: layer `exitLayer`'s
    /// norm, gate and up, and a zero down projection (so it starts as no block at all).
    public func addingBlockFeedForward(of model: LlamaModel) -> KangarooAdapter {
        guard blockFeedForward == nil else { return self }
        let copy = Self.copyingLayer(of: model, exitLayer: config.exitLayer, feedForward: true).feedForward!
        return KangarooAdapter(config: config, inputNorm: inputNorm, query: query, key: key, value: value, output: output, norm: norm,
                               feedForward: feedForward, deepProjection: deepProjection, previousProjection: previousProjection,
                               draftVocabulary: draftVocabulary, blockQueries: blockQueries,
                               blockFeedForward: FeedForward(norm: copy.norm, gate: copy.gate, up: copy.up,
                                                             down: Array(repeating: 0, count: copy.down.count)))
    }

    /// This adapter with `queries` (k × d) as its block queries: a block drafter.
    public func withBlockQueries(_ queries: [Float]) -> KangarooAdapter {
        KangarooAdapter(config: config, inputNorm: inputNorm, query: query, key: key, value: value, output: output, norm: norm,
                        feedForward: feedForward, deepProjection: deepProjection, previousProjection: previousProjection,
                        draftVocabulary: draftVocabulary, blockQueries: queries, blockFeedForward: blockFeedForward)
    }

    /// This adapter also taking the deep state and/or the previous exit state, each through a zero
    /// projection where it had none: it drafts exactly as before until training moves them.
    public func adding(deepState: Bool = false, previousState: Bool = false) -> KangarooAdapter {
        let zero = Array(repeating: Float(0), count: config.hiddenSize * config.hiddenSize)
        return KangarooAdapter(config: config, inputNorm: inputNorm, query: query, key: key, value: value, output: output,
                               norm: norm, feedForward: feedForward,
                               deepProjection: deepProjection ?? (deepState ? zero : nil),
                               previousProjection: previousProjection ?? (previousState ? zero : nil),
                               draftVocabulary: draftVocabulary, blockQueries: blockQueries, blockFeedForward: blockFeedForward)
    }

    static func config(for model: LlamaModel, exitLayer: Int, origin: String, feedForwardSize: Int? = nil) -> AdapterConfig {
        let c = model.config
        return AdapterConfig(exitLayer: exitLayer, hiddenSize: c.hiddenSize, headCount: c.headCount, kvHeadCount: c.kvHeadCount,
                             headSize: c.headSize, modelName: ((try? model.gguf.optionalString("general.name")) ?? nil) ?? "",
                             modelFingerprint: model.gguf.fingerprint, origin: origin, feedForwardSize: feedForwardSize)
    }

    /// A random adapter (seeded), for tests: drafts badly, so rounds reject often. With `deepState`, its
    /// deep projection is random too.
    public static func random(for model: LlamaModel, exitLayer: Int, seed: UInt64, deepState: Bool = false) -> KangarooAdapter {
        var generator = SplitMix64(seed: seed)
        let c = model.config
        let d = c.hiddenSize
        func matrix(_ rows: Int, _ columns: Int) -> [Float] {
            let scale = 1 / Float(columns).squareRoot()
            return (0..<(rows * columns)).map { _ in (Float(generator.nextUnit()) * 2 - 1) * scale }
        }
        return KangarooAdapter(config: config(for: model, exitLayer: exitLayer, origin: "random seed \(seed)"),
                               inputNorm: Array(repeating: 1, count: d),
                               query: matrix(c.querySize, d), key: matrix(c.kvSize, d), value: matrix(c.kvSize, d),
                               output: matrix(d, c.querySize), norm: model.outputNorm,
                               deepProjection: deepState ? matrix(d, d) : nil)
    }

    /// The paper's initialisation: a copy of decoder layer `exitLayer`'s attention (dequantised), and
    /// the model's final norm; with `feedForward`, also a copy of that layer's feed-forward block.
    public static func copyingLayer(of model: LlamaModel, exitLayer: Int, feedForward: Bool = false) -> KangarooAdapter {
        let layer = min(exitLayer, model.config.layerCount - 1)
        let w = model.attentionWeights(layer: layer)
        func floats(_ m: WeightMatrix) -> [Float] {
            var out = [Float](repeating: 0, count: m.rows * m.columns)
            out.withUnsafeMutableBufferPointer { buffer in
                for r in 0..<m.rows { m.dequantizeRow(r, into: buffer.baseAddress! + r * m.columns) }
            }
            return out
        }
        let block = feedForward ? model.feedForwardWeights(layer: layer) : nil
        let copied = block.map { FeedForward(norm: $0.norm, gate: floats($0.gate), up: floats($0.up), down: floats($0.down)) }
        let origin = "copy of layer \(exitLayer) attention" + (feedForward ? " and feed-forward" : "")
        return KangarooAdapter(config: config(for: model, exitLayer: exitLayer, origin: origin, feedForwardSize: copied?.size),
                               inputNorm: w.norm, query: floats(w.query), key: floats(w.key), value: floats(w.value),
                               output: floats(w.output), norm: model.outputNorm, feedForward: copied)
    }

    /// An adapter whose attention adds nothing (zero output projection) and whose final norm is the
    /// model's. At exit layer L (all layers) it drafts exactly the full model's tokens: tests use it to
    /// force every draft to be accepted.
    public static func identity(for model: LlamaModel, exitLayer: Int) -> KangarooAdapter {
        let base = random(for: model, exitLayer: exitLayer, seed: 0)
        return KangarooAdapter(config: config(for: model, exitLayer: exitLayer, origin: "identity (tests)"),
                               inputNorm: base.inputNorm, query: base.query, key: base.key, value: base.value,
                               output: Array(repeating: 0, count: base.output.count), norm: model.outputNorm)
    }

    // MARK: Storage

    /// Writes `name`.json and `name`.safetensors into `directory`. A block drafter (`name`
    /// `blockDrafterName`) writes its adapter as `adapter.*` too, and only its block into its own file.
    public func save(to directory: String, name: String = adapterName) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let c = config
        let qs = c.headCount * c.headSize, kv = c.kvHeadCount * c.headSize, d = c.hiddenSize
        var tensors: [String: SafeTensors.Tensor] = [:]
        if name == Self.blockDrafterName {
            precondition(blockQueries != nil, "only a block drafter is saved as one")
            try KangarooAdapter(config: config, inputNorm: inputNorm, query: query, key: key, value: value, output: output, norm: norm,
                                feedForward: feedForward, deepProjection: deepProjection, previousProjection: previousProjection,
                                draftVocabulary: draftVocabulary).save(to: directory)
        } else {
            tensors = [
                "layers.0.input_layernorm.weight": .init(floats: inputNorm, shape: [d]),
                "layers.0.self_attn.q_proj.weight": .init(floats: query, shape: [qs, d]),
                "layers.0.self_attn.k_proj.weight": .init(floats: key, shape: [kv, d]),
                "layers.0.self_attn.v_proj.weight": .init(floats: value, shape: [kv, d]),
                "layers.0.self_attn.o_proj.weight": .init(floats: output, shape: [d, qs]),
                "norm.weight": .init(floats: norm, shape: [d]),
            ]
            if let f = feedForward {
                tensors["layers.0.post_attention_layernorm.weight"] = .init(floats: f.norm, shape: [d])
                tensors["layers.0.mlp.gate_proj.weight"] = .init(floats: f.gate, shape: [f.size, d])
                tensors["layers.0.mlp.up_proj.weight"] = .init(floats: f.up, shape: [f.size, d])
                tensors["layers.0.mlp.down_proj.weight"] = .init(floats: f.down, shape: [d, f.size])
            }
            if let deepProjection { tensors["deep_proj.weight"] = .init(floats: deepProjection, shape: [d, d]) }
            if let previousProjection { tensors["prev_proj.weight"] = .init(floats: previousProjection, shape: [d, d]) }
        }
        if let draftVocabulary { tensors["draft_vocab"] = .init(ints: draftVocabulary, shape: [draftVocabulary.count]) }
        if let blockQueries { tensors["block_queries"] = .init(floats: blockQueries, shape: [blockSize, d]) }
        if let f = blockFeedForward {
            tensors["block_mlp.norm.weight"] = .init(floats: f.norm, shape: [d])
            tensors["block_mlp.gate_proj.weight"] = .init(floats: f.gate, shape: [f.size, d])
            tensors["block_mlp.up_proj.weight"] = .init(floats: f.up, shape: [f.size, d])
            tensors["block_mlp.down_proj.weight"] = .init(floats: f.down, shape: [d, f.size])
        }
        try SafeTensors.write(SafeTensors.File(tensors: tensors), to: directory + "/" + name + ".safetensors")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(config).write(to: URL(fileURLWithPath: directory + "/" + name + ".json"))
    }

    /// Loads `name`.json and `name`.safetensors (`adapter.json`, `adapter.safetensors`) from
    /// `directory`, checking that they fit `model`; a block drafter (`blockDrafterName`) with the
    /// adapter beside it.
    public static func load(from directory: String, for model: LlamaModel, name: String = adapterName) throws -> KangarooAdapter {
        let configPath = directory + "/" + name + ".json", weightsPath = directory + "/" + name + ".safetensors"
        guard let configData = FileManager.default.contents(atPath: configPath) else { throw AdapterError.missingFile(configPath) }
        let config = try JSONDecoder().decode(AdapterConfig.self, from: configData)
        let c = model.config
        guard config.hiddenSize == c.hiddenSize, config.headCount == c.headCount, config.kvHeadCount == c.kvHeadCount,
              config.headSize == c.headSize else {
            throw AdapterError.mismatch("its shapes (hidden \(config.hiddenSize), heads \(config.headCount)/\(config.kvHeadCount)) differ from the model's (hidden \(c.hiddenSize), heads \(c.headCount)/\(c.kvHeadCount))")
        }
        guard (1...c.layerCount).contains(config.exitLayer) else {
            throw AdapterError.mismatch("exit layer \(config.exitLayer) is outside 1…\(c.layerCount)")
        }
        let fingerprint = model.gguf.fingerprint
        guard config.modelFingerprint == fingerprint else {
            throw AdapterError.mismatch("it was trained for model '\(config.modelName)' with fingerprint \(config.modelFingerprint), this file's is \(fingerprint)")
        }
        guard FileManager.default.fileExists(atPath: weightsPath) else { throw AdapterError.missingFile(weightsPath) }
        let file = try SafeTensors.read(path: weightsPath)
        let d = c.hiddenSize
        let tensor = file.drafterTensor
        let vocabulary = try file.draftVocabulary(vocabularySize: c.vocabularySize)
        if name == blockDrafterName {
            let base = try load(from: directory, for: model)
            guard let queries = try blockQueries(file, hidden: d) else { throw AdapterError.missingTensor("block_queries") }
            return KangarooAdapter(config: config, inputNorm: base.inputNorm, query: base.query, key: base.key, value: base.value,
                                   output: base.output, norm: base.norm, feedForward: base.feedForward,
                                   deepProjection: base.deepProjection, previousProjection: base.previousProjection,
                                   draftVocabulary: vocabulary ?? base.draftVocabulary, blockQueries: queries,
                                   blockFeedForward: try blockFeedForward(file, hidden: d))
        }
        var feedForward: FeedForward?
        if let f = config.feedForwardSize {
            guard (1...c.feedForwardSize).contains(f) else {
                throw AdapterError.mismatch("feed_forward_size \(f) is outside 1…\(c.feedForwardSize)")
            }
            feedForward = FeedForward(norm: try tensor("layers.0.post_attention_layernorm.weight", [d]),
                                      gate: try tensor("layers.0.mlp.gate_proj.weight", [f, d]),
                                      up: try tensor("layers.0.mlp.up_proj.weight", [f, d]),
                                      down: try tensor("layers.0.mlp.down_proj.weight", [d, f]))
        }
        return KangarooAdapter(
            config: config,
            inputNorm: try tensor("layers.0.input_layernorm.weight", [d]),
            query: try tensor("layers.0.self_attn.q_proj.weight", [c.querySize, d]),
            key: try tensor("layers.0.self_attn.k_proj.weight", [c.kvSize, d]),
            value: try tensor("layers.0.self_attn.v_proj.weight", [c.kvSize, d]),
            output: try tensor("layers.0.self_attn.o_proj.weight", [d, c.querySize]),
            norm: try tensor("norm.weight", [d]),
            feedForward: feedForward,
            deepProjection: file.tensors["deep_proj.weight"] == nil ? nil : try tensor("deep_proj.weight", [d, d]),
            previousProjection: file.tensors["prev_proj.weight"] == nil ? nil : try tensor("prev_proj.weight", [d, d]),
            draftVocabulary: vocabulary)
    }

    /// The block queries' feed-forward block (its width from the gate's shape), or nil when the file has none.
    private static func blockFeedForward(_ file: SafeTensors.File, hidden d: Int) throws -> FeedForward? {
        let tensor = file.drafterTensor
        guard let gate = file.tensors["block_mlp.gate_proj.weight"] else { return nil }
        guard gate.shape.count == 2, (1...65536).contains(gate.shape[0]) else {
            throw AdapterError.badShape("block_mlp.gate_proj.weight", gate.shape, expected: [0, d])
        }
        let f = gate.shape[0]
        return FeedForward(norm: try tensor("block_mlp.norm.weight", [d]), gate: try tensor("block_mlp.gate_proj.weight", [f, d]),
                           up: try tensor("block_mlp.up_proj.weight", [f, d]), down: try tensor("block_mlp.down_proj.weight", [d, f]))
    }

    /// The `block_queries` tensor (k × d, k in 1…16), or nil when the file has none.
    private static func blockQueries(_ file: SafeTensors.File, hidden d: Int) throws -> [Float]? {
        guard let t = file.tensors["block_queries"] else { return nil }
        guard t.shape.count == 2, (1...16).contains(t.shape[0]), t.shape[1] == d, let floats = t.floats() else {
            throw AdapterError.badShape("block_queries", t.shape, expected: [16, d])
        }
        return floats
    }
}
