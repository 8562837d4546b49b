import Foundation
import ModelFormats
import Testing
import Tokenizer

@Suite("Tokenizer mechanisms")
struct TokenizerTests {
    /// A tiny SentencePiece vocabulary: merges by score, byte fallback for anything else.
    static func sentencePieceFile() throws -> String {
        var b = GGUFBuilder()
        var tokens = ["<unk>", "<s>", "</s>"]
        var types: [Int32] = [2, 3, 3]
        var scores: [Float] = [0, 0, 0]
        for byte in 0..<256 {
            tokens.append(String(format: "<0x%02X>", byte))
            types.append(6)
            scores.append(0)
        }
        for (piece, score) in [("▁", -1), ("h", -2), ("e", -2), ("l", -2), ("o", -2), ("▁h", -3), ("ll", -4), ("▁he", -5), ("llo", -6), ("▁hello", -7), ("w", -2)] as [(String, Float)] {
            tokens.append(piece)
            types.append(1)
            scores.append(score)
        }
        b.add("tokenizer.ggml.model", .string("llama"))
        b.add("tokenizer.ggml.tokens", .array(elementType: 8, tokens.map { .string($0) }))
        b.add("tokenizer.ggml.token_type", .array(elementType: 5, types.map { .i32($0) }))
        b.add("tokenizer.ggml.scores", .array(elementType: 6, scores.map { .f32($0) }))
        b.add("tokenizer.ggml.bos_token_id", .u32(1))
        b.add("tokenizer.ggml.eos_token_id", .u32(2))
        b.add("tokenizer.ggml.unknown_token_id", .u32(0))
        return try b.write()
    }

    @Test("SentencePiece: score-based merges, space prefix, byte fallback, BOS, round trip")
    func sentencePiece() throws {
        let tokenizer = try Tokenizer(gguf: GGUFFile(path: Self.sentencePieceFile()))
        let id = { (piece: String) in tokenizer.vocabulary.idOf[piece]! }
        #expect(tokenizer.encode("hello", addBOS: true) == [1, id("▁hello")])
        // "é" is not in the vocabulary: its two UTF-8 bytes fall back to byte tokens.
        #expect(tokenizer.encode("hello wé") == [id("▁hello"), id("▁"), id("w"), id("<0xC3>"), id("<0xA9>")])
        #expect(tokenizer.decode(tokenizer.encode("hello wé", addBOS: true)) == "<s>hello wé")
        #expect(tokenizer.decode(tokenizer.encode("hello wé")) == "hello wé")
        #expect(tokenizer.encode("</s>hello") == [2, id("▁hello")])
        #expect(tokenizer.isEndOfGeneration(2))
    }

