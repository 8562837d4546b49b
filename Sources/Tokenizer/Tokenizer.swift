import ModelFormats

/// Errors raised when a tokenizer cannot be built from a model file.
public enum TokenizerError: Error, CustomStringConvertible {
    case unsupportedModel(String)
    case unsupportedPreTokenizer(String)
    case missingMerges

    public var description: String {
        switch self {
        case let .unsupportedModel(name):
            "tokenizer model '\(name)' is not supported (supported: gpt2 byte-level BPE, llama SentencePiece)"
        case let .unsupportedPreTokenizer(name):
            "pre-tokenizer '\(name)' is not supported (supported: \(PreTokenizer.supported.joined(separator: ", ")))"
        case .missingMerges: "the byte-level BPE tokenizer has no 'tokenizer.ggml.merges'"
        }
    }
}

/// Turns text into token ids and back, as described by a GGUF file's tokenizer metadata.
public final class Tokenizer: Sendable {
    public let vocabulary: Vocabulary
    private enum Algorithm: Sendable {
        case byteLevel(ByteLevelBPE)
        case sentencePiece(SentencePieceBPE)
    }
    private let algorithm: Algorithm
    /// Special tokens matched verbatim in input text before BPE, longest first.
    private let specialTokens: [(text: String, id: TokenID)]
    /// The bytes each token decodes to.
    private let tokenBytes: [[UInt8]]

    public init(gguf: GGUFFile) throws {
        let vocabulary = try Vocabulary(gguf: gguf)
        self.vocabulary = vocabulary
        let model = try gguf.optionalString("tokenizer.ggml.model") ?? "gpt2"
        switch model {
        case "gpt2":
            let preName = try gguf.optionalString("tokenizer.ggml.pre") ?? "default"
            guard let pre = PreTokenizer(name: preName) else { throw TokenizerError.unsupportedPreTokenizer(preName) }
            guard let mergeValues = gguf.metadata["tokenizer.ggml.merges"]?.arrayValue else { throw TokenizerError.missingMerges }
            let merges = mergeValues.compactMap(\.stringValue)
            algorithm = .byteLevel(ByteLevelBPE(merges: merges, preTokenizer: pre))
        case "llama":
            let addSpacePrefix = gguf.metadata["tokenizer.ggml.add_space_prefix"]?.boolValue ?? true
            algorithm = .sentencePiece(SentencePieceBPE(vocabulary: vocabulary, addSpacePrefix: addSpacePrefix))
        default:
            throw TokenizerError.unsupportedModel(model)
        }

        specialTokens = vocabulary.tokens.indices
            .filter { vocabulary.isSpecial(TokenID($0)) && !vocabulary.tokens[$0].isEmpty }
            .map { (vocabulary.tokens[$0], TokenID($0)) }
            .sorted { $0.text.utf8.count > $1.text.utf8.count }

        let algorithm = self.algorithm
        tokenBytes = vocabulary.tokens.indices.map { i in
            let token = vocabulary.tokens[i]
            if vocabulary.isSpecial(TokenID(i)) { return Array(token.utf8) }
            switch algorithm {
            case .byteLevel: return ByteLevelBPE.bytes(of: token)
            case let .sentencePiece(spm): return spm.bytes(of: token, kind: vocabulary.kinds[i])
            }
        }
    }

    /// Encodes a prompt to generate from, or a whole text to score or train on: with the
    /// beginning-of-sequence token when the model asks for one. Every generation, benchmark and
    /// training path encodes its text this way, so all of them see the same tokens.
    public func encodePrompt(_ text: String) -> [TokenID] { encode(text, addBOS: true) }

    /// Encodes `text`. Special tokens written in the text (such as `<|im_start|>`) become their ids
    /// when `parseSpecial` is true. A beginning-of-sequence token is prepended when `addBOS` is true
    /// and the model asks for one.
    public func encode(_ text: String, addBOS: Bool = false, parseSpecial: Bool = true) -> [TokenID] {
        var ids: [TokenID] = []
        if addBOS, vocabulary.addBOS, let bos = vocabulary.bos { ids.append(bos) }
        // SentencePiece prefixes a space to text at the start and after each special token (as llama.cpp does).
        var afterSpecial = true
        for segment in splitSpecial(text, parseSpecial: parseSpecial) {
            switch segment {
            case let .special(id):
                ids.append(id)
                afterSpecial = true
            case let .text(part):
                switch algorithm {
                case let .byteLevel(bpe): bpe.encode(part, vocabulary: vocabulary, into: &ids)
                case let .sentencePiece(spm): spm.encode(part, vocabulary: vocabulary, prefixSpace: afterSpecial, into: &ids)
                }
                afterSpecial = false
            }
        }
        return ids
    }

    /// The bytes token `id` stands for (special tokens give their text).
    public func bytes(of id: TokenID) -> [UInt8] {
        guard id >= 0, Int(id) < tokenBytes.count else { return [] }
        return tokenBytes[Int(id)]
    }

    /// Decodes a whole sequence. Bytes that are not valid UTF-8 become U+FFFD. The space that a
    /// SentencePiece tokenizer adds in front of the text is removed from its first text token.
    public func decode(_ ids: [TokenID]) -> String {
        var bytes: [UInt8] = []
        var stripSpace = if case let .sentencePiece(spm) = algorithm { spm.addSpacePrefix } else { false }
        for id in ids {
            var piece = self.bytes(of: id)
            if stripSpace && !vocabulary.isSpecial(id) {
                if piece.first == UInt8(ascii: " ") { piece.removeFirst() }
                stripSpace = false
            }
            bytes += piece
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public func isEndOfGeneration(_ id: TokenID) -> Bool { vocabulary.endOfGeneration.contains(id) }

    private enum Segment { case text(String), special(TokenID) }

    private func splitSpecial(_ text: String, parseSpecial: Bool) -> [Segment] {
        guard parseSpecial, !specialTokens.isEmpty else {
            return text.isEmpty ? [] : [.text(text)]
        }
        var segments: [Segment] = []
        let utf8 = Array(text.utf8)
        var start = 0, i = 0
        outer: while i < utf8.count {
            for special in specialTokens {
                let pattern = special.text.utf8
                if utf8.count - i >= pattern.count, utf8[i..<(i + pattern.count)].elementsEqual(pattern) {
                    if i > start { segments.append(.text(String(decoding: utf8[start..<i], as: UTF8.self))) }
                    segments.append(.special(special.id))
                    i += pattern.count
                    start = i
                    continue outer
                }
            }
            i += 1
        }
        if start < utf8.count { segments.append(.text(String(decoding: utf8[start...], as: UTF8.self))) }
        return segments
    }
}
