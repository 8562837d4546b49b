import Adapter
import Decoding
import Foundation
import Llama
import Synchronization
import Tokenizer

/// Runs every request in one continuous batch (`ContinuousBatch`) on a dedicated thread: up to
/// `parallel` sequences decode together, each with its own decoder and settings, and a request joins
/// at the next step and leaves the moment it finishes.
///
/// Beyond the batch at most `queueLimit` requests wait their turn; more are refused and answered 503.
/// A request whose client goes away is cancelled: if waiting it is skipped, if running it leaves the
/// batch before its next step, freeing its slot at once.
public final class GenerationService: @unchecked Sendable {
    /// What a running generation reports.
    enum Event: Sendable {
        case text(TextPiece)
        case finished(GenerationResult, promptTokens: Int)
    }

    /// A waiting or running request; `cancel()` may be called from any thread.
    final class Job: @unchecked Sendable {
        let request: OpenAIRequest
        let prompt: [Int32]
        let continuation: AsyncThrowingStream<Event, Error>.Continuation
        let submittedAt = ContinuousClock.now
        private let cancelled = Atomic<Bool>(false)

        init(request: OpenAIRequest, prompt: [Int32], continuation: AsyncThrowingStream<Event, Error>.Continuation) {
            self.request = request
            self.prompt = prompt
            self.continuation = continuation
        }

        func cancel() { cancelled.store(true, ordering: .relaxed) }
        var isCancelled: Bool { cancelled.load(ordering: .relaxed) }
    }

    let model: LlamaModel
    let tokenizer: Tokenizer
    let template: ChatTemplate?
    /// Positions each sequence's context holds.
    public let context: Int
    let queueLimit: Int
    /// Sequences decoded at once.
    public let parallel: Int
    public let metrics: ServerMetrics
    /// Touched only by the scheduler thread.
    private let batch: ContinuousBatch
    /// Each decoder kind's settings, which requests may change (η, γ, the copy n-gram).
    private let defaults: [DecoderKind: SpeculativeOptions]
    private let hasAdapter: Bool
    private let hasRedrafterHead: Bool
    private let hasBlockDrafter: Bool
    private let tokenizing = DispatchQueue(label: "kangaroo.tokenizing")
    /// Requests not yet in the batch, oldest first, and every request not finished (to cancel them all).
    private let jobs = Mutex<(waiting: [Job], active: [ObjectIdentifier: Job])>(([], [:]))
    private let arrivals = NSCondition()

    /// Used when a request names no decoder.
    let defaultDecoder: DecoderKind

    /// `options` gives each decoder kind its settings; `template` the chat format (default: the one the
    /// model's template is recognised as, if any). The scheduler thread starts at once.
    public init(model: LlamaModel, tokenizer: Tokenizer, adapter: KangarooAdapter?, redrafterHead: RecurrentDraftHead? = nil,
                blockDrafter: KangarooAdapter? = nil,
                options: @escaping (DecoderKind) -> SpeculativeOptions = { $0.defaultOptions },
                context: Int, parallel: Int = 4, prefillChunk: Int = 64, queueLimit: Int, defaultDecoder: DecoderKind = .plain,
                template: ChatTemplate? = nil) throws {
        self.defaultDecoder = defaultDecoder
        self.model = model
        self.tokenizer = tokenizer
        self.template = template ?? (try? ChatTemplate(template: try model.gguf.optionalString("tokenizer.chat_template")))
        self.context = context
        self.queueLimit = queueLimit
        self.parallel = parallel
        hasAdapter = adapter != nil
        hasRedrafterHead = redrafterHead != nil
        hasBlockDrafter = blockDrafter != nil
        defaults = Dictionary(uniqueKeysWithValues: DecoderKind.allCases.map { ($0, options($0)) })
        batch = try DecoderCatalog.makeBatch(model: model, tokenizer: tokenizer, slots: parallel, options: options,
                                             adapter: adapter, redrafterHead: redrafterHead, blockDrafter: blockDrafter,
                                             contextCapacity: context,
                                             prefillChunk: prefillChunk)
        metrics = ServerMetrics(slots: parallel)
        // Requests that name no decoder find theirs ready in every slot.
        try batch.prepareDrafters(for: available(defaultDecoder).rawValue)
        let thread = Thread { [unowned self] in self.schedule() }
        thread.name = "kangaroo.scheduler"
        thread.stackSize = 16 << 20
        thread.start()
    }

