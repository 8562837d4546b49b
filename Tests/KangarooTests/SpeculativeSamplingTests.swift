import Adapter
import Decoding
import Foundation
import Llama
import Tensor
import Testing

/// Speculative sampling must reproduce the target distribution exactly. On a tiny model the exact
/// distribution of the first three generated tokens can be enumerated (8³ sequences); each decoder's
/// empirical distribution over many seeded runs is compared with it by a chi-square test.
@Suite("Speculative sampling is exact")
struct SpeculativeSamplingTests {
    static let prompt: [Int32] = [1, 5, 2]
    static let length = 3
    static let runs = 6000
    /// Reject the hypothesis "same distribution" below this p-value.
    static let significance = 1e-3

    let model: LlamaModel

    init() throws {
        model = try TinyModel.make()
    }

    /// The exact probability of every sequence of `length` tokens after the prompt.
    func exactDistribution(_ options: SamplingOptions) throws -> [Double] {
        let v = TinyModel.vocabulary
        let sampler = Sampler(options: options)
        var result = [Double](repeating: 0, count: Int(pow(Double(v), Double(Self.length))))
        let cache = KVCache(config: model.config, capacity: 16)
        let scratch = ForwardScratch(config: model.config, contextCapacity: 16)
        let hidden = FloatMatrix(capacity: 16, columns: model.config.hiddenSize)
        let logits = FloatMatrix(capacity: 1, columns: v)
        var next = [Float](repeating: 0, count: v)
        func visit(_ prefix: [Int32], _ probability: Double) throws {
            if prefix.count == Self.prompt.count + Self.length {
                result[index(Array(prefix.suffix(Self.length)))] += probability
                return
            }
            cache.reset()
            model.embed(prefix, into: hidden)
            try model.forward(layers: 0..<model.config.layerCount, hidden: hidden, cache: cache, scratch: scratch)
            model.logits(hidden, rows: (prefix.count - 1)..<prefix.count, into: logits, scratch: scratch)
            sampler.process(logits.row(0), count: v, into: &next)
            let p = next
            for token in 0..<v where p[token] > 0 {
                try visit(prefix + [Int32(token)], probability * Double(p[token]))
            }
        }
        try visit(Self.prompt, 1)
        return result
    }

    func index(_ tokens: [Int32]) -> Int {
        tokens.reduce(0) { $0 * TinyModel.vocabulary + Int($1) }
    }

    /// Counts of each sequence of `length` first tokens over `runs` seeded generations, and for a
    /// speculative decoder the rounds that accepted no draft and some drafts, over all runs.
    func empirical(_ decoder: Decoder, _ options: SamplingOptions) throws -> (counts: [Int], rejected: Int, accepted: Int, siblings: Int) {
        var rejected = 0, accepted = 0, siblings = 0
        var counts = [Int](repeating: 0, count: Int(pow(Double(TinyModel.vocabulary), Double(Self.length))))
        for seed in 0..<Self.runs {
            var o = options
            o.seed = UInt64(seed) &* 7919 &+ 17
            var sampler = Sampler(options: o)
            var tokens = try decoder.start(prompt: Self.prompt, sampler: &sampler).tokens
            while tokens.count < Self.length {
                tokens += try decoder.next(sampler: &sampler, limit: 8).tokens
            }
            counts[index(Array(tokens.prefix(Self.length)))] += 1
            if let stats = decoder.speculativeStatistics {
                rejected += stats.acceptedDrafts[0]
                accepted += stats.acceptedDrafts.dropFirst().reduce(0, +)
                if stats.draftedNodes > stats.draftSteps + stats.copiedDrafts { siblings += 1 }
            }
        }
        return (counts, rejected, accepted, siblings)
    }

