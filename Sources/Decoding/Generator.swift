import Foundation
import Tokenizer

/// What the generation loop should do, independent of the decoder.
public struct GenerationOptions: Sendable {
    public var maxTokens: Int
    public var sampling: SamplingOptions
    /// Generation stops when the text contains one of these; the text is cut before it.
    public var stopStrings: [String]
    /// Keep going past end-of-sequence tokens (benchmarks decode exactly `maxTokens`).
    public var ignoreEOS: Bool
    /// Top log-probabilities to report per generated token (0: none).
    public var logprobs: Int

    public init(maxTokens: Int = 256, sampling: SamplingOptions = .init(), stopStrings: [String] = [],
                ignoreEOS: Bool = false, logprobs: Int = 0) {
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stopStrings = stopStrings
        self.ignoreEOS = ignoreEOS
        self.logprobs = logprobs
    }
}

public enum StopReason: String, Sendable, Codable {
    /// `maxTokens` reached.
    case length
    /// An end-of-sequence token.
    case eos
    /// A stop string.
    case stop
    /// The context is full.
    case context
    /// The caller stopped it (a client went away, the server shuts down).
    case cancelled
}

/// Everything a generation produced, with its timings.
public struct GenerationResult: Sendable {
    public var decoder: String
    public var text: String
    /// Generated token ids (an end-of-sequence token that ended generation is not included).
    public var tokens: [Int32]
    public var promptTokens: Int
    public var stopReason: StopReason
    /// Prompt tokens whose keys and values were kept from the sequence before (not processed again).
    public var cachedPromptTokens = 0
    /// Time to process the prompt and produce the first token.
    public var prefillSeconds: Double
    /// Time to produce the remaining tokens.
    public var decodeSeconds: Double
    /// Per generated token, its log-probability and the top alternatives (when requested).
    public var logprobs: [(token: TokenLogProb, top: [TokenLogProb])]
    /// Drafting and acceptance figures of a speculative decoder.
    public var speculative: SpeculativeStatistics?
    /// False when made with a lossy option (relaxed verification): the output may not be the full model's.
    public var lossless = true

    /// Decode speed: tokens after the first, over the time they took.
    public var decodeTokensPerSecond: Double {
        tokens.count > 1 && decodeSeconds > 0 ? Double(tokens.count - 1) / decodeSeconds : 0
    }
}

/// The generation loop shared by every decoder: runs rounds, applies stop conditions (length,
/// end-of-sequence, stop strings, context), streams text as it becomes final, and times the work.
public struct Generator {
    public let tokenizer: Tokenizer

    public init(tokenizer: Tokenizer) {
        self.tokenizer = tokenizer
    }

    /// Generates a continuation of `prompt`. `onText` receives text pieces as soon as they are final
    /// (complete UTF-8 characters that cannot be the start of a stop string), each marked with whether
    /// it came from accepted drafts or from the full model's own tokens.
    /// `shouldStop` is asked before every round; when it answers true, generation ends as `.cancelled`.
    public func generate(prompt: [Int32], decoder: Decoder, options: GenerationOptions,
                         shouldStop: () -> Bool = { false },
                         onText: (TextPiece) -> Void = { _ in }) throws -> GenerationResult {
        var progress = GenerationProgress(tokenizer: tokenizer, decoder: decoder.name, promptTokens: prompt.count, options: options)
        guard !progress.isFinished else { return progress.result }
        var sampler = Sampler(options: options.sampling)
        let clock = ContinuousClock()
        let begin = clock.now
        var round = try decoder.start(prompt: prompt, sampler: &sampler)
        let firstTokenAt = clock.now
        progress.result.prefillSeconds = (firstTokenAt - begin).seconds
        progress.result.cachedPromptTokens = decoder.cachedPromptTokens
        while true {
            progress.consume(round).forEach(onText)
            if !progress.isFinished { progress.checkRoom(committed: decoder.committedLength, capacity: decoder.contextCapacity) }
            if !progress.isFinished && shouldStop() { progress.stop(.cancelled) }
            if progress.isFinished { break }
            round = try decoder.next(sampler: &sampler, limit: progress.tokensWanted)
        }
        let rest = progress.finish()
        if !rest.isEmpty { onText(TextPiece(text: rest, drafted: false)) }
        progress.result.decodeSeconds = (clock.now - firstTokenAt).seconds
        progress.result.speculative = decoder.speculativeStatistics
        return progress.result
    }
}

/// Generated text that has become final, and whether the drafter proposed it (the full model accepted
/// it) or the full model chose it itself.
public struct TextPiece: Sendable, Equatable {
    public var text: String
    public var drafted: Bool

    public init(text: String, drafted: Bool) {
        self.text = text
        self.drafted = drafted
    }
}

/// One generation's progress through the rounds a decoder produces: its tokens, log-probabilities
/// and text, and whether a stop condition has ended it. Shared by the one-prompt loop and batches.
public struct GenerationProgress {
    let tokenizer: Tokenizer
    let options: GenerationOptions
    private var text: TextAccumulator
    public var result: GenerationResult
    public private(set) var isFinished: Bool

    public init(tokenizer: Tokenizer, decoder: String, promptTokens: Int, options: GenerationOptions) {
        precondition(options.maxTokens >= 0)
        self.tokenizer = tokenizer
        self.options = options
        text = TextAccumulator(stopStrings: options.stopStrings)
        result = GenerationResult(decoder: decoder, text: "", tokens: [], promptTokens: promptTokens, stopReason: .length,
                                  prefillSeconds: 0, decodeSeconds: 0, logprobs: [], speculative: nil)
        result.lossless = options.sampling.isLossless
        isFinished = options.maxTokens == 0
    }

