import Adapter
import ArgumentParser
import Decoding
import Foundation
import Llama
import Tokenizer

/// A line of `generate --prompts-file`: a prompt (or chat messages) and optional settings of its own.
struct PromptLine: Decodable {
    /// A line's `id`, a string or a number, echoed in its output.
    enum ID: Codable {
        case string(String)
        case number(Double)

        init(from decoder: Swift.Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let text = try? container.decode(String.self) { self = .string(text) } else { self = .number(try container.decode(Double.self)) }
        }

        func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case let .string(text): try container.encode(text)
            case let .number(value): try container.encode(value)
            }
        }
    }

    var id: ID?
    var prompt: String?
    var messages: [ChatMessage]?
    var maxTokens: Int?
    var seed: UInt64?
    var temperature: Float?

    enum CodingKeys: String, CodingKey {
        case id, prompt, messages, maxTokens = "max_tokens", seed, temperature
    }
}

/// An output line of `generate --prompts-file`: the fields of `generate --json`, the input's `id`, or
/// the error that kept the prompt from running.
struct BatchOutputLine: Encodable {
    var id: PromptLine.ID?
    var result: GenerateReport?
    var error: String?

    func encode(to encoder: Encoder) throws {
        try result?.encode(to: encoder)
        enum Keys: String, CodingKey { case id, error }
        var container = encoder.container(keyedBy: Keys.self)
        try container.encodeIfPresent(id, forKey: .id)
        try container.encodeIfPresent(error, forKey: .error)
    }
}

extension Generate {
    /// `--prompts-file`: every line's prompt decoded, up to --batch-size at a time, one JSON line out
    /// per input line, in input order.
    func runBatch(file: String) throws {
        guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read the prompts file \(file)") }
        guard let text = String(validating: data, as: UTF8.self) else { throw ValidationError("the prompts file \(file) is not valid UTF-8") }
        let (model, tokenizer) = try modelOptions.load()
        let template = try? modelOptions.template(for: model.gguf)
        var lines: [PromptLine] = []
        var requests: [GenerationRequest] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
        where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            let place = "\(file) line \(number + 1)"
            let parsed: PromptLine
            do {
                parsed = try JSONDecoder().decode(PromptLine.self, from: Data(line.utf8))
            } catch {
                throw ValidationError("\(place) is not a JSON object with \"prompt\" or \"messages\": \(error)")
            }
            let promptText: String
            switch (parsed.prompt, parsed.messages) {
            case let (prompt?, nil):
                promptText = chat ? try render(template, [ChatMessage(role: .user, content: prompt)], place) : prompt
            case let (nil, messages?):
                promptText = try render(template, messages, place)
            default:
                throw ValidationError("\(place) needs exactly one of \"prompt\" and \"messages\"")
            }
            if let maxTokens = parsed.maxTokens, maxTokens < 0 { throw ValidationError("\(place): max_tokens must not be negative") }
            if let temperature = parsed.temperature, !(temperature >= 0 && temperature.isFinite) {
                throw ValidationError("\(place): temperature must be 0 or more")
            }
            let prompt = tokenizer.encodePrompt(promptText)
            guard !prompt.isEmpty else { throw ValidationError("\(place): the prompt is empty") }
            var options = generationOptions
            options.maxTokens = parsed.maxTokens ?? maxTokens
            options.sampling.temperature = parsed.temperature ?? temperature
            options.sampling.seed = parsed.seed ?? seed
            lines.append(parsed)
            requests.append(GenerationRequest(prompt: prompt, options: options))
        }
        let (kind, adapter) = try decoderOptions.choice(for: model)
        let speculative = decoderOptions.speculative
        let batch = try DecoderCatalog.makeBatch(model: model, tokenizer: tokenizer, slots: batchSize,
                                                 options: { speculative.options(for: $0) }, adapter: adapter,
                                                 redrafterHead: try speculative.loadRedrafterHead(for: model),
                                                 blockDrafter: try speculative.loadBlockDrafter(for: model),
                                                 contextCapacity: context)
        // Lines are printed in input order as soon as all before them are done.
        var done = [BatchOutputLine?](repeating: nil, count: lines.count)
        var printed = 0
        _ = BatchGenerator().generate(requests, batch: batch, decoder: kind.rawValue) { index, result in
            switch result {
            case let .success(generation): done[index] = BatchOutputLine(id: lines[index].id, result: GenerateReport(generation))
            case let .failure(error): done[index] = BatchOutputLine(id: lines[index].id, error: "\(error)")
            }
            while printed < done.count, let line = done[printed] {
                try? printJSON(line)
                printed += 1
            }
        }
    }

    private func render(_ template: ChatTemplate?, _ messages: [ChatMessage], _ place: String) throws -> String {
        guard let template else { throw ValidationError("\(place) has chat messages, but the model has no chat template") }
        var messages = messages
        if let system, messages.first?.role != .system { messages.insert(ChatMessage(role: .system, content: system), at: 0) }
        return template.render(messages)
    }
}
