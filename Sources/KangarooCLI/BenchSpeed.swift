import ArgumentParser
import Decoding
import Foundation
import Llama
import Tensor
import Tokenizer

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks: Spec-Bench suites (default), raw speed, reports.",
        subcommands: [BenchSuite.self, BenchSpeed.self, BenchReport.self, BenchSweep.self],
        defaultSubcommand: BenchSuite.self)
}

/// Decode and prefill speed, the cost of a forward over n tokens, and memory bandwidth use.
struct BenchSpeed: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "speed",
        abstract: "Measure decode and prefill tokens/s and the time of a forward over n = 1, 2, 4, 8, 16 tokens.",
        discussion: """
        The n-token forward runs from a warm KV cache (--context tokens, 64 by default) and includes the \
        logits of all n tokens, as speculative verification needs them; each n is timed --repeats times, the \
        sizes taking turns so that a shared machine's drift slows them alike, and the median is reported \
        with its ratio to n = 1. Effective bandwidth is the weight bytes one decode \
        step reads over its time, next to the machine's streaming bandwidth measured by the same command. \
        The matrix kernel alone is also timed over the same n: layer 0's query matrix on one thread with \
        its weights hot in cache (best of --repeats batches): the arithmetic cost of n tokens with no \
        memory traffic. And the layers' matrix products \
        alone: every layer's query/key/value, output, gate/up (with SwiGLU, which the forward runs in the \
        same job) and down products over the same n on all threads, as a forward makes them (median of \
        --repeats), so what the forward adds beyond its products (attention, norms, RoPE, the output \
        head) shows as the difference.

        Two more comparisons, from the same warm cache: a forward over a tree of n nodes (--tree-sizes; a \
        binary tree, node i's parent is node (i − 1) / 2, as a speculative decoder verifies a draft tree) \
        against a chain of n tokens, the two taking turns; and one decoding step (one token and its logits) \
        for each of --sequences sequences at once, each with its own cache of --context tokens, against \
        one sequence.
        """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Tokens to decode for the decode measurement.")
    var decodeTokens = 128

    @Option(help: "Prompt length for the prefill measurement.")
    var prefillTokens = 256

    @Option(help: "Timed repetitions of each n-token forward.")
    var repeats = 30

    @Option(help: "Token counts of the n-token forward, comma-separated (the first is the ratios' base).")
    var sizes = "1,2,4,8,16"

    @Option(help: "Node counts of the tree-against-chain forward, comma-separated.")
    var treeSizes = "4,8,16"

    @Option(help: "Sequence counts of the batched decoding step, comma-separated (the first is the ratios' base).")
    var sequences = "1,2,4,8"

    @Option(help: "Context the n-token forward starts from, in tokens (attention reads all of it for each new token).")
    var context = 64

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func validate() throws {
        guard (1...512).contains(prefillTokens) else { throw ValidationError("--prefill-tokens must be 1…512") }
        guard decodeTokens >= 1 else { throw ValidationError("--decode-tokens must be at least 1") }
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
        guard forwardSizes?.isEmpty == false else { throw ValidationError("--sizes must list token counts between 1 and 64, e.g. 1,2,4,8,16") }
        guard Self.counts(treeSizes, in: 2...64) != nil else { throw ValidationError("--tree-sizes must list node counts between 2 and 64, e.g. 4,8,16") }
        guard Self.counts(sequences, in: 1...16) != nil else { throw ValidationError("--sequences must list sequence counts between 1 and 16, e.g. 1,2,4,8") }
        guard (1...4096).contains(context) else { throw ValidationError("--context must be 1…4096") }
    }

    struct Report: Encodable {
        struct Forward: Encodable {
            var tokens: Int
            var milliseconds: Double
            var ratioToOne: Double
        }
        var threads: Int
        var kernelLevel: String
        var context: Int
        var decodeTokensPerSecond: Double
        var prefillTokensPerSecond: Double
        var forward: [Forward]
        struct TreeForward: Encodable {
            var nodes: Int
            var treeMilliseconds: Double
            var chainMilliseconds: Double
            var ratioToChain: Double
        }
        struct BatchStep: Encodable {
            var sequences: Int
            var milliseconds: Double
            var ratioToOne: Double
            var tokensPerSecond: Double
        }
        /// A forward over a binary tree of n nodes against a chain of n tokens.
        var trees: [TreeForward]
        /// One decoding step for several sequences at once.
        var batchSteps: [BatchStep]
        /// The matrix kernel alone (one thread, weights in cache): `milliseconds` is per product.
        var kernel: [Forward]
        var kernelMatrix: String
        /// Every layer's matrix products alone over n tokens (all threads, as in a forward).
        var products: [Forward]
        var weightBytesPerToken: Int
        var effectiveBandwidthGBs: Double
        var streamingBandwidthGBs: Double
        var bandwidthShare: Double
    }

    /// --sizes parsed, or nil when it is not a list of counts in 1…64.
    var forwardSizes: [Int]? { Self.counts(sizes, in: 1...64).map(Self.withBaseline) }

    /// `counts` with 1 first: every ratio printed is to one token (or sequence), whatever was listed.
    static func withBaseline(_ counts: [Int]) -> [Int] { [1] + counts.filter { $0 != 1 } }

    /// A comma-separated list of counts in `range`, or nil.
    static func counts(_ list: String, in range: ClosedRange<Int>) -> [Int]? {
        let counts = list.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !counts.isEmpty, counts.allSatisfy({ $0 != nil && range.contains($0!) }) else { return nil }
        return counts.map { $0! }
    }

    func run() throws {
        let (model, tokenizer) = try modelOptions.load()
        let pool = ThreadPool.shared
        let config = model.config

        // Decode: greedy, exactly decodeTokens tokens.
        let prompt = tokenizer.encodePrompt("The capital of France is")
        let generator = Generator(tokenizer: tokenizer)
        let decoder = SpeculativeDecoder.plain(model: model, contextCapacity: 2048)
        let options = GenerationOptions(maxTokens: decodeTokens, ignoreEOS: true)
        _ = try generator.generate(prompt: prompt, decoder: decoder, options: GenerationOptions(maxTokens: 16, ignoreEOS: true))
        let decode = try generator.generate(prompt: prompt, decoder: decoder, options: options)

        // Prefill: one long prompt of ordinary text.
        let sentence = "Kangaroos are large marsupials found only in Australia. "
        let long = tokenizer.encode(String(repeating: sentence, count: 64 + context / 8))
        let prefillPrompt = Array(long.prefix(prefillTokens))
        var sampler = Sampler(options: SamplingOptions())
        _ = try decoder.start(prompt: prefillPrompt, sampler: &sampler)
        // The whole prompt again, not the part a new turn would keep from the last.
        decoder.forgetCache()
        let prefillStart = ContinuousClock.now
        _ = try decoder.start(prompt: prefillPrompt, sampler: &sampler)
        let prefillSeconds = (ContinuousClock.now - prefillStart).seconds

        // Forward over n tokens from a warm cache, logits for every token.
        let cache = KVCache(config: config, capacity: context + 64)
        let scratch = ForwardScratch(config: config, contextCapacity: context + 64, pool: pool)
        let hidden = FloatMatrix(capacity: max(context, 64), columns: config.hiddenSize)
        let logits = FloatMatrix(capacity: 64, columns: config.vocabularySize)
        model.embed(Array(long.prefix(context)), into: hidden)
        try model.forward(layers: 0..<config.layerCount, hidden: hidden, cache: cache, scratch: scratch)
        let forward = try Self.interleaved(forwardSizes ?? [], repeats: repeats, warmUp: 3) { n in
            let begin = ContinuousClock.now
            model.embed(long[context..<(context + n)], into: hidden)
            try model.forward(layers: 0..<config.layerCount, hidden: hidden, cache: cache, scratch: scratch)
            model.logits(hidden, rows: 0..<n, into: logits, scratch: scratch)
            let elapsed = (ContinuousClock.now - begin).seconds
            cache.truncate(to: context)
            return elapsed * 1000
        }

        // Trees against chains of the same size, from the same warm cache.
        var trees: [Report.TreeForward] = []
        for n in Self.counts(treeSizes, in: 2...64)! {
            let shapes = [TokenTree.chain(n), TokenTree(parents: (0..<n).map { $0 == 0 ? nil : ($0 - 1) / 2 })!]
            let times = try Self.interleaved([0, 1], repeats: repeats, warmUp: 3) { shape in
                let begin = ContinuousClock.now
                model.embed(long[context..<(context + n)], into: hidden)
                try model.forward(layers: 0..<config.layerCount, hidden: hidden,
                                  batch: [BatchSequence(cache: cache, tree: shapes[shape])], scratch: scratch)
                model.logits(hidden, rows: 0..<n, into: logits, scratch: scratch)
                let elapsed = (ContinuousClock.now - begin).seconds
                cache.truncate(to: context)
                return elapsed * 1000
            }
            trees.append(.init(nodes: n, treeMilliseconds: times[1].milliseconds, chainMilliseconds: times[0].milliseconds,
                               ratioToChain: times[1].ratioToOne))
        }
        let batchSteps = try Self.batchStepTimes(model, text: Array(long), context: context,
                                                 sequences: Self.withBaseline(Self.counts(sequences, in: 1...16)!), repeats: repeats, pool: pool)

        let matrix = model.attentionWeights(layer: 0).query
        let kernel = Self.kernelTimes(matrix, sizes: forwardSizes ?? [], repeats: repeats)
        let products = Self.productTimes(model, sizes: forwardSizes ?? [], repeats: repeats, pool: pool)

        let weightBytes = model.weightBytesPerToken
        let stepSeconds = 1 / decode.decodeTokensPerSecond
        let effective = Double(weightBytes) / stepSeconds / 1e9
        let streaming = Self.streamingBandwidth(pool: pool)
        let report = Report(
            threads: pool.threads, kernelLevel: KernelInfo.levelName, context: context,
            decodeTokensPerSecond: decode.decodeTokensPerSecond,
            prefillTokensPerSecond: Double(prefillPrompt.count) / prefillSeconds,
            forward: forward, trees: trees, batchSteps: batchSteps, kernel: kernel, kernelMatrix: "\(matrix.rows) × \(matrix.columns) \(matrix.type)", products: products,
            weightBytesPerToken: weightBytes,
            effectiveBandwidthGBs: effective, streamingBandwidthGBs: streaming, bandwidthShare: effective / streaming)
        if json {
            try printJSON(report)
            return
        }
        writeOut("""
        threads \(report.threads), kernels \(report.kernelLevel)
        decode   \(String(format: "%7.1f", report.decodeTokensPerSecond)) tokens/s (\(decodeTokens) tokens)
        prefill  \(String(format: "%7.1f", report.prefillTokensPerSecond)) tokens/s (\(prefillPrompt.count)-token prompt)
        forward over n tokens from a warm cache of \(report.context) tokens (with logits for all n):

        """)
        for f in forward {
            writeOut(String(format: "  n = %2d  %7.2f ms  %5.2f× n=1\n", f.tokens, f.milliseconds, f.ratioToOne))
        }
        writeOut("forward over a tree of n nodes against a chain of n tokens:\n")
        for t in trees {
            writeOut(String(format: "  n = %2d  tree %7.2f ms  chain %7.2f ms  %5.2f× the chain\n", t.nodes, t.treeMilliseconds,
                            t.chainMilliseconds, t.ratioToChain))
        }
        writeOut("one decoding step (a token and its logits) for s sequences at once, each from a cache of \(report.context) tokens:\n")
        for b in batchSteps {
            writeOut(String(format: "  s = %2d  %7.2f ms  %5.2f× s=1  %7.1f tokens/s in all\n", b.sequences, b.milliseconds,
                            b.ratioToOne, b.tokensPerSecond))
        }
        writeOut("the matrix kernel alone (\(report.kernelMatrix), one thread, weights in cache):\n")
        for k in kernel {
            writeOut(String(format: "  n = %2d  %7.2f µs  %5.2f× n=1\n", k.tokens, k.milliseconds * 1000, k.ratioToOne))
        }
        writeOut("the layers' matrix products alone (q/k/v, output, gate/up with SwiGLU, down of every layer, all threads):\n")
        for p in products {
            writeOut(String(format: "  n = %2d  %7.2f ms  %5.2f× n=1\n", p.tokens, p.milliseconds, p.ratioToOne))
        }
        writeOut(String(format: "decode reads %.1f MiB of weights a token: %.1f GB/s effective, %.0f%% of the %.1f GB/s this machine streams\n",
                        Double(weightBytes) / 1_048_576, effective, 100 * report.bandwidthShare, streaming))
    }

    /// One decoding step for s sequences at once (a token each, one forward, logits for each), each
    /// sequence with its own cache holding `context` tokens of `text`, for each s of `sequences`: medians
    /// of `repeats`, the counts taking turns.
    static func batchStepTimes(_ model: LlamaModel, text: [Int32], context: Int, sequences: [Int], repeats: Int,
                               pool: ThreadPool) throws -> [Report.BatchStep] {
        let config = model.config, most = sequences.max()!
        let scratch = ForwardScratch(config: config, contextCapacity: context + 1, pool: pool)
        let hidden = FloatMatrix(capacity: max(context, most), columns: config.hiddenSize)
        let logits = FloatMatrix(capacity: most, columns: config.vocabularySize)
        let caches = try (0..<most).map { s in
            let cache = KVCache(config: config, capacity: context + 1)
            model.embed(text[s..<(s + context)], into: hidden)
            try model.forward(layers: 0..<config.layerCount, hidden: hidden, cache: cache, scratch: scratch)
            return cache
        }
        let steps = try interleaved(sequences, repeats: repeats, warmUp: 3) { s in
            let begin = ContinuousClock.now
            model.embed((0..<s).map { text[$0 + context] }, into: hidden)
            try model.forward(layers: 0..<config.layerCount, hidden: hidden,
                              batch: caches[0..<s].map { BatchSequence(cache: $0, count: 1) }, scratch: scratch)
            model.logits(hidden, rows: 0..<s, into: logits, scratch: scratch)
            let elapsed = (ContinuousClock.now - begin).seconds
            caches[0..<s].forEach { $0.truncate(to: context) }
            return elapsed * 1000
        }
        return steps.map { .init(sequences: $0.tokens, milliseconds: $0.milliseconds, ratioToOne: $0.ratioToOne,
                                 tokensPerSecond: Double($0.tokens) / $0.milliseconds * 1000) }
    }

    /// `matrix` times n random token rows on a one-thread pool, for each n: the best of `repeats`
    /// batches of 50 products (the input is quantised once, so only the kernel is timed).
    static func kernelTimes(_ matrix: WeightMatrix, sizes: [Int], repeats: Int) -> [Report.Forward] {
        let pool = ThreadPool(threads: 1)
        let most = sizes.max() ?? 1
        let input = randomActivations(count: most * matrix.columns, seed: 1)
        let output = UnsafeMutablePointer<Float>.allocate(capacity: most * matrix.rows)
        defer { input.deallocate(); output.deallocate() }
        let batch = ActivationBatch(capacity: most * matrix.columns)
        return series(sizes) { n in
            batch.set(input, count: n, columns: matrix.columns)
            matrix.multiply(batch, into: output, pool: pool)
            var best = Double.infinity
            for _ in 0..<repeats {
                let begin = ContinuousClock.now
                for _ in 0..<50 { matrix.multiply(batch, into: output, pool: pool) }
                best = min(best, (ContinuousClock.now - begin).seconds / 50)
            }
            return best * 1000
        }
    }

    /// Every layer's matrix products over n random token rows, as a forward makes them (query, key and
    /// value together, output, gate and up with SwiGLU, down; each input quantised by its product) on
    /// `pool`, for each n: the median of `repeats` passes over all layers. The weights come from wherever
    /// the previous pass left them, as in a forward.
    static func productTimes(_ model: LlamaModel, sizes: [Int], repeats: Int, pool: ThreadPool) -> [Report.Forward] {
        let c = model.config
        let most = sizes.max() ?? 1
        let width = max(c.hiddenSize, c.querySize, c.feedForwardSize)
        let input = randomActivations(count: most * width, seed: 2)
        let outputs = (0..<3).map { _ in UnsafeMutablePointer<Float>.allocate(capacity: most * width) }
        defer { input.deallocate(); outputs.forEach { $0.deallocate() } }
        let batch = ActivationBatch(capacity: most * width), activated = ActivationBatch(capacity: most * c.feedForwardSize)
        func pass(_ n: Int) {
            for layer in 0..<c.layerCount {
                let a = model.attentionWeights(layer: layer), f = model.feedForwardWeights(layer: layer)
                batch.set(input, count: n, columns: c.hiddenSize)
                batch.multiply(a.query, into: outputs[0], a.key, into: outputs[1], a.value, into: outputs[2], pool: pool)
                batch.set(input, count: n, columns: c.querySize)
                a.output.multiply(batch, into: outputs[0], pool: pool)
                batch.set(input, count: n, columns: c.hiddenSize)
                batch.multiplySwiGLU(f.gate, f.up, into: outputs[0], up: outputs[1], next: activated, for: f.down, pool: pool)
                f.down.multiply(activated, into: outputs[2], pool: pool)
            }
        }
        return interleaved(sizes, repeats: repeats, warmUp: 1) { n in
            let begin = ContinuousClock.now
            pass(n)
            return (ContinuousClock.now - begin).seconds * 1000
        }
    }

    /// The median of `repeats` timings (ms) of each of `sizes`, with its ratio to the first. The sizes take
    /// turns, one timing of each per round (after `warmUp` untimed rounds), so a machine whose speed drifts
    /// (a shared host) slows them all alike instead of whichever is timed last (docs/measurements.md).
    static func interleaved(_ sizes: [Int], repeats: Int, warmUp: Int, milliseconds: (Int) throws -> Double) rethrows -> [Report.Forward] {
        var samples = [[Double]](repeating: [], count: sizes.count)
        for round in 0..<(warmUp + repeats) {
            for (i, n) in sizes.enumerated() {
                let ms = try milliseconds(n)
                if round >= warmUp { samples[i].append(ms) }
            }
        }
        let medians = samples.map(median)
        return zip(sizes, medians).map { .init(tokens: $0, milliseconds: $1, ratioToOne: $1 / medians[0]) }
    }

    /// `milliseconds(n)` for each of `sizes`, with its ratio to the first.
    static func series(_ sizes: [Int], milliseconds: (Int) throws -> Double) rethrows -> [Report.Forward] {
        var out: [Report.Forward] = []
        for n in sizes {
            let ms = try milliseconds(n)
            out.append(.init(tokens: n, milliseconds: ms, ratioToOne: ms / (out.first?.milliseconds ?? ms)))
        }
        return out
    }

    static func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

    /// `count` seeded random activations in [−1, 1], for the products timed without a model input
    /// (the caller deallocates them).
    static func randomActivations(count: Int, seed: UInt64) -> UnsafeMutablePointer<Float> {
        let values = UnsafeMutablePointer<Float>.allocate(capacity: count)
        var random = SplitMix64(seed: seed)
        for i in 0..<count { values[i] = Float(Int(random.next() % 2001) - 1000) / 1000 }
        return values
    }

    /// Read bandwidth of all pool threads summing a 512 MiB buffer (best of 3).
    static func streamingBandwidth(pool: ThreadPool) -> Double {
        let count = 128 << 20  // floats
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 1, count: count)
        var best = 0.0
        let job = SumJob(buffer: buffer, threads: pool.threads)
        for _ in 0..<3 {
            let begin = ContinuousClock.now
            pool.run(job, count: count / SumJob.chunk, grain: 1)
            let seconds = (ContinuousClock.now - begin).seconds
            best = max(best, Double(count * 4) / seconds / 1e9)
        }
        return best
    }
}

/// Sums a buffer in chunks across the pool (the bandwidth probe).
final class SumJob: ParallelJob {
    static let chunk = 4096
    let buffer: UnsafeMutablePointer<Float>
    /// One result per part (kept so the sums are not optimised away).
    let sums: UnsafeMutablePointer<Float>

    init(buffer: UnsafeMutablePointer<Float>, threads: Int) {
        self.buffer = buffer
        sums = .allocate(capacity: threads)
        sums.initialize(repeating: 0, count: threads)
    }

    deinit { sums.deallocate() }

    func run(_ range: Range<Int>, part: Int) {
        sums[part] += VectorOps.sum(buffer + range.lowerBound * Self.chunk, count: range.count * Self.chunk)
    }
}
