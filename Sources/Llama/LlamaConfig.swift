import ModelFormats

/// Hyper-parameters of a Llama-family model, read from GGUF metadata (`<architecture>.*`).
public struct LlamaConfig: Sendable, Equatable, Codable {
    /// The GGUF architectures this forward pass runs: the same pre-norm decoder with their differences.
    public enum Architecture: String, Sendable, Codable, CaseIterable {
        /// Llama 1–3, Mistral, SmolLM: as the default.
        case llama
        /// Qwen2 and Qwen2.5: biases on the query, key and value projections, RoPE over head halves.
        case qwen2
        /// Qwen3: RMSNorm of each query and key head before RoPE, RoPE over head halves.
        case qwen3

        /// How the file's query and key rows pair dimensions for RoPE.
        public var ropeStyle: RoPEStyle { self == .llama ? .adjacentPairs : .halves }
    }

    /// Which dimensions of a head RoPE rotates together.
    public enum RoPEStyle: String, Sendable, Codable {
        /// Dimensions 2i and 2i+1: llama.cpp's converter permutes Llama's query and key rows so.
        case adjacentPairs
        /// Dimensions i and i + headSize/2 (GPT-NeoX style), as Qwen's files keep them.
        case halves
    }

    public var architecture: Architecture = .llama
    public var layerCount: Int
    public var hiddenSize: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headSize: Int
    public var feedForwardSize: Int
    public var rmsNormEpsilon: Float
    public var ropeBase: Float
    /// What RoPE's frequencies are multiplied by: 1/factor under linear scaling, else 1.
    public var ropeFrequencyScale: Float = 1
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
        let name = try gguf.requiredString("general.architecture")
        guard let architecture = Architecture(rawValue: name) else {
            throw .invalidMetadata(path: gguf.path, key: "general.architecture", reason: """
                is '\(name)', which this version cannot run; it runs 'llama' (Llama 1–3, Mistral, SmolLM), \
                'qwen2' (Qwen2, Qwen2.5) and 'qwen3'
                """)
        }
        self.architecture = architecture
        let p = name + "."
        layerCount = try gguf.requiredInt(p + "block_count")
        hiddenSize = try gguf.requiredInt(p + "embedding_length")
        headCount = try gguf.requiredInt(p + "attention.head_count")
        kvHeadCount = (try? gguf.requiredInt(p + "attention.head_count_kv")) ?? headCount
        feedForwardSize = try gguf.requiredInt(p + "feed_forward_length")
        contextLength = try gguf.requiredInt(p + "context_length")
        rmsNormEpsilon = try gguf.optionalFloat(p + "attention.layer_norm_rms_epsilon") ?? 1e-5
        ropeBase = try gguf.optionalFloat(p + "rope.freq_base") ?? 10000
        if let scaling = try gguf.optionalString(p + "rope.scaling.type"), scaling != "none" {
            let factor = try gguf.optionalFloat(p + "rope.scaling.factor") ?? 1
            guard scaling == "linear", factor.isFinite, factor >= 1 else {
                throw .invalidMetadata(path: gguf.path, key: p + "rope.scaling.type", reason: """
                    is '\(scaling)' with factor \(factor); this version runs unscaled RoPE, linear scaling by a factor \
                    of 1 or more, and Llama 3's frequency factors (rope_freqs)
                    """)
            }
            ropeFrequencyScale = 1 / factor
        }
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
