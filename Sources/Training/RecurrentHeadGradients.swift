import Adapter
import Foundation

/// The trainable tensors of a ReDrafter head (`RecurrentDraftHead`), or their gradients, row-major.
public struct RecurrentHeadTensors<S: BinaryFloatingPoint & Sendable>: TensorList, Sendable, Equatable {
    public var input: [S]            // [d × d]
    public var recurrent: [S]        // [d × d]
    public var recurrentBias: [S]    // [d]
    public var blockWeights: [[S]]   // blocks × [2d × 2d]
    public var blockBiases: [[S]]    // blocks × [2d]
    public var projection: [S]       // [d × 2d]
    public var norm: [S]             // [d]

    public init(input: [S], recurrent: [S], recurrentBias: [S], blockWeights: [[S]], blockBiases: [[S]], projection: [S], norm: [S]) {
        self.input = input
        self.recurrent = recurrent
        self.recurrentBias = recurrentBias
        self.blockWeights = blockWeights
        self.blockBiases = blockBiases
        self.projection = projection
        self.norm = norm
    }

    /// The tensors of a head, as training updates them.
    public init(_ head: RecurrentDraftHead) where S == Float {
        self.init(input: head.input, recurrent: head.recurrent, recurrentBias: head.recurrentBias, blockWeights: head.blockWeights,
                  blockBiases: head.blockBiases, projection: head.projection, norm: head.norm)
    }

    /// All zeros, shaped like `other`.
    init(zerosLike other: RecurrentHeadTensors) {
        func zeros(_ x: [S]) -> [S] { Array(repeating: 0, count: x.count) }
        self.init(input: zeros(other.input), recurrent: zeros(other.recurrent), recurrentBias: zeros(other.recurrentBias),
                  blockWeights: other.blockWeights.map(zeros), blockBiases: other.blockBiases.map(zeros),
                  projection: zeros(other.projection), norm: zeros(other.norm))
    }

    public var tensors: [[S]] {
        get { [input, recurrent, recurrentBias, projection, norm] + blockWeights + blockBiases }
        set {
            (input, recurrent, recurrentBias, projection, norm) = (newValue[0], newValue[1], newValue[2], newValue[3], newValue[4])
            let blocks = (newValue.count - 5) / 2
            blockWeights = Array(newValue[5..<(5 + blocks)])
            blockBiases = Array(newValue[(5 + blocks)...])
        }
    }
}

/// Loss and gradients of a ReDrafter head on a batch of drafts, by hand-written derivatives
/// (backpropagation through the recurrence).
///
/// Each of the `rows` drafts starts at a position p with the full model's normalised final state h
/// there, and runs `steps` steps: step j takes the embedding e_j of the token at p + j (teacher
/// forcing: the model's own tokens) and predicts the token after it:
///   a_j = e_j Wᵀ + s_{j−1} Uᵀ + b,  s_j = silu(a_j),  s_0 = 0;
///   x = [h ⊕ s_j];  for each block: z = x Lᵀ + c,  x ← x + silu(z);
///   f = x Pᵀ;  n = RMSNorm(f; g);  logits = n Eᵀ with the frozen LM head E (draft vocabulary rows).
/// Loss: soft cross-entropy −Σᵥ p(v) log softmax(logits)(v) against the full model's distribution at
/// p + j, averaged over the (draft, step) pairs that have a target (a row of zeros has none).
public struct RecurrentHeadLoss<S: BinaryFloatingPoint & Sendable> {
    public let hidden: Int
    public let eps: S
    typealias Math = GradientMath<S>

    /// One step's forward values that the backward needs.
    struct Step {
        var a: [S], s: [S]
        var xs: [[S]]      // x before each block, then after the last
        var zs: [[S]]      // each block's pre-activation
        var f: [S], inverseRMS: [S]
    }

    public init(hidden: Int, eps: S) {
        self.hidden = hidden
        self.eps = eps
    }

