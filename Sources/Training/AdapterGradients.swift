import Foundation

/// Shapes of an adapter: hidden size `d`, query heads and key-value heads of `headSize`, the width
/// of its feed-forward block (0: none), and whether it takes the full model's deep state.
public struct AdapterShape: Sendable, Equatable {
    public var hidden: Int
    public var heads: Int
    public var kvHeads: Int
    public var headSize: Int
    public var ropeBase: Double
    /// RoPE pairs dimensions 2i and 2i+1 (Llama files), else i and i + headSize/2 (Qwen's), as the
    /// model's own attention does.
    public var ropePairsAdjacent: Bool = true
    public var eps: Double
    public var feedForward: Int
    public var deepState: Bool
    /// Whether each input also gets the previous position's exit state, through a learned projection.
    public var previousState: Bool

    public init(hidden: Int, heads: Int, kvHeads: Int, headSize: Int, ropeBase: Double, eps: Double, feedForward: Int = 0,
                deepState: Bool = false, previousState: Bool = false) {
        self.hidden = hidden
        self.heads = heads
        self.kvHeads = kvHeads
        self.headSize = headSize
        self.ropeBase = ropeBase
        self.eps = eps
        self.feedForward = feedForward
        self.deepState = deepState
        self.previousState = previousState
    }

    public var querySize: Int { heads * headSize }
    public var kvSize: Int { kvHeads * headSize }
}

/// The trainable tensors of an adapter, row-major (`rows × columns` = output × input), or their
/// gradients. The feed-forward tensors are empty when the adapter has no feed-forward block, the deep
/// projection when it takes no deep state.
/// Order of `tensors`: input norm, q, k, v, o, final norm, feed-forward norm, gate, up, down, deep projection,
/// previous-state projection.
public struct AdapterTensors<S: BinaryFloatingPoint & Sendable>: TensorList, Sendable, Equatable {
    public var inputNorm: [S]        // [d]
    public var query: [S]            // [heads·headSize × d]
    public var key: [S]              // [kvHeads·headSize × d]
    public var value: [S]            // [kvHeads·headSize × d]
    public var output: [S]           // [d × heads·headSize]
    public var norm: [S]             // [d]
    public var feedForwardNorm: [S]  // [d] or []
    public var gate: [S]             // [f × d] or []
    public var up: [S]               // [f × d] or []
    public var down: [S]             // [d × f] or []
    public var deepProjection: [S]   // [d × d] or []
    public var previousProjection: [S]   // [d × d] or []

    public init(inputNorm: [S], query: [S], key: [S], value: [S], output: [S], norm: [S],
                feedForwardNorm: [S] = [], gate: [S] = [], up: [S] = [], down: [S] = [], deepProjection: [S] = [],
                previousProjection: [S] = []) {
        self.inputNorm = inputNorm
        self.query = query
        self.key = key
        self.value = value
        self.output = output
        self.norm = norm
        self.feedForwardNorm = feedForwardNorm
        self.gate = gate
        self.up = up
        self.down = down
        self.deepProjection = deepProjection
        self.previousProjection = previousProjection
    }

    /// All zeros, shaped for `shape`.
    public init(zerosFor shape: AdapterShape) {
        let d = shape.hidden, f = shape.feedForward
        func zeros(_ n: Int) -> [S] { Array(repeating: 0, count: n) }
        self.init(inputNorm: zeros(d), query: zeros(shape.querySize * d), key: zeros(shape.kvSize * d),
                  value: zeros(shape.kvSize * d), output: zeros(d * shape.querySize), norm: zeros(d),
                  feedForwardNorm: zeros(f > 0 ? d : 0), gate: zeros(f * d), up: zeros(f * d), down: zeros(d * f),
                  deepProjection: zeros(shape.deepState ? d * d : 0), previousProjection: zeros(shape.previousState ? d * d : 0))
    }

    public static var tensorNames: [String] { ["input norm", "q", "k", "v", "o", "norm", "feed-forward norm", "gate", "up", "down", "deep projection", "previous projection"] }

    public var tensors: [[S]] {
        get { [inputNorm, query, key, value, output, norm, feedForwardNorm, gate, up, down, deepProjection, previousProjection] }
        set {
            (inputNorm, query, key, value, output, norm) = (newValue[0], newValue[1], newValue[2], newValue[3], newValue[4], newValue[5])
            (feedForwardNorm, gate, up, down) = (newValue[6], newValue[7], newValue[8], newValue[9])
            deepProjection = newValue[10]
            previousProjection = newValue[11]
        }
    }
}

