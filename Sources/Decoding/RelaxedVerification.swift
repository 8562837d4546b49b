/// SpecDec's relaxed verification (Xia et al.), a lossy option of greedy decoding: a draft token is
/// accepted when it is among the full model's β most likely tokens and its logit is within τ of the
/// top one's, even when it is not the argmax. The output then differs from plain decoding's whenever
/// such a token is accepted; β = 1 is exact greedy verification. Off unless asked for, and every
/// result made with it says `lossless: false`.
public struct RelaxedVerification: Sendable, Equatable, Codable {
    /// β: how many of the full model's top tokens a draft may be.
    public var beta: Int
    /// τ: how far below the top logit a draft's logit may be.
    public var tau: Float

    public static let betaRange = 1...64
    public static let tauRange: ClosedRange<Float> = 0...100

    public init(beta: Int, tau: Float) throws {
        guard Self.betaRange.contains(beta) else { throw SpeculativeError.invalidSetting("relaxed verification's beta") }
        guard Self.tauRange.contains(tau) else { throw SpeculativeError.invalidSetting("relaxed verification's tau") }
        self.beta = beta
        self.tau = tau
    }

    /// Whether the output stays plain decoding's (β = 1 accepts only the argmax).
    public var isLossless: Bool { beta == 1 }

    /// Whether `token` passes against `logits` (`count` of them) whose largest is at `top`.
    func accepts(_ token: Int32, logits: UnsafePointer<Float>, count: Int, top: Int32) -> Bool {
        let logit = logits[Int(token)]
        guard logit >= logits[Int(top)] - tau else { return false }
        var above = 0
        for v in 0..<count where logits[v] > logit || (logits[v] == logit && v < Int(token)) {
            above += 1
            if above >= beta { return false }
        }
        return true
    }
}