    /// - Parameters:
    ///   - finalStates: `rows × d`, h of each draft.
    ///   - embeddings: per step, `rows × d`: the input token's embedding of each draft.
    ///   - targets: per step, `rows × vocabulary`: the full model's distribution over the draft vocabulary.
    ///   - head: the frozen LM head's rows, `vocabulary × d`.
    /// - Returns: the loss, the gradients, and per step the logits (`rows × vocabulary`).
    public func evaluate(_ w: RecurrentHeadTensors<S>, finalStates: [S], embeddings: [[S]], targets: [[S]], head: [S],
                         vocabulary: Int) -> (loss: S, gradients: RecurrentHeadTensors<S>, logits: [[S]]) {
        let d = hidden, d2 = 2 * d, rows = finalStates.count / d, steps = embeddings.count
        precondition(targets.count == steps && embeddings.allSatisfy { $0.count == rows * d })
        var forward: [Step] = []
        var logits: [[S]] = []
        var previous = [S](repeating: 0, count: rows * d)
        for j in 0..<steps {
            var a = Math.matmul(embeddings[j], w.input, rows: rows, inner: d, out: d)
            if j > 0 {
                let carried = Math.matmul(previous, w.recurrent, rows: rows, inner: d, out: d)
                for i in a.indices { a[i] += carried[i] }
            }
            for t in 0..<rows { for c in 0..<d { a[t * d + c] += w.recurrentBias[c] } }
            let s = a.map { $0 * Math.sigmoid($0) }
            var x = [S](repeating: 0, count: rows * d2)
            for t in 0..<rows {
                for c in 0..<d {
                    x[t * d2 + c] = finalStates[t * d + c]
                    x[t * d2 + d + c] = s[t * d + c]
                }
            }
            var xs = [x], zs: [[S]] = []
            for (weight, bias) in zip(w.blockWeights, w.blockBiases) {
                var z = Math.matmul(x, weight, rows: rows, inner: d2, out: d2)
                for t in 0..<rows { for c in 0..<d2 { z[t * d2 + c] += bias[c] } }
                for i in x.indices { x[i] += z[i] * Math.sigmoid(z[i]) }
                zs.append(z)
                xs.append(x)
            }
            let f = Math.matmul(x, w.projection, rows: rows, inner: d2, out: d)
            let (n, inverseRMS) = Math.rmsNorm(f, weight: w.norm, rows: rows, eps: eps)
            logits.append(Math.matmul(n, head, rows: rows, inner: d, out: vocabulary))
            forward.append(Step(a: a, s: s, xs: xs, zs: zs, f: f, inverseRMS: inverseRMS))
            previous = s
        }

        // Soft cross-entropy and its gradient with respect to the logits, averaged over targeted pairs.
        var targeted = 0
        for j in 0..<steps { for t in 0..<rows where targets[j][(t * vocabulary)..<((t + 1) * vocabulary)].contains(where: { $0 > 0 }) { targeted += 1 } }
        let scale = 1 / S(max(targeted, 1))
        var loss: S = 0
        var dLogits: [[S]] = []
        for j in 0..<steps {
            var g = [S](repeating: 0, count: rows * vocabulary)
            for t in 0..<rows {
                let base = t * vocabulary
                guard targets[j][base..<(base + vocabulary)].contains(where: { $0 > 0 }) else { continue }
                var top = logits[j][base]
                for v in 0..<vocabulary { top = max(top, logits[j][base + v]) }
                var sum: S = 0
                for v in 0..<vocabulary { sum += S(exp(Double(logits[j][base + v] - top))) }
                let logSum = S(log(Double(sum))) + top
                for v in 0..<vocabulary {
                    let p = targets[j][base + v], logq = logits[j][base + v] - logSum
                    if p > 0 { loss -= p * logq * scale }
                    g[base + v] = (S(exp(Double(logq))) - p) * scale
                }
            }
            dLogits.append(g)
        }

        var grad = RecurrentHeadTensors<S>(zerosLike: w)
        var carry = [S](repeating: 0, count: rows * d)
        func addInPlace(_ x: inout [S], _ y: [S]) { for i in x.indices { x[i] += y[i] } }
        func siluDerivative(_ a: S) -> S { let sg = Math.sigmoid(a); return sg * (1 + a * (1 - sg)) }
        for j in stride(from: steps - 1, through: 0, by: -1) {
            let v = forward[j]
            let dN = Math.matmulTransposed(dLogits[j], head, rows: rows, inner: vocabulary, out: d)
            let dF = Math.rmsNormBackward(dN, input: v.f, weight: w.norm, inverseRMS: v.inverseRMS, rows: rows, weightGradient: &grad.norm)
            addInPlace(&grad.projection, Math.outerSum(dF, v.xs.last!, rows: rows, left: d, right: d2))
            var dX = Math.matmulTransposed(dF, w.projection, rows: rows, inner: d, out: d2)
            for b in stride(from: w.blockWeights.count - 1, through: 0, by: -1) {
                let z = v.zs[b]
                var dZ = dX
                for i in dZ.indices { dZ[i] *= siluDerivative(z[i]) }
                addInPlace(&grad.blockWeights[b], Math.outerSum(dZ, v.xs[b], rows: rows, left: d2, right: d2))
                for t in 0..<rows { for c in 0..<d2 { grad.blockBiases[b][c] += dZ[t * d2 + c] } }
                addInPlace(&dX, Math.matmulTransposed(dZ, w.blockWeights[b], rows: rows, inner: d2, out: d2))
            }
            var dA = carry
            for t in 0..<rows { for c in 0..<d { dA[t * d + c] += dX[t * d2 + d + c] } }
            for i in dA.indices { dA[i] *= siluDerivative(v.a[i]) }
            addInPlace(&grad.input, Math.outerSum(dA, embeddings[j], rows: rows, left: d, right: d))
            for t in 0..<rows { for c in 0..<d { grad.recurrentBias[c] += dA[t * d + c] } }
            if j > 0 {
                addInPlace(&grad.recurrent, Math.outerSum(dA, forward[j - 1].s, rows: rows, left: d, right: d))
                carry = Math.matmulTransposed(dA, w.recurrent, rows: rows, inner: d, out: d)
            }
        }
        return (loss, grad, logits)
    }
}
