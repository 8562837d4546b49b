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

    /// At most `limit` questions of each task group, taken round-robin over the group's categories
    /// (so the MT-bench group mixes writing, roleplay, …), optionally only `categories` (category or
    /// task-group names). Order follows the file.
    public static func select(_ questions: [SpecBenchQuestion], limit: Int?, categories: [String]?) -> [SpecBenchQuestion] {
        let wanted = questions.filter { q in
            categories.map { $0.contains(q.category) || $0.contains(q.taskGroup) } ?? true
        }
        guard let limit else { return wanted }
        var chosen = Set<Int>()
        for group in Set(wanted.map(\.taskGroup)) {
            var byCategory: [String: [Int]] = [:]
            var categoryOrder: [String] = []
            for (i, q) in wanted.enumerated() where q.taskGroup == group {
                if byCategory[q.category] == nil { categoryOrder.append(q.category) }
                byCategory[q.category, default: []].append(i)
            }
            var taken = 0, round = 0
            while taken < limit {
                var progressed = false
                for category in categoryOrder where taken < limit {
                    if let list = byCategory[category], round < list.count {
                        chosen.insert(list[round])
                        taken += 1
                        progressed = true
                    }
                }
                if !progressed { break }
                round += 1
            }
        }
        return wanted.indices.filter { chosen.contains($0) }.map { wanted[$0] }
    }
}
