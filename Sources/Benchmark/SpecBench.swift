import Foundation

/// One Spec-Bench question: one or more user turns in a category.
public struct SpecBenchQuestion: Sendable, Equatable, Decodable {
    public var questionID: Int
    public var category: String
    public var turns: [String]

    enum CodingKeys: String, CodingKey {
        case questionID = "question_id", category, turns
    }

    /// Spec-Bench's task groups: the eight MT-bench categories form one.
    public var taskGroup: String {
        ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"].contains(category) ? "mt_bench" : category
    }

    public static let taskGroups = ["mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag"]
}

public enum SpecBenchError: Error, CustomStringConvertible {
    case unreadable(String)
    case malformedLine(path: String, line: Int, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(path): "cannot read the suite file \(path)"
        case let .malformedLine(path, line, reason): "\(path):\(line): \(reason)"
        }
    }
}

public enum SpecBench {
    /// Parses Spec-Bench's `question.jsonl` (one JSON object a line; blank lines are skipped).
    public static func parse(_ text: String, path: String = "suite") throws -> [SpecBenchQuestion] {
        var questions: [SpecBenchQuestion] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { continue }
            let question: SpecBenchQuestion
            do {
                question = try JSONDecoder().decode(SpecBenchQuestion.self, from: Data(trimmed.utf8))
            } catch {
                throw SpecBenchError.malformedLine(path: path, line: index + 1,
                                                   reason: "not a question record (needs question_id, category and turns): \(error)")
            }
            guard !question.turns.isEmpty else {
                throw SpecBenchError.malformedLine(path: path, line: index + 1, reason: "the question has no turns")
            }
            questions.append(question)
        }
        return questions
    }

    public static func load(path: String) throws -> [SpecBenchQuestion] {
        guard let data = FileManager.default.contents(atPath: path) else { throw SpecBenchError.unreadable(path) }
        guard let text = String(data: data, encoding: .utf8) else {
            throw SpecBenchError.malformedLine(path: path, line: 0, reason: "the file is not valid UTF-8")
        }
        return try parse(text, path: path)
    }

    /// At most `limit` questions of each category (in file order), optionally only `categories`
    /// (category names or task-group names).
    public static func select(_ questions: [SpecBenchQuestion], limit: Int?, categories: [String]?) -> [SpecBenchQuestion] {
        var taken: [String: Int] = [:]
        return questions.filter { q in
            if let categories, !categories.contains(q.category) && !categories.contains(q.taskGroup) { return false }
            let count = taken[q.category, default: 0]
            if let limit, count >= limit { return false }
            taken[q.category] = count + 1
            return true
        }
    }
}
