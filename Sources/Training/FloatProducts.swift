import Tensor

/// The training step's heavy products in float32, with SIMD dot products and axpys spread over the
/// thread pool (the generic versions in `AdapterLoss` serve float64 gradient checks).
enum FloatProducts {
    /// `x Wᵀ`: x is `rows × inner`, W is `out × inner`.
    static func matmul(_ x: [Float], _ w: [Float], rows: Int, inner: Int, out: Int) -> [Float] {
        var y = [Float](repeating: 0, count: rows * out)
        x.withUnsafeBufferPointer { xs in
            w.withUnsafeBufferPointer { ws in
                y.withUnsafeMutableBufferPointer { ys in
                    let yp = ys.baseAddress!, xp = xs.baseAddress!, wp = ws.baseAddress!
                    let job = RowJob { range in
                        for t in range {
                            for o in 0..<out {
                                yp[t * out + o] = VectorOps.dot(xp + t * inner, wp + o * inner, count: inner)
                            }
                        }
                    }
                    ThreadPool.shared.run(job, count: rows, grain: 1)
                }
            }
        }
        return y
    }

    /// `dy W`: dy is `rows × inner`, W is `inner × out`.
    static func matmulTransposed(_ dy: [Float], _ w: [Float], rows: Int, inner: Int, out: Int) -> [Float] {
        var dx = [Float](repeating: 0, count: rows * out)
        dy.withUnsafeBufferPointer { ds in
            w.withUnsafeBufferPointer { ws in
                dx.withUnsafeMutableBufferPointer { xs in
                    let xp = xs.baseAddress!, dp = ds.baseAddress!, wp = ws.baseAddress!
                    let job = RowJob { range in
                        for t in range {
                            for i in 0..<inner where dp[t * inner + i] != 0 {
                                VectorOps.addScaled(xp + t * out, wp + i * out, scale: dp[t * inner + i], count: out)
                            }
                        }
                    }
                    ThreadPool.shared.run(job, count: rows, grain: 1)
                }
            }
        }
        return dx
    }

    /// `Σ_t a_tᵀ b_t`: `left × right`.
    static func outerSum(_ a: [Float], _ b: [Float], rows: Int, left: Int, right: Int) -> [Float] {
        var out = [Float](repeating: 0, count: left * right)
        a.withUnsafeBufferPointer { as_ in
            b.withUnsafeBufferPointer { bs in
                out.withUnsafeMutableBufferPointer { os in
                    let op = os.baseAddress!, ap = as_.baseAddress!, bp = bs.baseAddress!
                    let job = RowJob { range in
                        for l in range {
                            for t in 0..<rows where ap[t * left + l] != 0 {
                                VectorOps.addScaled(op + l * right, bp + t * right, scale: ap[t * left + l], count: right)
                            }
                        }
                    }
                    ThreadPool.shared.run(job, count: left, grain: 1)
                }
            }
        }
        return out
    }
}

/// A parallel loop body as a pool job (made once per product, outside the decode loop).
final class RowJob: ParallelJob, @unchecked Sendable {
    let body: (Range<Int>) -> Void

    init(_ body: @escaping (Range<Int>) -> Void) {
        self.body = body
    }

    func run(_ range: Range<Int>, part: Int) { body(range) }
}
