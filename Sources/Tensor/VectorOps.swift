import KernelsC
#if canImport(Glibc)
import Glibc
#endif

/// Element-wise and reduction operations on float vectors used by the transformer layers.
public enum VectorOps {
    /// `out = x / sqrt(mean(x²) + eps) * weight` over `n` elements. `out` may alias `x`.
    public static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, eps: Float,
                               count n: Int, into out: UnsafeMutablePointer<Float>) {
        // Sixteen partial sums (a scalar chain of n dependent adds cost more than the rest of the norm).
        var lanes = SIMD16<Float>()
        var i = 0
        while i + 16 <= n {
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
            lanes.addProduct(v, v)
            i += 16
        }
        var sum = lanes.sum()
        while i < n {
            sum += x[i] * x[i]
            i += 1
        }
        let scale = 1 / (sum / Float(n) + eps).squareRoot()
        for i in 0..<n { out[i] = x[i] * scale * weight[i] }
    }

    /// Rotates pair i of each head by the angle whose cosine and sine are `cos[i]`, `sin[i]`: the
    /// adjacent pair `(x[2i], x[2i+1])` (GGML's "normal" RoPE), or else `(x[i], x[i + headSize/2])`
    /// (GGML's NeoX RoPE). `x` holds `heads × headSize` floats.
    public static func rope(_ x: UnsafeMutablePointer<Float>, heads: Int, headSize: Int,
                            cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, pairsAdjacent: Bool = true) {
        let half = headSize / 2
        for h in 0..<heads {
            let head = x + h * headSize
            for i in 0..<half {
                let first = pairsAdjacent ? 2 * i : i, second = pairsAdjacent ? 2 * i + 1 : i + half
                let a = head[first], b = head[second]
                head[first] = a * cos[i] - b * sin[i]
                head[second] = a * sin[i] + b * cos[i]
            }
        }
    }

    /// Index of the largest of `n` values (the lowest index on ties).
    public static func argmax(_ x: UnsafePointer<Float>, count n: Int) -> Int {
        var best = 0
        for i in 1..<n where x[i] > x[best] { best = i }
        return best
    }

    /// In-place softmax over `n` elements (KernelsC's kq_softmax).
    public static func softmax(_ x: UnsafeMutablePointer<Float>, count n: Int) {
        kq_softmax(x, Int32(n))
    }

    /// `gate[i] = silu(gate[i]) · up[i]` (SwiGLU; KernelsC's kq_swiglu).
    public static func swiglu(_ gate: UnsafeMutablePointer<Float>, up: UnsafePointer<Float>, count n: Int) {
        kq_swiglu(gate, up, Int32(n))
    }

    /// `x[i] += y[i]`.
    public static func add(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, count n: Int) {
        for i in 0..<n { x[i] += y[i] }
    }

    /// Dot product of two float vectors (the adapter training's float products).
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count n: Int) -> Float {
        dotF32(UnsafeRawPointer(a), b, n)
    }

    /// Sum of `n` floats (16 lanes at a time; used to measure memory bandwidth).
    public static func sum(_ x: UnsafePointer<Float>, count n: Int) -> Float {
        var acc0 = SIMD16<Float>(), acc1 = SIMD16<Float>()
        var i = 0
        while i + 32 <= n {
            acc0 += UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
            acc1 += UnsafeRawPointer(x + i + 16).loadUnaligned(as: SIMD16<Float>.self)
            i += 32
        }
        var tail: Float = 0
        while i < n {
            tail += x[i]
            i += 1
        }
        return (acc0 + acc1).sum() + tail
    }

    /// `y[i] += a · x[i]` (the adapter training's float products).
    @inline(__always)
    public static func addScaled(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, scale a: Float, count n: Int) {
        // 16 lanes at a time; each element still gets y + (a·x), rounded twice, exactly as the scalar tail.
        var i = 0
        while i + 16 <= n {
            let yp = UnsafeMutableRawPointer(y + i), xp = UnsafeRawPointer(x + i)
            yp.storeBytes(of: yp.loadUnaligned(as: SIMD16<Float>.self) + a * xp.loadUnaligned(as: SIMD16<Float>.self), as: SIMD16<Float>.self)
            i += 16
        }
        while i < n {
            y[i] += a * x[i]
            i += 1
        }
    }
}
