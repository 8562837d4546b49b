import Adapter
@testable import Decoding
import Foundation
import Llama
import Tensor
import Testing
import Tokenizer

/// Drafts a tree whose right path (plain decoding's own tokens, known in advance) hides among decoys:
/// at each depth the right token is drafted with probability 0.75, at a random place among 1–3
/// siblings. Accepted paths then run through later siblings too, so verification, the moving of the
/// accepted path's keys and values, and the logits' order are all exercised.
final class OracleTreeDrafter: Drafter {
    let reference: [Int32]
    let promptCount: Int
    let vocabulary: Int
    var random: SeededRandom

    init(reference: [Int32], promptCount: Int, vocabulary: Int, seed: UInt64) {
        self.reference = reference
        self.promptCount = promptCount
        self.vocabulary = vocabulary
        random = SeededRandom(seed)
    }

    var observedLayers: Int? { nil }
    func begin(prompt: [Int32], round: DraftRound) throws {}
    func accept(_ outcome: RoundOutcome) {}

    func propose(_ round: DraftRound, sampler: inout Sampler) throws {
        // The pending token is reference[position - promptCount]; the right next ones follow it.
        var next = round.position - promptCount + 1
        var parent: Int? = nil
        while next < reference.count && round.count < round.limit {
            let siblings = min(Int.random(in: 1...3, using: &random), round.limit - round.count)
            let right = Int.random(in: 0..<4, using: &random) < 3 ? Int.random(in: 0..<siblings, using: &random) : nil
            var rightNode: Int?
            for i in 0..<siblings {
                var token = Int32.random(in: 0..<Int32(vocabulary), using: &random)
                if i == right { token = reference[next] } else if token == reference[next] { token = (token + 1) % Int32(vocabulary) }
                let node = round.add(token, parent: parent)
                if i == right { rightNode = node }
            }
            guard let rightNode else { return }
            parent = rightNode
            next += 1
        }
    }
}

/// Samples a tree: each node's children are drawn from a draft distribution q of its own (a function
/// of the parent's token, unlike the model's), either independently (each child's q is q) or without
/// replacement (each child's q is q without its earlier siblings, renormalised), as the core's
/// multi-candidate rule requires.
final class SampledTreeDrafter: Drafter {
    let vocabulary: Int
    /// The tokens q spreads over.
    let candidates: [Int32]
    let shape: [Int]

    /// `shape[d]`: children of each node at depth d; `candidates`: the tokens q spreads over (all by default).
    init(vocabulary: Int, shape: [Int], candidates: [Int32]? = nil) {
        self.vocabulary = vocabulary
        self.shape = shape
        self.candidates = candidates ?? (0..<Int32(vocabulary)).map { $0 }
    }

    var observedLayers: Int? { nil }
    func begin(prompt: [Int32], round: DraftRound) throws {}
    func accept(_ outcome: RoundOutcome) {}

    /// The draft distribution over `candidates` under a node whose token is `parent`.
    func q(after parent: Int32) -> [Float] {
        let weights = candidates.indices.map { Float((Int(parent) * 7 + $0 * 3) % 5 + 1) }
        let total = weights.reduce(0, +)
        return weights.map { $0 / total }
    }

    func propose(_ round: DraftRound, sampler: inout Sampler) throws {
        var level: [(node: Int?, token: Int32)] = [(nil, round.pending)]
        for (depth, width) in shape.enumerated() {
            var nextLevel: [(node: Int?, token: Int32)] = []
            for (parent, parentToken) in level {
                var q = q(after: parentToken)
                let withoutReplacement = depth % 2 == 1
                for _ in 0..<width where round.count < round.limit {
                    let index = Int(sampler.draw(q, count: q.count))
                    let node = round.add(candidates[index], parent: parent)
                    let dense = round.probabilities.row(node)
                    dense.initialize(repeating: 0, count: vocabulary)
                    for (i, token) in candidates.enumerated() { dense[Int(token)] = q[i] }
                    nextLevel.append((node, candidates[index]))
                    if withoutReplacement {
                        q[index] = 0
                        let total = q.reduce(0, +)
                        guard total > 0 else { break }
                        q = q.map { $0 / total }
                    }
                }
            }
            level = nextLevel
        }
    }
}

