import Foundation
import Tokenizer

/// One request of a continuous batch, with where its output goes.
public struct BatchedRequest {
    public var request: GenerationRequest
    /// The decoder by name: which drafter the batch gives the sequence (its `makeDrafter` decides).
    public var decoder: String
    /// Called with the slot's drafter before the prompt is processed: per-request drafter settings.
    public var prepare: ((any Drafter)?) throws -> Void
    /// Asked before every step; true ends the generation as `.cancelled` and frees the slot at once.
    public var isCancelled: () -> Bool
    /// Text as soon as it is final (see `Generator.generate`).
    public var onText: (TextPiece) -> Void
    /// The result, or why the request could not run; called exactly once.
    public var onFinished: (Result<GenerationResult, Error>) -> Void

    public init(request: GenerationRequest, decoder: String, prepare: @escaping ((any Drafter)?) throws -> Void = { _ in },
                isCancelled: @escaping () -> Bool = { false }, onText: @escaping (TextPiece) -> Void = { _ in },
                onFinished: @escaping (Result<GenerationResult, Error>) -> Void) {
        self.request = request
        self.decoder = decoder
        self.prepare = prepare
        self.isCancelled = isCancelled
        self.onText = onText
        self.onFinished = onFinished
    }
}

/// Continuous batching: requests join a running batch at the next step and leave it the moment they
/// finish or are cancelled. A step processes up to `prefillChunk` tokens of waiting prompts (oldest
/// first), then one decoding round of every sequence past its prompt, all verified in one forward; so
/// a long prompt delays the others' next tokens by a chunk at a time, never by its whole length.
///
/// Each request gets what it gets alone (`Generator`): prompts give the same bits in chunks as whole,
/// batch rows the same bits as alone, and each sequence has its own sampler and drafter. Greedy
/// sequences draft less when the batch makes drafts dear (`BatchDraftPolicy`), which changes only
/// speed; sampled ones draft as alone, so a seed gives the same samples in any batch.
public final class ContinuousBatch {
    public let decoder: BatchDecoder
    public let tokenizer: Tokenizer
    /// Most prompt tokens processed in one step.
    public let prefillChunk: Int
    /// Caps drafts per sequence when several decode together (nil: drafters decide alone).
    public private(set) var policy: BatchDraftPolicy?

    private struct Running {
        let request: BatchedRequest
        var progress: GenerationProgress
        let admittedAt: ContinuousClock.Instant
        /// Nil while the prompt is being processed.
        var firstTokenAt: ContinuousClock.Instant?
    }

    private var running: [Running?]
    /// Each slot's sampler (its request's, seeded), by slot as `BatchDecoder.next` takes them.
    private var samplers: [Sampler]
    /// Slots whose prompts are being processed, oldest first.
    private var prefilling: [Int] = []
    /// Each slot's drafters by decoder name, made when first needed (a drafter keeps per-sequence state).
    private var drafters: [[String: (any Drafter)?]]
    private let makeDrafter: (String) throws -> (any Drafter)?
    private let clock = ContinuousClock()

    /// `makeDrafter` makes a drafter for a decoder name (nil: plain decoding); it may throw for names
    /// it does not know, which fails that request only.
    public init(decoder: BatchDecoder, tokenizer: Tokenizer, prefillChunk: Int = 64, policy: BatchDraftPolicy? = nil,
                makeDrafter: @escaping (String) throws -> (any Drafter)?) {
        precondition(prefillChunk >= 1)
        self.decoder = decoder
        self.policy = policy
        self.tokenizer = tokenizer
        self.prefillChunk = prefillChunk
        self.makeDrafter = makeDrafter
        running = Array(repeating: nil, count: decoder.slots)
        samplers = Array(repeating: Sampler(options: SamplingOptions()), count: decoder.slots)
        drafters = Array(repeating: [:], count: decoder.slots)
    }

    /// Whether a request can join now.
    public var hasFreeSlot: Bool { running.contains { $0 == nil } }
    /// Sequences in the batch (prompts being processed included).
    public var activeCount: Int { running.count { $0 != nil } }

    /// Starts `request` in a free slot (there must be one): the one whose cache already holds the
    /// longest start of its prompt (a conversation's earlier turns), so that only the rest is
    /// processed. A request that cannot run (an unknown decoder, bad settings, a prompt too long for
    /// the context) hears why at once.
    public func admit(_ request: BatchedRequest) {
        let free = running.indices.filter { running[$0] == nil }
        precondition(!free.isEmpty, "no free slot")
        let slot = free.max { a, b in reusable(request, slot: a) < reusable(request, slot: b) }!
        var progress = GenerationProgress(tokenizer: tokenizer, decoder: request.decoder,
                                          promptTokens: request.request.prompt.count, options: request.request.options)
        if progress.isFinished {
            _ = progress.finish()
            request.onFinished(.success(progress.result))
            return
        }
        do {
            let drafter = try drafter(request.decoder, slot: slot)
            try request.prepare(drafter)
            try decoder.begin(slot: slot, prompt: request.request.prompt, drafter: drafter)
        } catch {
            request.onFinished(.failure(error))
            return
        }
        samplers[slot] = Sampler(options: request.request.options.sampling)
        running[slot] = Running(request: request, progress: progress,
                                admittedAt: clock.now)
        prefilling.append(slot)
    }

