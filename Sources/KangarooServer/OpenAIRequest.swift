import Adapter
import Decoding
import Foundation
import Tokenizer

/// A validated completion or chat-completion request.
struct OpenAIRequest: Sendable {
    enum Input: Sendable {
        case prompt(String)
        case messages([ChatMessage])
    }

    var model: String
    var input: Input
    var maxTokens: Int
    var sampling: SamplingOptions
    var stop: [String]
    var stream: Bool
    /// Completions: top-N log-probabilities per token (0: none). Chat: `top_logprobs` when `logprobs` is true.
    var logprobs: Int?
    /// nil: the server's default.
    var decoder: String?
    var threshold: Float?
    var maxDraft: Int?
    var copyNgram: Int?

    /// Parses and checks a request body. Every problem is a 400 naming the parameter.
    static func parse(_ body: Data, chat: Bool, maxTokensLimit: Int) throws -> OpenAIRequest {
        guard String(data: body, encoding: .utf8) != nil,
              body.withUnsafeBytes({ String(validating: $0, as: UTF8.self) }) != nil else {
            throw APIError.invalid("the request body is not valid UTF-8")
        }
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: body)
        } catch {
            throw APIError.invalid("the request body is not valid JSON")
        }
        guard case let .object(json) = value else { throw APIError.invalid("the request body must be a JSON object") }
        let fields = Fields(json)

        let model = try fields.string("model", required: true)!
        let input: Input
        if chat {
            guard let raw = json["messages"] else { throw APIError.invalid("'messages' is required", param: "messages") }
            guard case let .array(list) = raw, !list.isEmpty else {
                throw APIError.invalid("'messages' must be a non-empty array", param: "messages")
            }
            input = .messages(try list.enumerated().map { index, item in
                guard case let .object(message) = item, let roleName = message["role"]?.string,
                      let role = ChatMessage.Role(rawValue: roleName) else {
                    throw APIError.invalid("messages[\(index)] needs a 'role' of system, user or assistant", param: "messages")
                }
                guard let content = message["content"]?.string else {
                    throw APIError.invalid("messages[\(index)].content must be a string", param: "messages")
                }
                return ChatMessage(role: role, content: content)
            })
        } else {
            switch json["prompt"] {
            case let .string(text): input = .prompt(text)
            case let .array(list) where list.count == 1 && list[0].string != nil: input = .prompt(list[0].string!)
            case nil: throw APIError.invalid("'prompt' is required", param: "prompt")
            default: throw APIError.invalid("'prompt' must be a string", param: "prompt")
            }
        }
        let maxTokens = try fields.int(chat ? "max_completion_tokens" : "max_tokens") ?? fields.int("max_tokens") ?? (chat ? 256 : 16)
        guard (1...maxTokensLimit).contains(maxTokens) else {
            throw APIError.invalid("'max_tokens' must be between 1 and \(maxTokensLimit)", param: "max_tokens")
        }
        let temperature = try fields.number("temperature") ?? 1
        guard (0...2).contains(temperature) else { throw APIError.invalid("'temperature' must be between 0 and 2", param: "temperature") }
        let topP = try fields.number("top_p") ?? 1
        guard topP > 0, topP <= 1 else { throw APIError.invalid("'top_p' must be in (0, 1]", param: "top_p") }
        let seed = try fields.int("seed") ?? Int.random(in: 0..<Int(Int32.max))
        var stop: [String] = []
        switch json["stop"] {
        case nil, .null: break
        case let .string(text): stop = [text]
        case let .array(list) where list.count <= 4 && list.allSatisfy({ $0.string != nil }): stop = list.compactMap(\.string)
        default: throw APIError.invalid("'stop' must be a string or an array of up to 4 strings", param: "stop")
        }
        let stream = try fields.bool("stream") ?? false
        var logprobs: Int?
        if chat {
            if try fields.bool("logprobs") == true {
                logprobs = try fields.int("top_logprobs") ?? 0
                guard (0...20).contains(logprobs!) else { throw APIError.invalid("'top_logprobs' must be between 0 and 20", param: "top_logprobs") }
            }
        } else if let n = try fields.int("logprobs") {
            guard (0...5).contains(n) else { throw APIError.invalid("'logprobs' must be between 0 and 5", param: "logprobs") }
            logprobs = n
        }

        var decoder: String?, threshold: Float?, maxDraft: Int?, copyNgram: Int?, relaxed: RelaxedVerification?
        if let raw = json["kangaroo"], !raw.isNull {
            guard case let .object(settings) = raw else {
                throw APIError.invalid("'kangaroo' must be an object", param: "kangaroo")
            }
            let k = Fields(settings, prefix: "kangaroo.")
            decoder = try k.string("decoder")
            if let decoder, DecoderKind(rawValue: decoder) == nil {
                throw APIError.invalid("'kangaroo.decoder' must be one of \(DecoderKind.allCases.map(\.rawValue).joined(separator: ", "))",
                                       param: "kangaroo.decoder")
            }
            threshold = try k.number("threshold").map(Float.init)
            maxDraft = try k.int("max_draft")
            copyNgram = try k.int("copy_ngram")
            // Checked here, whichever decoder serves the request (plain ignores them).
            if let threshold, !SpeculativeOptions.thresholdRange.contains(threshold) {
                throw APIError.invalid("'kangaroo.threshold' must be between 0 and 1", param: "kangaroo.threshold")
            }
            if let maxDraft, !SpeculativeOptions.maxDraftRange.contains(maxDraft) {
                throw APIError.invalid("'kangaroo.max_draft' must be between 0 and \(SpeculativeOptions.maxDraftRange.upperBound)",
                                       param: "kangaroo.max_draft")
            }
            if let copyNgram, !SpeculativeOptions.copyNgramRange.contains(copyNgram) {
                throw APIError.invalid("'kangaroo.copy_ngram' must be between 0 and \(SpeculativeOptions.copyNgramRange.upperBound)",
                                      param: "kangaroo.copy_ngram")
            }
            // SpecDec's lossy relaxed verification: {"beta": B, "tau": T}; the response says "lossless": false.
            if let raw = settings["relaxed_verification"], !raw.isNull {
                let param = "kangaroo.relaxed_verification"
                guard case let .object(rule) = raw else { throw APIError.invalid("'\(param)' must be an object", param: param) }
                let r = Fields(rule, prefix: param + ".")
                guard temperature == 0 else { throw APIError.invalid("'\(param)' applies to greedy decoding only (temperature 0)", param: param) }
                guard let beta = try r.int("beta"), let tau = try r.number("tau"),
                      let rule = try? RelaxedVerification(beta: beta, tau: Float(tau)) else {
                    throw APIError.invalid("'\(param)' needs beta in \(RelaxedVerification.betaRange) and tau in \(RelaxedVerification.tauRange)", param: param)
                }
                relaxed = rule
            }
        }
        return OpenAIRequest(model: model, input: input, maxTokens: maxTokens,
                             sampling: SamplingOptions(temperature: Float(temperature), topP: Float(topP), seed: UInt64(abs(seed)),
                                                       relaxed: relaxed),
                             stop: stop, stream: stream, logprobs: logprobs, decoder: decoder, threshold: threshold, maxDraft: maxDraft,
                             copyNgram: copyNgram)
    }
}

