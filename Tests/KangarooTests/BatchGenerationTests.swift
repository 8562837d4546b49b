import Adapter
import Decoding
import Foundation
import Llama
import Testing
import Tokenizer

/// Several prompts decoded together give each prompt exactly what it gets alone.
@Suite("Batched generation")
struct BatchGenerationTests {
    @Test("each prompt of a batch gets its own single-prompt output (greedy and seeded sampling), for every decoder and batch size")
    func batchesEqualSinglePrompts() throws {
        let real = try RealModel.get()
        let template = try ChatTemplate(template: real.gguf.optionalString("tokenizer.chat_template"))
        let texts = ["Why is the sky blue?", "Name three fruits and their colours.", "Write a haiku about the sea.",
                     "Translate to French: The cat sleeps on the mat.", "Count from one to ten in words."]
        var requests = texts.enumerated().map { i, text in
            GenerationRequest(prompt: real.tokenizer.encode(template.render([ChatMessage(role: .user, content: text)])),
                              options: GenerationOptions(maxTokens: 20 + 7 * i,
                                                         sampling: SamplingOptions(temperature: i == 2 ? 0.8 : 0, seed: 7)))
        }
        // A prompt longer than the context fails alone; the others go on.
        requests.insert(GenerationRequest(prompt: Array(repeating: 1, count: 300), options: GenerationOptions(maxTokens: 4)), at: 1)
        let adapter = try #require(try KangarooAdapter.shipped(for: real.model))
        let generator = Generator(tokenizer: real.tokenizer), batches = BatchGenerator()
        for kind in DecoderKind.allCases {
            let single = try DecoderCatalog.make(kind, model: real.model, adapter: adapter, contextCapacity: 256)
            let expected = requests.map { request in
                Result { try generator.generate(prompt: request.prompt, decoder: single, options: request.options) }
            }
            for slots in [1, 2, 4] {
                let batch = try DecoderCatalog.makeBatch(model: real.model, tokenizer: real.tokenizer, slots: slots, adapter: adapter,
                                                         contextCapacity: 256, prefillChunk: 5 + slots)
                var finished: [Int] = []
                let results = batches.generate(requests, batch: batch, decoder: kind.rawValue) { index, _ in finished.append(index) }
                #expect(finished.sorted() == Array(requests.indices))
                for (i, (result, reference)) in zip(results, expected).enumerated() {
                    switch (result, reference) {
                    case let (.success(a), .success(b)):
                        #expect(a.tokens == b.tokens && a.stopReason == b.stopReason, "\(kind) with \(slots) slots, prompt \(i)")
                        #expect((a.speculative == nil) == (kind == .plain))
                    case (.failure, .failure): break
                    default: Issue.record("\(kind) with \(slots) slots, prompt \(i): \(result) against \(reference) alone")
                    }
                }
            }
        }
    }

    @Test("a continuous batch: requests joining mid-way with different decoders, prompts in small chunks, one cancelled; each gets its output alone, and the cancelled one's slot serves the next")
    func continuousBatch() throws {
        let real = try RealModel.get()
        let template = try ChatTemplate(template: real.gguf.optionalString("tokenizer.chat_template"))
        let adapter = try #require(try KangarooAdapter.shipped(for: real.model))
        let texts = ["Why is the sky blue?", "Name three fruits and their colours.", "Write a haiku about the sea.",
                     "Translate to French: The cat sleeps on the mat.", "Count from one to ten in words.", "What is a kangaroo?"]
        let decoders: [DecoderKind] = [.kangaroo, .plain, .lookup, .kangaroo, .layerskip, .kangaroo]
        let requests = texts.enumerated().map { i, text in
            GenerationRequest(prompt: real.tokenizer.encode(template.render([ChatMessage(role: .user, content: text)])),
                              options: GenerationOptions(maxTokens: 30 + 5 * i, sampling: SamplingOptions(temperature: i == 3 ? 0.8 : 0, seed: 11)))
        }
        let generator = Generator(tokenizer: real.tokenizer)
        let alone = try zip(requests, decoders).map { request, kind in
            try generator.generate(prompt: request.prompt, decoder: try DecoderCatalog.make(kind, model: real.model, adapter: adapter, contextCapacity: 256),
                                   options: request.options)
        }
        let batch = try DecoderCatalog.makeBatch(model: real.model, tokenizer: real.tokenizer, slots: 3, adapter: adapter,
                                                 contextCapacity: 256, prefillChunk: 7)
        var results = [Result<GenerationResult, Error>?](repeating: nil, count: requests.count)
        var texts0 = [String](repeating: "", count: requests.count)
        var cancelled = false
        func admit(_ i: Int) throws {
            try #require(batch.hasFreeSlot)
            batch.admit(BatchedRequest(request: requests[i], decoder: decoders[i].rawValue,
                                       isCancelled: { i == 1 && cancelled }, onText: { texts0[i] += $0.text }) { results[i] = $0 })
        }
        try admit(0)
        for _ in 0..<3 { batch.step() }
        try admit(1)
        try admit(2)
        #expect(!batch.hasFreeSlot)
        var steps = 0
        var next = 3
        while batch.activeCount > 0 || next < requests.count {
            if steps == 12 { cancelled = true }
            while next < requests.count, batch.hasFreeSlot {
                try admit(next)
                next += 1
            }
            let step = batch.step()
            #expect(step.promptTokens <= 7)
            steps += 1
        }
        for i in requests.indices {
            let result = try #require(try results[i]?.get(), "request \(i)")
            if i == 1 {
                #expect(result.stopReason == .cancelled && Array(alone[i].tokens.prefix(result.tokens.count)) == result.tokens)
                continue
            }
            #expect(result.tokens == alone[i].tokens && result.stopReason == alone[i].stopReason, "request \(i) (\(decoders[i]))")
            #expect(texts0[i] == result.text && result.decoder == decoders[i].rawValue)
        }
    }