@Suite("Trees of drafts")
struct TreeDecodingTests {
    @Test("greedy tree decoding, lookup, layer skip and Kangaroo give plain decoding's tokens on the golden prompts")
    func everyDecoderIsLossless() throws {
        let real = try RealModel.get(), golden = try Golden.load()
        let generator = Generator(tokenizer: real.tokenizer)
        let options = GenerationOptions(maxTokens: 40, ignoreEOS: true)
        let adapter = try #require(try KangarooAdapter.shipped(for: real.model))
        for (index, prompt) in golden.prompts.enumerated() {
            let plain = try generator.generate(prompt: prompt.ids, decoder: SpeculativeDecoder.plain(model: real.model, contextCapacity: 256),
                                               options: options)
            var decoders = try DecoderKind.allCases.map {
                try DecoderCatalog.make($0, model: real.model, adapter: adapter, contextCapacity: 256)
            }
            // Draft trees, also wide ones with many leaves and copies as a branch of their own, on cheap
            // rows (`ForwardCosts.cheapRows`).
            for (kind, budget, width, threshold) in [(DecoderKind.kangaroo, 8, 3, Float(0.2)), (.kangaroo, 16, 4, 0.01), (.layerskip, 8, 2, 0.1)] {
                var options = kind.defaultOptions
                (options.treeBudget, options.treeWidth, options.threshold, options.copyNgram) = (budget, width, threshold, 2)
                decoders.append(try DecoderCatalog.make(kind, model: real.model, options: options, adapter: adapter, contextCapacity: 256,
                                                        costs: .cheapRows, name: "\(kind) tree \(budget)×\(width) η \(threshold)"))
            }
            let oracle = OracleTreeDrafter(reference: plain.tokens, promptCount: prompt.ids.count,
                                           vocabulary: real.model.config.vocabularySize, seed: UInt64(index))
            decoders.append(SpeculativeDecoder(model: real.model, drafter: oracle, name: "oracle tree", maxDrafts: 12, contextCapacity: 256))
            for decoder in decoders {
                let result = try generator.generate(prompt: prompt.ids, decoder: decoder, options: options)
                #expect(result.tokens == plain.tokens, "\(decoder.name) on golden prompt \(index)")
            }
            let wide = try #require(decoders.first { $0.name.hasPrefix("kangaroo tree 16") }?.speculativeStatistics)
            #expect(wide.draftedNodes > wide.draftSteps + wide.copiedDrafts, "wide trees have siblings: \(wide)")
            let stats = try #require(decoders.last?.speculativeStatistics)
            #expect(stats.meanAcceptedTokens > 1.5, "the oracle's trees should be accepted often: \(stats.meanAcceptedTokens)")
        }
    }

    @Test("the tree's calibration lowers what it expects of nodes like those seldom accepted, keeps a calibrated draft model's probabilities and raises an underconfident one's")
    func calibration() {
        var overconfident = TreeCalibration(), calibrated = TreeCalibration(), underconfident = TreeCalibration()
        #expect(overconfident.expected(0.4) == 0.4, "nothing recorded: the draft model's own probability")
        for i in 0..<300 {
            overconfident.record(0.4, accepted: i % 10 == 0)
            calibrated.record(0.4, accepted: i % 5 < 2)
            underconfident.record(0.6, accepted: true)
        }
        #expect(abs(overconfident.expected(0.4) - 0.1) < 0.04, "\(overconfident.expected(0.4))")
        #expect(abs(calibrated.expected(0.4) - 0.4) < 0.04, "\(calibrated.expected(0.4))")
        #expect(underconfident.expected(0.6) > 0.9 && underconfident.expected(0.6) <= 1, "\(underconfident.expected(0.6))")
        #expect(overconfident.expected(0.9) == 0.9, "another power of two keeps its own record")
    }

    @Test("tree paths through later siblings are accepted, and their logits come in the order of the tokens")
    func logitsFollowTheAcceptedPath() throws {
        let real = try RealModel.get()
        let prompt = real.tokenizer.encode("The capital of France is")
        let options = GenerationOptions(maxTokens: 30, ignoreEOS: true, logprobs: 2)
        let generator = Generator(tokenizer: real.tokenizer)
        let plain = try generator.generate(prompt: prompt, decoder: SpeculativeDecoder.plain(model: real.model, contextCapacity: 128),
                                           options: options)
        let oracle = OracleTreeDrafter(reference: plain.tokens, promptCount: prompt.count, vocabulary: real.model.config.vocabularySize,
                                       seed: 9)
        let tree = try generator.generate(
            prompt: prompt, decoder: SpeculativeDecoder(model: real.model, drafter: oracle, name: "oracle tree", contextCapacity: 128),
            options: options)
        #expect(tree.tokens == plain.tokens)
        for (a, b) in zip(tree.logprobs, plain.logprobs) {
            #expect(a.token.logprob == b.token.logprob && a.top.map(\.id) == b.top.map(\.id))
        }
    }
}