/// Typed access to a JSON object's fields with OpenAI-style errors.
private struct Fields {
    let json: [String: JSONValue]
    let prefix: String

    init(_ json: [String: JSONValue], prefix: String = "") {
        self.json = json
        self.prefix = prefix
    }

    private func value(_ key: String) -> JSONValue? {
        guard let v = json[key] else { return nil }
        if case .null = v { return nil }
        return v
    }

    private func wrong(_ key: String, _ kind: String) -> APIError {
        APIError.invalid("'\(prefix + key)' must be \(kind)", param: prefix + key)
    }

    func string(_ key: String, required: Bool = false) throws -> String? {
        guard let v = value(key) else {
            if required { throw APIError.invalid("'\(prefix + key)' is required", param: prefix + key) }
            return nil
        }
        guard case let .string(s) = v else { throw wrong(key, "a string") }
        return s
    }

    func int(_ key: String) throws -> Int? {
        guard let v = value(key) else { return nil }
        guard case let .number(n) = v, n.rounded() == n, abs(n) < 1e15 else { throw wrong(key, "an integer") }
        return Int(n)
    }

    func number(_ key: String) throws -> Double? {
        guard let v = value(key) else { return nil }
        guard case let .number(n) = v, n.isFinite else { throw wrong(key, "a number") }
        return n
    }

    func bool(_ key: String) throws -> Bool? {
        guard let v = value(key) else { return nil }
        guard case let .bool(b) = v else { throw wrong(key, "a boolean") }
        return b
    }
}