/// Loss and gradients of an adapter on one sequence, by hand-written derivatives.
///
/// Forward (positions `start ..< start + T`, causal, attending only within the sequence):
///   with the previous state, h ← h + H₋Wprevᵀ first, row t of H₋ being the exit state at t − 1 (zeros
///   at the sequence's first position);
///   n₁ = RMSNorm(h; g₁); q, k, v = n₁Wqᵀ, n₁Wkᵀ, n₁Wvᵀ; RoPE(q, k) at absolute positions (adjacent pairs);
///   o = softmax(qkᵀ/√hs + causal mask) v per head (grouped key-value heads); y = h + oWoᵀ;
///   with a deep state, y += DWpᵀ, where row t of D is the full model's normalised final state at
///   position t − 1 (or zeros where it is withheld);
///   with a feed-forward block: n₃ = RMSNorm(y; g₃), z = y + (silu(n₃Wgᵀ) ⊙ n₃Wuᵀ)Wdᵀ, else z = y;
///   n₂ = RMSNorm(z; g₂); logits = n₂Eᵀ with the frozen head E.
/// Loss: soft cross-entropy −Σᵥ p(v) log softmax(logits)(v) against the full model's distribution p,
/// averaged over positions. Gradients flow to the adapter's tensors only (h and E are frozen).
public struct AdapterLoss<S: BinaryFloatingPoint & Sendable> {
    public let shape: AdapterShape
    typealias Math = GradientMath<S>

    public init(shape: AdapterShape) {
        self.shape = shape
    }

