import Adapter
import Decoding
import Foundation
import Llama
import ModelFormats
import ModelStore
import Testing
import Tokenizer

/// llama.cpp's view of a model (scripts/llamacpp-reference.py): its token ids for each prompt, its
/// greedy continuation, and its top-5 log-probabilities at every position.
struct LlamaCppReference: Decodable {
    struct Case: Decodable {
        let text: String
        let ids: [Int32]
        let greedy: [Int32]
        /// Per position: [[id, logprob] × 5], best first.
        let top5: [[[Double]]]
    }
    let model: String
    let cases: [Case]

    static func load(_ name: String) throws -> LlamaCppReference {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fixtures/\(name)")
        return try JSONDecoder().decode(LlamaCppReference.self, from: Data(contentsOf: url))
    }
}

/// Holds the engine on a real model file to llama.cpp's values: the same token ids, and the top-5
/// rules of `checkTop5` (both quantise activations to 8 bits, in different ways, llama.cpp also the
/// output head's; see GoldenModelTests). Measured on Qwen2.5-Coder-0.5B: median 0.035; 0.30 at most,
/// at tokens of log-probability −6.8 and −14.9.
func checkAgainstLlamaCpp(model: LlamaModel, tokenizer: Tokenizer, reference: LlamaCppReference) throws {
    for item in reference.cases {
        #expect(tokenizer.encode(item.text) == item.ids, "tokens of \(item.text.prefix(30).debugDescription)")
    }
    let cases = reference.cases.map { Top5Reference.Case(ids: $0.ids + $0.greedy, top5: $0.top5) }
    _ = try checkTop5(model: model, reference: Top5Reference(cases: cases))
}

/// Top-5 log-probabilities at every position of token sequences: llama.cpp's, or an independent float64
/// reference's (scripts/float-reference.py: gguf-dequantised weights, the forward pass written out in
/// numpy, activations unquantised).
struct Top5Reference: Decodable {
    struct Case: Decodable {
        let ids: [Int32]
        let top5: [[[Double]]]
    }
    let cases: [Case]

    static func load(_ name: String) throws -> Top5Reference {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fixtures/\(name)")
        return try JSONDecoder().decode(Top5Reference.self, from: Data(contentsOf: url))
    }
}

/// Holds the engine to a reference: the same top token wherever the reference's top two are at
/// least 0.5 apart, top-5 log-probabilities within 0.25 for tokens of log-probability −5 or more and
/// within 0.5 for the rest (int8 activations; measured against the float reference: 0.5B 0.18 at most;
/// 1.5B 0.28 at its first position, under 0.2 elsewhere). `tolerance` replaces 0.25 (and 0.5 with
/// twice it), `firstPosition` replaces it at the first position, the attention sink, whose residual
/// stream can hold a few huge values that int8 blocks render less well. Returns the largest difference.
func checkTop5(model: LlamaModel, reference: Top5Reference, tolerance: Double = 0.25,
               firstPosition: Double? = nil) throws -> Double {
    var worst = 0.0
    for item in reference.cases {
        let scored = try Scorer(model: model).score(item.ids, top: 40)
        for (position, expected) in item.top5.enumerated() {
            let ours = scored.positions[position].top
            if expected[0][1] - expected[1][1] >= 0.5 {
                #expect(ours.first?.id == Int32(expected[0][0]), "position \(position)")
            }
            for pair in expected {
                guard let mine = ours.first(where: { $0.id == Int32(pair[0]) }) else {
                    Issue.record("token \(Int(pair[0])) not in our top 40 at position \(position)")
                    continue
                }
                let difference = abs(Double(mine.logprob) - pair[1])
                worst = max(worst, difference)
                let limit = pair[1] < -5 ? 2 * tolerance : position == 0 ? firstPosition ?? tolerance : tolerance
                #expect(difference <= limit, "token \(Int(pair[0])) at position \(position): \(mine.logprob), reference \(pair[1])")
            }
        }
    }
    return worst
}

