import Foundation
import Tensor

/// How the next token is chosen from the logits.
public struct SamplingOptions: Sendable, Equatable, Codable {
    /// 0 means greedy (argmax); otherwise logits are divided by it before the softmax.
    public var temperature: Float
    /// Keep only the `topK` most likely tokens (0: no limit).
    public var topK: Int
    /// Keep the smallest set of most likely tokens whose probability adds up to `topP` (1: no limit).
    public var topP: Float
    /// Drop tokens whose probability is below `minP` times the top token's (0: no limit).
    public var minP: Float
    public var seed: UInt64
    /// Greedy decoding only: SpecDec's lossy relaxed verification of drafts (nil: exact).
    public var relaxed: RelaxedVerification?

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, minP: Float = 0, seed: UInt64 = 0,
                relaxed: RelaxedVerification? = nil) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.seed = seed
        self.relaxed = relaxed
    }

    public var isGreedy: Bool { temperature <= 0 }

    /// Whether the output is the full model's own (greedy: plain decoding's token for token; sampled:
    /// its distribution): false only with a relaxed verification that accepts more than the argmax.
    public var isLossless: Bool { relaxed?.isLossless ?? true }
}

/// Chooses tokens: argmax when greedy, otherwise a seeded draw from the processed distribution
/// (temperature → softmax → top-k → top-p → min-p → renormalise). Same seed, same draws.
///
/// Processed distributions are dense (one probability per token, zero for excluded ones), so that
/// speculative sampling can compare the full model's `p` with the draft's `q` token by token.
public struct Sampler: Sendable {
    public let options: SamplingOptions
    private var random: Xoshiro256
    /// Reused buffer for `sample` (a class, so copies of the sampler share it).
    private let buffer = ProbabilityBuffer()

    public init(options: SamplingOptions) {
        self.options = options
        random = Xoshiro256(seed: options.seed)
    }

    /// The index of the largest logit (the lowest index on ties).
    public static func argmax(_ logits: UnsafePointer<Float>, count: Int) -> Int32 {
        Int32(VectorOps.argmax(logits, count: count))
    }

    public mutating func sample(_ logits: UnsafePointer<Float>, count: Int) -> Int32 {
        if options.isGreedy { return Self.argmax(logits, count: count) }
        let probabilities = buffer.storage(count)
        process(logits, count: count, into: probabilities)
        return draw(probabilities, count: count)
    }

    /// A uniform draw from [0, 1).
    public mutating func uniform() -> Float {
        Float(random.nextUnitDouble())
    }

    /// Draws a token from a dense distribution (which need not be normalised).
    public mutating func draw(_ probabilities: UnsafePointer<Float>, count: Int) -> Int32 {
        var total: Double = 0
        for i in 0..<count { total += Double(probabilities[i]) }
        let target = random.nextUnitDouble() * total
        var cumulative: Double = 0
        var last = 0
        for i in 0..<count where probabilities[i] > 0 {
            cumulative += Double(probabilities[i])
            last = i
            if target < cumulative { return Int32(i) }
        }
        return Int32(last)
    }

    /// Writes the processed distribution of `logits` into `out` (`count` probabilities summing to 1).
    public func process(_ logits: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>) {
        let temperature = max(options.temperature, 1e-6)
        var maxLogit = -Float.infinity
        for i in 0..<count { maxLogit = max(maxLogit, logits[i]) }
        var total: Float = 0
        for i in 0..<count {
            out[i] = expf((logits[i] - maxLogit) / temperature)
            total += out[i]
        }
        for i in 0..<count { out[i] /= total }
        let truncates = (options.topK > 0 && options.topK < count) || options.topP < 1
        if truncates {
            // Most likely first; ties by lower id. With top-k, only the k best are ordered.
            let before = { (a: Int, b: Int) in out[a] > out[b] || (out[a] == out[b] && a < b) }
            let order = options.topK > 0 && options.topK < count
                ? Self.best(options.topK, of: count, by: before) : (0..<count).sorted(by: before)
            var keep = options.topK > 0 ? min(options.topK, count) : count
            if options.topP < 1 {
                var cumulative: Float = 0
                for (rank, id) in order.prefix(keep).enumerated() {
                    cumulative += out[id]
                    if cumulative >= options.topP {
                        keep = rank + 1
                        break
                    }
                }
            }
            if keep < order.count {
                for id in order[keep...] { out[id] = 0 }
            }
            if order.count < count {
                // Tokens outside the k best.
                var kept = [Bool](repeating: false, count: count)
                for id in order { kept[id] = true }
                for id in 0..<count where !kept[id] { out[id] = 0 }
            }
        }
        if options.minP > 0 {
            var top: Float = 0
            for i in 0..<count { top = max(top, out[i]) }
            for i in 0..<count where out[i] < top * options.minP { out[i] = 0 }
        }
        total = 0
        for i in 0..<count { total += out[i] }
        for i in 0..<count { out[i] /= total }
    }
}

extension Sampler {
    /// The `k` first of `0..<count` in the order `before`, in that order: a bounded heap whose root is
    /// the worst kept, so a token is compared with it and rarely more (O(count · log k)).
    static func best(_ k: Int, of count: Int, by before: (Int, Int) -> Bool) -> [Int] {
        var heap: [Int] = []
        heap.reserveCapacity(k)
        func siftDown(_ start: Int) {
            var i = start
            while true {
                let l = 2 * i + 1, r = l + 1
                var worst = i
                if l < heap.count && before(heap[worst], heap[l]) { worst = l }
                if r < heap.count && before(heap[worst], heap[r]) { worst = r }
                if worst == i { return }
                heap.swapAt(i, worst)
                i = worst
            }
        }
        for id in 0..<count {
            if heap.count < k {
                heap.append(id)
                var i = heap.count - 1
                while i > 0, before(heap[(i - 1) / 2], heap[i]) {
                    heap.swapAt(i, (i - 1) / 2)
                    i = (i - 1) / 2
                }
            } else if before(id, heap[0]) {
                heap[0] = id
                siftDown(0)
            }
        }
        return heap.sorted(by: before)
    }
}

/// Scratch storage for a dense distribution.
final class ProbabilityBuffer: @unchecked Sendable {
    private var pointer: UnsafeMutablePointer<Float>?
    private var capacity = 0

    func storage(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count > capacity {
            pointer?.deallocate()
            pointer = .allocate(capacity: count)
            capacity = count
        }
        return pointer!
    }

    deinit { pointer?.deallocate() }
}

/// xoshiro256** seeded through SplitMix64: small, fast, and the same on every platform.
struct Xoshiro256: Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    init(seed: UInt64) {
        var seeder = SplitMix64(seed: seed)
        s = (seeder.next(), seeder.next(), seeder.next(), seeder.next())
    }

    mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }

    /// A uniform draw from [0, 1).
    mutating func nextUnitDouble() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }
}
