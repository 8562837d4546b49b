import Decoding
import Tokenizer
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// The OpenAI-compatible HTTP API over a `GenerationService`.
public struct OpenAIServer: Sendable {
    public let service: GenerationService
    /// The model id clients must name.
    public let modelID: String
    public let maxBodyBytes: Int

    /// A connection that sends no complete request part (a header left unfinished, as a slow-loris
    /// client does) for this long is closed, and so is one whose request, head to end, takes longer to
    /// arrive (a body trickled in); a request being answered is never cut.
    public let idleTimeout: Duration

    public init(service: GenerationService, modelID: String, maxBodyBytes: Int = 1 << 20, idleTimeout: Duration = .seconds(30)) {
        self.idleTimeout = idleTimeout
        self.service = service
        self.modelID = modelID
        self.maxBodyBytes = maxBodyBytes
    }

    /// Serves until SIGINT or SIGTERM; then in-flight generations are cancelled and the server stops.
    public func run(host: String, port: Int, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        var logger = Logger(label: "kangaroo.server")
        logger.logLevel = .notice
        let (seconds, attoseconds) = idleTimeout.components
        let timeout = TimeAmount.nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        let app = Application(router: router(),
                              server: .http1(configuration: .init(additionalChannelHandlers: [HTTP1ConnectionInstaller(requestTimeout: timeout)],
                                                                  idleTimeout: timeout)),
                              configuration: .init(address: .hostname(host, port: port), serverName: "kangaroo"),
                              services: [ShutdownCanceller(service: service)],
                              onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) },
                              logger: logger)
        try await app.runService()
    }

    /// The chat page at `/`: one static file that talks to `/v1/chat/completions`.
    static let chatPage: Data? = Bundle.module.url(forResource: "chat", withExtension: "html", subdirectory: "Page")
        .flatMap { try? Data(contentsOf: $0) }

    func router() -> Router<ServerRequestContext> {
        let router = Router(context: ServerRequestContext.self)
        router.get("/") { _, _ in
            guard let page = Self.chatPage else { throw APIError(.notFound, "the chat page is missing from this build") }
            return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                            body: ResponseBody(byteBuffer: ByteBuffer(data: page)))
        }
        router.get("/health") { _, _ in JSONResponse.make(["status": "ok"]) }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: service.metrics.prometheusText)))
        }
        router.get("/v1/models") { _, _ in
            JSONResponse.make(["object": "list", "data": [["id": modelID, "object": "model", "created": 0, "owned_by": "kangaroo"]]])
        }
        router.post("/v1/completions") { request, context in await handle(request, chat: false, channel: context.channel) }
        router.post("/v1/chat/completions") { request, context in await handle(request, chat: true, channel: context.channel) }
        return router
    }

    private func handle(_ request: Request, chat: Bool, channel: any Channel) async -> Response {
        let endpoint = chat ? "chat_completions" : "completions"
        let response: Response
        do {
            response = try await respond(request, chat: chat, channel: channel)
        } catch let error as APIError {
            response = error.response
        } catch {
            response = APIError(.internalServerError, "\(error)", type: "server_error").response
        }
        service.metrics.request(endpoint: endpoint, status: response.status.code)
        return response
    }

    private func respond(_ request: Request, chat: Bool, channel: any Channel) async throws -> Response {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > maxBodyBytes {
            throw APIError(.contentTooLarge, "the request body exceeds \(maxBodyBytes) bytes")
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: maxBodyBytes)
        } catch {
            throw APIError(.contentTooLarge, "the request body exceeds \(maxBodyBytes) bytes")
        }
        let parsed = try OpenAIRequest.parse(Data(buffer: body), chat: chat, maxTokensLimit: service.context)
        guard parsed.model == modelID else {
            throw APIError(.notFound, "the model '\(parsed.model)' does not exist; this server has '\(modelID)'",
                           param: "model", code: "model_not_found")
        }
        let prompt = try await service.tokenize(parsed)
        let (events, job) = try service.submit(parsed, prompt: prompt)
        let id = (chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let created = Int(Date().timeIntervalSince1970)
        let format = ResponseFormat(chat: chat, id: id, created: created, model: modelID, request: parsed, tokenizer: service.tokenizer)

        if !parsed.stream {
            // A client that goes away closes the connection: its generation stops too.
            channel.closeFuture.whenComplete { _ in job.cancel() }
            var final: (GenerationResult, Int)?
            do {
                for try await event in events {
                    if case let .finished(result, promptTokens) = event { final = (result, promptTokens) }
                }
            } catch {
                throw APIError(.internalServerError, "generation failed: \(error)", type: "server_error")
            }
            guard let (result, promptTokens) = final else { throw APIError(.internalServerError, "generation ended early", type: "server_error") }
            return JSONResponse.make(format.complete(result, promptTokens: promptTokens))
        }

        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                        body: ResponseBody { writer in
            do {
                if chat { try await writer.write(format.sse(format.chunk(role: true))) }
                var iterator = events.makeAsyncIterator()
                while true {
                    let event: GenerationService.Event?
                    do {
                        event = try await iterator.next()
                    } catch {
                        // Generation failed: the client hears why, and the stream still ends properly.
                        try await writer.write(format.sse(["error": ["message": "generation failed: \(error)", "type": "server_error"]]))
                        break
                    }
                    guard let event else { break }
                    switch event {
                    case let .text(piece):
                        try await writer.write(format.sse(format.chunk(piece)))
                    case let .finished(result, promptTokens):
                        try await writer.write(format.sse(format.finalChunk(result, promptTokens: promptTokens)))
                    }
                }
                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            } catch {
                // The client went away: stop generating at once.
                job.cancel()
            }
            try? await writer.finish(nil)
        })
    }
}