    @Test("a conversation's next turn keeps its earlier turns in the cache (alone and in a batch, for every decoder) and gets the output a fresh decoder gives")
    func nextTurnKeepsCache() throws {
        let real = try RealModel.get()
        let template = try ChatTemplate(template: real.gguf.optionalString("tokenizer.chat_template"))
        let adapter = try #require(try KangarooAdapter.shipped(for: real.model))
        let generator = Generator(tokenizer: real.tokenizer)
        let options = GenerationOptions(maxTokens: 24)
        let messages = [ChatMessage(role: .user, content: "Name three fruits.")]
        let first = real.tokenizer.encodePrompt(template.render(messages))
        for kind in DecoderKind.allCases {
            let decoder = try DecoderCatalog.make(kind, model: real.model, adapter: adapter, contextCapacity: 512)
            let answer = try generator.generate(prompt: first, decoder: decoder, options: options)
            #expect(answer.cachedPromptTokens == 0)
            let turn = messages + [ChatMessage(role: .assistant, content: answer.text), ChatMessage(role: .user, content: "Which is the sweetest?")]
            let second = real.tokenizer.encodePrompt(template.render(turn))
            let resumed = try generator.generate(prompt: second, decoder: decoder, options: options)
            let fresh = try generator.generate(prompt: second, decoder: try DecoderCatalog.make(kind, model: real.model, adapter: adapter, contextCapacity: 512),
                                               options: options)
            #expect(resumed.tokens == fresh.tokens, "\(kind)")
            #expect(resumed.cachedPromptTokens > first.count / 2 && fresh.cachedPromptTokens == 0, "\(kind): \(resumed.cachedPromptTokens) of \(second.count)")
            // In a batch, the turn goes to the slot holding the conversation.
            let batch = try DecoderCatalog.makeBatch(model: real.model, tokenizer: real.tokenizer, slots: 2, adapter: adapter, contextCapacity: 512)
            let other = real.tokenizer.encodePrompt(template.render([ChatMessage(role: .user, content: "Count to five.")]))
            _ = BatchGenerator().generate([GenerationRequest(prompt: first, options: options), GenerationRequest(prompt: other, options: options)],
                                          batch: batch, decoder: kind.rawValue)
            let batched = try BatchGenerator().generate([GenerationRequest(prompt: second, options: options)], batch: batch, decoder: kind.rawValue)[0].get()
            #expect(batched.tokens == fresh.tokens && batched.cachedPromptTokens == resumed.cachedPromptTokens, "\(kind) in a batch")
        }
    }