/// Qwen2.5-Coder-1.5B's first position shows why the float reference is the judge: the residual stream
/// there reaches 4,000 by layer 3, and llama.cpp (activations in int8 blocks of 256 for K-quants) puts
/// token 15 first with log-probability −0.05, where the float reference has token 16 at −0.49 and 15 at
/// −3.45 (scripts/float-reference.py); this engine agrees with the float reference. Later positions
/// attend to that one, so llama.cpp's whole sequence drifts (99th percentile of differences 1.1).
@Suite("Model families against llama.cpp and a float reference")
struct ModelFamilyTests {
    @Test("Qwen2.5-Coder-0.5B Q4_K_M (qwen2, Q5_0/Q4_K/Q6_K/Q8_0; downloads 491 MB once) matches llama.cpp and the float reference")
    func qwen2_5Coder0_5B() throws {
        let gguf = try GGUFFile(path: KnownModel.qwenCoder05B.file.ensure().path)
        let model = try LlamaModel(gguf: gguf)
        #expect(model.config.architecture == .qwen2)
        try checkAgainstLlamaCpp(model: model, tokenizer: try Tokenizer(gguf: gguf),
                                 reference: try LlamaCppReference.load("qwen2.5-coder-0.5b-q4_k_m.llamacpp.json"))
        let worst = try checkTop5(model: model, reference: try Top5Reference.load("qwen2.5-coder-0.5b-q4_k_m.float.json"))
        print("Qwen2.5-Coder-0.5B: largest log-probability difference from the float reference \(worst)")
        // The chat template's built-in system message (Qwen's) is found without a Jinja engine.
        let template = try ChatTemplate(template: gguf.optionalString("tokenizer.chat_template"))
        #expect(template.render([ChatMessage(role: .user, content: "Hi")]).hasPrefix(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"))
        // The shipped adapter is found for this file, and Kangaroo, chain or tree, gives plain decoding's tokens.
        let tokenizer = try Tokenizer(gguf: gguf)
        let adapter = try #require(try KangarooAdapter.shipped(for: model))
        let prompt = tokenizer.encodePrompt(template.render([ChatMessage(role: .user, content: "Write a Python function that checks whether a number is prime.")]))
        func tokens(_ kind: DecoderKind, _ options: SpeculativeOptions? = nil) throws -> [Int32] {
            let decoder = try DecoderCatalog.make(kind, model: model, options: options, adapter: adapter, contextCapacity: 512)
            return try Generator(tokenizer: tokenizer).generate(prompt: prompt, decoder: decoder, options: GenerationOptions(maxTokens: 96)).tokens
        }
        let plain = try tokens(.plain)
        var tree = DecoderKind.kangaroo.defaultOptions
        tree.treeBudget = 12
        tree.treeWidth = 3
        tree.threshold = 0.3
        #expect(try tokens(.kangaroo) == plain)
        #expect(try tokens(.kangaroo, tree) == plain)
    }

    @Test("Qwen2.5-Coder-1.5B Q4_K_M (qwen2, Q4_K/Q6_K, a Q6_K output head; downloads 1.1 GB once): llama.cpp's tokens, the float reference's log-probabilities, lossless Kangaroo with its shipped adapter")
    func qwen2_5Coder1_5B() throws {
        let gguf = try GGUFFile(path: KnownModel.qwenCoder15B.file.ensure().path)
        let model = try LlamaModel(gguf: gguf), tokenizer = try Tokenizer(gguf: gguf)
        // The Q6_K head on the integer kernels: the float path dequantised the vocabulary every token.
        #expect(model.output.type == .q6_K && model.output.usesIntegerKernel)
        let llamaCpp = try LlamaCppReference.load("qwen2.5-coder-1.5b-q4_k_m.llamacpp.json")
        for item in llamaCpp.cases { #expect(tokenizer.encode(item.text) == item.ids) }
        // Position 0 (residual stream up to 4,000): 0.28 from the float reference, llama.cpp 2.9.
        let worst = try checkTop5(model: model, reference: try Top5Reference.load("qwen2.5-coder-1.5b-q4_k_m.float.json"),
                                          firstPosition: 0.35)
        print("Qwen2.5-Coder-1.5B: largest log-probability difference from the float reference \(worst)")
        // The shipped adapter (I8 matrices) is found for this file, and Kangaroo gives plain decoding's tokens.
        let adapter = try #require(try KangarooAdapter.shipped(for: model))
        let template = try ChatTemplate(template: gguf.optionalString("tokenizer.chat_template"))
        let prompt = tokenizer.encodePrompt(template.render([ChatMessage(role: .user, content: "Write a Python function that reverses a string.")]))
        func tokens(_ kind: DecoderKind) throws -> [Int32] {
            let decoder = try DecoderCatalog.make(kind, model: model, adapter: adapter, contextCapacity: 256)
            return try Generator(tokenizer: tokenizer).generate(prompt: prompt, decoder: decoder, options: GenerationOptions(maxTokens: 48)).tokens
        }
        #expect(try tokens(.kangaroo) == tokens(.plain))
    }

    /// Tiny random models of each architecture (scripts/make-tiny-models.py), their tensors spread over
    /// every weight format, against llama.cpp and the float reference on the same token sequence.
    @Test("tiny random llama, qwen2 and qwen3 models in every weight format match llama.cpp and the float reference",
          arguments: ["llama", "qwen2", "qwen3"])
    func tinyModels(_ architecture: String) throws {
        struct Fixture: Decodable {
            let ids: [Int32]
            let llama_cpp: [[[Double]]]
            let float: [[[Double]]]
        }
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fixtures")
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: folder.appendingPathComponent("tiny-\(architecture).json")))
        let model = try LlamaModel(path: folder.appendingPathComponent("tiny-\(architecture).gguf").path)
        #expect(model.config.architecture.rawValue == architecture)
        let reference = Top5Reference(cases: [Top5Reference.Case(ids: fixture.ids, top5: fixture.float)])
        // Random weights spread the activations more than trained ones: 0.3 (measured: 0.26 at most).
        let worst = try checkTop5(model: model, reference: reference, tolerance: 0.3)
        let llamaCpp = Top5Reference(cases: [Top5Reference.Case(ids: fixture.ids, top5: fixture.llama_cpp)])
        let worstLlamaCpp = try checkTop5(model: model, reference: llamaCpp, tolerance: 0.3)
        print("tiny \(architecture): largest log-probability difference from the float reference \(worst), from llama.cpp \(worstLlamaCpp)")
    }
}