/// The multi-candidate rule on trees keeps the full model's distribution exactly.
extension SpeculativeSamplingTests {
    func treeDecoders(acceptance: AcceptanceRule = SpeculativeSamplingRule()) -> [SpeculativeDecoder] {
        [[3, 2, 1], [2, 2, 2], [4]].map { shape in
            SpeculativeDecoder(model: model, drafter: SampledTreeDrafter(vocabulary: TinyModel.vocabulary, shape: shape),
                               name: "tree \(shape)", maxDrafts: 16, contextCapacity: 32, acceptance: acceptance)
        }
    }

    @Test("sampled trees (siblings drawn independently and without replacement) keep the exact target distribution",
          arguments: 0..<3)
    func treesSampleExactly(setting: Int) throws {
        let options = Self.settings[setting]
        let exact = try exactDistribution(options)
        for decoder in treeDecoders() {
            let (counts, rejected, accepted, _) = try empirical(decoder, options)
            let p = Self.chiSquarePValue(observed: counts, expected: exact)
            #expect(p > Self.significance, "\(decoder.name) at \(options): chi-square p = \(p)")
            #expect(rejected > 0 && accepted > 0, "\(decoder.name): \(rejected) rounds rejected, \(accepted) accepted")
        }
    }

    @Test("the chi-square check fails for broken acceptance rules on trees")
    func brokenRulesAreCaughtOnTrees() throws {
        let options = Self.settings[1]
        let exact = try exactDistribution(options)
        for rule in [AlwaysAccept() as AcceptanceRule, InvertedRatio()] {
            for decoder in treeDecoders(acceptance: rule) {
                let p = Self.chiSquarePValue(observed: try empirical(decoder, options).counts, expected: exact)
                #expect(p < Self.significance, "\(type(of: rule)) with \(decoder.name) was not caught: p = \(p)")
            }
        }
    }
}

/// On the real model: the token after the first, drafted as a tree of candidates at the root, has
/// the full model's distribution. (The first token is chosen greedily, so the distribution under test
/// is one the test can compute.)
@Suite("Tree sampling on the real model")
struct RealModelTreeSamplingTests {
    @Test("the first token of sampled trees over the real model's top tokens has the full model's distribution")
    func firstTokenDistribution() throws {
        let real = try RealModel.get()
        let model = real.model, vocabulary = model.config.vocabularySize
        let prompt = real.tokenizer.encode("My favourite animal is the")
        let options = SamplingOptions(temperature: 1, topK: 12)
        var greedy = Sampler(options: SamplingOptions())
        // The exact distribution of the round's first token.
        let plain = SpeculativeDecoder.plain(model: model, contextCapacity: 32)
        var sampler = Sampler(options: options)
        _ = try plain.start(prompt: prompt, sampler: &greedy)
        let round = try plain.next(sampler: &sampler, limit: 1)
        var p = [Float](repeating: 0, count: vocabulary)
        sampler.process(round.logits.row(0), count: vocabulary, into: &p)
        let support = (0..<vocabulary).filter { p[$0] > 0 }.map { Int32($0) }
        #expect(support.count == 12)
        // Trees whose candidates spread over the 12 tokens and 4 outside them, unlike p.
        let candidates = support + (0..<4).map { Int32($0 + 100) }
        for shape in [[4, 2]] {
            let decoder = SpeculativeDecoder(
                model: model, drafter: SampledTreeDrafter(vocabulary: vocabulary, shape: shape, candidates: candidates),
                name: "tree \(shape)", contextCapacity: 32)
            var counts = [Int](repeating: 0, count: support.count + 1)
            var acceptedRoots = 0
            for seed in 0..<1200 {
                var sampler = Sampler(options: SamplingOptions(temperature: 1, topK: 12, seed: UInt64(seed)))
                _ = try decoder.start(prompt: prompt, sampler: &greedy)
                let round = try decoder.next(sampler: &sampler, limit: 8)
                counts[support.firstIndex(of: round.tokens[0]) ?? support.count] += 1
                if round.tokens.count > 1 { acceptedRoots += 1 }
            }
            #expect(counts[support.count] == 0, "a token outside the target's support was committed")
            let pValue = SpeculativeSamplingTests.chiSquarePValue(observed: Array(counts.prefix(support.count)),
                                                                  expected: support.map { Double(p[Int($0)]) })
            #expect(pValue > SpeculativeSamplingTests.significance, "tree \(shape): chi-square p = \(pValue)")
            #expect(acceptedRoots > 100, "tree \(shape): root candidates accepted \(acceptedRoots) times")
        }
    }
}
