import Foundation

/// SentencePiece-style BPE (`tokenizer.ggml.model = llama`, as in Llama-2 and Vicuna files): spaces
/// become "▁", characters are merged greedily by the merged piece's score, and characters outside
/// the vocabulary fall back to byte tokens `<0xXX>`.
struct SentencePieceBPE: Sendable {
    let addSpacePrefix: Bool
    /// Token id of each byte's `<0xXX>` token, when the vocabulary has them.
    let byteTokens: [TokenID?]

    init(vocabulary: Vocabulary, addSpacePrefix: Bool) {
        self.addSpacePrefix = addSpacePrefix
        byteTokens = (0..<256).map { byte in
            vocabulary.idOf["<0x" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2) + ">"]
        }
    }

    func encode(_ text: String, vocabulary: Vocabulary, prefixSpace: Bool, into ids: inout [TokenID]) {
        var normalized = text.replacingSpaces()
        if addSpacePrefix && prefixSpace { normalized = "▁" + normalized }
        var symbols = normalized.map { String($0) }
        while symbols.count > 1 {
            var bestScore = -Float.infinity, bestIndex = -1
            for i in 0..<(symbols.count - 1) {
                if let id = vocabulary.idOf[symbols[i] + symbols[i + 1]] {
                    let score = vocabulary.scores.isEmpty ? 0 : vocabulary.scores[Int(id)]
                    if score > bestScore {
                        bestScore = score
                        bestIndex = i
                    }
                }
            }
            if bestIndex < 0 { break }
            symbols[bestIndex] += symbols[bestIndex + 1]
            symbols.remove(at: bestIndex + 1)
        }
        for symbol in symbols {
            if let id = vocabulary.idOf[symbol] {
                ids.append(id)
                continue
            }
            for byte in symbol.utf8 {
                if let id = byteTokens[Int(byte)] ?? vocabulary.unknown { ids.append(id) }
            }
        }
    }

    /// The bytes a token stands for: "▁" is a space, `<0xXX>` is one byte.
    func bytes(of token: String, kind: Vocabulary.TokenKind) -> [UInt8] {
        if kind == .byte, token.count == 6, token.hasPrefix("<0x"), let byte = UInt8(token.dropFirst(3).prefix(2), radix: 16) {
            return [byte]
        }
        return Array(token.replacingOccurrences(of: "▁", with: " ").utf8)
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }

    func replacingSpaces() -> String {
        String(map { $0 == " " ? "▁" : $0 })
    }
}