    @Test("byte-level BPE merges a very long word as the merge ranks say, quickly, and round-trips it")
    func longPieces() throws {
        let tokenizer = try RealModel.get().tokenizer
        // A word of 32,000 letters is one pre-token piece: each merge once cost a scan of every pair.
        #expect(tokenizer.encode(String(repeating: "a", count: 3000)) == Array(repeating: 46880, count: 750))
        let alternating = tokenizer.encode(String(repeating: "ab", count: 1500) + " xyz")
        #expect(alternating.count == 1502 && alternating.suffix(2) == [29023, 106]
                && alternating.dropLast(2).allSatisfy { $0 == 369 })
        let long = String(repeating: "x", count: 32000)
        #expect(tokenizer.decode(tokenizer.encode(long)) == long)
        var random = SeededRandom(8)
        let text = String((0..<8000).map { _ in "abcdefghij é😀 ".randomElement(using: &random)! })
        #expect(tokenizer.decode(tokenizer.encode(text)) == text)
    }

    @Test("unknown tokenizer models and pre-tokenizers are clear errors")
    func unknownTokenizer() throws {
        var b = GGUFBuilder()
        b.add("tokenizer.ggml.model", .string("gpt2"))
        b.add("tokenizer.ggml.pre", .string("martian"))
        b.add("tokenizer.ggml.tokens", .array(elementType: 8, [.string("a")]))
        b.add("tokenizer.ggml.merges", .array(elementType: 8, []))
        do {
            _ = try Tokenizer(gguf: GGUFFile(path: b.write()))
            Issue.record("accepted an unknown pre-tokenizer")
        } catch {
            #expect("\(error)".contains("martian"))
        }
    }

    @Test("streaming decoding holds back a character split across tokens")
    func streamingUTF8() {
        var decoder = StreamingTextDecoder()
        let kangaroo = Array("🦘".utf8)  // 4 bytes
        #expect(decoder.append(Array("a".utf8) + kangaroo.prefix(1)) == "a")
        #expect(decoder.append(Array(kangaroo[1..<3])) == "")
        #expect(decoder.append([kangaroo[3]] + Array("é".utf8)) == "🦘é")
        #expect(decoder.append([0xE2]) == "")
        #expect(decoder.finish() == "\u{FFFD}")
        #expect(decoder.append([0xFF, 0x41]) == "\u{FFFD}A")
    }

    @Test("the real tokenizer streams the golden strings identically to whole decoding")
    func streamingRealTokens() throws {
        let tokenizer = try RealModel.get().tokenizer
        for text in ["naïve café — déjà vu", "emoji 🦘 kangaroo", "中文字符测试"] {
            var decoder = StreamingTextDecoder()
            var streamed = ""
            for id in tokenizer.encode(text) { streamed += decoder.append(tokenizer.bytes(of: id)) }
            streamed += decoder.finish()
            #expect(streamed == text)
        }
    }

    @Test("chat templates: ChatML with and without a system message, Vicuna, unknown")
    func chatTemplates() throws {
        let chatML = try ChatTemplate(template: "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}")
        #expect(chatML == .chatML(defaultSystem: nil))
        #expect(chatML.render([.init(role: .system, content: "S"), .init(role: .user, content: "U")])
            == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n")
        let vicuna = try ChatTemplate(template: "{% for m in messages %}USER: {{ m }} ASSISTANT:{% endfor %}")
        #expect(vicuna.render([.init(role: .user, content: "Hi"), .init(role: .assistant, content: "Hello"), .init(role: .user, content: "Bye")])
            .hasSuffix("questions. USER: Hi ASSISTANT: Hello</s>USER: Bye ASSISTANT:"))
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(template: "{{ '<|user|>\n' + message['content'] }}") }
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(template: nil) }
    }

    @Test("chat templates: Llama 3, Mistral and Gemma recognised from their markers, and named")
    func moreChatTemplates() throws {
        let conversation: [ChatMessage] = [.init(role: .system, content: "S"), .init(role: .user, content: "U"),
                                           .init(role: .assistant, content: "A"), .init(role: .user, content: "V")]
        let llama3 = try ChatTemplate(template: "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}")
        #expect(llama3 == .llama3)
        #expect(llama3.render(conversation) == "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            + "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>"
            + "<|start_header_id|>user<|end_header_id|>\n\nV<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
        let mistral = try ChatTemplate(template: "{{ bos_token }}{% for m in messages %}[INST] {{ m }} [/INST]{% endfor %}")
        #expect(mistral == .mistral)
        #expect(mistral.render(conversation) == "[INST] S\n\nU [/INST] A</s>[INST] V [/INST]")
        let gemma = try ChatTemplate(template: "{{ '<start_of_turn>' + role + '\n' }}")
        #expect(gemma == .gemma)
        #expect(gemma.render(conversation) == "<start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
            + "<start_of_turn>user\nV<end_of_turn>\n<start_of_turn>model\n")
        #expect(try ChatTemplate(name: "Llama3") == .llama3)
        #expect(try ChatTemplate(name: "chatml") == .chatML(defaultSystem: nil))
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(name: "phi") }
    }
}