    /// Makes every slot's drafter for decoder `name` now rather than at its first request (a Kangaroo
    /// drafter takes a few tenths of a second to set up its draft head).
    public func prepareDrafters(for name: String) throws {
        for slot in drafters.indices { _ = try drafter(name, slot: slot) }
    }

    /// Prompt tokens slot `slot` would keep for `request` (with the drafter it has for its decoder).
    private func reusable(_ request: BatchedRequest, slot: Int) -> Int {
        guard let made = drafters[slot][request.decoder] else { return 0 }
        return decoder.reusablePromptTokens(slot: slot, prompt: request.request.prompt, drafter: made)
    }

    private func drafter(_ name: String, slot: Int) throws -> (any Drafter)? {
        if let made = drafters[slot][name] { return made }
        let made = try makeDrafter(name)
        drafters[slot][name] = .some(made)
        return made
    }

    /// What a step did.
    public struct Step: Sendable {
        /// Prompt tokens processed.
        public var promptTokens = 0
        /// Sequences in the decoding forward.
        public var decodedSequences = 0
        /// Drafts each of them could verify at most (nil: as many as their drafters chose).
        public var draftCap: Int?
    }

    /// One step: cancelled sequences leave, a chunk of the oldest prompt is processed, and every
    /// sequence past its prompt decodes one round. A failing forward fails the requests in it.
    @discardableResult
    public func step() -> Step {
        var step = Step()
        for slot in running.indices where running[slot]?.request.isCancelled() == true {
            running[slot]!.progress.stop(.cancelled)
            finish(slot)
        }
        // Up to `prefillChunk` prompt tokens, oldest prompts first.
        for slot in prefilling where step.promptTokens < prefillChunk {
            let chunk = min(prefillChunk - step.promptTokens, decoder.promptTokensLeft(slot: slot))
            step.promptTokens += chunk
            do {
                if let first = try decoder.prefill(slot: slot, limit: chunk, sampler: &samplers[slot]) {
                    prefilling.removeAll { $0 == slot }
                    let now = clock.now
                    running[slot]!.firstTokenAt = now
                    running[slot]!.progress.result.prefillSeconds = (now - running[slot]!.admittedAt).seconds
                    running[slot]!.progress.result.cachedPromptTokens = decoder.cachedPromptTokens(slot: slot)
                    consume(first, slot: slot)
                }
            } catch {
                fail(slot, error)
            }
        }
        let decoding = running.indices.filter { running[$0]?.firstTokenAt != nil }
        guard !decoding.isEmpty else { return step }
        step.decodedSequences = decoding.count
        let context = decoding.reduce(0) { $0 + decoder.committedLength(slot: $1) } / decoding.count
        step.draftCap = policy?.cap(sequences: decoding.count, context: context)
        // Only greedy sequences are capped: a sampled one draws its drafts and acceptances from its
        // seeded generator, so it drafts as it would alone to give the same samples whatever the batch.
        let cappedLimit = step.draftCap.map { $0 + 1 } ?? Int.max
        let limits = decoding.map { slot in
            min(running[slot]!.progress.tokensWanted, samplers[slot].options.isGreedy ? cappedLimit : Int.max)
        }
        do {
            let rounds = try decoder.next(slots: decoding, limits: limits, samplers: &samplers)
            for (slot, round) in zip(decoding, rounds) {
                if decoder.drafts(slot: slot), let maxDraft = policy?.maxDraft {
                    policy!.record(cap: step.draftCap ?? maxDraft, nodes: round.nodes, accepted: round.drafted)
                }
                consume(round, slot: slot)
            }
        } catch {
            for slot in decoding { fail(slot, error) }
        }
        return step
    }

    /// Takes a round's tokens into slot `slot`'s generation and ends it if a stop condition or the
    /// context says so.
    private func consume(_ round: DecodedRound, slot: Int) {
        let request = running[slot]!.request
        running[slot]!.progress.consume(round).forEach(request.onText)
        if !running[slot]!.progress.isFinished {
            running[slot]!.progress.checkRoom(committed: decoder.committedLength(slot: slot), capacity: decoder.contextCapacity)
        }
        if running[slot]!.progress.isFinished { finish(slot) }
    }

    private func finish(_ slot: Int) {
        guard var entry = running[slot] else { return }
        running[slot] = nil
        prefilling.removeAll { $0 == slot }
        let rest = entry.progress.finish()
        if !rest.isEmpty { entry.request.onText(TextPiece(text: rest, drafted: false)) }
        if let firstTokenAt = entry.firstTokenAt {
            entry.progress.result.decodeSeconds = (clock.now - firstTokenAt).seconds
            entry.progress.result.speculative = decoder.speculativeStatistics(slot: slot)
        }
        entry.request.onFinished(.success(entry.progress.result))
    }

    private func fail(_ slot: Int, _ error: Error) {
        guard let entry = running[slot] else { return }
        running[slot] = nil
        prefilling.removeAll { $0 == slot }
        entry.request.onFinished(.failure(error))
    }
}
