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
        try check(headCount > 0 && hiddenSize % headCount == 0, "attention.head_count", "(\(headCount)) must divide the embedding length")
        headSize = (try? gguf.requiredInt(p + "attention.key_length")) ?? hiddenSize / headCount
        try check(headSize % 16 == 0 && headSize > 0, "attention.key_length",
                  "must be a positive multiple of 16 (the attention loops' width), is \(headSize)")
        try check(kvHeadCount > 0 && headCount % kvHeadCount == 0, "attention.head_count_kv", "(\(kvHeadCount)) must divide the head count")
        try check((1...1 << 20).contains(feedForwardSize), "feed_forward_length", "is \(feedForwardSize)")
        try check((1...1 << 24).contains(contextLength), "context_length", "is \(contextLength)")
        try check(vocabularySize > 0, "vocab_size", "is \(vocabularySize)")
    }
}
