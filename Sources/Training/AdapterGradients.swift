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
    /// SpecDec's block queries: how many learned query vectors follow a position to draft the
    /// positions after it in one pass (0: none).
    public var blockSize: Int = 0
    /// Width of the feed-forward block only the block queries' rows go through (0: none).
    public var blockFeedForward: Int = 0

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
/// previous-state projection, block queries, block feed-forward norm, gate, up, down.
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
    public var blockQueries: [S]     // [blockSize × d] or []
    public var blockFeedForwardNorm: [S]  // [d] or []
    public var blockGate: [S]        // [fb × d] or []
    public var blockUp: [S]          // [fb × d] or []
    public var blockDown: [S]        // [d × fb] or []

    public init(inputNorm: [S], query: [S], key: [S], value: [S], output: [S], norm: [S],
                feedForwardNorm: [S] = [], gate: [S] = [], up: [S] = [], down: [S] = [], deepProjection: [S] = [],
                previousProjection: [S] = [], blockQueries: [S] = [], blockFeedForwardNorm: [S] = [], blockGate: [S] = [],
                blockUp: [S] = [], blockDown: [S] = []) {
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
        self.blockQueries = blockQueries
        self.blockFeedForwardNorm = blockFeedForwardNorm
        self.blockGate = blockGate
        self.blockUp = blockUp
        self.blockDown = blockDown
    }

    /// All zeros, shaped for `shape`.
    public init(zerosFor shape: AdapterShape) {
        let d = shape.hidden, f = shape.feedForward
        func zeros(_ n: Int) -> [S] { Array(repeating: 0, count: n) }
        self.init(inputNorm: zeros(d), query: zeros(shape.querySize * d), key: zeros(shape.kvSize * d),
                  value: zeros(shape.kvSize * d), output: zeros(d * shape.querySize), norm: zeros(d),
                  feedForwardNorm: zeros(f > 0 ? d : 0), gate: zeros(f * d), up: zeros(f * d), down: zeros(d * f),
                  deepProjection: zeros(shape.deepState ? d * d : 0), previousProjection: zeros(shape.previousState ? d * d : 0),
                  blockQueries: zeros(shape.blockSize * d), blockFeedForwardNorm: zeros(shape.blockFeedForward > 0 ? d : 0),
                  blockGate: zeros(shape.blockFeedForward * d), blockUp: zeros(shape.blockFeedForward * d),
                  blockDown: zeros(d * shape.blockFeedForward))
    }

    public static var tensorNames: [String] { ["input norm", "q", "k", "v", "o", "norm", "feed-forward norm", "gate", "up", "down", "deep projection", "previous projection", "block queries",
                                           "block feed-forward norm", "block gate", "block up", "block down"] }

    /// The tensors only a block drafter's queries use: the only ones trained when the rest stays the adapter's.
    public static var blockTensorNames: Set<String> { ["block queries", "block feed-forward norm", "block gate", "block up", "block down"] }

    public var tensors: [[S]] {
        get {
            [inputNorm, query, key, value, output, norm, feedForwardNorm, gate, up, down, deepProjection, previousProjection, blockQueries,
             blockFeedForwardNorm, blockGate, blockUp, blockDown]
        }
        set {
            (inputNorm, query, key, value, output, norm) = (newValue[0], newValue[1], newValue[2], newValue[3], newValue[4], newValue[5])
            (feedForwardNorm, gate, up, down) = (newValue[6], newValue[7], newValue[8], newValue[9])
            deepProjection = newValue[10]
            previousProjection = newValue[11]
            blockQueries = newValue[12]
            (blockFeedForwardNorm, blockGate, blockUp, blockDown) = (newValue[13], newValue[14], newValue[15], newValue[16])
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
    ///   - anchors: SpecDec blocks. After each anchor position a (with a + blockSize < T), the block
    ///     queries take positions a + 1 … a + blockSize, each with the input h_a + m_j (the anchor's
    ///     exit state plus its learned query vector); query j sees the sequence up to a and the
    ///     block's queries up to itself, and learns the full model's distribution at its position
    ///     (target row a + j). Its rows follow the sequence's in `logits`, block by block, and go
    ///     through the block feed-forward block (when the shape has one) before the final norm.
    ///   - anchorDeepStates: `anchors.count × d`, the deep state each block's rows get (the anchor's,
    ///     as its own row sees it); nil: none.
    ///   - contextLoss: whether the sequence's own rows count in the loss (false: only the blocks').
    public func evaluate(_ w: AdapterTensors<S>, states: [S], start: Int, targets: [S], head: [S],
                         vocabulary: Int, deepStates: [S]? = nil, anchors: [Int] = [], anchorDeepStates: [S]? = nil,
                         contextLoss: Bool = true) -> (loss: S, gradients: AdapterTensors<S>, logits: [S]) {
        precondition(shape.deepState == (deepStates != nil), "deep states are given exactly when the adapter takes them")
        let d = shape.hidden, hs = shape.headSize, dq = shape.querySize, dkv = shape.kvSize, block = shape.blockSize
        let count = states.count / d
        precondition(anchors.allSatisfy { $0 >= 0 && $0 + block < count } && (anchors.isEmpty || block > 0),
                     "a block needs block queries and room for its targets")
        precondition(anchorDeepStates.map { shape.deepState && $0.count == anchors.count * d } ?? true,
                     "a block's deep state goes through the deep projection")
        let rows = count + anchors.count * block
        let group = shape.heads / shape.kvHeads
        let scale = 1 / S(Double(hs).squareRoot())
        let eps = S(shape.eps)

        // Each row's position, the rows it attends to, and the target row it learns.
        var positions = (0..<count).map { start + $0 }
        var keys: [[Int]] = (0..<count).map { Array(0...$0) }
        var targetRows = Array(0..<count)
        for (n, a) in anchors.enumerated() {
            let first = count + n * block
            for j in 1...max(block, 1) {
                positions.append(start + a + j)
                keys.append(Array(0...a) + Array(first..<(first + j)))
                targetRows.append(a + j)
            }
        }
        var keyOffsets = [Int](repeating: 0, count: rows + 1)
        for r in 0..<rows { keyOffsets[r + 1] = keyOffsets[r] + keys[r].count }
        let totalKeys = keyOffsets[rows]

        // RoPE tables for the rows' positions.
        var cosines = [S](repeating: 0, count: rows * hs / 2), sines = cosines
        for r in 0..<rows {
            for i in 0..<(hs / 2) {
                let angle = Double(positions[r]) * pow(shape.ropeBase, -2 * Double(i) / Double(hs))
                cosines[r * hs / 2 + i] = S(cos(angle))
                sines[r * hs / 2 + i] = S(sin(angle))
            }
        }

        // Forward. With the previous state, the input is h + H₋Wprevᵀ, row t of H₋ being h at t − 1
        // (zeros at the sequence's first position). A block query's row is its anchor's exit state plus
        // its query vector.
        var previous: [S] = []
        var input = states + [S](repeating: 0, count: (rows - count) * d)
        if shape.previousState {
            previous = [S](repeating: 0, count: count * d)
            for i in d..<(count * d) { previous[i] = states[i - d] }
            let added = Math.matmul(previous, w.previousProjection, rows: count, inner: d, out: d)
            for i in 0..<(count * d) { input[i] += added[i] }
        }
        for (n, a) in anchors.enumerated() {
            for j in 0..<block {
                for c in 0..<d { input[(count + n * block + j) * d + c] = states[a * d + c] + w.blockQueries[j * d + c] }
            }
        }
        let (n1, r1) = Math.rmsNorm(input, weight: w.inputNorm, rows: rows, eps: eps)
        var q = Math.matmul(n1, w.query, rows: rows, inner: d, out: dq)
        var k = Math.matmul(n1, w.key, rows: rows, inner: d, out: dkv)
        let v = Math.matmul(n1, w.value, rows: rows, inner: d, out: dkv)
        rope(&q, heads: shape.heads, rows: rows, cosines: cosines, sines: sines, inverse: false)
        rope(&k, heads: shape.kvHeads, rows: rows, cosines: cosines, sines: sines, inverse: false)
        var attention = [S](repeating: 0, count: totalKeys * shape.heads)  // [head][row][its keys]
        var o = [S](repeating: 0, count: rows * dq)
        for h in 0..<shape.heads {
            let kvOffset = (h / group) * hs
            for i in 0..<rows {
                let visible = keys[i]
                var row = [S](repeating: 0, count: visible.count)
                var maxScore = -S.infinity
                for (x, j) in visible.enumerated() {
                    var s: S = 0
                    for c in 0..<hs { s += q[i * dq + h * hs + c] * k[j * dkv + kvOffset + c] }
                    row[x] = s * scale
                    maxScore = max(maxScore, row[x])
                }
                var sum: S = 0
                for x in row.indices {
                    row[x] = S(exp(Double(row[x] - maxScore)))
                    sum += row[x]
                }
                for (x, j) in visible.enumerated() {
                    let a = row[x] / sum
                    attention[h * totalKeys + keyOffsets[i] + x] = a
                    for c in 0..<hs { o[i * dq + h * hs + c] += a * v[j * dkv + kvOffset + c] }
                }
            }
        }
        var y = Math.matmul(o, w.output, rows: rows, inner: dq, out: d)
        for i in 0..<(rows * d) { y[i] += input[i] }
        if let deepStates {
            let projected = Math.matmul(deepStates, w.deepProjection, rows: count, inner: d, out: d)
            for i in 0..<(count * d) { y[i] += projected[i] }
        }
        if let anchorDeepStates {
            let projected = Math.matmul(anchorDeepStates, w.deepProjection, rows: anchors.count, inner: d, out: d)
            for n in 0..<anchors.count {
                for j in 0..<block {
                    for c in 0..<d { y[(count + n * block + j) * d + c] += projected[n * d + c] }
                }
            }
        }
        let adapterBlock = FeedForwardTensors(norm: w.feedForwardNorm, gate: w.gate, up: w.up, down: w.down, size: shape.feedForward)
        let feedForward = shape.feedForward > 0 ? feedForwardForward(adapterBlock, y, rows: rows) : nil
        var z = feedForward?.z ?? y
        // The block queries' rows through their own feed-forward block.
        let blockBlock = FeedForwardTensors(norm: w.blockFeedForwardNorm, gate: w.blockGate, up: w.blockUp, down: w.blockDown,
                                            size: shape.blockFeedForward)
        let blockInput = Array(z[(count * d)...])
        let blockFeedForward = shape.blockFeedForward > 0 && rows > count
            ? feedForwardForward(blockBlock, blockInput, rows: rows - count) : nil
        if let blockFeedForward { z.replaceSubrange((count * d)..., with: blockFeedForward.z) }
        let (n2, r2) = Math.rmsNorm(z, weight: w.norm, rows: rows, eps: eps)
        let logits = Math.matmul(n2, head, rows: rows, inner: d, out: vocabulary)

        // Soft cross-entropy and its gradient with respect to the logits: (softmax − p) / T, over the T
        // rows that have a target (a row of zeros marks a context-only position).
        var loss: S = 0
        var dLogits = [S](repeating: 0, count: rows * vocabulary)
        let hasTarget = (0..<count).map { t in targets[(t * vocabulary)..<((t + 1) * vocabulary)].contains { $0 != 0 } }
        let targeted = (0..<rows).filter { hasTarget[targetRows[$0]] && (contextLoss || $0 >= count) }
        let positionCount = S(max(targeted.count, 1))
        for r in targeted {
            let row = r * vocabulary, target = targetRows[r] * vocabulary
            var maxLogit = -S.infinity
            for v in 0..<vocabulary { maxLogit = max(maxLogit, logits[row + v]) }
            var sum: Double = 0
            for v in 0..<vocabulary { sum += exp(Double(logits[row + v] - maxLogit)) }
            let logSum = S(log(sum)) + maxLogit
            for v in 0..<vocabulary {
                let logProbability = logits[row + v] - logSum
                loss -= targets[target + v] * logProbability
                dLogits[row + v] = (S(exp(Double(logProbability))) - targets[target + v]) / positionCount
            }
        }
        loss /= positionCount

        // Backward.
        var g = AdapterTensors<S>(zerosFor: shape)
        let dN2 = Math.matmulTransposed(dLogits, head, rows: rows, inner: vocabulary, out: d)
        var dZ = Math.rmsNormBackward(dN2, input: z, weight: w.norm, inverseRMS: r2, rows: rows, weightGradient: &g.norm)
        if let blockFeedForward {
            let (dIn, gb) = feedForwardBackward(blockBlock, blockFeedForward, blockInput, dZ: Array(dZ[(count * d)...]), rows: rows - count)
            dZ.replaceSubrange((count * d)..., with: dIn)
            (g.blockFeedForwardNorm, g.blockGate, g.blockUp, g.blockDown) = (gb.norm, gb.gate, gb.up, gb.down)
        }
        var dY = dZ
        if let feedForward {
            let (dIn, ga) = feedForwardBackward(adapterBlock, feedForward, y, dZ: dZ, rows: rows)
            dY = dIn
            (g.feedForwardNorm, g.gate, g.up, g.down) = (ga.norm, ga.gate, ga.up, ga.down)
        }
        g.output = Math.outerSum(dY, o, rows: rows, left: d, right: dq)
        if let deepStates {
            g.deepProjection = Math.outerSum(Array(dY[0..<(count * d)]), deepStates, rows: count, left: d, right: d)
        }
        if let anchorDeepStates {
            // A block's rows share their anchor's deep state: their gradients add up.
            var summed = [S](repeating: 0, count: anchors.count * d)
            for n in 0..<anchors.count {
                for j in 0..<block {
                    for c in 0..<d { summed[n * d + c] += dY[(count + n * block + j) * d + c] }
                }
            }
            let fromBlocks = Math.outerSum(summed, anchorDeepStates, rows: anchors.count, left: d, right: d)
            for i in fromBlocks.indices { g.deepProjection[i] += fromBlocks[i] }
        }
        let dO = Math.matmulTransposed(dY, w.output, rows: rows, inner: d, out: dq)
        var dQ = [S](repeating: 0, count: rows * dq), dK = [S](repeating: 0, count: rows * dkv), dV = dK
        for h in 0..<shape.heads {
            let kvOffset = (h / group) * hs
            for i in 0..<rows {
                // dA_ij = dO_i · v_j;  dS_ij = A_ij (dA_ij − Σ_j' A_ij' dA_ij').
                let visible = keys[i], base = h * totalKeys + keyOffsets[i]
                var dA = [S](repeating: 0, count: visible.count)
                var weighted: S = 0
                for (x, j) in visible.enumerated() {
                    let a = attention[base + x]
                    var dot: S = 0
                    for c in 0..<hs {
                        dot += dO[i * dq + h * hs + c] * v[j * dkv + kvOffset + c]
                        dV[j * dkv + kvOffset + c] += a * dO[i * dq + h * hs + c]
                    }
                    dA[x] = dot
                    weighted += a * dot
                }
                for (x, j) in visible.enumerated() {
                    let dS = attention[base + x] * (dA[x] - weighted) * scale
                    for c in 0..<hs {
                        dQ[i * dq + h * hs + c] += dS * k[j * dkv + kvOffset + c]
                        dK[j * dkv + kvOffset + c] += dS * q[i * dq + h * hs + c]
                    }
                }
            }
        }
        // RoPE is a rotation: its transpose (the inverse rotation) carries the gradient back.
        rope(&dQ, heads: shape.heads, rows: rows, cosines: cosines, sines: sines, inverse: true)
        rope(&dK, heads: shape.kvHeads, rows: rows, cosines: cosines, sines: sines, inverse: true)
        g.query = Math.outerSum(dQ, n1, rows: rows, left: dq, right: d)
        g.key = Math.outerSum(dK, n1, rows: rows, left: dkv, right: d)
        g.value = Math.outerSum(dV, n1, rows: rows, left: dkv, right: d)
        var dN1 = Math.matmulTransposed(dQ, w.query, rows: rows, inner: dq, out: d)
        let fromK = Math.matmulTransposed(dK, w.key, rows: rows, inner: dkv, out: d)
        let fromV = Math.matmulTransposed(dV, w.value, rows: rows, inner: dkv, out: d)
        for i in 0..<(rows * d) { dN1[i] += fromK[i] + fromV[i] }
        let dInput = Math.rmsNormBackward(dN1, input: input, weight: w.inputNorm, inverseRMS: r1, rows: rows, weightGradient: &g.inputNorm)
        if shape.previousState || !anchors.isEmpty {
            // The input feeds the residual and the input norm.
            var total = dY
            for i in 0..<(rows * d) { total[i] += dInput[i] }
            if shape.previousState {
                g.previousProjection = Math.outerSum(Array(total[0..<(count * d)]), previous, rows: count, left: d, right: d)
            }
            for r in count..<rows {
                let j = (r - count) % block
                for c in 0..<d { g.blockQueries[j * d + c] += total[r * d + c] }
            }
        }
        return (loss, g, logits)
    }

    // MARK: Pieces

    /// A feed-forward block's tensors (the adapter's, or the block queries' own) and its width.
    struct FeedForwardTensors {
        var norm: [S], gate: [S], up: [S], down: [S]
        var size: Int
    }

    /// The feed-forward block's forward values that its backward needs.
    struct FeedForwardValues {
        var normed: [S], inverseRMS: [S]  // n₃ and its rows' inverse RMS
        var gate: [S], up: [S]            // a = n₃Wgᵀ, b = n₃Wuᵀ
        var hidden: [S]                   // u = silu(a) ⊙ b
        var z: [S]                        // y + uWdᵀ
    }

    func feedForwardForward(_ w: FeedForwardTensors, _ y: [S], rows: Int) -> FeedForwardValues {
        let d = shape.hidden, f = w.size
        let (n3, r3) = Math.rmsNorm(y, weight: w.norm, rows: rows, eps: S(shape.eps))
        let a = Math.matmul(n3, w.gate, rows: rows, inner: d, out: f)
        let b = Math.matmul(n3, w.up, rows: rows, inner: d, out: f)
        var u = a
        for i in u.indices { u[i] = a[i] * Math.sigmoid(a[i]) * b[i] }
        var z = Math.matmul(u, w.down, rows: rows, inner: f, out: d)
        for i in z.indices { z[i] += y[i] }
        return FeedForwardValues(normed: n3, inverseRMS: r3, gate: a, up: b, hidden: u, z: z)
    }

    /// dY from dZ through z = y + FFN(y), with silu'(a) = σ(a)(1 + a(1 − σ(a))), and the block's
    /// weight gradients (as `FeedForwardTensors`).
    func feedForwardBackward(_ w: FeedForwardTensors, _ v: FeedForwardValues, _ y: [S], dZ: [S], rows: Int) -> (dY: [S], gradients: FeedForwardTensors) {
        let d = shape.hidden, f = w.size
        var g = FeedForwardTensors(norm: [S](repeating: 0, count: d), gate: [], up: [], down: [], size: f)
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
        var dY = Math.rmsNormBackward(dN3, input: y, weight: w.norm, inverseRMS: v.inverseRMS, rows: rows, weightGradient: &g.norm)
        for i in dY.indices { dY[i] += dZ[i] }
        return (dY, g)
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
