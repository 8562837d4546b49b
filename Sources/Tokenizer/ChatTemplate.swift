import Foundation

/// One message of a conversation.
public struct ChatMessage: Sendable, Equatable, Codable {
    public enum Role: String, Sendable, Codable { case system, user, assistant }
    public var role: Role
    public var content: String

    public init(role: Role, content: String) {
        self.role = role
        self.content = content
    }
}

public enum ChatTemplateError: Error, CustomStringConvertible {
    case missing
    case unrecognised(excerpt: String)
    case unknownName(String)

    public var description: String {
        switch self {
        case .missing:
            "the model has no chat template (tokenizer.chat_template); name one with --chat-template (\(ChatTemplate.names.joined(separator: ", ")))"
        case let .unrecognised(excerpt):
            """
            the model's chat template is not one this tool knows (\(ChatTemplate.names.joined(separator: ", "))); \
            name one with --chat-template. It starts with: \(excerpt)
            """
        case let .unknownName(name):
            "there is no chat template named '\(name)'; known: \(ChatTemplate.names.joined(separator: ", "))"
        }
    }
}

/// The chat formats this tool recognises from a model's `tokenizer.chat_template`, as llama.cpp does
/// without a Jinja engine: a template is identified by its markers, and its built-in default system
/// message, if any, is taken from it. The beginning-of-sequence token is the tokenizer's to add.
public enum ChatTemplate: Sendable, Equatable {
    /// `<|im_start|>role\ncontent<|im_end|>\n` per message; generation prompt `<|im_start|>assistant\n`.
    case chatML(defaultSystem: String?)
    /// `SYSTEM USER: question ASSISTANT: answer</s>USER: …` (Vicuna v1.1).
    case vicuna(defaultSystem: String)
    /// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>` per message (Llama 3).
    case llama3
    /// `[INST] question [/INST] answer</s>` per exchange, a system message before the first question
    /// (Mistral Instruct).
    case mistral
    /// `<start_of_turn>user\ncontent<end_of_turn>\n`, the assistant as `model`, a system message
    /// before the first question (Gemma).
    case gemma

    /// The names `init(name:)` takes (`--chat-template`).
    public static let names = ["chatml", "llama3", "mistral", "gemma", "vicuna"]

    public init(name: String) throws(ChatTemplateError) {
        switch name.lowercased() {
        case "chatml": self = .chatML(defaultSystem: nil)
        case "llama3": self = .llama3
        case "mistral": self = .mistral
        case "gemma": self = .gemma
        case "vicuna": self = .vicuna(defaultSystem: Self.vicunaSystem)
        default: throw .unknownName(name)
        }
    }

    static let vicunaSystem = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions."

    public init(template: String?) throws(ChatTemplateError) {
        guard let template, !template.isEmpty else { throw .missing }
        if template.contains("<|im_start|>") {
            self = .chatML(defaultSystem: Self.embeddedChatMLSystem(in: template))
        } else if template.contains("<|start_header_id|>") {
            self = .llama3
        } else if template.contains("[INST]") {
            self = .mistral
        } else if template.contains("<start_of_turn>") {
            self = .gemma
        } else if template.contains("USER:") && template.contains("ASSISTANT:") {
            self = .vicuna(defaultSystem: Self.vicunaSystem)
        } else {
            throw .unrecognised(excerpt: String(template.prefix(80)))
        }
    }

    /// The system message the template inserts when the conversation has none: the text of a literal
    /// `<|im_start|>system\n…<|im_end|>` turn (SmolLM2), or the string a template writes when the
    /// first message is not a system one (Qwen2.5: `{%- if messages[0]['role'] == 'system' %} …
    /// {%- else %} {{- 'You are Qwen, …' }}`).
    private static func embeddedChatMLSystem(in template: String) -> String? {
        let opening = "<|im_start|>system\n"
        if let start = template.range(of: opening),
           let end = template.range(of: "<|im_end|>", range: start.upperBound..<template.endIndex) {
            let text = template[start.upperBound..<end.lowerBound]
            if !text.contains("{{") && !text.contains("{%") { return String(text) }
        }
        guard let test = template.range(of: "messages[0]['role'] == 'system'"),
              let otherwise = template.range(of: "{%- else %}", range: test.upperBound..<template.endIndex),
              let open = template.range(of: "{{- '", range: otherwise.upperBound..<template.endIndex),
              template[otherwise.upperBound..<open.lowerBound].allSatisfy(\.isWhitespace),
              let close = template.range(of: "' }}", range: open.upperBound..<template.endIndex) else { return nil }
        let text = template[open.upperBound..<close.lowerBound]
        return text.contains("<|") || text.contains("\\") || text.contains("'") ? nil : String(text)
    }

    /// The prompt text for `messages`, ending with the assistant's turn opened when
    /// `addGenerationPrompt` is true.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        var out = ""
        switch self {
        case let .chatML(defaultSystem):
            if messages.first?.role != .system, let defaultSystem {
                out += "<|im_start|>system\n\(defaultSystem)<|im_end|>\n"
            }
            for message in messages {
                out += "<|im_start|>\(message.role.rawValue)\n\(message.content)<|im_end|>\n"
            }
            if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        case let .vicuna(defaultSystem):
            let system = messages.first?.role == .system ? messages[0].content : defaultSystem
            out += system + " "
            for message in messages where message.role != .system {
                switch message.role {
                case .user: out += "USER: \(message.content) "
                case .assistant: out += "ASSISTANT: \(message.content)</s>"
                case .system: break
                }
            }
            if addGenerationPrompt { out += "ASSISTANT:" }
        case .llama3:
            for message in messages {
                out += "<|start_header_id|>\(message.role.rawValue)<|end_header_id|>\n\n\(message.content)<|eot_id|>"
            }
            if addGenerationPrompt { out += "<|start_header_id|>assistant<|end_header_id|>\n\n" }
        case .mistral, .gemma:
            // Neither has a system role: the system message opens the first user message.
            var system = messages.first?.role == .system ? messages[0].content : nil
            for message in messages where message.role != .system {
                var content = message.content
                if message.role == .user, let prefix = system {
                    content = prefix + "\n\n" + content
                    system = nil
                }
                if self == .mistral {
                    out += message.role == .user ? "[INST] \(content) [/INST]" : " \(content)</s>"
                } else {
                    out += "<start_of_turn>\(message.role == .user ? "user" : "model")\n\(content)<end_of_turn>\n"
                }
            }
            if addGenerationPrompt && self == .gemma { out += "<start_of_turn>model\n" }
        }
        return out
    }
}
