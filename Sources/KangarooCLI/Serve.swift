import Adapter
import ArgumentParser
import Decoding
import Foundation
import KangarooServer

/// `kangaroo serve`: the OpenAI-compatible HTTP server.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the model over an OpenAI-compatible HTTP API (completions and chat completions, with streaming).",
        discussion: """
        Endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (stream: true gives \
        server-sent events ending with data: [DONE]), GET /health, GET /metrics (Prometheus). Requests \
        may carry "kangaroo": {"decoder": "plain|kangaroo|layerskip|lookup|redrafter|specdec", "threshold": 0.6, "max_draft": 3, \
        "copy_ngram": 2}; \
        responses report acceptance statistics under "kangaroo". Up to --parallel requests decode together \
        in one batch (continuous batching: a request joins at the next step, its prompt processed \
        --prefill-chunk tokens at a time between the others' rounds, and leaves as soon as it ends), each \
        with its own decoder and drafts, and each gets exactly the output it gets alone. Beyond them up to \
        --queue requests wait; more are answered 503 with Retry-After. SIGINT/SIGTERM cancel running \
        generations and stop the server.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var speculative: SpeculativeSettings

    @Option(help: "Decoder for requests that do not choose one in \"kangaroo\": {\"decoder\": …}. Default: kangaroo when an adapter fits the model, else lookup.")
    var decoder: DecoderKind?

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0: any free port; the chosen one is printed).")
    var port = 8080

    @Option(help: "Context length in tokens, of each sequence.")
    var context = 4096

    @Option(help: "Requests decoded at once, in one batch (each holds a key-value cache of --context positions).")
    var parallel = 4

    @Option(help: "Most prompt tokens processed between two decoding rounds of the others: smaller keeps their tokens flowing while a long prompt arrives, larger processes prompts faster.")
    var prefillChunk = 64

    @Option(help: "Requests that may wait while --parallel generate; more get 503.")
    var queue = 16

    @Option(help: "Largest request body in bytes.")
    var maxBody = 1 << 20

    @Option(help: "Seconds after which a connection that sends no complete request part, or whose request (head to end) has not arrived whole, is closed (a request being answered is never cut).")
    var idleTimeout: Double = 30

    @Option(help: "Model id that clients name (default: the file name without extension).")
    var modelID: String?

    func validate() throws {
        guard context >= 2 else { throw ValidationError("--context must be at least 2") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535") }
        guard queue >= 0 else { throw ValidationError("--queue must not be negative") }
        guard (1...256).contains(parallel) else { throw ValidationError("--parallel must be between 1 and 256") }
        guard prefillChunk >= 1 else { throw ValidationError("--prefill-chunk must be at least 1") }
        guard maxBody >= 1 else { throw ValidationError("--max-body must be at least 1 byte") }
        guard idleTimeout > 0, idleTimeout <= 86_400 else { throw ValidationError("--idle-timeout must be above 0 and at most 86400 seconds") }
    }

    func run() async throws {
        let (model, tokenizer) = try modelOptions.load()
        // The default decoder, and the adapter for requests that ask for Kangaroo: the one that fits,
        // or (when Kangaroo is the default by request) an untrained copy.
        let (kind, automaticAdapter) = try decoder.map { ($0, nil) } ?? speculative.automaticDecoder(for: model)
        let adapter = try automaticAdapter
            ?? (kind == .kangaroo ? speculative.resolveAdapter(for: model)
                : speculative.adapter.map { try KangarooAdapter.load(from: $0, for: model) } ?? KangarooAdapter.shipped(for: model))
        let speculative = speculative
        let service = try GenerationService(
            model: model, tokenizer: tokenizer, adapter: adapter,
            redrafterHead: try speculative.loadRedrafterHead(for: model) ?? RecurrentDraftHead.shipped(for: model),
            blockDrafter: try speculative.loadBlockDrafter(for: model)
                ?? KangarooAdapter.shipped(for: model, name: KangarooAdapter.blockDrafterName),
            options: { speculative.options(for: $0) },
            context: min(context, model.config.contextLength), parallel: parallel, prefillChunk: prefillChunk,
            queueLimit: queue, defaultDecoder: kind,
            template: try? modelOptions.template(for: model.gguf))
        let id = modelID ?? URL(fileURLWithPath: model.gguf.path).deletingPathExtension().lastPathComponent
        let server = OpenAIServer(service: service, modelID: id, maxBodyBytes: maxBody, idleTimeout: .milliseconds(Int(idleTimeout * 1000)))
        try await server.run(host: host, port: port) { port in
            FileHandle.standardError.write(Data("""
                kangaroo serving \(id) on http://\(host):\(port)
                \(parallel) sequences at once, \(service.context) positions each (key-value caches: \(service.cacheBytes >> 20) MiB), \
                \(queue) more may wait; default decoder \(kind.rawValue)

                """.utf8))
        }
    }
}
