import Adapter
import Decoding
import Llama
import Testing
import Tokenizer

@Suite("README")
struct ReadmeExampleTests {
    /// The README's "From Swift" example, line for line (the model path aside).
    @Test("the README's Swift example runs and decodes what plain decoding gives")
    func swiftExample() throws {
        let path = try RealModel.get().gguf.path
        let model = try LlamaModel(path: path)
        let tokenizer = try Tokenizer(gguf: model.gguf)
        let template = try ChatTemplate(template: model.gguf.optionalString("tokenizer.chat_template"))
        let decoder = try DecoderCatalog.make(.kangaroo, model: model, adapter: KangarooAdapter.shipped(for: model))
        let prompt = tokenizer.encodePrompt(template.render([ChatMessage(role: .user, content: "Why is the sky blue?")]))
        var streamed = ""
        let result = try Generator(tokenizer: tokenizer).generate(
            prompt: prompt, decoder: decoder, options: GenerationOptions(maxTokens: 64), onText: { streamed += $0.text })
        let plain = try Generator(tokenizer: tokenizer).generate(
            prompt: prompt, decoder: SpeculativeDecoder.plain(model: model), options: GenerationOptions(maxTokens: 64))
        #expect(result.tokens == plain.tokens && streamed == result.text && result.decodeTokensPerSecond > 0)
    }
}
