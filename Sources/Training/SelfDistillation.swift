import Decoding
import Foundation
import Llama
import Tokenizer

/// Training sequences in the model's own words: a ShareGPT conversation's opening (up to its first
/// user message) followed by the model's greedy answer. At inference the adapter drafts continuations
/// of the model's own text, so these are the contexts it will see there, unlike ShareGPT's human and
/// ChatGPT answers.
public final class SelfDistillation {
    let tokenizer: Tokenizer
    let template: ChatTemplate
    /// Answers are decoded this many at a time: a batch row gives the bits it gets alone, so they are
    /// the answers decoding one by one gives, and a step over several rows costs little more than one.
    let batch: ContinuousBatch
    /// Longest answer generated.
    public let maxNewTokens: Int
    /// Longest sequence (prompt and answer).
    public let maxTokens: Int

    public init(model: LlamaModel, tokenizer: Tokenizer, template: ChatTemplate, maxNewTokens: Int, maxTokens: Int,
                sequencesAtOnce: Int = 8) {
        self.tokenizer = tokenizer
        self.template = template
        let decoder = BatchDecoder(model: model, slots: sequencesAtOnce, maxDrafts: 0, contextCapacity: maxTokens)
        batch = ContinuousBatch(decoder: decoder, tokenizer: tokenizer, prefillChunk: maxTokens) { _ in nil }
        self.maxNewTokens = maxNewTokens
        self.maxTokens = maxTokens
    }

    /// The tokens of the conversation's opening as a generation prompt, or nil when it takes more than
    /// half of `maxTokens` (too little room would be left for the answer).
    public func prompt(for conversation: Conversation) -> [Int32]? {
        var opening: [ChatMessage] = []
        for message in conversation.messages {
            opening.append(message)
            if message.role == .user { break }
        }
        return promptTokens(opening)
    }

    /// `messages` rendered as a generation prompt and tokenized, or nil when they take more than half of
    /// `maxTokens` (too little room would be left for the answer).
    func promptTokens(_ messages: [ChatMessage]) -> [Int32]? {
        let tokens = tokenizer.encodePrompt(template.render(messages, addGenerationPrompt: true))
        return tokens.count <= maxTokens / 2 ? tokens : nil
    }

    /// Each prompt followed by the model's greedy answer (without a final end-of-turn token), in the
    /// order of `prompts`. Position `prompt.count − 1` is the first whose next token is the model's own.
    /// `onSequence` hears of each (by its index in `prompts`) as soon as it is complete; an error it
    /// throws, or a failed generation, stops the work and is thrown.
    public func sequences(prompts: [[Int32]], onSequence: (Int, [Int32]) throws -> Void = { _, _ in }) throws -> [[Int32]] {
        let requests = prompts.map {
            GenerationRequest(prompt: $0, options: GenerationOptions(maxTokens: min(maxNewTokens, maxTokens - $0.count)))
        }
        var sequences = [[Int32]?](repeating: nil, count: prompts.count)
        var failure: Error?
        withoutActuallyEscaping(onSequence) { onSequence in
            _ = BatchGenerator().generate(requests, batch: batch, decoder: "plain") { index, result in
                guard failure == nil else { return }
                do {
                    let sequence = prompts[index] + (try result.get().tokens)
                    sequences[index] = sequence
                    try onSequence(index, sequence)
                } catch {
                    failure = error
                }
            }
        }
        if let failure { throw failure }
        return sequences.map { $0! }
    }
}

/// Generated sequences kept on disk as JSON lines (`{"id", "tokens"}`), so that an interrupted run
/// continues where it stopped and later runs reuse the answers.
public struct SelfDistilledStore {
    struct Line: Codable {
        var id: String
        var tokens: [Int32]
    }

    public let path: String
    public private(set) var sequences: [String: [Int32]] = [:]

    /// Reads `path` if it exists; a line that does not decode (a run killed mid-write) is skipped.
    public init(path: String) throws {
        self.path = path
        guard let data = FileManager.default.contents(atPath: path) else { return }
        for line in data.split(separator: UInt8(ascii: "\n")) {
            if let entry = try? JSONDecoder().decode(Line.self, from: Data(line)) { sequences[entry.id] = entry.tokens }
        }
    }

    public mutating func append(id: String, tokens: [Int32]) throws {
        var line = try JSONEncoder().encode(Line(id: id, tokens: tokens))
        line.append(UInt8(ascii: "\n"))
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else { throw CocoaError(.fileWriteUnknown) }
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: line)
        sequences[id] = tokens
    }
}
