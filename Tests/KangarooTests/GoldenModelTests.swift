import Decoding
import Foundation
import Llama
import Tensor
import Testing
import Tokenizer

/// The engine on the real default model against `../shared/golden`, which was computed in float32 on
/// the dequantised weights. This engine also uses float activations (weights dequantised on the fly),
/// so it is held to the tight bound of 0.02 on log-probabilities.
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

    @Test("top-5 log-probabilities at the first and last prompt positions are within 0.02 of golden")
    func logProbabilities() throws {
        for prompt in golden.prompts {
            let result = try Scorer(model: real.model).score(prompt.ids, top: 5)
            for (position, expected) in [(0, prompt.first_position_top5), (prompt.ids.count - 1, prompt.last_position_top5)] {
                let top = result.positions[position].top
                for (i, pair) in expected.enumerated() {
                    #expect(top[i].id == Int32(pair[0]), "position \(position) rank \(i)")
                    #expect(abs(Double(top[i].logprob) - pair[1]) <= 0.02, "position \(position) rank \(i): \(top[i].logprob) vs \(pair[1])")
                }
            }
        }
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
            for (i, expected) in prompt.hidden_after_layer2_last_position_first8.enumerated() {
                #expect(abs(last[i] - expected) <= 0.01 * max(1, abs(expected)), "element \(i): \(last[i]) vs \(expected)")
            }
        }
    }

    @Test("greedy generation follows the golden continuation up to its first near-tie")
    func greedyGeneration() throws {
        for prompt in golden.prompts {
            let decoder = PlainDecoder(model: real.model, contextCapacity: 256)
            let result = try Generator(tokenizer: real.tokenizer).generate(
                prompt: prompt.ids, decoder: decoder, options: GenerationOptions(maxTokens: prompt.greedy_ids.count, ignoreEOS: true))
            let reliable = prompt.greedy_top2_margins.firstIndex { $0 < 0.5 } ?? prompt.greedy_ids.count
            #expect(Array(result.tokens.prefix(reliable)) == Array(prompt.greedy_ids.prefix(reliable)))
            if reliable == prompt.greedy_ids.count { #expect(result.text == prompt.greedy_text) }
        }
    }
}
