import ArgumentParser
import Decoding
import Foundation
import Llama

struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Teacher-forced log-probabilities and perplexity of a token sequence.",
        discussion: """
        Entry i of "positions" is the distribution after reading tokens 0…i, so it predicts token i+1; \
        "next_logprob" is the log-probability of that actual token (absent at the last position).
        """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Text to score (tokenized without special-token parsing of the model's BOS rule).")
    var prompt: String?

    @Option(help: "Comma-separated token ids to score, e.g. 1,2,3.")
    var ids: String?

    @Option(help: "How many most likely tokens to list per position.")
    var top = 5

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        guard (prompt == nil) != (ids == nil) else { throw ValidationError("give exactly one of --prompt or --ids") }
        guard (0...100).contains(top) else { throw ValidationError("--top must be between 0 and 100") }
    }

    func parsedIDs() throws -> [Int32] {
        guard let ids else { return [] }
        return try ids.split(separator: ",").map { part in
            guard let id = Int32(part.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--ids: '\(part)' is not a token id")
            }
            return id
        }
    }

    func run() throws {
        let (model, tokenizer) = try modelOptions.load()
        let tokens = try prompt.map { tokenizer.encodePrompt($0) } ?? parsedIDs()
        guard !tokens.isEmpty else { throw ValidationError("nothing to score") }
        let result = try Scorer(model: model).score(tokens, top: top)
        if json {
            struct Report: Encodable {
                struct Position: Encodable {
                    var top: [TokenLogProb]
                    var nextLogprob: Float?
                }
                var tokenIds: [Int32]
                var positions: [Position]
                var perplexity: Double?
            }
            try printJSON(Report(tokenIds: tokens, positions: result.positions.map { .init(top: $0.top, nextLogprob: $0.nextLogprob) },
                                 perplexity: result.perplexity))
            return
        }
        for (i, position) in result.positions.enumerated() {
            let token = tokenizer.decode([tokens[i]]).debugDescription
            let next = position.nextLogprob.map { String(format: "%8.4f", $0) } ?? "       -"
            let alternatives = position.top.map { "\(tokenizer.decode([$0.id]).debugDescription) \(String(format: "%.3f", $0.logprob))" }
            writeOut("\(String(format: "%5d", i)) \(token.padding(toLength: 16, withPad: " ", startingAt: 0)) next \(next)  top: \(alternatives.joined(separator: ", "))\n")
        }
        if let perplexity = result.perplexity { writeOut(String(format: "perplexity %.4f over %d tokens\n", perplexity, tokens.count)) }
    }
}
