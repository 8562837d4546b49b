import Foundation
import Decoding
import Llama
import Tensor
import Testing
import Tokenizer

@Suite("Generation loop and sampling")
struct GenerationTests {
    let real: RealModel.Loaded
    let prompt: [Int32]

    init() throws {
        real = try RealModel.get()
        prompt = real.tokenizer.encode("The capital of France is")
    }

    func generate(_ options: GenerationOptions, context: Int = 128, onText: (TextPiece) -> Void = { _ in }) throws -> GenerationResult {
        try Generator(tokenizer: real.tokenizer).generate(
            prompt: prompt, decoder: SpeculativeDecoder.plain(model: real.model, contextCapacity: context), options: options, onText: onText)
    }

    @Test("a round's accepted drafts and the full model's own tokens come out as pieces marked by origin")
    func piecesByOrigin() {
        let words = [" one", " two", " three", " four"].map { real.tokenizer.encode($0) }
        try! #require(words.allSatisfy { $0.count == 1 })
        var progress = GenerationProgress(tokenizer: real.tokenizer, decoder: "test", promptTokens: 1, options: GenerationOptions(maxTokens: 8))
        let logits = FloatMatrix(capacity: 4, columns: real.model.config.vocabularySize)
        let first = progress.consume(DecodedRound(tokens: words[0], logits: logits))
        let round = progress.consume(DecodedRound(tokens: words[1] + words[2] + words[3], logits: logits, drafted: 2))
        #expect(first == [TextPiece(text: " one", drafted: false)])
        #expect(round == [TextPiece(text: " two three", drafted: true), TextPiece(text: " four", drafted: false)])
    }

    @Test("a stop string ends generation and is cut from the text, also when streamed")
    func stopStrings() throws {
        var streamed = ""
        let result = try generate(GenerationOptions(maxTokens: 24, stopStrings: ["\n\nThe"]), onText: { streamed += $0.text })
        #expect(result.text == " Paris.")
        #expect(streamed == " Paris.")
        #expect(result.stopReason == .stop)
    }

    @Test("generation stops where a stop string first appears and the text is cut before it, streamed or not, several at once")
    func stopStringsAnywhere() throws {
        let full = try generate(GenerationOptions(maxTokens: 60, ignoreEOS: true)).text
        let characters = Array(full)
        var random = SeededRandom(5)
        for _ in 0..<12 {
            // Stops taken from the text itself (so they occur), plus one that never does.
            let stops = (0..<Int.random(in: 1...3, using: &random)).map { _ in
                let start = Int.random(in: 0..<(characters.count - 8), using: &random)
                return String(characters[start..<(start + Int.random(in: 1...8, using: &random))])
            } + ["never in this text ✓"]
            var streamed = ""
            let result = try generate(GenerationOptions(maxTokens: 60, stopStrings: stops, ignoreEOS: true), onText: { streamed += $0.text })
            // Generation stops at the first stop string to be complete (of those ending at one
            // character, the longest), and the text is cut before it.
            let ranges: [Range<String.Index>] = stops.compactMap { full.range(of: $0) }
            let firstEnd = ranges.map(\.upperBound).min()!
            let cut = ranges.filter { $0.upperBound == firstEnd }.map(\.lowerBound).min()!
            #expect(result.text == String(full[..<cut]), "stops \(stops)")
            #expect(streamed == result.text && result.stopReason == .stop)
        }
    }

    @Test("a stop string of 200,000 characters costs each token constant time (generation finishes), and is held back only while it may match")
    func longStopString() throws {
        let full = try generate(GenerationOptions(maxTokens: 16, ignoreEOS: true)).text
        let long = String(repeating: "ab", count: 100_000)
        let result = try generate(GenerationOptions(maxTokens: 16, stopStrings: [long, full + "never"], ignoreEOS: true))
        #expect(result.text == full && result.stopReason == .length)
    }

    @Test("max tokens, and streaming equals the final text")
    func lengthLimit() throws {
        var streamed = ""
        let result = try generate(GenerationOptions(maxTokens: 7), onText: { streamed += $0.text })
        #expect(result.tokens.count == 7)
        #expect(result.stopReason == .length)
        #expect(streamed == result.text)
        #expect(try generate(GenerationOptions(maxTokens: 0)).tokens.isEmpty)
    }

