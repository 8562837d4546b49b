import Foundation

/// A token and its log-probability.
public struct TokenLogProb: Sendable, Equatable, Codable {
    public var id: Int32
    public var logprob: Float

    public init(id: Int32, logprob: Float) {
        self.id = id
        self.logprob = logprob
    }
}

/// Log-softmax helpers over a row of logits.
public enum LogProbabilities {
    /// `log Σ exp(logits)`, computed stably.
    public static func logSumExp(_ logits: UnsafePointer<Float>, count: Int) -> Float {
        var maxValue = -Float.infinity
        for i in 0..<count { maxValue = max(maxValue, logits[i]) }
        var sum: Double = 0
        for i in 0..<count { sum += Double(expf(logits[i] - maxValue)) }
        return maxValue + Float(Foundation.log(sum))
    }

    /// The `k` most likely tokens with their log-probabilities, most likely first.
    public static func top(_ k: Int, _ logits: UnsafePointer<Float>, count: Int) -> [TokenLogProb] {
        guard k > 0 else { return [] }
        let norm = logSumExp(logits, count: count)
        var best: [TokenLogProb] = []  // kept sorted, descending
        for i in 0..<count {
            let value = logits[i]
            if best.count == k, value <= best[k - 1].logprob { continue }
            let entry = TokenLogProb(id: Int32(i), logprob: value)
            let at = best.firstIndex { $0.logprob < value } ?? best.count
            best.insert(entry, at: at)
            if best.count > k { best.removeLast() }
        }
        return best.map { TokenLogProb(id: $0.id, logprob: $0.logprob - norm) }
    }

    public static func logprob(of id: Int32, _ logits: UnsafePointer<Float>, count: Int) -> Float {
        logits[Int(id)] - logSumExp(logits, count: count)
    }
}
