import ModelFormats

/// Hyper-parameters of a Llama-family model, read from GGUF metadata (`llama.*`).
public struct LlamaConfig: Sendable, Equatable, Codable {
    public var layerCount: Int
    public var hiddenSize: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headSize: Int
    public var feedForwardSize: Int
    public var rmsNormEpsilon: Float
    public var ropeBase: Float
    public var vocabularySize: Int
    /// The context length the model was trained for.
    public var contextLength: Int

    public var kvSize: Int { kvHeadCount * headSize }
    public var querySize: Int { headCount * headSize }

    public init(layerCount: Int, hiddenSize: Int, headCount: Int, kvHeadCount: Int, headSize: Int,
                feedForwardSize: Int, rmsNormEpsilon: Float, ropeBase: Float, vocabularySize: Int, contextLength: Int) {
        self.layerCount = layerCount
        self.hiddenSize = hiddenSize
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.headSize = headSize
        self.feedForwardSize = feedForwardSize
        self.rmsNormEpsilon = rmsNormEpsilon
        self.ropeBase = ropeBase
        self.vocabularySize = vocabularySize
        self.contextLength = contextLength
    }

    public init(gguf: GGUFFile) throws(ModelFileError) {
        let architecture = try gguf.requiredString("general.architecture")
        guard architecture == "llama" else {
            throw .invalidMetadata(path: gguf.path, key: "general.architecture",
                                   reason: "is '\(architecture)'; only Llama-family models ('llama') are supported")
        }
        let p = "llama."
        layerCount = try gguf.requiredInt(p + "block_count")
        hiddenSize = try gguf.requiredInt(p + "embedding_length")
        headCount = try gguf.requiredInt(p + "attention.head_count")
        kvHeadCount = (try? gguf.requiredInt(p + "attention.head_count_kv")) ?? headCount
        feedForwardSize = try gguf.requiredInt(p + "feed_forward_length")
        contextLength = try gguf.requiredInt(p + "context_length")
        rmsNormEpsilon = try gguf.optionalFloat(p + "attention.layer_norm_rms_epsilon") ?? 1e-5
        ropeBase = try gguf.optionalFloat(p + "rope.freq_base") ?? 10000
        let tokenCount = gguf.metadata["tokenizer.ggml.tokens"]?.arrayValue?.count
        vocabularySize = (try? gguf.requiredInt(p + "vocab_size")) ?? tokenCount ?? 0
        func check(_ ok: Bool, _ key: String, _ reason: String) throws(ModelFileError) {
            if !ok { throw .invalidMetadata(path: gguf.path, key: p + key, reason: reason) }
        }
        try check((1...1024).contains(layerCount), "block_count", "is \(layerCount)")
        try check((1...65536).contains(hiddenSize), "embedding_length", "is \(hiddenSize)")
        try check((1...1024).contains(headCount) && hiddenSize % headCount == 0, "attention.head_count",
                  "(\(headCount)) must be at most 1024 and divide the embedding length")
        headSize = (try? gguf.requiredInt(p + "attention.key_length")) ?? hiddenSize / headCount
        try check(headSize % 16 == 0 && (16...1024).contains(headSize), "attention.key_length",
                  "must be a multiple of 16 (the attention loops' width) from 16 to 1024, is \(headSize)")
        try check(headCount * headSize <= 1 << 17, "attention.key_length", "times the head count is \(headCount * headSize), too large")
        try check(kvHeadCount > 0 && headCount % kvHeadCount == 0, "attention.head_count_kv", "(\(kvHeadCount)) must divide the head count")
        try check((1...1 << 20).contains(feedForwardSize), "feed_forward_length", "is \(feedForwardSize)")
        try check((1...1 << 24).contains(contextLength), "context_length", "is \(contextLength)")
        try check((1...1 << 24).contains(vocabularySize), "vocab_size", "is \(vocabularySize)")
        try check(rmsNormEpsilon.isFinite && rmsNormEpsilon > 0 && rmsNormEpsilon < 1, "attention.layer_norm_rms_epsilon",
                  "must be a small positive number, is \(rmsNormEpsilon)")
        try check(ropeBase.isFinite && ropeBase > 1, "rope.freq_base", "must be a finite number above 1, is \(ropeBase)")
        if let tokenCount {
            try check(tokenCount >= vocabularySize, "vocab_size",
                      "is \(vocabularySize), but the tokenizer has only \(tokenCount) tokens: the model's ids could not be read back")
        }
    }

    /// The context a decoder allocates when not told: the model's own, capped as llama.cpp's
    /// `--ctx-size` default is, since a KV cache for a model's whole context (millions of positions
    /// for some) would not fit in memory. A larger one is asked for explicitly.
    public static let defaultContext = 4096

    /// `requested` positions (nil: `defaultContext`), at most the model's own context.
    public func context(_ requested: Int?) -> Int { min(requested ?? Self.defaultContext, contextLength) }

    /// Bytes of a KV cache for `capacity` positions (float keys, half-float values, every layer).
    public func cacheBytes(capacity: Int) -> Int { layerCount * capacity * kvSize * 6 }
}
