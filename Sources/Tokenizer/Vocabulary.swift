import ModelFormats

public typealias TokenID = Int32

/// Token strings and attributes read from a GGUF file's `tokenizer.ggml.*` metadata.
public struct Vocabulary: Sendable {
    /// Token attributes as numbered in GGUF (`tokenizer.ggml.token_type`).
    public enum TokenKind: Int32, Sendable {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    public let tokens: [String]
    public let kinds: [TokenKind]
    /// SentencePiece merge scores (empty for byte-level BPE files that do not store them).
    public let scores: [Float]
    public let idOf: [String: TokenID]
    public let bos: TokenID?
    public let eos: TokenID?
    public let unknown: TokenID?
    public let addBOS: Bool
    /// Tokens that end generation: the end-of-sequence and end-of-turn tokens, and control tokens
    /// that are well-known turn or text terminators.
    public let endOfGeneration: Set<TokenID>

    public var count: Int { tokens.count }

    public init(gguf: GGUFFile) throws(ModelFileError) {
        let path = gguf.path
        guard let tokenValues = gguf.metadata["tokenizer.ggml.tokens"]?.arrayValue else {
            throw .missingMetadata(path: path, key: "tokenizer.ggml.tokens")
        }
        var tokens: [String] = []
        tokens.reserveCapacity(tokenValues.count)
        for value in tokenValues {
            guard let s = value.stringValue else {
                throw .invalidMetadata(path: path, key: "tokenizer.ggml.tokens", reason: "should hold strings")
            }
            tokens.append(s)
        }
        guard !tokens.isEmpty else { throw .invalidMetadata(path: path, key: "tokenizer.ggml.tokens", reason: "is empty") }

        var kinds = [TokenKind](repeating: .normal, count: tokens.count)
        if let values = gguf.metadata["tokenizer.ggml.token_type"]?.arrayValue {
            guard values.count == tokens.count else {
                throw .invalidMetadata(path: path, key: "tokenizer.ggml.token_type", reason: "has \(values.count) entries for \(tokens.count) tokens")
            }
            for (i, value) in values.enumerated() {
                guard let raw = value.intValue, let kind = TokenKind(rawValue: Int32(truncatingIfNeeded: raw)) else {
                    throw .invalidMetadata(path: path, key: "tokenizer.ggml.token_type", reason: "has an unknown token type \(value)")
                }
                kinds[i] = kind
            }
        }
        var scores: [Float] = []
        if let values = gguf.metadata["tokenizer.ggml.scores"]?.arrayValue {
            guard values.count == tokens.count else {
                throw .invalidMetadata(path: path, key: "tokenizer.ggml.scores", reason: "has \(values.count) entries for \(tokens.count) tokens")
            }
            scores = values.map { $0.floatValue ?? 0 }
        }

        func tokenID(_ key: String) throws(ModelFileError) -> TokenID? {
            guard let value = gguf.metadata[key] else { return nil }
            guard let id = value.intValue else { throw .invalidMetadata(path: path, key: key, reason: "should be an integer") }
            // Some converters write -1 (as unsigned) for "none".
            if id < 0 || id == Int(UInt32.max) { return nil }
            guard id < tokens.count else {
                throw .invalidMetadata(path: path, key: key, reason: "is \(id), outside the vocabulary of \(tokens.count)")
            }
            return TokenID(id)
        }

        var idOf: [String: TokenID] = [:]
        idOf.reserveCapacity(tokens.count)
        for (i, token) in tokens.enumerated() where idOf[token] == nil {
            idOf[token] = TokenID(i)
        }
        let model = try gguf.optionalString("tokenizer.ggml.model") ?? "gpt2"

        self.tokens = tokens
        self.kinds = kinds
        self.scores = scores
        self.idOf = idOf
        bos = try tokenID("tokenizer.ggml.bos_token_id")
        eos = try tokenID("tokenizer.ggml.eos_token_id")
        unknown = try tokenID("tokenizer.ggml.unknown_token_id")
        addBOS = gguf.metadata["tokenizer.ggml.add_bos_token"]?.boolValue ?? (model == "llama")

        var end = Set<TokenID>()
        if let eos { end.insert(eos) }
        if let eot = try tokenID("tokenizer.ggml.eot_token_id") { end.insert(eot) }
        if let eom = try tokenID("tokenizer.ggml.eom_token_id") { end.insert(eom) }
        let terminators: Set<String> = ["<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|end_of_text|>"]
        for (i, token) in tokens.enumerated() where kinds[i] == .control && terminators.contains(token) {
            end.insert(TokenID(i))
        }
        endOfGeneration = end
    }

    public func isSpecial(_ id: TokenID) -> Bool {
        let kind = kinds[Int(id)]
        return kind == .control || kind == .userDefined
    }
}