    /// Tokens still wanted.
    public var tokensWanted: Int { options.maxTokens - result.tokens.count }

    /// Takes a round's tokens in order until one ends the generation; returns the text that became
    /// final, in pieces of accepted drafts and of the full model's own tokens (a piece held back as a
    /// possible stop string counts as the token that released it).
    @discardableResult
    public mutating func consume(_ round: DecodedRound) -> [TextPiece] {
        var ready: [TextPiece] = []
        for (i, token) in round.tokens.enumerated() where !isFinished {
            if !options.ignoreEOS && tokenizer.isEndOfGeneration(token) {
                stop(.eos)
                break
            }
            result.tokens.append(token)
            if options.logprobs > 0 {
                let row = round.logits.row(i), count = round.logits.columns
                result.logprobs.append((TokenLogProb(id: token, logprob: LogProbabilities.logprob(of: token, row, count: count)),
                                        LogProbabilities.top(options.logprobs, row, count: count)))
            }
            let (piece, stopped) = text.append(tokenizer.bytes(of: token))
            let drafted = i < round.drafted
            if !piece.isEmpty {
                if ready.last?.drafted == drafted { ready[ready.count - 1].text += piece } else {
                    ready.append(TextPiece(text: piece, drafted: drafted))
                }
            }
            if stopped {
                stop(.stop)
            } else if result.tokens.count >= options.maxTokens {
                stop(.length)
            }
        }
        return ready
    }

    /// Ends the generation when the next round could not feed the last committed token (which needs
    /// one more position) and keep prompt and output within the context.
    public mutating func checkRoom(committed: Int, capacity: Int) {
        if committed + 1 >= capacity { stop(.context) }
    }

    public mutating func stop(_ reason: StopReason) {
        guard !isFinished else { return }
        result.stopReason = reason
        isFinished = true
    }

    /// Flushes the text held back and returns it (call once, after the last round).
    public mutating func finish() -> String {
        let rest = text.finish()
        result.text = text.text
        return rest
    }
}

public extension Duration {
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) * 1e-18
    }
}

/// Accumulates generated bytes into text, holding back incomplete UTF-8 characters and any tail that
/// could be the beginning of a stop string, and detecting stop strings.
///
/// Each stop string has a matcher (Knuth–Morris–Pratt): the length of its longest prefix that the text
/// ends with, updated character by character. So each new character costs a constant amortised time
/// per stop string, whatever the strings' lengths, and the held-back tail is the longest such prefix.
struct TextAccumulator {
    /// A stop string's characters, its failure function, and how much of it the text ends with.
    private struct Matcher {
        let characters: [Character]
        /// `failure[i]`: the longest proper prefix of characters[0...i] that is also its suffix.
        let failure: [Int]
        var matched = 0

        init(_ stop: String) {
            characters = Array(stop)
            var failure = [Int](repeating: 0, count: characters.count)
            var k = 0
            for i in 1..<max(characters.count, 1) {
                while k > 0 && characters[i] != characters[k] { k = failure[k - 1] }
                if characters[i] == characters[k] { k += 1 }
                failure[i] = k
            }
            self.failure = failure
        }

        /// Takes the text's next character; true when the stop string is complete.
        mutating func advance(_ c: Character) -> Bool {
            while matched > 0 && characters[matched] != c { matched = failure[matched - 1] }
            if characters[matched] == c { matched += 1 }
            guard matched == characters.count else { return false }
            matched = failure[matched - 1]
            return true
        }
    }

    private var matchers: [Matcher]
    private var decoder = StreamingTextDecoder()
    /// All final text so far (cut before a stop string once one is found).
    private(set) var text = ""
    /// How much of `text` has been handed out.
    private var emitted: String.Index

    init(stopStrings: [String]) {
        matchers = stopStrings.filter { !$0.isEmpty }.map(Matcher.init)
        emitted = text.startIndex
    }

    /// Adds a token's bytes. Returns the text that became safe to show, and whether a stop string was found.
    mutating func append(_ bytes: [UInt8]) -> (ready: String, stopped: Bool) {
        let piece = decoder.append(bytes)
        let emittedOffset = text.utf8.distance(from: text.startIndex, to: emitted)
        var kept = ""
        var stopped = false
        characters: for c in piece {
            kept.append(c)
            // The stop strings this character completes; the text is cut before the longest of them
            // (the earliest to begin).
            var completed = 0
            for i in matchers.indices where matchers[i].advance(c) { completed = max(completed, matchers[i].characters.count) }
            if completed > 0 {
                text += kept
                text.removeLast(completed)
                stopped = true
                break characters
            }
        }
        if !stopped { text += kept }
        emitted = text.utf8.index(text.startIndex, offsetBy: min(emittedOffset, text.utf8.count))
        if stopped {
            let ready = String(text[emitted...])
            emitted = text.endIndex
            return (ready, true)
        }
        let heldBack = matchers.map(\.matched).max() ?? 0
        let safeEnd = text.index(text.endIndex, offsetBy: -heldBack, limitedBy: emitted) ?? emitted
        let ready = String(text[emitted..<safeEnd])
        emitted = safeEnd
        return (ready, false)
    }

    /// Flushes what was held back (no stop string came).
    mutating func finish() -> String {
        text += decoder.finish()
        let ready = String(text[emitted...])
        emitted = text.endIndex
        return ready
    }
}