    /// - Parameters:
    ///   - states: exit-layer hidden states, `T × d`.
    ///   - targets: the full model's next-token distribution at each position, `T × V`.
    ///   - head: the frozen LM head, `V × d`.
    ///   - deepStates: `T × d`, the deep state each position sees (required when `shape.deepState`).
    public func evaluate(_ w: AdapterTensors<S>, states: [S], start: Int, targets: [S], head: [S],
                         vocabulary: Int, deepStates: [S]? = nil) -> (loss: S, gradients: AdapterTensors<S>, logits: [S]) {
        precondition(shape.deepState == (deepStates != nil), "deep states are given exactly when the adapter takes them")
        let d = shape.hidden, hs = shape.headSize, dq = shape.querySize, dkv = shape.kvSize
        let count = states.count / d
        let group = shape.heads / shape.kvHeads
        let scale = 1 / S(Double(hs).squareRoot())
        let eps = S(shape.eps)

        // RoPE tables for the positions.
        var cosines = [S](repeating: 0, count: count * hs / 2), sines = cosines
        for t in 0..<count {
            for i in 0..<(hs / 2) {
                let angle = Double(start + t) * pow(shape.ropeBase, -2 * Double(i) / Double(hs))
                cosines[t * hs / 2 + i] = S(cos(angle))
                sines[t * hs / 2 + i] = S(sin(angle))
            }
        }

        // Forward. With the previous state, the input is h + H₋Wprevᵀ, row t of H₋ being h at t − 1
        // (zeros at the sequence's first position).
        var previous: [S] = []
        var input = states
        if shape.previousState {
            previous = [S](repeating: 0, count: count * d)
            for i in d..<(count * d) { previous[i] = states[i - d] }
            let added = Math.matmul(previous, w.previousProjection, rows: count, inner: d, out: d)
            for i in 0..<(count * d) { input[i] += added[i] }
        }
        let (n1, r1) = Math.rmsNorm(input, weight: w.inputNorm, rows: count, eps: eps)
        var q = Math.matmul(n1, w.query, rows: count, inner: d, out: dq)
        var k = Math.matmul(n1, w.key, rows: count, inner: d, out: dkv)
        let v = Math.matmul(n1, w.value, rows: count, inner: d, out: dkv)
        rope(&q, heads: shape.heads, rows: count, cosines: cosines, sines: sines, inverse: false)
        rope(&k, heads: shape.kvHeads, rows: count, cosines: cosines, sines: sines, inverse: false)
        var attention = [S](repeating: 0, count: count * count * shape.heads)  // [head][i][j], j ≤ i
        var o = [S](repeating: 0, count: count * dq)
        for h in 0..<shape.heads {
            let kvOffset = (h / group) * hs
            for i in 0..<count {
                var row = [S](repeating: 0, count: i + 1)
                var maxScore = -S.infinity
                for j in 0...i {
                    var s: S = 0
                    for c in 0..<hs { s += q[i * dq + h * hs + c] * k[j * dkv + kvOffset + c] }
                    row[j] = s * scale
                    maxScore = max(maxScore, row[j])
                }
                var sum: S = 0
                for j in 0...i {
                    row[j] = S(exp(Double(row[j] - maxScore)))
                    sum += row[j]
                }
                for j in 0...i {
                    let a = row[j] / sum
                    attention[(h * count + i) * count + j] = a
                    for c in 0..<hs { o[i * dq + h * hs + c] += a * v[j * dkv + kvOffset + c] }
                }
            }
        }
        var y = Math.matmul(o, w.output, rows: count, inner: dq, out: d)
        for i in 0..<(count * d) { y[i] += input[i] }
        if let deepStates {
            let projected = Math.matmul(deepStates, w.deepProjection, rows: count, inner: d, out: d)
            for i in 0..<(count * d) { y[i] += projected[i] }
        }
        let feedForward = shape.feedForward > 0 ? feedForwardForward(w, y, rows: count) : nil
        let z = feedForward?.z ?? y
        let (n2, r2) = Math.rmsNorm(z, weight: w.norm, rows: count, eps: eps)
        let logits = Math.matmul(n2, head, rows: count, inner: d, out: vocabulary)

        // Soft cross-entropy and its gradient with respect to the logits: (softmax − p) / T, over the T
        // positions that have a target (a row of zeros marks a context-only position).
        var loss: S = 0
        var dLogits = [S](repeating: 0, count: count * vocabulary)
        let targeted = (0..<count).filter { t in targets[(t * vocabulary)..<((t + 1) * vocabulary)].contains { $0 != 0 } }
        let positions = S(max(targeted.count, 1))
        for t in targeted {
            let row = t * vocabulary
            var maxLogit = -S.infinity
            for v in 0..<vocabulary { maxLogit = max(maxLogit, logits[row + v]) }
            var sum: Double = 0
            for v in 0..<vocabulary { sum += exp(Double(logits[row + v] - maxLogit)) }
            let logSum = S(log(sum)) + maxLogit
            for v in 0..<vocabulary {
                let logProbability = logits[row + v] - logSum
                loss -= targets[row + v] * logProbability
                dLogits[row + v] = (S(exp(Double(logProbability))) - targets[row + v]) / positions
            }
        }
        loss /= positions

        // Backward.
        var g = AdapterTensors<S>(zerosFor: shape)
        let dN2 = Math.matmulTransposed(dLogits, head, rows: count, inner: vocabulary, out: d)
        let dZ = Math.rmsNormBackward(dN2, input: z, weight: w.norm, inverseRMS: r2, rows: count, weightGradient: &g.norm)
        let dY = feedForward.map { feedForwardBackward(w, $0, y, dZ: dZ, rows: count, gradients: &g) } ?? dZ
        g.output = Math.outerSum(dY, o, rows: count, left: d, right: dq)
        if let deepStates { g.deepProjection = Math.outerSum(dY, deepStates, rows: count, left: d, right: d) }
        let dO = Math.matmulTransposed(dY, w.output, rows: count, inner: d, out: dq)
        var dQ = [S](repeating: 0, count: count * dq), dK = [S](repeating: 0, count: count * dkv), dV = dK
        for h in 0..<shape.heads {
            let kvOffset = (h / group) * hs
            for i in 0..<count {
                // dA_ij = dO_i · v_j;  dS_ij = A_ij (dA_ij − Σ_j' A_ij' dA_ij').
                var dA = [S](repeating: 0, count: i + 1)
                var weighted: S = 0
                for j in 0...i {
                    let a = attention[(h * count + i) * count + j]
                    var dot: S = 0
                    for c in 0..<hs {
                        dot += dO[i * dq + h * hs + c] * v[j * dkv + kvOffset + c]
                        dV[j * dkv + kvOffset + c] += a * dO[i * dq + h * hs + c]
                    }
                    dA[j] = dot
                    weighted += a * dot
                }
                for j in 0...i {
                    let dS = attention[(h * count + i) * count + j] * (dA[j] - weighted) * scale
                    for c in 0..<hs {
                        dQ[i * dq + h * hs + c] += dS * k[j * dkv + kvOffset + c]
                        dK[j * dkv + kvOffset + c] += dS * q[i * dq + h * hs + c]
                    }
                }
            }
        }
        // RoPE is a rotation: its transpose (the inverse rotation) carries the gradient back.
        rope(&dQ, heads: shape.heads, rows: count, cosines: cosines, sines: sines, inverse: true)
        rope(&dK, heads: shape.kvHeads, rows: count, cosines: cosines, sines: sines, inverse: true)
        g.query = Math.outerSum(dQ, n1, rows: count, left: dq, right: d)
        g.key = Math.outerSum(dK, n1, rows: count, left: dkv, right: d)
        g.value = Math.outerSum(dV, n1, rows: count, left: dkv, right: d)
        var dN1 = Math.matmulTransposed(dQ, w.query, rows: count, inner: dq, out: d)
        let fromK = Math.matmulTransposed(dK, w.key, rows: count, inner: dkv, out: d)
        let fromV = Math.matmulTransposed(dV, w.value, rows: count, inner: dkv, out: d)
        for i in 0..<(count * d) { dN1[i] += fromK[i] + fromV[i] }
        let dInput = Math.rmsNormBackward(dN1, input: input, weight: w.inputNorm, inverseRMS: r1, rows: count, weightGradient: &g.inputNorm)
        if shape.previousState {
            // The input feeds the residual and the input norm.
            var total = dY
            for i in 0..<(count * d) { total[i] += dInput[i] }
            g.previousProjection = Math.outerSum(total, previous, rows: count, left: d, right: d)
        }
        return (loss, g, logits)
    }