    /// Bytes the sequences' key-value caches take.
    public var cacheBytes: Int { model.config.cacheBytes(capacity: context) * parallel }

    /// `promptTokens` on a queue of its own, so that long prompts do not hold the threads that serve
    /// other requests.
    func tokenize(_ request: OpenAIRequest) async throws -> [Int32] {
        try await withCheckedThrowingContinuation { continuation in
            tokenizing.async { continuation.resume(with: Result { try self.promptTokens(request) }) }
        }
    }

    /// Tokenizes the request's prompt, checking it against the context.
    func promptTokens(_ request: OpenAIRequest) throws -> [Int32] {
        let text: String
        switch request.input {
        case let .prompt(prompt): text = prompt
        case let .messages(messages):
            guard let template else { throw APIError.invalid("this model has no chat template; use /v1/completions") }
            text = template.render(messages)
        }
        let tokens = tokenizer.encodePrompt(text)
        guard !tokens.isEmpty else { throw APIError.invalid("the prompt is empty", param: "prompt") }
        guard tokens.count + 1 < context else {
            throw APIError(.badRequest, "the prompt has \(tokens.count) tokens; this server's context holds \(context)",
                           param: "messages", code: "context_length_exceeded")
        }
        return tokens
    }

    /// Queues a request. Throws a 503 when the queue is full; the stream ends when generation does.
    func submit(_ request: OpenAIRequest, prompt: [Int32]) throws -> (AsyncThrowingStream<Event, Error>, Job) {
        let (stream, continuation) = AsyncThrowingStream<Event, Error>.makeStream()
        let job = Job(request: request, prompt: prompt, continuation: continuation)
        let accepted = jobs.withLock { state in
            guard state.active.count < parallel + queueLimit else { return false }
            state.waiting.append(job)
            state.active[ObjectIdentifier(job)] = job
            return true
        }
        guard accepted else {
            metrics.rejected()
            throw APIError(.serviceUnavailable, "the server is busy; retry shortly", type: "server_error", code: "queue_full")
        }
        continuation.onTermination = { _ in job.cancel() }
        arrivals.lock()
        arrivals.signal()
        arrivals.unlock()
        return (stream, job)
    }

    /// Cancels everything waiting or running (graceful shutdown).
    public func cancelAll() {
        jobs.withLock { state in state.active.values.forEach { $0.cancel() } }
    }

    /// The scheduler: admits waiting requests into free slots, then steps the batch; sleeps while
    /// nothing runs.
    private func schedule() {
        while true {
            while batch.hasFreeSlot, let job = nextWaiting() {
                batch.admit(batched(job))
            }
            metrics.slotsInUse(batch.activeCount)
            guard batch.activeCount > 0 else {
                arrivals.lock()
                while jobs.withLock({ $0.waiting.isEmpty }) { arrivals.wait() }
                arrivals.unlock()
                continue
            }
            metrics.step(batch.step())
        }
    }

    /// The oldest waiting request not cancelled (cancelled ones end here).
    private func nextWaiting() -> Job? {
        while let job = jobs.withLock({ $0.waiting.isEmpty ? nil : $0.waiting.removeFirst() }) {
            guard job.isCancelled else { return job }
            end(job, .failure(CancellationError()))
        }
        return nil
    }

    /// Ends a job with its result; `queueSeconds`: how long it waited for the batch.
    private func end(_ job: Job, _ result: Result<GenerationResult, Error>, queueSeconds: Double = 0) {
        jobs.withLock { state in state.active[ObjectIdentifier(job)] = nil }
        switch result {
        case let .success(generation):
            metrics.record(generation, queueSeconds: queueSeconds)
            job.continuation.yield(.finished(generation, promptTokens: job.prompt.count))
            job.continuation.finish()
        case let .failure(error):
            job.continuation.finish(throwing: error)
        }
    }

