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

/// Generates continuations of many prompts, as many at a time as the batch decoder has slots: a
/// sequence that finishes frees its slot for the next prompt at once. Each prompt gets the result it
/// gets alone (`Generator`): the same tokens, and with the same seed the same samples. Its prefill
/// time is its own prompt's; its decode time runs from its first token to its last, shared rounds
/// included.
public struct BatchGenerator {
    public let tokenizer: Tokenizer

    public init(tokenizer: Tokenizer) {
        self.tokenizer = tokenizer
    }

    /// The results in the order of `requests`; a request that cannot run (a prompt too long for the
    /// context) gets its error. `onFinished` hears of each result as soon as it is complete.
    public func generate(_ requests: [GenerationRequest], decoder: BatchDecoder,
                         onFinished: (Int, Result<GenerationResult, Error>) -> Void = { _, _ in }) throws
        -> [Result<GenerationResult, Error>] {
        struct Running {
            let index: Int
            var progress: GenerationProgress
            let firstTokenAt: ContinuousClock.Instant
        }
        var results = [Result<GenerationResult, Error>?](repeating: nil, count: requests.count)
        var running = [Running?](repeating: nil, count: decoder.slots)
        var samplers = (0..<decoder.slots).map { _ in Sampler(options: SamplingOptions()) }
        var nextRequest = 0
        let clock = ContinuousClock()

        func record(_ index: Int, _ result: Result<GenerationResult, Error>) {
            results[index] = result
            onFinished(index, result)
        }

        func finish(_ slot: Int) {
            guard var entry = running[slot] else { return }
            _ = entry.progress.finish()
            entry.progress.result.decodeSeconds = (clock.now - entry.firstTokenAt).seconds
            entry.progress.result.speculative = decoder.speculativeStatistics(slot: slot)
            record(entry.index, .success(entry.progress.result))
            running[slot] = nil
        }

        /// Starts requests in free slots while there are any.
        func fill() {
            for slot in 0..<decoder.slots where running[slot] == nil {
                while running[slot] == nil && nextRequest < requests.count {
                    let index = nextRequest, request = requests[index]
                    nextRequest += 1
                    var progress = GenerationProgress(tokenizer: tokenizer, decoder: decoder.name,
                                                      promptTokens: request.prompt.count, options: request.options)
                    if progress.isFinished {
                        _ = progress.finish()
                        record(index, .success(progress.result))
                        continue
                    }
                    samplers[slot] = Sampler(options: request.options.sampling)
                    let begin = clock.now
                    do {
                        let first = try decoder.start(slot: slot, prompt: request.prompt, sampler: &samplers[slot])
                        let firstTokenAt = clock.now
                        progress.result.prefillSeconds = (firstTokenAt - begin).seconds
                        progress.consume(first)
                        running[slot] = Running(index: index, progress: progress, firstTokenAt: firstTokenAt)
                        check(slot)
                    } catch {
                        record(index, .failure(error))
                    }
                }
            }
        }

        /// Ends slot `slot`'s generation if a stop condition or its context says so.
        func check(_ slot: Int) {
            guard var entry = running[slot] else { return }
            if !entry.progress.isFinished {
                entry.progress.checkRoom(committed: decoder.committedLength(slot: slot), capacity: decoder.contextCapacity)
            }
            running[slot] = entry
            if entry.progress.isFinished { finish(slot) }
        }

        fill()
        while true {
            let slots = running.indices.filter { running[$0] != nil }
            if slots.isEmpty { break }
            let rounds = try decoder.next(slots: slots, limits: slots.map { running[$0]!.progress.tokensWanted },
                                          samplers: &samplers)
            for (slot, round) in zip(slots, rounds) {
                running[slot]!.progress.consume(round)
                check(slot)
            }
            fill()
        }
        return results.map { $0! }
    }
}
