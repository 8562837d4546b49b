import Foundation

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

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, minP: Float = 0, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.seed = seed
    }

    public var isGreedy: Bool { temperature <= 0 }
}

/// A token with its probability in a processed (truncated, renormalised) distribution.
public struct Candidate: Sendable, Equatable {
    public var id: Int32
    public var probability: Float
}

/// Chooses tokens: argmax when greedy, otherwise a seeded draw from the processed distribution
/// (temperature → softmax → top-k → top-p → min-p → renormalise). Same seed, same draws.
public struct Sampler: Sendable {
    public let options: SamplingOptions
    private var random: Xoshiro256

    public init(options: SamplingOptions) {
        self.options = options
        random = Xoshiro256(seed: options.seed)
    }

    /// The index of the largest logit (the lowest index on ties).
    public static func argmax(_ logits: UnsafePointer<Float>, count: Int) -> Int32 {
        var best = 0
        var bestValue = logits[0]
        for i in 1..<count where logits[i] > bestValue {
            best = i
            bestValue = logits[i]
        }
        return Int32(best)
    }

    public mutating func sample(_ logits: UnsafePointer<Float>, count: Int) -> Int32 {
        if options.isGreedy { return Self.argmax(logits, count: count) }
        return draw(from: distribution(logits, count: count))
    }

    /// Draws one token from a processed distribution.
    public mutating func draw(from candidates: [Candidate]) -> Int32 {
        let u = Float(random.nextUnitDouble())
        var cumulative: Float = 0
        for candidate in candidates {
            cumulative += candidate.probability
            if u < cumulative { return candidate.id }
        }
        return candidates.last!.id
    }

    /// The processed distribution over tokens, most likely first, summing to 1.
    public func distribution(_ logits: UnsafePointer<Float>, count: Int) -> [Candidate] {
        let temperature = max(options.temperature, 1e-6)
        var maxLogit = -Float.infinity
        for i in 0..<count { maxLogit = max(maxLogit, logits[i]) }
        var candidates: [Candidate] = []
        candidates.reserveCapacity(count)
        var total: Float = 0
        for i in 0..<count {
            let p = expf((logits[i] - maxLogit) / temperature)
            total += p
            candidates.append(Candidate(id: Int32(i), probability: p))
        }
        candidates.sort { $0.probability > $1.probability || ($0.probability == $1.probability && $0.id < $1.id) }
        for i in candidates.indices { candidates[i].probability /= total }

        var keep = candidates.count
        if options.topK > 0 { keep = min(keep, options.topK) }
        if options.topP < 1 {
            var cumulative: Float = 0
            for i in 0..<keep {
                cumulative += candidates[i].probability
                if cumulative >= options.topP {
                    keep = i + 1
                    break
                }
            }
        }
        if options.minP > 0 {
            let floor = candidates[0].probability * options.minP
            while keep > 1 && candidates[keep - 1].probability < floor { keep -= 1 }
        }
        candidates.removeSubrange(keep...)
        let kept = candidates.reduce(0) { $0 + $1.probability }
        for i in candidates.indices { candidates[i].probability /= kept }
        return candidates
    }
}

/// xoshiro256** seeded through SplitMix64: small, fast, and the same on every platform.
struct Xoshiro256: Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    init(seed: UInt64) {
        var x = seed
        func splitMix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitMix(), splitMix(), splitMix(), splitMix())
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
