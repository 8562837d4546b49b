/// Byte-level BPE (GPT-2 style, `tokenizer.ggml.model = gpt2`): text bytes are mapped to printable
/// characters, then merged by the ranked merge list.
struct ByteLevelBPE: Sendable {
    let preTokenizer: PreTokenizer
    /// Merge rank keyed by the two parts joined with a space, as the merges are stored.
    let ranks: [String: Int]

    /// GPT-2's reversible byte ↔ character map: printable Latin-1 bytes stand for themselves, the rest
    /// are shifted to code points from 256 on.
    static let byteToCharacter: [Character] = {
        var table = [Character](repeating: " ", count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            let printable = (33...126).contains(byte) || (161...172).contains(byte) || (174...255).contains(byte)
            if printable {
                table[byte] = Character(Unicode.Scalar(UInt32(byte))!)
            } else {
                table[byte] = Character(Unicode.Scalar(next)!)
                next += 1
            }
        }
        return table
    }()

    static let characterToByte: [Unicode.Scalar: UInt8] = {
        var map: [Unicode.Scalar: UInt8] = [:]
        for (byte, character) in byteToCharacter.enumerated() {
            map[character.unicodeScalars.first!] = UInt8(byte)
        }
        return map
    }()

    init(merges: [String], preTokenizer: PreTokenizer) {
        var ranks: [String: Int] = [:]
        ranks.reserveCapacity(merges.count)
        for (rank, merge) in merges.enumerated() where ranks[merge] == nil {
            ranks[merge] = rank
        }
        self.ranks = ranks
        self.preTokenizer = preTokenizer
    }

    func encode(_ text: String, vocabulary: Vocabulary, into ids: inout [TokenID]) {
        for piece in preTokenizer.split(text) {
            var symbols = piece.utf8.map { String(Self.byteToCharacter[Int($0)]) }
            mergeSymbols(&symbols)
            for symbol in symbols {
                if let id = vocabulary.idOf[symbol] {
                    ids.append(id)
                } else {
                    // A merge result missing from the vocabulary: fall back to its single bytes.
                    for scalar in symbol.unicodeScalars {
                        if let id = vocabulary.idOf[String(scalar)] ?? vocabulary.unknown { ids.append(id) }
                    }
                }
            }
        }
    }

    /// Repeatedly merges the adjacent pair with the lowest rank (leftmost on ties).
    private func mergeSymbols(_ symbols: inout [String]) {
        while symbols.count > 1 {
            var best = Int.max, bestIndex = -1
            for i in 0..<(symbols.count - 1) {
                if let rank = ranks[symbols[i] + " " + symbols[i + 1]], rank < best {
                    best = rank
                    bestIndex = i
                }
            }
            if bestIndex < 0 { return }
            symbols[bestIndex] += symbols[bestIndex + 1]
            symbols.remove(at: bestIndex + 1)
        }
    }

    /// The bytes a token stands for.
    static func bytes(of token: String) -> [UInt8] {
        token.unicodeScalars.compactMap { characterToByte[$0] }
    }
}
