import Foundation
import Tokenizer

/// A conversation of the ShareGPT data set.
public struct Conversation: Sendable, Equatable {
    public var id: String
    public var messages: [ChatMessage]

    public init(id: String, messages: [ChatMessage]) {
        self.id = id
        self.messages = messages
    }

    /// A deterministic 2% of conversations (by a hash of the id) is held out for validation.
    public var isValidation: Bool {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in id.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return hash % 50 == 0
    }
}

public enum ShareGPTError: Error, CustomStringConvertible {
    case unreadable(String)
    case notAnArray(String)

    public var description: String {
        switch self {
        case let .unreadable(path): "cannot read \(path)"
        case let .notAnArray(path): "\(path) does not start with a JSON array of conversations"
        }
    }
}

/// Reads ShareGPT's JSON (`[{"id", "conversations": [{"from", "value"}, …]}, …]`) record by record,
/// so that a file cut off in the middle of a record still yields every complete one before it.
public enum ShareGPT {
    private struct Record: Decodable {
        struct Turn: Decodable {
            var from: String
            var value: String
        }
        var id: String
        var conversations: [Turn]
    }

    /// Up to `limit` conversations that have at least one user and one assistant message.
    public static func read(path: String, limit: Int? = nil) throws -> [Conversation] {
        guard let data = FileManager.default.contents(atPath: path) else { throw ShareGPTError.unreadable(path) }
        return try parse(data, path: path, limit: limit)
    }

    public static func parse(_ data: Data, path: String = "data", limit: Int? = nil) throws -> [Conversation] {
        let bytes = [UInt8](data)
        var i = 0
        func skipSpace() { while i < bytes.count, [0x20, 0x0A, 0x0D, 0x09, UInt8(ascii: ",")].contains(bytes[i]) { i += 1 } }
        skipSpace()
        guard i < bytes.count, bytes[i] == UInt8(ascii: "[") else { throw ShareGPTError.notAnArray(path) }
        i += 1
        var conversations: [Conversation] = []
        let decoder = JSONDecoder()
        while limit.map({ conversations.count < $0 }) ?? true {
            skipSpace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "{") else { break }
            guard let end = endOfObject(bytes, from: i) else { break }  // cut off: stop at the last complete record
            defer { i = end }
            guard let record = try? decoder.decode(Record.self, from: Data(bytes[i..<end])) else { continue }
            let messages = record.conversations.compactMap { turn -> ChatMessage? in
                switch turn.from {
                case "human", "user": ChatMessage(role: .user, content: turn.value)
                case "gpt", "chatgpt", "bard", "assistant": ChatMessage(role: .assistant, content: turn.value)
                case "system": ChatMessage(role: .system, content: turn.value)
                default: nil
                }
            }
            guard messages.contains(where: { $0.role == .user }), messages.contains(where: { $0.role == .assistant }) else { continue }
            conversations.append(Conversation(id: record.id, messages: messages))
        }
        return conversations
    }

    /// Index just past the `}` that closes the object opening at `start`, or nil if the data ends first.
    static func endOfObject(_ bytes: [UInt8], from start: Int) -> Int? {
        var depth = 0, inString = false, escaped = false
        var i = start
        while i < bytes.count {
            let b = bytes[i]
            if inString {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
            } else if b == UInt8(ascii: "\"") {
                inString = true
            } else if b == UInt8(ascii: "{") || b == UInt8(ascii: "[") {
                depth += 1
            } else if b == UInt8(ascii: "}") || b == UInt8(ascii: "]") {
                depth -= 1
                if depth == 0 { return i + 1 }
            }
            i += 1
        }
        return nil
    }

    /// The conversation rendered with the model's chat template and tokenized, at most `maxTokens` long.
    public static func tokens(_ conversation: Conversation, template: ChatTemplate, tokenizer: Tokenizer, maxTokens: Int) -> [Int32] {
        let text = template.render(conversation.messages, addGenerationPrompt: false)
        return Array(tokenizer.encodePrompt(text).prefix(maxTokens))
    }
}
