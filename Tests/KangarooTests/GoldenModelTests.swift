import Decoding
import Foundation
import Llama
import Tensor
import Testing
import Tokenizer

/// The engine on the real default model against `../shared/golden`, which was computed in float32 on
/// the dequantised weights. The engine's layer products quantise activations to int8 per block of 32
/// (integer VNNI kernels, the same arithmetic as llama.cpp, which lands within 0.22 of these values; the
/// output head uses int16), so log-probabilities are held to 0.25, not to the 0.02 that float
/// activations would reach. Measured: 0.194.
@Suite("Default model against the golden reference")
struct GoldenModelTests {
    let golden: Golden
    let real: RealModel.Loaded

    init() throws {
        golden = try Golden.load()
        real = try RealModel.get()
    }

    @Test("tokenization equals the golden ids and decoding round-trips")
    func tokenization() {
        for item in golden.tokenize {
            let ids = real.tokenizer.encode(item.text)
            #expect(ids == item.ids, "\(item.text.debugDescription)")
            #expect(real.tokenizer.decode(ids) == item.decoded)
        }
        for prompt in golden.prompts {
            #expect(real.tokenizer.encode(prompt.prompt, addBOS: true) == prompt.ids, "\(prompt.prompt.debugDescription)")
        }
    }

    @Test("the ChatML template renders the golden chat prompt")
    func chatTemplate() throws {
        let template = try ChatTemplate(template: real.gguf.optionalString("tokenizer.chat_template"))
        let rendered = template.render([ChatMessage(role: .user, content: "What is 12 times 7?")])
        #expect(golden.prompts.contains { $0.prompt == rendered })
    }

    @Test("teacher-forced top token matches golden wherever the golden margin is at least 0.5")
    func teacherForcedTopTokens() throws {
        for prompt in golden.prompts {
            let sequence = prompt.ids + prompt.greedy_ids
            let result = try Scorer(model: real.model).score(sequence, top: 1)
            for (step, expected) in prompt.greedy_ids.enumerated() where prompt.greedy_top2_margins[step] >= 0.5 {
                let position = prompt.ids.count - 1 + step
                #expect(result.positions[position].top.first?.id == expected, "prompt \(prompt.prompt.prefix(20).debugDescription) step \(step)")
            }
        }
    }

    @Test("log-probabilities of the golden top-5 tokens at the first and last prompt positions are within 0.25")
    func logProbabilities() throws {
        var worst = 0.0
        for prompt in golden.prompts {
            let result = try Scorer(model: real.model).score(prompt.ids, top: 100)
            for (position, expected) in [(0, prompt.first_position_top5), (prompt.ids.count - 1, prompt.last_position_top5)] {
                let top = result.positions[position].top
                #expect(top[0].id == Int32(expected[0][0]), "position \(position): most likely token")
                for pair in expected {
                    let mine = try #require(top.first { $0.id == Int32(pair[0]) }, "token \(pair[0]) not among the top 100")
                    worst = max(worst, abs(Double(mine.logprob) - pair[1]))
                    #expect(abs(Double(mine.logprob) - pair[1]) <= 0.25, "position \(position) token \(pair[0]): \(mine.logprob) vs \(pair[1])")
                }
            }
        }
        print("largest log-probability difference from golden: \(worst)")
    }

    @Test("hidden state after two layers matches golden")
    func hiddenAfterTwoLayers() throws {
        let model = real.model
        for prompt in golden.prompts {
            let cache = KVCache(config: model.config, capacity: prompt.ids.count)
            let scratch = ForwardScratch(config: model.config, contextCapacity: prompt.ids.count)
            let hidden = FloatMatrix(capacity: prompt.ids.count, columns: model.config.hiddenSize)
            model.embed(prompt.ids, into: hidden)
            try model.forward(layers: 0..<2, hidden: hidden, cache: cache, scratch: scratch)
            let last = hidden.rowArray(prompt.ids.count - 1)
            let expected = prompt.hidden_after_layer2_last_position_first8
            // Relative L2 error over the 8 given elements; int8 activations put it near 2%.
            let error = zip(last, expected).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
            let norm = expected.map { $0 * $0 }.reduce(0, +).squareRoot()
            #expect(error / norm <= 0.05, "relative error \(error / norm): \(last.prefix(8)) vs \(expected)")
        }
    }

    @Test("greedy generation follows the golden continuation up to its first near-tie")
    func greedyGeneration() throws {
        for prompt in golden.prompts {
            let decoder = SpeculativeDecoder.plain(model: real.model, contextCapacity: 256)
            let result = try Generator(tokenizer: real.tokenizer).generate(
                prompt: prompt.ids, decoder: decoder, options: GenerationOptions(maxTokens: prompt.greedy_ids.count, ignoreEOS: true))
            let reliable = prompt.greedy_top2_margins.firstIndex { $0 < 0.5 } ?? prompt.greedy_ids.count
            #expect(Array(result.tokens.prefix(reliable)) == Array(prompt.greedy_ids.prefix(reliable)))
            if reliable == prompt.greedy_ids.count { #expect(result.text == prompt.greedy_text) }
        }
    }
}
