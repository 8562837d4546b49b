import Foundation
import Llama
import ModelFormats
import Tensor

/// ReDrafter's draft head (Recurrent Drafter, arXiv 2403.09919; apple/ml-recurrent-drafter), its weights
/// and files. It reads the full model's normalised final state h at the last accepted position, which
/// stays fixed for the whole draft, and a recurrent state that starts at zero and takes in each draft
/// token through the model's own embedding table E:
///
///     s_t = SiLU(W·E(g_{t−1}) + U·s_{t−1} + b)
///     x_t = [h ⊕ s_t];  x_t ← x_t + SiLU(L_i·x_t + c_i) for each block i
///     logits_t = head(RMSNorm(P·x_t; g))
///
/// where g_0 is the full model's own token of the round and head is the model's LM head (over the
/// head's draft vocabulary when it has one). Weights are float32 and owned here; files are
/// `redrafter.json` (shapes and the model's fingerprint) and `redrafter.safetensors`.
public struct RecurrentDraftHead: Sendable {
    public struct Config: Codable, Sendable, Equatable {
        public var modelName: String
        /// `GGUFFile.fingerprint` of the model file it was trained for.
        public var modelFingerprint: String
        public var hiddenSize: Int
        /// Residual blocks over [h ⊕ s].
        public var blocks: Int
        /// Where the weights came from (a training run, or a random start for tests).
        public var origin: String

        enum CodingKeys: String, CodingKey {
            case modelName = "model_name", modelFingerprint = "model_fingerprint", hiddenSize = "hidden_size", blocks, origin
        }
    }

    public let config: Config
    /// `d × d`: the previous draft token's embedding into the recurrent state.
    public var input: [Float]
    /// `d × d`: the previous recurrent state into the next.
    public var recurrent: [Float]
    /// `d`.
    public var recurrentBias: [Float]
    /// Per block: `2d × 2d` and `2d`.
    public var blockWeights: [[Float]]
    public var blockBiases: [[Float]]
    /// `d × 2d`: [h ⊕ s] into the hidden size the LM head reads.
    public var projection: [Float]
    /// `d`: the RMSNorm weights before the LM head.
    public var norm: [Float]
    /// Token ids of the head's rows (nil: the whole vocabulary).
    public var draftVocabulary: [Int32]?

    public static let weightsFile = "redrafter.safetensors"
    public static let configFile = "redrafter.json"

    public init(config: Config, input: [Float], recurrent: [Float], recurrentBias: [Float], blockWeights: [[Float]],
                blockBiases: [[Float]], projection: [Float], norm: [Float], draftVocabulary: [Int32]? = nil) {
        let d = config.hiddenSize
        precondition(input.count == d * d && recurrent.count == d * d && recurrentBias.count == d && norm.count == d
                     && projection.count == d * 2 * d && blockWeights.count == config.blocks && blockBiases.count == config.blocks
                     && blockWeights.allSatisfy { $0.count == 4 * d * d } && blockBiases.allSatisfy { $0.count == 2 * d })
        self.config = config
        self.input = input
        self.recurrent = recurrent
        self.recurrentBias = recurrentBias
        self.blockWeights = blockWeights
        self.blockBiases = blockBiases
        self.projection = projection
        self.norm = norm
        self.draftVocabulary = draftVocabulary
    }

    /// Random weights (a scale that keeps activations of order one) for `model`: for tests of the
    /// mechanism, and the start of training.
    public static func random(for model: LlamaModel, blocks: Int = 1, seed: UInt64, draftVocabulary: [Int32]? = nil) -> RecurrentDraftHead {
        var generator = SplitMix64(seed: seed)
        let d = model.config.hiddenSize
        func values(_ count: Int, fanIn: Int) -> [Float] {
            let scale = 1 / Float(fanIn).squareRoot()
            return (0..<count).map { _ in Float.random(in: -scale...scale, using: &generator) }
        }
        return RecurrentDraftHead(
            config: Config(modelName: ((try? model.gguf.optionalString("general.name")) ?? nil) ?? "", modelFingerprint: model.gguf.fingerprint, hiddenSize: d, blocks: blocks,
                           origin: "random (seed \(seed))"),
            input: values(d * d, fanIn: d), recurrent: values(d * d, fanIn: d), recurrentBias: values(d, fanIn: d),
            blockWeights: (0..<blocks).map { _ in values(4 * d * d, fanIn: 2 * d) },
            blockBiases: (0..<blocks).map { _ in values(2 * d, fanIn: 2 * d) },
            projection: values(2 * d * d, fanIn: 2 * d), norm: model.outputNorm, draftVocabulary: draftVocabulary)
    }

