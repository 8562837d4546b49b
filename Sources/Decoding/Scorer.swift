import Foundation
import Llama
import Tensor

/// Teacher forcing: the model reads a whole sequence in one pass and reports, after each token, the
/// distribution over the next one (like llama.cpp's perplexity tool and OpenAI's `echo` + `logprobs`).
public struct Scorer {
    public struct Position: Sendable, Equatable {
        /// The `k` most likely next tokens after reading tokens `0…i`.
        public var top: [TokenLogProb]
        /// Log-probability of the actual token `i+1` (nil at the last position).
        public var nextLogprob: Float?
    }

    public struct Result: Sendable {
        public var positions: [Position]
        /// `exp(-mean(nextLogprob))` over positions that have a next token.
        public var perplexity: Double?
    }

    public let model: LlamaModel
    public let pool: ThreadPool

    public init(model: LlamaModel, pool: ThreadPool = .shared) {
        self.model = model
        self.pool = pool
    }

    public func score(_ tokens: [Int32], top k: Int) throws -> Result {
        precondition(!tokens.isEmpty, "nothing to score")
        try model.validate(tokens)
        let config = model.config
        guard tokens.count <= config.contextLength else {
            throw LlamaError.contextFull(needed: tokens.count, capacity: config.contextLength)
        }
        let cache = KVCache(config: config, capacity: tokens.count)
        let scratch = ForwardScratch(config: config, contextCapacity: tokens.count, pool: pool)
        let hidden = FloatMatrix(capacity: tokens.count, columns: config.hiddenSize)
        model.embed(tokens, into: hidden)
        try model.forward(layers: 0..<config.layerCount, hidden: hidden, cache: cache, scratch: scratch)

        let chunk = scratch.capacity
        let logits = FloatMatrix(capacity: chunk, columns: config.vocabularySize)
        var positions: [Position] = []
        var logprobSum = 0.0
        for chunkStart in stride(from: 0, to: tokens.count, by: chunk) {
            let rows = chunkStart..<min(chunkStart + chunk, tokens.count)
            model.logits(hidden, rows: rows, into: logits, scratch: scratch)
            for i in rows {
                let row = logits.row(i - chunkStart)
                var next: Float?
                if i + 1 < tokens.count {
                    next = LogProbabilities.logprob(of: tokens[i + 1], row, count: config.vocabularySize)
                    logprobSum += Double(next!)
                }
                positions.append(Position(top: LogProbabilities.top(k, row, count: config.vocabularySize), nextLogprob: next))
            }
        }
        let perplexity = tokens.count > 1 ? Foundation.exp(-logprobSum / Double(tokens.count - 1)) : nil
        return Result(positions: positions, perplexity: perplexity)
    }
}