    // MARK: Pieces

    /// The feed-forward block's forward values that its backward needs.
    struct FeedForwardValues {
        var normed: [S], inverseRMS: [S]  // n₃ and its rows' inverse RMS
        var gate: [S], up: [S]            // a = n₃Wgᵀ, b = n₃Wuᵀ
        var hidden: [S]                   // u = silu(a) ⊙ b
        var z: [S]                        // y + uWdᵀ
    }

    func feedForwardForward(_ w: AdapterTensors<S>, _ y: [S], rows: Int) -> FeedForwardValues {
        let d = shape.hidden, f = shape.feedForward
        let (n3, r3) = Math.rmsNorm(y, weight: w.feedForwardNorm, rows: rows, eps: S(shape.eps))
        let a = Math.matmul(n3, w.gate, rows: rows, inner: d, out: f)
        let b = Math.matmul(n3, w.up, rows: rows, inner: d, out: f)
        var u = a
        for i in u.indices { u[i] = a[i] * Math.sigmoid(a[i]) * b[i] }
        var z = Math.matmul(u, w.down, rows: rows, inner: f, out: d)
        for i in z.indices { z[i] += y[i] }
        return FeedForwardValues(normed: n3, inverseRMS: r3, gate: a, up: b, hidden: u, z: z)
    }

    /// dY from dZ through z = y + FFN(y), with silu'(a) = σ(a)(1 + a(1 − σ(a))); accumulates the
    /// block's weight gradients into `gradients`.
    func feedForwardBackward(_ w: AdapterTensors<S>, _ v: FeedForwardValues, _ y: [S], dZ: [S], rows: Int,
                             gradients g: inout AdapterTensors<S>) -> [S] {
        let d = shape.hidden, f = shape.feedForward
        g.down = Math.outerSum(dZ, v.hidden, rows: rows, left: d, right: f)
        let dU = Math.matmulTransposed(dZ, w.down, rows: rows, inner: d, out: f)
        var dA = dU, dB = dU
        for i in dU.indices {
            let a = v.gate[i], sig = Math.sigmoid(a)
            dA[i] = dU[i] * v.up[i] * sig * (1 + a * (1 - sig))
            dB[i] = dU[i] * a * sig
        }
        g.gate = Math.outerSum(dA, v.normed, rows: rows, left: f, right: d)
        g.up = Math.outerSum(dB, v.normed, rows: rows, left: f, right: d)
        var dN3 = Math.matmulTransposed(dA, w.gate, rows: rows, inner: f, out: d)
        let fromUp = Math.matmulTransposed(dB, w.up, rows: rows, inner: f, out: d)
        for i in dN3.indices { dN3[i] += fromUp[i] }
        var dY = Math.rmsNormBackward(dN3, input: y, weight: w.feedForwardNorm, inverseRMS: v.inverseRMS, rows: rows,
                                 weightGradient: &g.feedForwardNorm)
        for i in dY.indices { dY[i] += dZ[i] }
        return dY
    }

    /// Rotates the pairs of each head (`AdapterShape.ropePairsAdjacent`) by the position's angles (or
    /// back, when `inverse`).
    func rope(_ x: inout [S], heads: Int, rows: Int, cosines: [S], sines: [S], inverse: Bool) {
        let hs = shape.headSize, width = heads * hs
        for t in 0..<rows {
            for h in 0..<heads {
                for i in 0..<(hs / 2) {
                    let c = cosines[t * hs / 2 + i], s = inverse ? -sines[t * hs / 2 + i] : sines[t * hs / 2 + i]
                    let first = t * width + h * hs + (shape.ropePairsAdjacent ? 2 * i : i)
                    let second = shape.ropePairsAdjacent ? first + 1 : first + hs / 2
                    let a = x[first], b = x[second]
                    x[first] = a * c - b * s
                    x[second] = a * s + b * c
                }
            }
        }
    }
}
