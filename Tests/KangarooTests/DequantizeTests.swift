import Foundation
import Tensor
import Testing

/// Known blocks written by hand from each format's definition.
@Suite("Dequantization of hand-made blocks")
struct DequantizeTests {
    func run(_ type: QuantType, _ bytes: [UInt8], count: Int) -> [Float] {
        var out = [Float](repeating: .nan, count: count)
        bytes.withUnsafeBytes { dequantize(type, $0.baseAddress!, into: &out, count: count) }
        return out
    }

    func half(_ value: Float) -> [UInt8] { withUnsafeBytes(of: Float16(value).bitPattern.littleEndian) { Array($0) } }

    @Test func f32AndF16AndBF16() {
        #expect(run(.f32, withUnsafeBytes(of: Float(-2.5).bitPattern.littleEndian) { Array($0) }, count: 1) == [-2.5])
        #expect(run(.f16, [0x00, 0x3C, 0x00, 0xC0], count: 2) == [1, -2])        // 0x3C00 = 1.0, 0xC000 = -2.0
        #expect(run(.bf16, [0x80, 0x3F, 0x40, 0xC0], count: 2) == [1, -3])       // 0x3F80 = 1.0, 0xC040 = -3.0
    }

    @Test func q4_0() {
        // d = 0.5; byte j holds element j (low nibble) and j+16 (high nibble); value = d·(q − 8).
        var block = half(0.5)
        for j in 0..<16 { block.append(UInt8(j) | UInt8(15 - j) << 4) }
        let values = run(.q4_0, block, count: 32)
        for j in 0..<16 {
            #expect(values[j] == 0.5 * Float(j - 8))
            #expect(values[j + 16] == 0.5 * Float(15 - j - 8))
        }
    }

    @Test func q4_1() {
        // d = 0.25, m = -1; value = d·q + m.
        var block = half(0.25) + half(-1)
        for j in 0..<16 { block.append(UInt8(j) | 0xF0) }
        let values = run(.q4_1, block, count: 32)
        for j in 0..<16 {
            #expect(values[j] == 0.25 * Float(j) - 1)
            #expect(values[j + 16] == 0.25 * 15 - 1)
        }
    }

    @Test func q8_0() {
        var block = half(2)
        for j in 0..<32 { block.append(UInt8(bitPattern: Int8(j - 16))) }
        let values = run(.q8_0, block, count: 32)
        #expect(values == (0..<32).map { 2 * Float($0 - 16) })
    }

    @Test func q4_K() {
        // d = 1, dmin = 0.5. Sub-block scales/mins: j < 4 in the low 6 bits of bytes j / j+4;
        // j ≥ 4 split between byte j+4 (low 4 bits) and the top 2 bits of bytes j-4 / j.
        var scales = [UInt8](repeating: 0, count: 12)
        let wantScale: [UInt8] = [1, 2, 3, 4, 5, 6, 33, 63]
        let wantMin: [UInt8] = [0, 1, 2, 3, 4, 5, 17, 48]
        for j in 0..<4 {
            scales[j] = wantScale[j]
            scales[j + 4] = wantMin[j]
        }
        for j in 4..<8 {
            scales[j + 4] = (wantScale[j] & 0x0F) | (wantMin[j] & 0x0F) << 4
            scales[j - 4] |= (wantScale[j] >> 4) << 6
            scales[j] |= (wantMin[j] >> 4) << 6
        }
        var block = half(1) + half(0.5) + scales
        for l in 0..<128 { block.append(UInt8(l % 16) | UInt8((l + 3) % 16) << 4) }
        let values = run(.q4_K, block, count: 256)
        for group in 0..<4 {
            for l in 0..<32 {
                let byte = block[16 + group * 32 + l]
                let s1 = 2 * group, s2 = 2 * group + 1
                #expect(values[group * 64 + l] == Float(wantScale[s1]) * Float(byte & 0x0F) - 0.5 * Float(wantMin[s1]))
                #expect(values[group * 64 + 32 + l] == Float(wantScale[s2]) * Float(byte >> 4) - 0.5 * Float(wantMin[s2]))
            }
        }
    }

