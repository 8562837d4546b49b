import Foundation

/// The pieces of hand-written gradients the draft models' losses share, generic so that a gradient
/// check can run them in float64; float32 products go to `FloatProducts` (tiled, threaded).
enum GradientMath<S: BinaryFloatingPoint & Sendable> {
    static func sigmoid(_ x: S) -> S { S(1 / (1 + exp(-Double(x)))) }

    /// `x · (1/rms(x)) · g` per row; also returns the inverse RMS of each row.
    static func rmsNorm(_ x: [S], weight: [S], rows: Int, eps: S) -> ([S], [S]) {
        let d = weight.count
        var out = x, inverse = [S](repeating: 0, count: rows)
        for t in 0..<rows {
            var sum: S = 0
            for c in 0..<d { sum += x[t * d + c] * x[t * d + c] }
            let r = 1 / (sum / S(d) + eps).squareRoot()
            inverse[t] = r
            for c in 0..<d { out[t * d + c] = x[t * d + c] * r * weight[c] }
        }
        return (out, inverse)
    }

    /// With u = g ⊙ dn: dx = r·u − (r³/d)·x·Σ(u ⊙ x); dg += dn ⊙ x·r.
    static func rmsNormBackward(_ dn: [S], input x: [S], weight: [S], inverseRMS: [S], rows: Int, weightGradient: inout [S]) -> [S] {
        let d = weight.count
        var dx = [S](repeating: 0, count: rows * d)
        for t in 0..<rows {
            let r = inverseRMS[t]
            var dot: S = 0
            for c in 0..<d {
                weightGradient[c] += dn[t * d + c] * x[t * d + c] * r
                dot += weight[c] * dn[t * d + c] * x[t * d + c]
            }
            for c in 0..<d {
                dx[t * d + c] = r * weight[c] * dn[t * d + c] - r * r * r / S(d) * x[t * d + c] * dot
            }
        }
        return dx
    }

    /// `x W ᵀ`: x is `rows × inner`, W is `out × inner`.
    static func matmul(_ x: [S], _ w: [S], rows: Int, inner: Int, out: Int) -> [S] {
        if S.self == Float.self {
            return FloatProducts.matmul(x as! [Float], w as! [Float], rows: rows, inner: inner, out: out) as! [S]
        }
        var y = [S](repeating: 0, count: rows * out)
        for t in 0..<rows {
            for o in 0..<out {
                var s: S = 0
                for i in 0..<inner { s += x[t * inner + i] * w[o * inner + i] }
                y[t * out + o] = s
            }
        }
        return y
    }

    /// `dy W`: dy is `rows × inner`, W is `inner × out` (the gradient through `x Wᵀ`).
    static func matmulTransposed(_ dy: [S], _ w: [S], rows: Int, inner: Int, out: Int) -> [S] {
        if S.self == Float.self {
            return FloatProducts.matmulTransposed(dy as! [Float], w as! [Float], rows: rows, inner: inner, out: out) as! [S]
        }
        var dx = [S](repeating: 0, count: rows * out)
        for t in 0..<rows {
            for i in 0..<inner {
                let g = dy[t * inner + i]
                if g == 0 { continue }
                for o in 0..<out { dx[t * out + o] += g * w[i * out + o] }
            }
        }
        return dx
    }

    /// `Σ_t a_tᵀ b_t`: the weight gradient `left × right` of `y = x Wᵀ` from dy (`left`) and x (`right`).
    static func outerSum(_ a: [S], _ b: [S], rows: Int, left: Int, right: Int) -> [S] {
        if S.self == Float.self {
            return FloatProducts.outerSum(a as! [Float], b as! [Float], rows: rows, left: left, right: right) as! [S]
        }
        var out = [S](repeating: 0, count: left * right)
        for t in 0..<rows {
            for l in 0..<left {
                let g = a[t * left + l]
                if g == 0 { continue }
                for r in 0..<right { out[l * right + r] += g * b[t * right + r] }
            }
        }
        return out
    }
}