    @Test("kangaroo generate --prompts-file prints one line per prompt, in input order with its id, equal to the prompt alone")
    func promptsFile() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("prompts-\(getpid()).jsonl")
        try """
        {"id": 1, "prompt": "Why is the sky blue?"}
        {"id": "two", "messages": [{"role": "user", "content": "Name three fruits."}], "max_tokens": 12}

        {"prompt": "Write a haiku about the sea.", "temperature": 0.8, "seed": 3}
        """.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let batch = try ServerTests.run(ServerTests.binary, ["generate", "--chat", "--prompts-file", file.path, "--batch-size", "2",
                                                             "--max-tokens", "24", "--decoder", "kangaroo"])
        try #require(batch.status == 0, "\(batch.output)")
        let lines = batch.output.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        try #require(lines.count == 3, "\(batch.output)")
        #expect(lines[0]["id"] as? Int == 1 && lines[1]["id"] as? String == "two" && lines[2]["id"] == nil)
        let singles: [[String]] = [["--prompt", "Why is the sky blue?"], ["--prompt", "Name three fruits.", "--max-tokens", "12"],
                                   ["--prompt", "Write a haiku about the sea.", "--temperature", "0.8", "--seed", "3"]]
        for (line, arguments) in zip(lines, singles) {
            let single = try ServerTests.run(ServerTests.binary, ["generate", "--chat", "--json", "--max-tokens", "24",
                                                                  "--decoder", "kangaroo"] + arguments)
            let json = try #require(single.output.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }.last, "\(single.output)")
            #expect(line["token_ids"] as? [Int] == json["token_ids"] as? [Int], "\(arguments)")
        }
        let bad = try ServerTests.run(ServerTests.binary, ["generate", "--prompts-file", "/nonexistent.jsonl"])
        #expect(bad.status != 0 && bad.output.contains("cannot read the prompts file"))
    }
}

@Suite("Default decoder")
struct DefaultDecoderTests {
    @Test("generate uses Kangaroo when an adapter fits the model and prompt lookup (saying so) when none does, with plain decoding's output")
    func automaticChoice() throws {
        let real = try RealModel.get()
        let arguments = ["generate", "--chat", "--prompt", "Name three fruits.", "--max-tokens", "24", "--json"]
        func run(_ extra: [String]) throws -> (decoder: String?, ids: [Int]?, output: String) {
            let result = try ServerTests.run(ServerTests.binary, arguments + extra)
            let json = result.output.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }.last
            return (json?["decoder"] as? String, json?["token_ids"] as? [Int], result.output)
        }
        let automatic = try run([]), plain = try run(["--decoder", "plain"])
        #expect(automatic.decoder == "kangaroo" && plain.decoder == "plain" && automatic.ids == plain.ids)
        // The same model file with a byte appended: its fingerprint matches no shipped adapter.
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("kangaroo-unmatched-\(getpid()).gguf")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: real.gguf.path))
        bytes.append(0)
        try bytes.write(to: copy)
        defer { try? FileManager.default.removeItem(at: copy) }
        let unmatched = try run(["--model", copy.path])
        #expect(unmatched.decoder == "lookup" && unmatched.ids == plain.ids, "\(unmatched.output)")
        #expect(unmatched.output.contains("no Kangaroo adapter fits this model"))
    }
}

@Suite("Chat in the terminal")
struct ChatCommandTests {
    /// Runs `kangaroo chat` with `input` piped in; returns standard output.
    static func chat(_ input: String, _ arguments: [String] = []) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ServerTests.binary)
        process.arguments = ["chat", "--max-tokens", "24"] + arguments
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = FileHandle.nullDevice
        try process.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: output, as: UTF8.self)
    }

    @Test("piped into kangaroo chat, messages get generate --chat's answers with the conversation kept, and /reset, /stats work")
    func pipedConversation() throws {
        let first = "Name three fruits."
        let transcript = try Self.chat("\(first)\nWhich is the sweetest?\n/stats\n/reset\n\(first)\n")
        let alone = try ServerTests.run(ServerTests.binary, ["generate", "--chat", "--prompt", first, "--max-tokens", "24"])
        let answer = alone.output.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.hasPrefix("note:") }
            .joined(separator: "\n").trimmingCharacters(in: .newlines)
        // No prompt is echoed and no colours are used: the output is the answers and the commands' replies.
        #expect(!transcript.contains("\u{1B}") && !transcript.contains("> "))
        #expect(transcript.hasPrefix(answer), "\(transcript)")
        #expect(transcript.contains("2 answers") && transcript.contains("(conversation forgotten)"))
        // After /reset, the first question gets its first answer again.
        #expect(transcript.hasSuffix(answer + "\n"), "\(transcript)")
    }
}
