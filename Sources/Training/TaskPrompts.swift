import Foundation
import Tokenizer

/// Prompts that hand the model a text to work on — summarise it, translate it, repeat it, correct it,
/// list its points, answer a question from it — made from a ShareGPT conversation's first answer.
///
/// Why: ShareGPT's openings are mostly questions, so the model's answers to them rarely copy their
/// prompt, and an adapter trained on them barely learns to copy. But users hand the model documents,
/// and this model's translations, summaries and answers from a passage are largely copies of it
/// (Spec-Bench: tokens per round drafting every round, translation 1.11, summary 1.30, against 1.5 on
/// MT-bench and QA). Answers to these prompts teach the adapter to draft what the model will copy.
public enum TaskPrompt: String, CaseIterable, Sendable {
    case summarise, translate, repeatText, correct, keyPoints, answerFromText

    /// The user message asking for this task on `passage`; `question` is the conversation's first
    /// user message (the passage answers it).
    public func message(passage: String, question: String) -> String {
        switch self {
        case .summarise: "Write a short summary of this text.\n\n\(passage)"
        case .translate: "Translate the following text into English.\n\n\(passage)"
        case .repeatText: "Copy out the following text exactly, without changing anything:\n\n\(passage)"
        case .correct: "Fix the spelling and grammar in the text below and return the corrected text.\n\n\(passage)"
        case .keyPoints: "What are the main points of the following text?\n\n\(passage)"
        case .answerFromText: "Read the text and answer the question.\n\nText: \(passage)\n\nQuestion: \(question)"
        }
    }

    /// The prompts' passages are the first answer's opening, cut at a word boundary near this length.
    public static let passageCharacters = 700
    public static let questionCharacters = 200

    /// The user message of task number `index` (tasks rotate, so any prefix of a list of conversations
    /// has them in equal shares) for `conversation`, or nil when it has no answer to use as a passage.
    public static func message(index: Int, for conversation: Conversation) -> (task: TaskPrompt, text: String)? {
        guard let answer = conversation.messages.first(where: { $0.role == .assistant })?.content,
              let question = conversation.messages.first(where: { $0.role == .user })?.content,
              answer.count >= 200 else { return nil }
        let task = allCases[index % allCases.count]
        let text = task.message(passage: opening(of: answer, characters: passageCharacters),
                                question: opening(of: question, characters: questionCharacters))
        return (task, text)
    }

    /// At most about `characters` characters of `text`, ending at a whitespace when there is one.
    public static func opening(of text: String, characters: Int) -> String {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.count > characters else { return trimmed }
        let cut = trimmed.prefix(characters)
        guard let space = cut.lastIndex(where: \.isWhitespace), cut.distance(from: cut.startIndex, to: space) > characters / 2 else {
            return String(cut)
        }
        return String(cut[..<space])
    }
}

extension SelfDistillation {
    /// Task prompts (see `TaskPrompt`) for the conversations in order, with ids `<conversation id>/<task>`;
    /// prompts longer than half of `maxTokens` are skipped.
    public func taskPrompts(from conversations: some Sequence<Conversation>, count: Int) -> [(id: String, tokens: [Int32])] {
        var prompts: [(id: String, tokens: [Int32])] = []
        var index = 0
        for conversation in conversations where prompts.count < count {
            guard let (task, text) = TaskPrompt.message(index: index, for: conversation) else { continue }
            guard let tokens = promptTokens([ChatMessage(role: .user, content: text)]) else { continue }
            prompts.append(("\(conversation.id)/\(task.rawValue)", tokens))
            index += 1
        }
        return prompts
    }
}
