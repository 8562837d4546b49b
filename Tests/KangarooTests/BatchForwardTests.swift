import Llama
import Tensor
import Testing

/// Forwards over token trees and over several sequences at once give every row exactly the bits of a
/// linear forward along its own path, alone: what keeps speculative output identical to plain decoding.
@Suite("Forward over trees and batches")
struct BatchForwardTests {
    /// A random tree of `count` rows: each row's parent is a random earlier row of depth < `maxDepth`
    /// with fewer than `maxBranching` children, or none (a root) while roots are fewer than `maxBranching`.
    static func randomTree(count: Int, maxBranching: Int, maxDepth: Int, random: inout SeededRandom) -> TokenTree {
        var parents: [Int?] = [nil], depths = [0], children = [0]
        var roots = 1
        while parents.count < count {
            let candidates = parents.indices.filter { depths[$0] < maxDepth - 1 && children[$0] < maxBranching }
            let parent: Int? = roots < maxBranching && Int.random(in: 0..<8, using: &random) == 0
                ? nil : candidates.randomElement(using: &random)
            if let parent {
                children[parent] += 1
                depths.append(depths[parent] + 1)
            } else {
                roots += 1
                depths.append(0)
            }
            parents.append(parent)
            children.append(0)
        }
        return TokenTree(parents: parents)!
    }

    static func randomTokens(_ count: Int, vocabulary: Int, random: inout SeededRandom) -> [Int32] {
        (0..<count).map { _ in Int32.random(in: 0..<Int32(vocabulary), using: &random) }
    }

    static func bits(_ matrix: FloatMatrix, row: Int) -> [UInt32] { matrix.rowArray(row).map(\.bitPattern) }

    /// The final hidden state of each path's last token, forwarded as a chain after `prompt` alone.
    static func linearStates(model: LlamaModel, prompt: [Int32], paths: [[Int32]], capacity: Int) throws -> [[UInt32]] {
        let cache = KVCache(config: model.config, capacity: capacity)
        let scratch = ForwardScratch(config: model.config, contextCapacity: capacity)
        let hidden = FloatMatrix(capacity: capacity, columns: model.config.hiddenSize)
        let layers = 0..<model.config.layerCount
        model.embed(prompt, into: hidden)
        try model.forward(layers: layers, hidden: hidden, cache: cache, scratch: scratch)
        return try paths.map { path in
            cache.truncate(to: prompt.count)
            model.embed(path, into: hidden)
            try model.forward(layers: layers, hidden: hidden, cache: cache, scratch: scratch)
            return bits(hidden, row: path.count - 1)
        }
    }