/// Cancels in-flight generations when a graceful shutdown begins, so the server stops promptly.
struct ShutdownCanceller: Service {
    let service: GenerationService

    func run() async throws {
        try? await gracefulShutdown()
        service.cancelAll()
    }
}

/// Builds OpenAI's response objects for one request.
struct ResponseFormat {
    let chat: Bool
    let id: String
    let created: Int
    let model: String
    let request: OpenAIRequest
    let tokenizer: Tokenizer

    func sse(_ object: [String: Any]) -> ByteBuffer {
        ByteBuffer(string: "data: " + String(decoding: JSONResponse.data(object), as: UTF8.self) + "\n\n")
    }

    func finishReason(_ result: GenerationResult) -> String {
        switch result.stopReason {
        case .eos, .stop, .cancelled: "stop"
        case .length, .context: "length"
        }
    }

    func usage(_ result: GenerationResult, promptTokens: Int) -> [String: Any] {
        ["prompt_tokens": promptTokens, "completion_tokens": result.tokens.count, "total_tokens": promptTokens + result.tokens.count,
         "prompt_tokens_details": ["cached_tokens": result.cachedPromptTokens]]
    }

    func statistics(_ result: GenerationResult) -> [String: Any] {
        var out: [String: Any] = ["decoder": result.decoder, "lossless": result.lossless, "tokens_per_second": result.decodeTokensPerSecond,
                                  "prefill_ms": result.prefillSeconds * 1000, "decode_ms": result.decodeSeconds * 1000]
        if let s = result.speculative {
            out["rounds"] = s.rounds
            out["mean_accepted_tokens"] = s.meanAcceptedTokens
            out["accepted_length_histogram"] = s.acceptedLengthHistogram
            out["copied_drafts"] = s.copiedDrafts
        }
        return out
    }

    func tokenText(_ id: Int32) -> String { String(decoding: tokenizer.bytes(of: id), as: UTF8.self) }

    func logprobs(_ result: GenerationResult) -> Any {
        guard let wanted = request.logprobs, !result.logprobs.isEmpty else { return NSNull() }
        if chat {
            return ["content": result.logprobs.map { entry -> [String: Any] in
                ["token": tokenText(entry.token.id), "logprob": entry.token.logprob, "bytes": tokenizer.bytes(of: entry.token.id).map(Int.init),
                 "top_logprobs": entry.top.prefix(wanted).map { ["token": tokenText($0.id), "logprob": $0.logprob, "bytes": tokenizer.bytes(of: $0.id).map(Int.init)] }]
            }]
        }
        var offsets: [Int] = [], offset = 0
        for entry in result.logprobs {
            offsets.append(offset)
            offset += tokenText(entry.token.id).count
        }
        return ["tokens": result.logprobs.map { tokenText($0.token.id) },
                "token_logprobs": result.logprobs.map { $0.token.logprob },
                "top_logprobs": result.logprobs.map { entry in
                    Dictionary(entry.top.prefix(wanted).map { (tokenText($0.id), $0.logprob) }, uniquingKeysWith: { a, _ in a })
                },
                "text_offset": offsets]
    }

    func complete(_ result: GenerationResult, promptTokens: Int) -> [String: Any] {
        var choice: [String: Any] = ["index": 0, "finish_reason": finishReason(result), "logprobs": logprobs(result)]
        if chat {
            choice["message"] = ["role": "assistant", "content": result.text]
        } else {
            choice["text"] = result.text
        }
        return ["id": id, "object": chat ? "chat.completion" : "text_completion", "created": created, "model": model,
                "choices": [choice], "usage": usage(result, promptTokens: promptTokens), "kangaroo": statistics(result)]
    }

    /// A streamed piece of text; `kangaroo.drafted` says whether it came from accepted drafts.
    func chunk(_ piece: TextPiece) -> [String: Any] {
        var object = chunk(text: piece.text)
        object["kangaroo"] = ["drafted": piece.drafted]
        return object
    }

    func chunk(text: String? = nil, role: Bool = false) -> [String: Any] {
        var choice: [String: Any] = ["index": 0, "finish_reason": NSNull()]
        if chat {
            var delta: [String: Any] = [:]
            if role { delta["role"] = "assistant" }
            if let text { delta["content"] = text }
            choice["delta"] = delta
        } else {
            choice["text"] = text ?? ""
        }
        return ["id": id, "object": chat ? "chat.completion.chunk" : "text_completion", "created": created, "model": model,
                "choices": [choice]]
    }

    func finalChunk(_ result: GenerationResult, promptTokens: Int) -> [String: Any] {
        var object = chunk()
        var choice = (object["choices"] as! [[String: Any]])[0]
        choice["finish_reason"] = finishReason(result)
        if chat { choice["delta"] = [String: Any]() }
        object["choices"] = [choice]
        object["usage"] = usage(result, promptTokens: promptTokens)
        object["kangaroo"] = statistics(result)
        return object
    }
}

/// The request context of this server: Hummingbird's basics and the connection, whose closing
/// cancels a request still being generated.
struct ServerRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}
