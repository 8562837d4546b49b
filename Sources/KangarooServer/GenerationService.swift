import Adapter
import Decoding
import Foundation
import Llama
import Synchronization
import Tokenizer

/// Runs generations one model pass at a time on a dedicated thread, with a bounded queue.
///
/// Requests wait their turn (at most `queueLimit` waiting besides the running one; beyond that they
/// are refused and answered 503). A request whose client goes away is cancelled: if queued it is
/// skipped, if running it stops before its next decoding round, freeing the model at once.
public final class GenerationService: @unchecked Sendable {
    /// What a running generation reports.
    enum Event: Sendable {
        case text(TextPiece)
        case finished(GenerationResult, promptTokens: Int)
    }

    /// A queued or running request; `cancel()` may be called from any thread.
    final class Job: @unchecked Sendable {
        let request: OpenAIRequest
        let continuation: AsyncThrowingStream<Event, Error>.Continuation
        private let cancelled = Atomic<Bool>(false)

        init(request: OpenAIRequest, continuation: AsyncThrowingStream<Event, Error>.Continuation) {
            self.request = request
            self.continuation = continuation
        }

        func cancel() { cancelled.store(true, ordering: .relaxed) }
        var isCancelled: Bool { cancelled.load(ordering: .relaxed) }
    }

    let model: LlamaModel
    let tokenizer: Tokenizer
    let template: ChatTemplate?
    let context: Int
    let queueLimit: Int
    public let metrics = ServerMetrics()
    /// One decoder of each kind (Kangaroo only with an adapter), and each kind's settings.
    private let decoders: [DecoderKind: SpeculativeDecoder]
    private let defaults: [DecoderKind: SpeculativeOptions]
    private let worker = DispatchQueue(label: "kangaroo.generation")
    private let tokenizing = DispatchQueue(label: "kangaroo.tokenizing")
    private let jobs = Mutex<(waiting: Int, active: [ObjectIdentifier: Job])>((0, [:]))

    /// Used when a request names no decoder.
    let defaultDecoder: DecoderKind

    /// `options` gives each decoder kind its settings (requests may change η, γ and the copy n-gram);
    /// `template` the chat format (default: the one the model's template is recognised as, if any).
    public init(model: LlamaModel, tokenizer: Tokenizer, adapter: KangarooAdapter?,
                options: (DecoderKind) -> SpeculativeOptions = { $0.defaultOptions },
                context: Int, queueLimit: Int, defaultDecoder: DecoderKind = .plain, template: ChatTemplate? = nil) throws {
        self.defaultDecoder = defaultDecoder
        self.model = model
        self.tokenizer = tokenizer
        self.template = template ?? (try? ChatTemplate(template: try model.gguf.optionalString("tokenizer.chat_template")))
        self.context = context
        self.queueLimit = queueLimit
        var decoders: [DecoderKind: SpeculativeDecoder] = [:], defaults: [DecoderKind: SpeculativeOptions] = [:]
        for kind in DecoderKind.allCases where kind != .kangaroo || adapter != nil {
            defaults[kind] = options(kind)
            decoders[kind] = try DecoderCatalog.make(kind, model: model, options: options(kind), adapter: adapter,
                                                     contextCapacity: context)
        }
        self.decoders = decoders
        self.defaults = defaults
    }

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
        let job = Job(request: request, continuation: continuation)
        let accepted = jobs.withLock { state in
            guard state.waiting <= queueLimit else { return false }
            state.waiting += 1
            state.active[ObjectIdentifier(job)] = job
            return true
        }
        guard accepted else {
            metrics.rejected()
            throw APIError(.serviceUnavailable, "the server is busy; retry shortly", type: "server_error", code: "queue_full")
        }
        continuation.onTermination = { _ in job.cancel() }
        worker.async { self.run(job, prompt: prompt) }
        return (stream, job)
    }

    /// Cancels everything queued or running (graceful shutdown).
    public func cancelAll() {
        jobs.withLock { state in state.active.values.forEach { $0.cancel() } }
    }

    private func run(_ job: Job, prompt: [Int32]) {
        defer {
            jobs.withLock { state in
                state.waiting -= 1
                state.active[ObjectIdentifier(job)] = nil
            }
        }
        guard !job.isCancelled else {
            job.continuation.finish(throwing: CancellationError())
            return
        }
        do {
            let request = job.request
            let decoder = try decoder(for: request)
            let options = GenerationOptions(maxTokens: min(request.maxTokens, context - prompt.count - 1),
                                            sampling: request.sampling, stopStrings: request.stop,
                                            logprobs: request.logprobs.map { max($0, 1) } ?? 0)
            let result = try Generator(tokenizer: tokenizer).generate(
                prompt: prompt, decoder: decoder, options: options, shouldStop: { job.isCancelled }) { piece in
                job.continuation.yield(.text(piece))
            }
            metrics.record(result)
            job.continuation.yield(.finished(result, promptTokens: prompt.count))
            job.continuation.finish()
        } catch {
            job.continuation.finish(throwing: error)
        }
    }

    /// The decoder a request asked for (Kangaroo without an adapter: plain), with its settings.
    private func decoder(for request: OpenAIRequest) throws -> Decoder {
        let kind = request.decoder.flatMap(DecoderKind.init(rawValue:)) ?? defaultDecoder
        guard let decoder = decoders[kind], let defaults = defaults[kind] else { return decoders[.plain]! }
        guard let drafter = decoder.drafter as? ConfigurableDrafter else { return decoder }
        do {
            try drafter.configure(threshold: request.threshold ?? defaults.threshold, maxDraft: request.maxDraft ?? defaults.maxDraft,
                                  copyNgram: request.copyNgram ?? defaults.copyNgram)
        } catch {
            throw APIError.invalid("'kangaroo' settings do not suit the \(kind.rawValue) decoder: \(error)", param: "kangaroo")
        }
        return decoder
    }
}

/// Counters for `GET /metrics` (Prometheus text format).
public final class ServerMetrics: @unchecked Sendable {
    private struct Counts {
        var requests: [String: Int] = [:]
        var rejected = 0
        var promptTokens = 0
        var generatedTokens = 0
        var decodeSeconds = 0.0
        var rounds = 0
        var committedInRounds = 0
        var cancelled = 0
    }

    private let counts = Mutex(Counts())

    func request(endpoint: String, status: Int) {
        counts.withLock { $0.requests["endpoint=\"\(endpoint)\",status=\"\(status)\"", default: 0] += 1 }
    }

    func rejected() { counts.withLock { $0.rejected += 1 } }

    func record(_ result: GenerationResult) {
        counts.withLock { c in
            c.promptTokens += result.promptTokens
            c.generatedTokens += result.tokens.count
            c.decodeSeconds += result.prefillSeconds + result.decodeSeconds
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
            out += "# HELP kangaroo_tokens_per_second Generated tokens over generation time (prefill included).\n# TYPE kangaroo_tokens_per_second gauge\n"
            out += "kangaroo_tokens_per_second \(c.decodeSeconds > 0 ? Double(c.generatedTokens) / c.decodeSeconds : 0)\n"
            out += "# HELP kangaroo_mean_accepted_tokens Tokens committed per speculative round (with the full model's token).\n# TYPE kangaroo_mean_accepted_tokens gauge\n"
            out += "kangaroo_mean_accepted_tokens \(c.rounds > 0 ? Double(c.committedInRounds) / Double(c.rounds) : 0)\n"
            return out
        }
    }
}