    /// `kind`, or plain decoding when it needs a trained drafter this server lacks (Kangaroo without
    /// an adapter, ReDrafter without a head, SpecDec without a block drafter).
    private func available(_ kind: DecoderKind) -> DecoderKind {
        switch kind {
        case .kangaroo where !hasAdapter, .redrafter where !hasRedrafterHead, .specdec where !hasBlockDrafter: .plain
        default: kind
        }
    }

    /// The job as a request of the batch, with the decoder it asked for (if available) and its settings.
    private func batched(_ job: Job) -> BatchedRequest {
        let request = job.request
        let kind = available(request.decoder.flatMap(DecoderKind.init(rawValue:)) ?? defaultDecoder)
        let settings = defaults[kind]!
        let options = GenerationOptions(maxTokens: min(request.maxTokens, context - job.prompt.count - 1),
                                        sampling: request.sampling, stopStrings: request.stop,
                                        logprobs: request.logprobs.map { max($0, 1) } ?? 0)
        let queueSeconds = (ContinuousClock.now - job.submittedAt).seconds
        return BatchedRequest(
            request: GenerationRequest(prompt: job.prompt, options: options), decoder: kind.rawValue,
            prepare: { drafter in
                guard let drafter = drafter as? ConfigurableDrafter else { return }
                do {
                    try drafter.configure(threshold: request.threshold ?? settings.threshold, maxDraft: request.maxDraft ?? settings.maxDraft,
                                          copyNgram: request.copyNgram ?? settings.copyNgram)
                } catch {
                    throw APIError.invalid("'kangaroo' settings do not suit the \(kind.rawValue) decoder: \(error)", param: "kangaroo")
                }
            },
            isCancelled: { job.isCancelled },
            onText: { job.continuation.yield(.text($0)) },
            onFinished: { [unowned self] in end(job, $0, queueSeconds: queueSeconds) })
    }
}

/// Counters for `GET /metrics` (Prometheus text format).
public final class ServerMetrics: @unchecked Sendable {
    /// A Prometheus histogram: counts of observations at most each bound, their sum and count.
    struct Histogram {
        let bounds: [Double]
        var counts: [Int]
        var sum = 0.0
        var count = 0

        init(_ bounds: [Double]) {
            self.bounds = bounds
            counts = Array(repeating: 0, count: bounds.count)
        }

        mutating func observe(_ value: Double) {
            for (i, bound) in bounds.enumerated() where value <= bound { counts[i] += 1 }
            sum += value
            count += 1
        }

        func text(_ name: String, help: String) -> String {
            var out = "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
            for (bound, n) in zip(bounds, counts) { out += "\(name)_bucket{le=\"\(bound)\"} \(n)\n" }
            out += "\(name)_bucket{le=\"+Inf\"} \(count)\n\(name)_sum \(sum)\n\(name)_count \(count)\n"
            return out
        }
    }

    private struct Counts {
        var requests: [String: Int] = [:]
        var rejected = 0
        var promptTokens = 0
        var generatedTokens = 0
        var decodeSeconds = 0.0
        var rounds = 0
        var committedInRounds = 0
        var cancelled = 0
        var slotsInUse = 0
        var timeToFirstToken = Histogram([0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30])
        var queueTime = Histogram([0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30])
        var tokensPerSecond = Histogram([5, 10, 20, 50, 100, 200, 500, 1000])
        var sequencesPerForward: Histogram
    }

    /// Sequences the batch holds at most.
    let slots: Int
    private let counts: Mutex<Counts>

    init(slots: Int) {
        self.slots = slots
        counts = Mutex(Counts(sequencesPerForward: Histogram((1...slots).map(Double.init))))
    }

    func request(endpoint: String, status: Int) {
        counts.withLock { $0.requests["endpoint=\"\(endpoint)\",status=\"\(status)\"", default: 0] += 1 }
    }