    @Test("a prompt longer than the context is a clear error; reaching the context stops generation")
    func contextLimit() throws {
        #expect(throws: LlamaError.self) { try generate(GenerationOptions(maxTokens: 4), context: 5) }
        let result = try generate(GenerationOptions(maxTokens: 100, ignoreEOS: true), context: 12)
        #expect(result.stopReason == .context)
        #expect(result.promptTokens + result.tokens.count == 12)
    }

    @Test("sampling with a seed is reproducible, and different seeds differ")
    func seededSampling() throws {
        let options = { (seed: UInt64) in GenerationOptions(maxTokens: 16, sampling: SamplingOptions(temperature: 1, topK: 50, topP: 0.95, seed: seed)) }
        let a = try generate(options(1)), b = try generate(options(1))
        #expect(a.tokens == b.tokens)
        let others = try (2...4).map { try generate(options($0)).tokens }
        #expect(others.contains { $0 != a.tokens })
    }

    @Test("logprobs are reported for each generated token and the greedy token is the top one")
    func logprobs() throws {
        let result = try generate(GenerationOptions(maxTokens: 5, logprobs: 3))
        #expect(result.logprobs.count == 5)
        for (token, entry) in zip(result.tokens, result.logprobs) {
            #expect(entry.top.count == 3)
            #expect(entry.top[0].id == token)
            #expect(entry.token.logprob == entry.top[0].logprob)
            #expect(entry.top[0].logprob >= entry.top[1].logprob)
        }
    }

    @Test("processed distributions: temperature, top-k, top-p, min-p")
    func distributions() {
        let logits: [Float] = [2, 1, 0, -1, 3]
        func dist(_ options: SamplingOptions) -> [Float] {
            var out = [Float](repeating: .nan, count: logits.count)
            logits.withUnsafeBufferPointer { Sampler(options: options).process($0.baseAddress!, count: logits.count, into: &out) }
            return out
        }
        func kept(_ p: [Float]) -> Set<Int> { Set(p.indices.filter { p[$0] > 0 }) }
        let full = dist(SamplingOptions(temperature: 1))
        #expect(kept(full) == [0, 1, 2, 3, 4])
        #expect(abs(full.reduce(0, +) - 1) < 1e-6)
        #expect(full[4] > full[0] && full[0] > full[1])
        #expect(kept(dist(SamplingOptions(temperature: 1, topK: 2))) == [4, 0])
        // p = [0.236, 0.087, 0.032, 0.012, 0.643] (ids 0…4): top-p 0.8 keeps ids 4 and 0.
        #expect(kept(dist(SamplingOptions(temperature: 1, topP: 0.8))) == [4, 0])
        #expect(kept(dist(SamplingOptions(temperature: 1, minP: 0.1))) == [4, 0, 1])
        let topP = dist(SamplingOptions(temperature: 1, topP: 0.8))
        #expect(abs(topP[4] + topP[0] - 1) < 1e-6)
        #expect(dist(SamplingOptions(temperature: 0.1))[4] > 0.99)
        logits.withUnsafeBufferPointer { #expect(Sampler.argmax($0.baseAddress!, count: 5) == 4) }
    }

    @Test("top-k keeps the k most likely tokens (ties by lower id) as a full sort would, with and without top-p")
    func topKMatchesFullSort() {
        var random = SeededRandom(11)
        for (count, k, topP) in [(50, 1, Float(1)), (50, 5, 1), (1000, 40, 0.9), (1000, 999, 0.5), (7, 7, 1)] {
            // Logits on a coarse grid, so that ties occur.
            let logits = (0..<count).map { _ in Float(Int.random(in: 0..<12, using: &random)) / 4 }
            let options = SamplingOptions(temperature: 1, topK: k, topP: topP)
            var out = [Float](repeating: 0, count: count)
            Sampler(options: options).process(logits, count: count, into: &out)
            // The reference: softmax, a full sort, the first k, then top-p over them, renormalised.
            var p = logits.map { expf($0 - logits.max()!) }
            let total = p.reduce(0, +)
            p = p.map { $0 / total }
            let order = (0..<count).sorted { p[$0] > p[$1] || (p[$0] == p[$1] && $0 < $1) }
            var keep = min(k, count), cumulative: Float = 0
            for (rank, id) in order.prefix(keep).enumerated() {
                cumulative += p[id]
                if cumulative >= topP {
                    keep = rank + 1
                    break
                }
            }
            let kept = Set(order.prefix(keep))
            #expect((0..<count).allSatisfy { (out[$0] > 0) == kept.contains($0) }, "count \(count), k \(k), top-p \(topP)")
        }
    }
}