    /// Checks random trees after random prompts: each tree row equals its path's linear forward, and
    /// after keeping a random leaf's path the cache equals a linear run's, both ways of attention.
    static func checkTrees(model: LlamaModel, seed: UInt64, trees: Int, maxRows: Int) throws {
        var random = SeededRandom(seed)
        let c = model.config, capacity = 160
        for index in 0..<trees {
            let prompt = randomTokens(Int.random(in: 1...40, using: &random), vocabulary: c.vocabularySize, random: &random)
            let tree = randomTree(count: Int.random(in: 2...maxRows, using: &random), maxBranching: 4, maxDepth: 8,
                                  random: &random)
            let tokens = randomTokens(tree.count, vocabulary: c.vocabularySize, random: &random)
            let paths = tree.parents.indices.map { tree.path(to: $0).map { tokens[$0] } }
            let expected = try linearStates(model: model, prompt: prompt, paths: paths, capacity: capacity)
            // Every other tree through the split way of attention (when it fits its 16 rows).
            let split = index % 2 == 1 && tree.count <= 16
            let scratch = ForwardScratch(config: c, tokens: 64, contextCapacity: capacity, splitAttentionLength: split ? 0 : nil)
            let cache = KVCache(config: c, capacity: capacity)
            let hidden = FloatMatrix(capacity: capacity, columns: c.hiddenSize)
            model.embed(prompt, into: hidden)
            try model.forward(layers: 0..<c.layerCount, hidden: hidden, cache: cache, scratch: scratch)
            model.embed(tokens, into: hidden)
            try model.forward(layers: 0..<c.layerCount, hidden: hidden, batch: [BatchSequence(cache: cache, tree: tree)],
                              scratch: scratch)
            for row in 0..<tree.count {
                let same = bits(hidden, row: row) == expected[row]
                #expect(same, "tree \(index) (\(tree.parents)), row \(row)")
            }

            // Keep a leaf's path: the cache then equals a linear run's over the prompt and the path.
            let leaves = tree.parents.indices.filter { tree.children(of: $0).isEmpty }
            let path = tree.path(to: leaves.randomElement(using: &random)!)
            cache.keepPath(path, base: prompt.count)
            let linear = KVCache(config: c, capacity: capacity)
            model.embed(prompt + path.map { tokens[$0] }, into: hidden)
            try model.forward(layers: 0..<c.layerCount, hidden: hidden, cache: linear,
                              scratch: ForwardScratch(config: c, contextCapacity: capacity))
            for layer in 0..<c.layerCount {
                #expect(cache.length(of: layer) == linear.length(of: layer))
                for position in 0..<linear.length(of: layer) {
                    let a = cache.entry(layer: layer, position: position), b = linear.entry(layer: layer, position: position)
                    let same = a.key.map(\.bitPattern) == b.key.map(\.bitPattern) && a.value == b.value
                    #expect(same,
                            "tree \(index): layer \(layer), position \(position) after keeping path \(path)")
                }
            }
        }
    }

    @Test("tree rows equal linear-path rows bit for bit on a tiny random model, and kept paths leave a linear run's cache")
    func treesOnTinyModel() throws {
        try Self.checkTrees(model: try TinyModel.make(seed: 7), seed: 1, trees: 24, maxRows: 30)
    }

    @Test("tree rows equal linear-path rows bit for bit on the real model, and kept paths leave a linear run's cache")
    func treesOnRealModel() throws {
        try Self.checkTrees(model: try RealModel.get().model, seed: 2, trees: 8, maxRows: 24)
    }

    @Test("rows of 1–8 sequences in one forward equal each sequence's rows alone, across chunks and with a tree among them")
    func batchesEqualSoloForwards() throws {
        let model = try RealModel.get().model, c = model.config, capacity = 128
        var random = SeededRandom(3)
        for sequences in [1, 2, 3, 5, 8] {
            // Each sequence: a prompt of its own length, then a chain (or, for one of them, a tree) of new rows.
            let prompts = (0..<sequences).map { _ in
                Self.randomTokens(Int.random(in: 1...50, using: &random), vocabulary: c.vocabularySize, random: &random)
            }
            let trees = (0..<sequences).map { s in
                s == 1 ? Self.randomTree(count: 6, maxBranching: 3, maxDepth: 4, random: &random)
                    : TokenTree.chain(Int.random(in: 1...4, using: &random))
            }
            let news = trees.map { Self.randomTokens($0.count, vocabulary: c.vocabularySize, random: &random) }

            // Alone: each sequence's prompt, then its new rows.
            var expected: [[[UInt32]]] = []
            for s in 0..<sequences {
                let cache = KVCache(config: c, capacity: capacity)
                let scratch = ForwardScratch(config: c, contextCapacity: capacity)
                let hidden = FloatMatrix(capacity: capacity, columns: c.hiddenSize)
                model.embed(prompts[s], into: hidden)
                try model.forward(layers: 0..<c.layerCount, hidden: hidden, cache: cache, scratch: scratch)
                let promptRows = (0..<prompts[s].count).map { Self.bits(hidden, row: $0) }
                model.embed(news[s], into: hidden)
                try model.forward(layers: 0..<c.layerCount, hidden: hidden, batch: [BatchSequence(cache: cache, tree: trees[s])],
                                  scratch: scratch)
                expected.append(promptRows + (0..<news[s].count).map { Self.bits(hidden, row: $0) })
            }

            // Together: all prompts in one forward (a scratch of 16 rows, so prompts cross chunks), then
            // all new rows in one forward.
            let caches = (0..<sequences).map { _ in KVCache(config: c, capacity: capacity) }
            let scratch = ForwardScratch(config: c, tokens: 16, contextCapacity: capacity)
            let hidden = FloatMatrix(capacity: sequences * capacity, columns: c.hiddenSize)
            model.embed(prompts.flatMap { $0 }, into: hidden)
            try model.forward(layers: 0..<c.layerCount, hidden: hidden,
                              batch: zip(caches, prompts).map { BatchSequence(cache: $0, count: $1.count) }, scratch: scratch)
            var row = 0
            for s in 0..<sequences {
                for i in 0..<prompts[s].count {
                    let same = Self.bits(hidden, row: row) == expected[s][i]
                    #expect(same, "\(sequences) sequences: sequence \(s), prompt row \(i)")
                    row += 1
                }
            }
            model.embed(news.flatMap { $0 }, into: hidden)
            try model.forward(layers: 0..<c.layerCount, hidden: hidden,
                              batch: zip(caches, trees).map { BatchSequence(cache: $0, tree: $1) }, scratch: scratch)
            row = 0
            for s in 0..<sequences {
                for i in 0..<news[s].count {
                    let same = Self.bits(hidden, row: row) == expected[s][prompts[s].count + i]
                    #expect(same, "\(sequences) sequences: sequence \(s), new row \(i)")
                    row += 1
                }
            }
        }
    }

    @Test("a tree whose parent does not come before its child is refused; chains are recognised")
    func treeShapes() {
        #expect(TokenTree(parents: [nil, 0, 2]) == nil)
        #expect(TokenTree(parents: [0]) == nil)
        #expect(TokenTree(parents: [nil, 0, 1])?.isChain == true)
        let tree = TokenTree(parents: [nil, 0, 0, 1, nil])!
        #expect(!tree.isChain)
        #expect(tree.path(to: 3) == [0, 1, 3])
        #expect(tree.depth(of: 4) == 0)
        #expect(tree.children(of: 0) == [1, 2])
        #expect(tree.children(of: nil) == [0, 4])
    }
}
