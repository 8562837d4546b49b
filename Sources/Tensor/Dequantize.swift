/// Conversion of stored rows to `Float`, written from each format's definition. These are the
/// reference semantics: the dot-product kernels must agree with `dequantize` followed by a float dot.

@inline(__always) func loadHalf(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    Float(p.loadUnaligned(fromByteOffset: offset, as: Float16.self))
}

@inline(__always) func bfloat16ToFloat(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

/// Q4_K packs eight 6-bit scales and eight 6-bit minimums into 12 bytes.
@inline(__always) func q4KScaleMin(_ j: Int, _ q: UnsafeRawPointer) -> (scale: Float, min: Float) {
    func b(_ i: Int) -> UInt8 { q.load(fromByteOffset: i, as: UInt8.self) }
    if j < 4 {
        return (Float(b(j) & 63), Float(b(j + 4) & 63))
    }
    let scale = (b(j + 4) & 0x0F) | ((b(j - 4) >> 6) << 4)
    let min = (b(j + 4) >> 4) | ((b(j) >> 6) << 4)
    return (Float(scale), Float(min))
}

/// Writes `count` elements of a row stored in `type` at `source` into `destination`.
/// `count` must be a multiple of the type's block size.
public func dequantize(_ type: QuantType, _ source: UnsafeRawPointer, into destination: UnsafeMutablePointer<Float>, count: Int) {
    precondition(count % type.blockSize == 0, "row length \(count) is not a whole number of \(type) blocks")
    let blocks = count / type.blockSize
    switch type {
    case .f32:
        for i in 0..<count { destination[i] = source.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
    case .f16:
        for i in 0..<count { destination[i] = loadHalf(source, 2 * i) }
    case .bf16:
        for i in 0..<count { destination[i] = bfloat16ToFloat(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
    case .q4_0:
        for b in 0..<blocks {
            let block = source + b * 18
            let d = loadHalf(block, 0)
            let out = destination + b * 32
            for j in 0..<16 {
                let byte = block.load(fromByteOffset: 2 + j, as: UInt8.self)
                out[j] = d * Float(Int(byte & 0x0F) - 8)
                out[j + 16] = d * Float(Int(byte >> 4) - 8)
            }
        }
    case .q4_1:
        for b in 0..<blocks {
            let block = source + b * 20
            let d = loadHalf(block, 0), m = loadHalf(block, 2)
            let out = destination + b * 32
            for j in 0..<16 {
                let byte = block.load(fromByteOffset: 4 + j, as: UInt8.self)
                out[j] = d * Float(byte & 0x0F) + m
                out[j + 16] = d * Float(byte >> 4) + m
            }
        }
    case .q5_0, .q5_1:
        // Element j takes nibble j (low nibbles, then high ones) and bit j of the 32 fifth bits.
        let withMin = type == .q5_1, size = type.bytesPerBlock
        for b in 0..<blocks {
            let block = source + b * size
            let d = loadHalf(block, 0), m = withMin ? loadHalf(block, 2) : 0
            let high = block.loadUnaligned(fromByteOffset: withMin ? 4 : 2, as: UInt32.self)
            let nibbles = block + (withMin ? 8 : 6)
            let out = destination + b * 32
            for j in 0..<16 {
                let byte = nibbles.load(fromByteOffset: j, as: UInt8.self)
                let n0 = Int(byte & 0x0F) | Int((high >> UInt32(j)) & 1) << 4
                let n1 = Int(byte >> 4) | Int((high >> UInt32(j + 16)) & 1) << 4
                out[j] = withMin ? d * Float(n0) + m : d * Float(n0 - 16)
                out[j + 16] = withMin ? d * Float(n1) + m : d * Float(n1 - 16)
            }
        }
    case .q8_0:
        for b in 0..<blocks {
            let block = source + b * 34
            let d = loadHalf(block, 0)
            let out = destination + b * 32
            for j in 0..<32 { out[j] = d * Float(block.load(fromByteOffset: 2 + j, as: Int8.self)) }
        }
    case .q4_K:
        for b in 0..<blocks {
            let block = source + b * 144
            let d = loadHalf(block, 0), dmin = loadHalf(block, 2)
            let scales = block + 4
            var q = block + 16
            var out = destination + b * 256
            for group in 0..<4 {
                let (s1, m1) = q4KScaleMin(2 * group, scales)
                let (s2, m2) = q4KScaleMin(2 * group + 1, scales)
                for l in 0..<32 {
                    let byte = q.load(fromByteOffset: l, as: UInt8.self)
                    out[l] = d * s1 * Float(byte & 0x0F) - dmin * m1
                    out[l + 32] = d * s2 * Float(byte >> 4) - dmin * m2
                }
                q += 32
                out += 64
            }
        }
    case .q5_K:
        for b in 0..<blocks {
            let block = source + b * 176
            let d = loadHalf(block, 0), dmin = loadHalf(block, 2)
            let scales = block + 4, high = block + 16
            for j in 0..<8 {  // 32-element sub-blocks: nibbles low then high, fifth bit j of each high byte
                let (scale, min) = q4KScaleMin(j, scales)
                let nibbles = block + 48 + 32 * (j / 2)
                for l in 0..<32 {
                    let n = Int(nibbles.load(fromByteOffset: l, as: UInt8.self) >> UInt8(4 * (j % 2))) & 0x0F
                        | Int((high.load(fromByteOffset: l, as: UInt8.self) >> UInt8(j)) & 1) << 4
                    destination[b * 256 + 32 * j + l] = d * scale * Float(n) - dmin * min
                }
            }
        }
    case .q3_K:
        for b in 0..<blocks {
            let block = source + b * 110
            let d = loadHalf(block, 108)
            func byte(_ i: Int) -> Int { Int(block.load(fromByteOffset: i, as: UInt8.self)) }
            func scale(_ k: Int) -> Float {  // 6-bit: low 4 bits in bytes 96–103, high 2 bits in bytes 104–107
                let low = k < 8 ? byte(96 + k) & 0x0F : byte(96 + k - 8) >> 4
                return Float((low | ((byte(104 + k % 4) >> (2 * (k / 4))) & 3) << 4) - 32)
            }
            for j in 0..<8 {  // 32-element sub-blocks: half h, 2-bit field j % 4, third bit 4h + j % 4
                let h = j / 4, shift = 2 * (j % 4), bit = 4 * h + j % 4
                for l in 0..<32 {
                    let value = (byte(32 + 32 * h + l) >> shift) & 3 - ((byte(l) >> bit) & 1 == 1 ? 0 : 4)
                    destination[b * 256 + 32 * j + l] = d * scale(8 * h + 2 * (j % 4) + l / 16) * Float(value)
                }
            }
        }
    case .q2_K:
        for b in 0..<blocks {
            let block = source + b * 84
            let d = loadHalf(block, 80), dmin = loadHalf(block, 82)
            for k in 0..<16 {  // 16-element sub-blocks: half k / 8, 2-bit field (k % 8) / 2, bytes 16·(k % 2)…
                let sc = block.load(fromByteOffset: k, as: UInt8.self)
                let q = block + 16 + 32 * (k / 8) + 16 * (k % 2), shift = UInt8(2 * ((k % 8) / 2))
                for l in 0..<16 {
                    let value = Float((q.load(fromByteOffset: l, as: UInt8.self) >> shift) & 3)
                    destination[b * 256 + 16 * k + l] = d * Float(sc & 0x0F) * value - dmin * Float(sc >> 4)
                }
            }
        }
    case .q6_K:
        for b in 0..<blocks {
            let block = source + b * 210
            var ql = block, qh = block + 128, sc = block + 192
            let d = loadHalf(block, 208)
            var out = destination + b * 256
            for _ in 0..<2 {
                for l in 0..<32 {
                    let group = l / 16
                    let low0 = ql.load(fromByteOffset: l, as: UInt8.self)
                    let low1 = ql.load(fromByteOffset: l + 32, as: UInt8.self)
                    let high = qh.load(fromByteOffset: l, as: UInt8.self)
                    let q1 = Int(low0 & 0x0F | ((high >> 0) & 3) << 4) - 32
                    let q2 = Int(low1 & 0x0F | ((high >> 2) & 3) << 4) - 32
                    let q3 = Int(low0 >> 4 | ((high >> 4) & 3) << 4) - 32
                    let q4 = Int(low1 >> 4 | ((high >> 6) & 3) << 4) - 32
                    func scale(_ i: Int) -> Float { Float(sc.load(fromByteOffset: i, as: Int8.self)) }
                    out[l] = d * scale(group) * Float(q1)
                    out[l + 32] = d * scale(group + 2) * Float(q2)
                    out[l + 64] = d * scale(group + 4) * Float(q3)
                    out[l + 96] = d * scale(group + 6) * Float(q4)
                }
                out += 128
                ql += 64
                qh += 32
                sc += 8
            }
        }
    }
}

/// Quantises `values` (rows of `columns`, a multiple of 32) to Q8_0 as GGML defines it: per block of
/// 32, d = max|x| / 127 stored as f16, q = round(x / d). Used for weights made at run time (Kangaroo's
/// adapter), so that they run on the integer kernels.
public func quantizeQ8_0(_ values: [Float], columns: Int) -> [UInt8] {
    precondition(columns % 32 == 0 && values.count % columns == 0, "Q8_0 needs rows of whole 32-element blocks")
    var bytes = [UInt8](repeating: 0, count: values.count / 32 * 34)
    bytes.withUnsafeMutableBytes { out in
        for block in 0..<(values.count / 32) {
            let x = values[(32 * block)..<(32 * block + 32)]
            let d = Float16((x.map(abs).max() ?? 0) / 127)
            let inverse = Float(d) == 0 ? 0 : 1 / Float(d)
            out.storeBytes(of: d.bitPattern.littleEndian, toByteOffset: 34 * block, as: UInt16.self)
            for (i, v) in x.enumerated() {
                out.storeBytes(of: Int8(max(-127, min(127, (v * inverse).rounded()))), toByteOffset: 34 * block + 2 + i, as: Int8.self)
            }
        }
    }
    return bytes
}
