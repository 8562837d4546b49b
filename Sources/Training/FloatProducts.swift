import Tensor

/// The training step's heavy products in float32: SIMD dot products and axpys over tiles of 64 rows
/// by 64 rows, so that each tile of both operands is read from memory once and reused from cache
/// (the head alone is 8192 × 576 floats, far larger than the caches), spread over the thread pool.
/// The generic versions in `AdapterLoss` serve float64 gradient checks.
enum FloatProducts {
    static let tile = 64

    /// `x Wᵀ`: x is `rows × inner`, W is `out × inner`. Parallel over tiles of W's rows.
    static func matmul(_ x: [Float], _ w: [Float], rows: Int, inner: Int, out: Int) -> [Float] {
        var y = [Float](repeating: 0, count: rows * out)
        x.withUnsafeBufferPointer { xs in
            w.withUnsafeBufferPointer { ws in
                y.withUnsafeMutableBufferPointer { ys in
                    let yp = ys.baseAddress!, xp = xs.baseAddress!, wp = ws.baseAddress!
                    let job = RowJob { tiles in
                        for oTile in tiles {
                            let oRange = (oTile * tile)..<min((oTile + 1) * tile, out)
                            for t0 in stride(from: 0, to: rows, by: tile) {
                                for t in t0..<min(t0 + tile, rows) {
                                    for o in oRange {
                                        yp[t * out + o] = VectorOps.dot(xp + t * inner, wp + o * inner, count: inner)
                                    }
                                }
                            }
                        }
                    }
                    ThreadPool.shared.run(job, count: (out + tile - 1) / tile, grain: 1)
                }
            }
        }
        return y
    }

    /// `dy W`: dy is `rows × inner`, W is `inner × out`. Parallel over tiles of rows (each owns its rows of dx).
    static func matmulTransposed(_ dy: [Float], _ w: [Float], rows: Int, inner: Int, out: Int) -> [Float] {
        var dx = [Float](repeating: 0, count: rows * out)
        dy.withUnsafeBufferPointer { ds in
            w.withUnsafeBufferPointer { ws in
                dx.withUnsafeMutableBufferPointer { xs in
                    let xp = xs.baseAddress!, dp = ds.baseAddress!, wp = ws.baseAddress!
                    let job = RowJob { tiles in
                        for tTile in tiles {
                            let tRange = (tTile * tile)..<min((tTile + 1) * tile, rows)
                            for i0 in stride(from: 0, to: inner, by: tile) {
                                for t in tRange {
                                    for i in i0..<min(i0 + tile, inner) where dp[t * inner + i] != 0 {
                                        VectorOps.addScaled(xp + t * out, wp + i * out, scale: dp[t * inner + i], count: out)
                                    }
                                }
                            }
                        }
                    }
                    ThreadPool.shared.run(job, count: (rows + tile - 1) / tile, grain: 1)
                }
            }
        }
        return dx
    }

    /// `Σ_t a_tᵀ b_t`: `left × right`. Parallel over tiles of output rows.
    static func outerSum(_ a: [Float], _ b: [Float], rows: Int, left: Int, right: Int) -> [Float] {
        var out = [Float](repeating: 0, count: left * right)
        a.withUnsafeBufferPointer { as_ in
            b.withUnsafeBufferPointer { bs in
                out.withUnsafeMutableBufferPointer { os in
                    let op = os.baseAddress!, ap = as_.baseAddress!, bp = bs.baseAddress!
                    let job = RowJob { tiles in
                        for lTile in tiles {
                            let lRange = (lTile * tile)..<min((lTile + 1) * tile, left)
                            for t0 in stride(from: 0, to: rows, by: tile) {
                                for l in lRange {
                                    for t in t0..<min(t0 + tile, rows) where ap[t * left + l] != 0 {
                                        VectorOps.addScaled(op + l * right, bp + t * right, scale: ap[t * left + l], count: right)
                                    }
                                }
                            }
                        }
                    }
                    ThreadPool.shared.run(job, count: (left + tile - 1) / tile, grain: 1)
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