    /// Pearson's chi-square p-value (Wilson–Hilferty approximation); cells expecting fewer than 5
    /// observations are pooled.
    static func chiSquarePValue(observed: [Int], expected probabilities: [Double]) -> Double {
        let n = Double(observed.reduce(0, +))
        var statistic = 0.0, cells = 0
        var pooledObserved = 0.0, pooledExpected = 0.0
        for (o, p) in zip(observed, probabilities) {
            let e = p * n
            if e < 5 {
                pooledObserved += Double(o)
                pooledExpected += e
                continue
            }
            statistic += (Double(o) - e) * (Double(o) - e) / e
            cells += 1
        }
        if pooledExpected > 0 {
            statistic += (pooledObserved - pooledExpected) * (pooledObserved - pooledExpected) / max(pooledExpected, 1e-9)
            cells += 1
        }
        let k = Double(max(cells - 1, 1))
        let z = (pow(statistic / k, 1.0 / 3) - (1 - 2 / (9 * k))) / (2 / (9 * k)).squareRoot()
        return 0.5 * erfc(z / 2.0.squareRoot())
    }

    func decoders(acceptance: AcceptanceRule = SpeculativeSamplingRule()) throws -> [Decoder] {
        let options = SpeculativeOptions(exitLayer: 2, threshold: 0.2, maxDraft: 3, copyNgram: 0)
        return [
            SpeculativeDecoder.plain(model: model, contextCapacity: 32),
            try makeDecoder(model: model, drafter: .adapter(.random(for: model, exitLayer: 2, seed: 4)), options: options,
                                   contextCapacity: 32, acceptance: acceptance),
            try makeDecoder(model: model, drafter: .layerSkip, options: options, contextCapacity: 32, acceptance: acceptance),
            // Draft trees: children drawn without replacement, several levels, leaves added last; on
            // cheap rows, so that siblings grow whatever the machine's load.
            try makeDecoder(model: model, drafter: .adapter(.random(for: model, exitLayer: 2, seed: 4)),
                            options: SpeculativeOptions(exitLayer: 2, threshold: 0.05, copyNgram: 0, treeBudget: 6, treeWidth: 3),
                            contextCapacity: 32, costs: .cheapRows, acceptance: acceptance),
            // Kangaroo's defaults, which leave the tree to the mode: a chain when sampling.
            try makeDecoder(model: model, drafter: .adapter(.random(for: model, exitLayer: 2, seed: 4)),
                            options: DecoderKind.kangaroo.defaultOptions, contextCapacity: 32, acceptance: acceptance),
            // Copy drafts of one token: with 8 tokens in the vocabulary most drafts are copies (all their
            // probability on one token), the rest the adapter's.
            try makeDecoder(model: model, drafter: .adapter(.random(for: model, exitLayer: 2, seed: 4)),
                                   options: SpeculativeOptions(exitLayer: 2, threshold: 0.2, maxDraft: 3, copyNgram: 1),
                                   contextCapacity: 32, acceptance: acceptance),
            // ReDrafter: a chain drawn from its recurrent head (its beams are for greedy decoding).
            SpeculativeDecoder(model: model, drafter: try ReDrafter(head: .random(for: model, seed: 6), model: model, beamWidth: 3, beamLength: 3),
                               name: "redrafter", contextCapacity: 32, acceptance: acceptance),
            // SpecDec: a block of three drafts, each drawn from its own position's distribution.
            try DecoderCatalog.make(.specdec, model: model, options: SpeculativeOptions(threshold: 0, maxDraft: 3, copyNgram: 0),
                                    blockDrafter: SpecDecTests.randomBlockDrafter(.random(for: model, exitLayer: 2, seed: 4), k: 2, seed: 5),
                                    contextCapacity: 32, acceptance: acceptance, name: "specdec"),
        ]
    }

    static let settings: [SamplingOptions] = [
        SamplingOptions(temperature: 0.7),
        SamplingOptions(temperature: 1.0),
        SamplingOptions(temperature: 1.0, topP: 0.8),
    ]

