import Foundation
import Tokenizer

/// One prompt of a batch, with its own generation settings.
public struct GenerationRequest: Sendable {
    public var prompt: [Int32]
    public var options: GenerationOptions

    public init(prompt: [Int32], options: GenerationOptions) {
        self.prompt = prompt
        self.options = options
    }
}

/// Generates continuations of many prompts, as many at a time as the batch has slots: a sequence that
/// finishes frees its slot for the next prompt at once (`ContinuousBatch`). Each prompt gets the result
/// it gets alone (`Generator`): the same tokens, and with the same seed the same samples. Its prefill
/// time runs from its start to its first token, its decode time from its first token to its last,
/// shared steps included.
public struct BatchGenerator {
    public init() {}

    /// The results in the order of `requests`, each decoded as `decoder` names it; a request that
    /// cannot run (a prompt too long for the context) gets its error. `onFinished` hears of each result
    /// as soon as it is complete.
    public func generate(_ requests: [GenerationRequest], batch: ContinuousBatch, decoder: String,
                         onFinished: @escaping (Int, Result<GenerationResult, Error>) -> Void = { _, _ in })
        -> [Result<GenerationResult, Error>] {
        var results = [Result<GenerationResult, Error>?](repeating: nil, count: requests.count)
        var next = 0
        while true {
            while next < requests.count && batch.hasFreeSlot {
                let index = next
                next += 1
                batch.admit(BatchedRequest(request: requests[index], decoder: decoder) { result in
                    results[index] = result
                    onFinished(index, result)
                })
            }
            if batch.activeCount == 0 { break }
            batch.step()
        }
        return results.map { $0! }
    }
}
