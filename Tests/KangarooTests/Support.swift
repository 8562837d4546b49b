import Foundation
import Tensor
import Llama
import ModelFormats
import ModelStore
import Adapter
import Decoding
import Tokenizer

/// The real default model, fetched (like the CLI does) on first use and shared by all tests.
enum RealModel {
    struct Loaded: @unchecked Sendable {
        let gguf: GGUFFile
        let model: LlamaModel
        let tokenizer: Tokenizer
    }

    static let loaded: Result<Loaded, Error> = Result {
        let gguf = try GGUFFile(path: try DefaultModel.ensure().path)
        return Loaded(gguf: gguf, model: try LlamaModel(gguf: gguf), tokenizer: try Tokenizer(gguf: gguf))
    }

    static func get() throws -> Loaded { try loaded.get() }
}

/// The reference values in `../shared/golden/`, computed independently in float32.
struct Golden: Decodable {
    struct TokenizeCase: Decodable {
        let text: String
        let ids: [Int32]
        let decoded: String
    }
    struct PromptCase: Decodable {
        let prompt: String
        let ids: [Int32]
        let first_position_top5: [[Double]]
        let last_position_top5: [[Double]]
        let hidden_after_layer2_last_position_first8: [Float]
        let greedy_ids: [Int32]
        let greedy_top2_margins: [Float]
        let greedy_text: String
    }
    let tokenize: [TokenizeCase]
    let prompts: [PromptCase]

    static let sharedDirectory: URL = {
        if let path = ProcessInfo.processInfo.environment["KANGAROO_SHARED"] { return URL(fileURLWithPath: path) }
        // Tests/KangarooTests/Support.swift → repository root → ../shared
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared")
    }()

    static func load() throws -> Golden {
        let url = sharedDirectory.appendingPathComponent("golden/smollm2-135m-instruct-q4_1.json")
        return try JSONDecoder().decode(Golden.self, from: Data(contentsOf: url))
    }
}

/// A deterministic pseudo-random source for test data.
struct SeededRandom: RandomNumberGenerator {
    private var generator: SplitMix64
    init(_ seed: UInt64) { generator = SplitMix64(seed: seed &+ 0x9E37_79B9_7F4A_7C15) }
    mutating func next() -> UInt64 { generator.next() }
    mutating func float(_ range: ClosedRange<Float> = -1...1) -> Float { Float.random(in: range, using: &self) }
}

/// The drafters the speculative tests use, built through `DecoderCatalog` as the product builds them.
enum TestDrafter {
    case adapter(KangarooAdapter)
    case layerSkip
}

func makeDecoder(model: LlamaModel, drafter: TestDrafter, options: SpeculativeOptions, contextCapacity: Int? = nil,
                 costs: ForwardCosts? = nil, acceptance: AcceptanceRule = SpeculativeSamplingRule()) throws -> SpeculativeDecoder {
    switch drafter {
    case let .adapter(adapter):
        try DecoderCatalog.make(.kangaroo, model: model, options: options, adapter: adapter, contextCapacity: contextCapacity,
                                costs: costs, acceptance: acceptance)
    case .layerSkip:
        try DecoderCatalog.make(.layerskip, model: model, options: options, contextCapacity: contextCapacity, costs: costs,
                                acceptance: acceptance)
    }
}

extension ForwardCosts {
    /// Rows that cost what a memory-bound machine measures (2% more each), not what this one measures
    /// while other tests share its cores: tests that expect trees to grow siblings give their tree
    /// decoders these, so the trees' shapes do not depend on the load.
    static let cheapRows = ForwardCosts(contexts: [0], verify: [(0..<17).map { 1 + 0.02 * Double($0) }], draftLevel: 0.1)
}

extension SpeculativeDecoder {
    /// The exit-layer drafter's settings and its adapter, for decoders that have them.
    var exitLayerDrafter: ExitLayerDrafter? { drafter as? ExitLayerDrafter }
    var adapterRunner: AdapterRunner? { exitLayerDrafter?.draftModel as? AdapterRunner }
}