    @Test("plain, Kangaroo (also with copy drafts and with trees), layer-skip, ReDrafter and SpecDec sample the exact target distribution (T = 0.7, T = 1, T = 1 with top-p 0.8)",
          arguments: 0..<3)
    func exactDistribution(setting: Int) throws {
        let options = Self.settings[setting]
        let exact = try exactDistribution(options)
        #expect(abs(exact.reduce(0, +) - 1) < 1e-5)  // float32 probabilities
        for decoder in try decoders() {
            let (counts, rejected, accepted, siblings) = try empirical(decoder, options)
            let p = Self.chiSquarePValue(observed: counts, expected: exact)
            #expect(p > Self.significance, "\(decoder.name) at \(options): chi-square p = \(p)")
            if decoder.name == "redrafter" || decoder.name == "specdec" {
                #expect(rejected > 0 && accepted > 0, "\(decoder.name): \(rejected) rounds rejected, \(accepted) accepted")
            }
            guard let drafter = (decoder as? SpeculativeDecoder)?.exitLayerDrafter else { continue }
            if drafter.options.treeBudget(sampling: true) > 0 {
                // Trees had more nodes than levels: siblings were drawn, and some accepted. (With top-p
                // the siblings may cover the whole target, so that no round rejects everything.)
                #expect(siblings > 0 && accepted > 0, "\(decoder.name): \(siblings) runs with siblings, \(accepted) rounds accepted")
            } else if drafter.options.copyNgram == 0 {
                // Some drafts are accepted and some rejected, so both paths of the rule were taken
                // (for copy drafts, see `copyDraftsWhileSampling`).
                #expect(rejected > 0 && accepted > 0, "\(decoder.name): \(rejected) rounds rejected, \(accepted) accepted")
            }
        }
    }

    @Test("the copy-draft decoder of the distribution test copies while sampling, and its drafts are accepted and rejected")
    func copyDraftsWhileSampling() throws {
        let decoder = try #require(try decoders().compactMap { $0 as? SpeculativeDecoder }.first { $0.exitLayerDrafter?.options.copyNgram == 1 })
        var copied = 0, rejected = 0, accepted = 0
        for seed in 0..<200 {
            var sampler = Sampler(options: SamplingOptions(temperature: 1, seed: UInt64(seed)))
            _ = try decoder.start(prompt: Self.prompt, sampler: &sampler)
            for _ in 0..<4 { _ = try decoder.next(sampler: &sampler, limit: 8) }
            copied += decoder.statistics.copiedDrafts
            rejected += decoder.statistics.acceptedDrafts[0]
            accepted += decoder.statistics.acceptedDrafts.dropFirst().reduce(0, +)
        }
        #expect(copied > 100 && rejected > 0 && accepted > 0, "\(copied) copy drafts, \(rejected) rounds rejected, \(accepted) accepted")
    }

    /// Accepting every draft (ignoring p/q) gives the draft's distribution, not the target's: the test
    /// must see it.
    struct AlwaysAccept: AcceptanceRule {
        func accepts(p: Float, q: Float, uniform u: Float) -> Bool { true }
    }

    /// Accepting with probability min(1, q/p) (the ratio upside down) is subtly wrong.
    struct InvertedRatio: AcceptanceRule {
        func accepts(p: Float, q: Float, uniform u: Float) -> Bool { u * p < q }
    }

    @Test("the chi-square check fails for broken acceptance rules")
    func brokenRulesAreCaught() throws {
        let options = Self.settings[1]
        let exact = try exactDistribution(options)
        for rule in [AlwaysAccept() as AcceptanceRule, InvertedRatio()] {
            for decoder in try decoders(acceptance: rule).dropFirst() {
                let p = Self.chiSquarePValue(observed: try empirical(decoder, options).counts, expected: exact)
                #expect(p < Self.significance, "\(type(of: rule)) with \(decoder.name) was not caught: p = \(p)")
            }
        }
    }

    @Test("the same seed gives the same tokens for every decoder")
    func seeded() throws {
        for decoder in try decoders() {
            var a = Sampler(options: SamplingOptions(temperature: 1, seed: 42)), b = a
            let first = try decoder.start(prompt: Self.prompt, sampler: &a).tokens + decoder.next(sampler: &a, limit: 8).tokens
            let second = try decoder.start(prompt: Self.prompt, sampler: &b).tokens + decoder.next(sampler: &b, limit: 8).tokens
            #expect(first == second)
        }
    }
}
