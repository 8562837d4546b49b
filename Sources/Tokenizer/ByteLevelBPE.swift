import HeapModule

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

    /// Repeatedly merges the adjacent pair with the lowest rank (leftmost on ties). The candidate pairs
    /// wait in a heap ordered by (rank, position), and a merge only adds its two new neighbours' pairs,
    /// so a piece of n bytes costs O(n log n) instead of a scan of all pairs per merge: a 32k-letter
    /// word, one pre-token piece, took tens of seconds that way.
    private func mergeSymbols(_ symbols: inout [String]) {
        let count = symbols.count
        guard count > 1 else { return }
        var next = Array(1...count), previous = Array(-1..<(count - 1))
        var alive = [Bool](repeating: true, count: count)
        // A candidate: the pair starting at `left` as it was when pushed (`leftLength`, `rightLength`
        // tell whether it still is).
        struct Candidate: Comparable {
            let rank: Int, left: Int, leftLength: Int, rightLength: Int
            static func < (a: Candidate, b: Candidate) -> Bool { (a.rank, a.left) < (b.rank, b.left) }
        }
        var heap = Heap<Candidate>()
        func push(_ left: Int) {
            let right = next[left]
            guard left >= 0, right < count, let rank = ranks[symbols[left] + " " + symbols[right]] else { return }
            heap.insert(Candidate(rank: rank, left: left, leftLength: symbols[left].utf8.count, rightLength: symbols[right].utf8.count))
        }
        for i in 0..<(count - 1) { push(i) }
        while let candidate = heap.popMin() {
            let left = candidate.left, right = next[left]
            guard alive[left], right < count, symbols[left].utf8.count == candidate.leftLength,
                  symbols[right].utf8.count == candidate.rightLength else { continue }
            symbols[left] += symbols[right]
            alive[right] = false
            next[left] = next[right]
            if next[right] < count { previous[next[right]] = left }
            if previous[left] >= 0 { push(previous[left]) }
            push(left)
        }
        symbols = symbols.indices.filter { alive[$0] }.map { symbols[$0] }
    }

    /// The bytes a token stands for.
    static func bytes(of token: String) -> [UInt8] {
        token.unicodeScalars.compactMap { characterToByte[$0] }
    }
}