    @Test func q6_K() {
        // 256 six-bit values q ∈ [0, 64): value = d · scale[i/16] · (q − 32).
        let q: [Int] = (0..<256).map { ($0 * 7 + 3) % 64 }
        let subScales: [Int8] = (0..<16).map { Int8($0 - 8) }
        var ql = [UInt8](repeating: 0, count: 128), qh = [UInt8](repeating: 0, count: 64)
        for half in 0..<2 {
            for l in 0..<32 {
                let base = half * 128
                let q1 = q[base + l], q2 = q[base + l + 32], q3 = q[base + l + 64], q4 = q[base + l + 96]
                ql[half * 64 + l] = UInt8(q1 & 15) | UInt8(q3 & 15) << 4
                ql[half * 64 + l + 32] = UInt8(q2 & 15) | UInt8(q4 & 15) << 4
                qh[half * 32 + l] = UInt8(q1 >> 4) | UInt8(q2 >> 4) << 2 | UInt8(q3 >> 4) << 4 | UInt8(q4 >> 4) << 6
            }
        }
        let block = ql + qh + subScales.map { UInt8(bitPattern: $0) } + half(0.5)
        let values = run(.q6_K, block, count: 256)
        #expect(values == (0..<256).map { 0.5 * Float(subScales[$0 / 16]) * Float(q[$0] - 32) })
    }
}

@Suite("Weight quantisation")
struct WeightQuantisationTests {
    @Test("Q8_0 quantisation round-trips within half a step per block and keeps zero blocks zero")
    func q8_0RoundTrip() {
        var random = SeededRandom(5)
        let values = (0..<96).map { i in i < 32 ? 0 : random.float(-3...3) * Float(i % 7 + 1) }
        let bytes = quantizeQ8_0(values, columns: 96)
        #expect(bytes.count == 3 * 34)
        var back = [Float](repeating: .nan, count: 96)
        bytes.withUnsafeBytes { dequantize(.q8_0, $0.baseAddress!, into: &back, count: 96) }
        for block in 0..<3 {
            let x = values[(32 * block)..<(32 * block + 32)]
            let step = (x.map(abs).max() ?? 0) / 127
            for i in x.indices { #expect(abs(back[i] - values[i]) <= 0.5 * step * 1.01 + 1e-7, "element \(i)") }
        }
        #expect(back[0..<32].allSatisfy { $0 == 0 })
    }

    /// Random blocks of every quantised format, dequantised by llama.cpp's `gguf` Python package
    /// (scripts/make-quant-fixtures.py): the layouts are theirs, not just our reading of them.
    @Test("every quantised format dequantises as llama.cpp's gguf package does", arguments: [
        QuantType.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K,
    ])
    func againstGGUFPackage(_ type: QuantType) throws {
        struct Blocks: Decodable { let bytes: String; let values: [Double] }
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fixtures/quant-blocks.json")
        let fixture = try #require(try JSONDecoder().decode([String: Blocks].self, from: Data(contentsOf: url))[type.description])
        let hex = Array(fixture.bytes.utf8)
        let bytes = stride(from: 0, to: hex.count, by: 2).map { UInt8(String(decoding: hex[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
        #expect(bytes.count == fixture.values.count / type.blockSize * type.bytesPerBlock)
        var values = [Float](repeating: .nan, count: fixture.values.count)
        bytes.withUnsafeBytes { dequantize(type, $0.baseAddress!, into: &values, count: values.count) }
        for (i, (got, expected)) in zip(values, fixture.values).enumerated() {
            #expect(abs(Double(got) - expected) <= 1e-6 * max(1, abs(expected)), "\(type) element \(i): \(got) vs \(expected)")
        }
    }
}