    public func save(to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let d = config.hiddenSize
        var tensors: [String: SafeTensors.Tensor] = [
            "rnn.input.weight": .init(floats: input, shape: [d, d]),
            "rnn.recurrent.weight": .init(floats: recurrent, shape: [d, d]),
            "rnn.bias": .init(floats: recurrentBias, shape: [d]),
            "proj.weight": .init(floats: projection, shape: [d, 2 * d]),
            "norm.weight": .init(floats: norm, shape: [d]),
        ]
        for i in 0..<config.blocks {
            tensors["blocks.\(i).weight"] = .init(floats: blockWeights[i], shape: [2 * d, 2 * d])
            tensors["blocks.\(i).bias"] = .init(floats: blockBiases[i], shape: [2 * d])
        }
        if let draftVocabulary { tensors["draft_vocab"] = .init(ints: draftVocabulary, shape: [draftVocabulary.count]) }
        try SafeTensors.write(SafeTensors.File(tensors: tensors), to: directory + "/" + Self.weightsFile)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(config).write(to: URL(fileURLWithPath: directory + "/" + Self.configFile))
    }

    /// Loads the head in `directory`, checking that it was made for `model`.
    public static func load(from directory: String, for model: LlamaModel) throws -> RecurrentDraftHead {
        let configPath = directory + "/" + configFile, weightsPath = directory + "/" + weightsFile
        guard let configData = FileManager.default.contents(atPath: configPath) else { throw AdapterError.missingFile(configPath) }
        let config = try JSONDecoder().decode(Config.self, from: configData)
        let c = model.config
        guard config.hiddenSize == c.hiddenSize else {
            throw AdapterError.mismatch("the head's hidden size \(config.hiddenSize) differs from the model's \(c.hiddenSize)")
        }
        guard (0...8).contains(config.blocks) else { throw AdapterError.mismatch("blocks \(config.blocks) is outside 0…8") }
        guard config.modelFingerprint == model.gguf.fingerprint else {
            throw AdapterError.mismatch("it was trained for model '\(config.modelName)' with fingerprint \(config.modelFingerprint), this file's is \(model.gguf.fingerprint)")
        }
        guard FileManager.default.fileExists(atPath: weightsPath) else { throw AdapterError.missingFile(weightsPath) }
        let file = try SafeTensors.read(path: weightsPath)
        let d = c.hiddenSize
        func tensor(_ name: String, _ shape: [Int]) throws -> [Float] {
            let floats = try file.drafterTensor(name, shape)
            guard floats.allSatisfy(\.isFinite) else { throw AdapterError.mismatch("tensor '\(name)' holds values that are not finite") }
            return floats
        }
        let vocabulary = try file.draftVocabulary(vocabularySize: c.vocabularySize)
        return RecurrentDraftHead(
            config: config, input: try tensor("rnn.input.weight", [d, d]), recurrent: try tensor("rnn.recurrent.weight", [d, d]),
            recurrentBias: try tensor("rnn.bias", [d]),
            blockWeights: try (0..<config.blocks).map { try tensor("blocks.\($0).weight", [2 * d, 2 * d]) },
            blockBiases: try (0..<config.blocks).map { try tensor("blocks.\($0).bias", [2 * d]) },
            projection: try tensor("proj.weight", [d, 2 * d]), norm: try tensor("norm.weight", [d]), draftVocabulary: vocabulary)
    }
}