    func rejected() { counts.withLock { $0.rejected += 1 } }

    func slotsInUse(_ n: Int) { counts.withLock { $0.slotsInUse = n } }

    /// A batch step's decoding forward.
    func step(_ step: ContinuousBatch.Step) {
        guard step.decodedSequences > 0 else { return }
        counts.withLock { $0.sequencesPerForward.observe(Double(step.decodedSequences)) }
    }

    /// A finished generation that waited `queueSeconds` for the batch.
    func record(_ result: GenerationResult, queueSeconds: Double) {
        counts.withLock { c in
            c.promptTokens += result.promptTokens
            c.generatedTokens += result.tokens.count
            c.decodeSeconds += result.prefillSeconds + result.decodeSeconds
            c.queueTime.observe(queueSeconds)
            if !result.tokens.isEmpty { c.timeToFirstToken.observe(queueSeconds + result.prefillSeconds) }
            if result.tokens.count > 1 { c.tokensPerSecond.observe(result.decodeTokensPerSecond) }
            if result.stopReason == .cancelled { c.cancelled += 1 }
            if let s = result.speculative {
                c.rounds += s.rounds
                c.committedInRounds += Int((s.meanAcceptedTokens * Double(s.rounds)).rounded())
            }
        }
    }

    public var prometheusText: String {
        counts.withLock { c in
            var out = "# HELP kangaroo_requests_total HTTP requests by endpoint and status.\n# TYPE kangaroo_requests_total counter\n"
            for (labels, n) in c.requests.sorted(by: { $0.key < $1.key }) { out += "kangaroo_requests_total{\(labels)} \(n)\n" }
            out += "# HELP kangaroo_rejected_total Requests refused because the queue was full.\n# TYPE kangaroo_rejected_total counter\nkangaroo_rejected_total \(c.rejected)\n"
            out += "# HELP kangaroo_cancelled_total Generations stopped because their client went away (or the server stopped).\n# TYPE kangaroo_cancelled_total counter\nkangaroo_cancelled_total \(c.cancelled)\n"
            out += "# TYPE kangaroo_prompt_tokens_total counter\nkangaroo_prompt_tokens_total \(c.promptTokens)\n"
            out += "# TYPE kangaroo_generated_tokens_total counter\nkangaroo_generated_tokens_total \(c.generatedTokens)\n"
            out += "# HELP kangaroo_tokens_per_second Generated tokens over generation time (prefill included), all requests.\n# TYPE kangaroo_tokens_per_second gauge\n"
            out += "kangaroo_tokens_per_second \(c.decodeSeconds > 0 ? Double(c.generatedTokens) / c.decodeSeconds : 0)\n"
            out += "# HELP kangaroo_mean_accepted_tokens Tokens committed per speculative round (with the full model's token).\n# TYPE kangaroo_mean_accepted_tokens gauge\n"
            out += "kangaroo_mean_accepted_tokens \(c.rounds > 0 ? Double(c.committedInRounds) / Double(c.rounds) : 0)\n"
            out += "# HELP kangaroo_cache_slots Sequences the batch holds at once (each with its key-value cache).\n# TYPE kangaroo_cache_slots gauge\nkangaroo_cache_slots \(slots)\n"
            out += "# HELP kangaroo_cache_slots_in_use Sequences in the batch now.\n# TYPE kangaroo_cache_slots_in_use gauge\nkangaroo_cache_slots_in_use \(c.slotsInUse)\n"
            out += c.timeToFirstToken.text("kangaroo_time_to_first_token_seconds", help: "From a request's arrival to its first token (queue and prompt).")
            out += c.queueTime.text("kangaroo_queue_seconds", help: "Time requests waited for a slot in the batch.")
            out += c.tokensPerSecond.text("kangaroo_request_tokens_per_second", help: "Each request's decode speed (tokens after its first over their time).")
            out += c.sequencesPerForward.text("kangaroo_sequences_per_forward", help: "Sequences decoded together in each verification forward.")
            return out
        }
    }
}
