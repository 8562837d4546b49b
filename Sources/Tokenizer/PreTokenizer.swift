import Foundation

/// Splits text into the pieces that byte-level BPE encodes independently, as named by
/// `tokenizer.ggml.pre`. Each stage's regular expression splits every current piece into its matches
/// and the text between them (as llama.cpp applies its list of expressions).
struct PreTokenizer: Sendable {
    private let stages: [NSRegularExpression]

    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Pattern = #"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Llama 3's, with single digits (Qwen2 and Qwen2.5, Qwen3).
    static let qwen2Pattern = #"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Names accepted for `tokenizer.ggml.pre`.
    static let supported = ["default", "gpt2", "smollm", "llama-bpe", "llama3", "qwen2"]

    init?(name: String) {
        let patterns: [String]
        switch name {
        case "default", "gpt2": patterns = [Self.gpt2Pattern]
        case "smollm": patterns = [#"\p{N}"#, Self.gpt2Pattern]  // single digits first
        case "llama-bpe", "llama3": patterns = [Self.llama3Pattern]
        case "qwen2": patterns = [Self.qwen2Pattern]
        default: return nil
        }
        stages = patterns.map { try! NSRegularExpression(pattern: $0) }
    }

    func split(_ text: String) -> [String] {
        var pieces = [text]
        for expression in stages {
            var next: [String] = []
            for piece in pieces {
                let ns = piece as NSString
                var last = 0
                for match in expression.matches(in: piece, range: NSRange(location: 0, length: ns.length)) {
                    if match.range.location > last {
                        next.append(ns.substring(with: NSRange(location: last, length: match.range.location - last)))
                    }
                    if match.range.length > 0 { next.append(ns.substring(with: match.range)) }
                    last = match.range.location + match.range.length
                }
                if last < ns.length { next.append(ns.substring(from: last)) }
            }
            pieces = next
        }
        return pieces
    }
}
