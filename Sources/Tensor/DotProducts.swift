/// Dot products of one stored weight row with a float activation vector.
///
/// Every kernel keeps two 16-lane accumulators (even and odd 16-element halves of each 32-element
/// stretch), adds them and reduces once at the end. The batched matrix product calls exactly these
/// functions for each token, so a token's result does not depend on how many tokens share the call.

@inline(__always) private func loadFloats(_ x: UnsafePointer<Float>, _ offset: Int) -> SIMD16<Float> {
    UnsafeRawPointer(x + offset).loadUnaligned(as: SIMD16<Float>.self)
}

@inline(__always) func dotF32(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc0 = SIMD16<Float>(), acc1 = SIMD16<Float>()
    var i = 0
    while i + 32 <= n {
        acc0.addProduct(row.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self), loadFloats(x, i))
        acc1.addProduct(row.loadUnaligned(fromByteOffset: 4 * i + 64, as: SIMD16<Float>.self), loadFloats(x, i + 16))
        i += 32
    }
    var tail: Float = 0
    while i < n {
        tail += row.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) * x[i]
        i += 1
    }
    return (acc0 + acc1).sum() + tail
}

@inline(__always) func dotF16(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc0 = SIMD16<Float>(), acc1 = SIMD16<Float>()
    var i = 0
    while i + 32 <= n {
        let w0 = SIMD16<Float>(row.loadUnaligned(fromByteOffset: 2 * i, as: SIMD16<Float16>.self))
        let w1 = SIMD16<Float>(row.loadUnaligned(fromByteOffset: 2 * i + 32, as: SIMD16<Float16>.self))
        acc0.addProduct(w0, loadFloats(x, i))
        acc1.addProduct(w1, loadFloats(x, i + 16))
        i += 32
    }
    var tail: Float = 0
    while i < n {
        tail += loadHalf(row, 2 * i) * x[i]
        i += 1
    }
    return (acc0 + acc1).sum() + tail
}

@inline(__always) func dotBF16(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc0 = SIMD16<Float>(), acc1 = SIMD16<Float>()
    var i = 0
    while i + 32 <= n {
        let b0 = SIMD16<UInt32>(truncatingIfNeeded: row.loadUnaligned(fromByteOffset: 2 * i, as: SIMD16<UInt16>.self)) &<< 16
        let b1 = SIMD16<UInt32>(truncatingIfNeeded: row.loadUnaligned(fromByteOffset: 2 * i + 32, as: SIMD16<UInt16>.self)) &<< 16
        acc0.addProduct(unsafeBitCast(b0, to: SIMD16<Float>.self), loadFloats(x, i))
        acc1.addProduct(unsafeBitCast(b1, to: SIMD16<Float>.self), loadFloats(x, i + 16))
        i += 32
    }
    var tail: Float = 0
    while i < n {
        tail += bfloat16ToFloat(row.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) * x[i]
        i += 1
    }
    return (acc0 + acc1).sum() + tail
}

/// A stored row as float products read it: float formats as they are, quantised ones dequantised into
/// `scratch` (at least `n` floats). The products that matter for speed go through the integer kernels
/// instead (`WeightMatrix.multiply`).
@inline(__always) func rowForFloatProducts(_ type: QuantType, _ row: UnsafeRawPointer, _ n: Int,
                                           scratch: UnsafeMutablePointer<Float>) -> (type: QuantType, bytes: UnsafeRawPointer) {
    switch type {
    case .f32, .f16, .bf16: return (type, row)
    default:
        dequantize(type, row, into: scratch, count: n)
        return (.f32, UnsafeRawPointer(scratch))
    }
}

/// Dot product of a row in a float format (F32, F16, BF16) with float activations `x`.
@inline(__always) func dotRow(_ type: QuantType, _ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
    switch type {
    case .f16: dotF16(row, x, n)
    case .bf16: dotBF16(row, x, n)
    default: dotF32(row, x, n)
    }
}
