import Foundation
import Synchronization
import KernelsC
import Llama
import Tensor
import Testing

/// Random but valid rows for every supported format.
func randomRows(_ type: QuantType, rows: Int, columns: Int, random: inout SeededRandom) -> [UInt8] {
    func half(_ v: Float) -> [UInt8] { withUnsafeBytes(of: Float16(v).bitPattern.littleEndian) { Array($0) } }
    func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255, using: &random) } }
    var out: [UInt8] = []
    let blocks = rows * columns / type.blockSize
    for _ in 0..<blocks {
        switch type {
        case .f32: out += withUnsafeBytes(of: random.float().bitPattern) { Array($0) }
        case .f16: out += half(random.float())
        case .bf16: out += withUnsafeBytes(of: UInt16(random.float().bitPattern >> 16)) { Array($0) }
        case .q4_0: out += half(random.float(0.01...0.1)) + bytes(16)
        case .q4_1: out += half(random.float(0.01...0.1)) + half(random.float(-0.5...0)) + bytes(16)
        case .q5_0: out += half(random.float(0.01...0.1)) + bytes(20)
        case .q5_1: out += half(random.float(0.01...0.1)) + half(random.float(-0.5...0)) + bytes(20)
        case .q8_0: out += half(random.float(0.001...0.01)) + bytes(32)
        case .q2_K: out += bytes(80) + half(random.float(0.001...0.01)) + half(random.float(0.001...0.01))
        case .q3_K: out += bytes(108) + half(random.float(0.001...0.01))
        case .q4_K: out += half(random.float(0.001...0.01)) + half(random.float(0.001...0.01)) + bytes(140)
        case .q5_K: out += half(random.float(0.001...0.01)) + half(random.float(0.001...0.01)) + bytes(172)
        case .q6_K: out += bytes(208) + half(random.float(0.001...0.01))
        }
    }
    return out
}

/// Every way products can run on `matrix`: as stored, and also repacked (Q4_0, Q4_1, Q5_0, Q4_K,
/// Q6_K) or as an output head (any format: int16 activations for Q8_0, floats otherwise).
func kernelVariants(_ matrix: WeightMatrix) -> [WeightMatrix] {
    kq_has_packed(Int32(matrix.type.rawValue)) != 0 ? [matrix, matrix.repacked(), matrix.forLogits()] : [matrix, matrix.forLogits()]
}

/// One thread: the calling one, whose forced instruction level the kernels then use.
let callingThreadPool = ThreadPool(threads: 1)

/// Runs `matrix × x` for `count` tokens through the product API, on the calling thread.
func multiply(_ matrix: WeightMatrix, _ x: [Float], count: Int) -> [Float] {
    let batch = ActivationBatch(capacity: x.count)
    var y = [Float](repeating: .nan, count: count * matrix.rows)
    x.withUnsafeBufferPointer { xs in
        batch.set(xs.baseAddress!, count: count, columns: matrix.columns)
        y.withUnsafeMutableBufferPointer { matrix.multiply(batch, into: $0.baseAddress!, pool: callingThreadPool) }
    }
    return y
}

/// What the integer kernels see of the activations: each block of 32 rounded to multiples of
/// max|x|/limit (127 for the layers' int8 kernels, 32767 for the output head's int16 one).
func quantizedRoundTrip(_ x: [Float], limit: Float) -> [Float] {
    var out = x
    for start in stride(from: 0, to: x.count, by: 32) {
        let block = x[start..<start + 32]
        let scale = block.map(abs).max()! / limit
        let inverse: Float = scale != 0 ? 1 / scale : 0
        for i in block.indices { out[i] = (x[i] * inverse).rounded(.toNearestOrEven) * scale }
    }
    return out
}

@Suite("Matrix kernels")
struct KernelTests {
    static let shapes: [(QuantType, columns: Int)] = QuantType.allCases.flatMap { type -> [(QuantType, columns: Int)] in
        type.blockSize == 1 ? [(type, 45), (type, 64), (type, 7)] : [(type, type.blockSize * 3), (type, type.blockSize)]
    }

    @Test("every kernel agrees with dequantisation followed by a double-precision dot product",
          arguments: KernelTests.shapes.map { "\($0.0) \($0.columns)" })
    func againstScalarReference(_ label: String) {
        let parts = label.split(separator: " ")
        let type = QuantType.allCases.first { $0.description == parts[0] }!
        let columns = Int(parts[1])!
        let rows = 37
        var random = SeededRandom(UInt64(columns) &* 31 &+ UInt64(type.rawValue))
        let weights = randomRows(type, rows: rows, columns: columns, random: &random)
        for count in [1, 3, 16] {
            let x = (0..<(count * columns)).map { _ in random.float() }
            weights.withUnsafeBytes { w in
                let stored = WeightMatrix(type: type, rows: rows, columns: columns, data: w.baseAddress!)
                for matrix in kernelVariants(stored) {
                let y = multiply(matrix, x, count: count)
                // The integer kernels multiply by int8-rounded activations: compare with exactly those.
                let seen = switch matrix.activationPrecision {
                case .int8: matrix.usesIntegerKernel ? quantizedRoundTrip(x, limit: 127) : x
                case .int16: quantizedRoundTrip(x, limit: 32767)
                case .float: x
                }
                var row = [Float](repeating: 0, count: columns)
                for r in 0..<rows {
                    matrix.dequantizeRow(r, into: &row)
                    for t in 0..<count {
                        var exact = 0.0, magnitude = 0.0
                        for c in 0..<columns {
                            exact += Double(row[c]) * Double(seen[t * columns + c])
                            magnitude += abs(Double(row[c]) * Double(seen[t * columns + c]))
                        }
                        let got = Double(y[t * rows + r])
                        #expect(abs(got - exact) <= 1e-5 * magnitude + 1e-6, "\(type) row \(r) token \(t): \(got) vs \(exact)")
                    }
                }
                }
            }
        }
    }

    @Test("a token's result in a batch of n is bit-identical to the one-token result, n = 1…16",
          arguments: QuantType.allCases.map(\.description))
    func batchedBitIdentity(_ name: String) {
        let type = QuantType.allCases.first { $0.description == name }!
        let columns = type.blockSize == 1 ? 96 : 2 * max(type.blockSize, 32)
        let rows = 29
        var random = SeededRandom(UInt64(type.rawValue) + 7)
        let weights = randomRows(type, rows: rows, columns: columns, random: &random)
        let x = (0..<(16 * columns)).map { _ in random.float() }
        weights.withUnsafeBytes { w in
            let stored = WeightMatrix(type: type, rows: rows, columns: columns, data: w.baseAddress!)
            for matrix in kernelVariants(stored) {
                var single: [Float] = []
                for t in 0..<16 { single += multiply(matrix, Array(x[t * columns..<(t + 1) * columns]), count: 1) }
                for n in 1...16 {
                    let batched = multiply(matrix, Array(x.prefix(n * columns)), count: n)
                    #expect(batched.map(\.bitPattern) == single.prefix(n * rows).map(\.bitPattern), "n = \(n)")
                }
            }
        }
    }

    @Test("SwiGLU of two products, finished by the thread that computed each block, gives the bits of the separate steps",
          arguments: [QuantType.q4_1, .q8_0, .f16])
    func swiGLUProduct(type: QuantType) {
        var random = SeededRandom(UInt64(type.rawValue) + 7)
        let features = 96, columns = 64
        let gateBytes = randomRows(type, rows: features, columns: columns, random: &random)
        let upBytes = randomRows(type, rows: features, columns: columns, random: &random)
        let downBytes = randomRows(type, rows: 40, columns: features, random: &random)
        gateBytes.withUnsafeBytes { g in
            upBytes.withUnsafeBytes { u in
                downBytes.withUnsafeBytes { dn in
                    let gate = WeightMatrix(type: type, rows: features, columns: columns, data: g.baseAddress!).repacked()
                    let up = WeightMatrix(type: type, rows: features, columns: columns, data: u.baseAddress!).repacked()
                    let down = WeightMatrix(type: type, rows: 40, columns: features, data: dn.baseAddress!).repacked()
                    for threads in [1, 2, 3] {
                        let pool = ThreadPool(threads: threads)
                        for n in [1, 5, 11] {
                            let x = (0..<(n * columns)).map { _ in random.float() }
                            // The separate steps: both products, SwiGLU on the whole, the down product.
                            let g = multiply(gate, x, count: n), upOut = multiply(up, x, count: n)
                            var expected = g
                            expected.withUnsafeMutableBufferPointer { VectorOps.swiglu($0.baseAddress!, up: upOut, count: n * features) }
                            let expectedDown = multiply(down, expected, count: n)
                            // The fused job, its output then fed to the down product.
                            let input = ActivationBatch(capacity: n * columns), next = ActivationBatch(capacity: n * features)
                            var activated = [Float](repeating: .nan, count: n * features), upFused = activated
                            var downOut = [Float](repeating: .nan, count: n * 40)
                            x.withUnsafeBufferPointer { xs in
                                input.set(xs.baseAddress!, count: n, columns: columns)
                                activated.withUnsafeMutableBufferPointer { a in
                                    upFused.withUnsafeMutableBufferPointer { b in
                                        input.multiplySwiGLU(gate, up, into: a.baseAddress!, up: b.baseAddress!, next: next, for: down, pool: pool)
                                        downOut.withUnsafeMutableBufferPointer { down.multiply(next, into: $0.baseAddress!, pool: pool) }
                                    }
                                }
                            }
                            #expect(activated.map(\.bitPattern) == expected.map(\.bitPattern), "\(type), \(threads) threads, n = \(n)")
                            #expect(upFused.map(\.bitPattern) == upOut.map(\.bitPattern), "\(type), \(threads) threads, n = \(n)")
                            #expect(downOut.map(\.bitPattern) == expectedDown.map(\.bitPattern), "\(type), \(threads) threads, n = \(n)")
                        }
                    }
                }
            }
        }
    }

    @Test("AVX-512 VNNI, AVX2 and portable kernels give the same bits")
    func instructionLevelsAgree() {
        let best = kq_instruction_level()
        defer { kq_set_instruction_level(best) }
        for type in QuantType.allCases where type.hasIntegerKernel {
            var random = SeededRandom(UInt64(type.rawValue) + 99)
            let rows = 21, columns = type.blockSize == 32 ? 96 : 512
            let weights = randomRows(type, rows: rows, columns: columns, random: &random)
            let x = (0..<(11 * columns)).map { _ in random.float() }
            weights.withUnsafeBytes { w in
                let matrix = WeightMatrix(type: type, rows: rows, columns: columns, data: w.baseAddress!)
                let matrices = kernelVariants(matrix)
                var results: [[UInt32]] = []
                for level in (0...best).reversed() {
                    kq_set_instruction_level(level)
                    for m in matrices {
                        for n in [1, 5, 11] { results.append(multiply(m, Array(x.prefix(n * columns)), count: n).map(\.bitPattern)) }
                    }
                }
                let perLevel = 3 * matrices.count
                for (i, result) in results.enumerated() { #expect(result == results[i % perLevel], "\(type) result \(i)") }
            }
        }
    }

    @Test("the real model's logits are bit-identical whether tokens are fed together or one by one, and whichever way attention is split")
    func modelBatchBitIdentity() throws {
        let model = try RealModel.get().model
        // Attention takes a batch's tokens in runs (AttentionJob): 21 at once make runs of 11 and 10.
        let tokens: [Int32] = [504, 3575, 282, 4649, 314, 7042, 30, 198, 198, 504, 3575, 282, 4649, 314, 7042, 30, 198,
                               42, 1020, 3575, 30]
        let config = model.config
        // `splitFrom`: attention of up to 16 new tokens that see this many positions or more is split
        // over chunks of 256 positions and slices of lanes (AttentionJob); 1 takes that way for every
        // such call. After a `prefix` of 250 tokens, the tokens' positions cross a chunk's end.
        func run(chunks: [Int], prefix: Int = 0, splitFrom: Int? = nil) throws -> [[UInt32]] {
            let capacity = prefix + 32
            let cache = KVCache(config: config, capacity: capacity)
            let scratch = ForwardScratch(config: config, contextCapacity: capacity, splitAttentionLength: splitFrom)
            let hidden = FloatMatrix(capacity: capacity, columns: config.hiddenSize)
            let logits = FloatMatrix(capacity: 32, columns: config.vocabularySize)
            if prefix > 0 {
                model.embed((0..<prefix).map { tokens[$0 % tokens.count] }, into: hidden)
                try model.forward(layers: 0..<config.layerCount, hidden: hidden, cache: cache, scratch: scratch)
            }
            var rows: [[UInt32]] = []
            var start = 0
            for size in chunks {
                model.embed(tokens[start..<start + size], into: hidden)
                try model.forward(layers: 0..<config.layerCount, hidden: hidden, cache: cache, scratch: scratch)
                model.logits(hidden, rows: 0..<size, into: logits, scratch: scratch)
                for r in 0..<size { rows.append(logits.rowArray(r).map(\.bitPattern)) }
                start += size
            }
            return rows
        }
        let oneByOne = try run(chunks: Array(repeating: 1, count: tokens.count))
        #expect(try run(chunks: [tokens.count]) == oneByOne)
        #expect(try run(chunks: [4, 1, 3, 1, 2, 10]) == oneByOne)
        #expect(try run(chunks: [4, 1, 3, 1, 2, 10], splitFrom: 1) == oneByOne)
        let afterPrefix = try run(chunks: Array(repeating: 1, count: tokens.count), prefix: 250)
        #expect(afterPrefix != oneByOne)
        #expect(try run(chunks: Array(repeating: 1, count: tokens.count), prefix: 250, splitFrom: 1) == afterPrefix)
        #expect(try run(chunks: [4, 1, 3, 1, 2, 10], prefix: 250, splitFrom: 1) == afterPrefix)
        #expect(try run(chunks: [tokens.count], prefix: 250) == afterPrefix)
    }
}

@Suite("Vector operations")
struct VectorOpsTests {
    @Test("softmax sums to 1 and matches the definition, for lengths around the 16-lane steps")
    func softmax() {
        for n in [1, 5, 16, 17, 40, 1000] {
            var x = (0..<n).map { Float(sin(Double($0) * 1.7)) * 6 }
            let reference = x.map { Foundation.exp(Double($0 - x.max()!)) }
            let total = reference.reduce(0, +)
            x.withUnsafeMutableBufferPointer { VectorOps.softmax($0.baseAddress!, count: n) }
            #expect(abs(x.reduce(0, +) - 1) < 1e-5)
            for i in 0..<n { #expect(abs(Double(x[i]) - reference[i] / total) <= 1e-6 * reference[i] / total + 1e-9) }
        }
    }

    @Test("grouped attention scores and value sums over half-float values match their definition, with the same bits on every instruction level and for any number of grouped heads")
    func attentionKernels() {
        let best = kq_instruction_level()
        defer { kq_set_instruction_level(best) }
        // 3 and 5 heads take different tile and lane counts in one pass; 11 takes passes of 6 and 5.
        for (headSize, heads) in [(64, 3), (64, 5), (64, 11), (80, 3), (80, 5), (80, 11)] {
            var random = SeededRandom(UInt64(headSize * 100 + heads))
            let count = 37, tiles = (count + 15) / 16, rowStride = 48, valueStride = 2 * headSize
            let keys = (0..<(count * headSize)).map { _ in random.float() }
            var keyTiles = [Float](repeating: .nan, count: tiles * 16 * headSize)  // unused lanes are NaN
            for j in 0..<count {
                for d in 0..<headSize { keyTiles[(j / 16) * 16 * headSize + 16 * d + j % 16] = keys[j * headSize + d] }
            }
            // Values are stored as halves; the reference uses the same (exactly converted) values.
            let values = (0..<(count * valueStride)).map { _ in Float(Float16(random.float())) }
            let valueHalves = values.map { Float16($0).bitPattern }
            let queries = (0..<(heads * headSize)).map { _ in random.float() }
            let p = (0..<(heads * rowStride)).map { _ in random.float(0...1) }
            let scale: Float = 0.125
            var results: [[UInt32]] = []
            for level in (0...best).reversed() {
                kq_set_instruction_level(level)
                var grouped = [Float](repeating: 0, count: heads * rowStride), alone = grouped
                kq_attention_scores(queries, Int32(heads), keyTiles, Int32(count), Int32(headSize), scale, &grouped, rowStride)
                for h in 0..<heads {
                    alone.withUnsafeMutableBufferPointer { out in
                        queries.withUnsafeBufferPointer { q in
                            kq_attention_scores(q.baseAddress! + h * headSize, 1, keyTiles, Int32(count), Int32(headSize), scale,
                                                out.baseAddress! + h * rowStride, rowStride)
                        }
                    }
                    for j in 0..<count {
                        let reference = (0..<headSize).reduce(0.0) { $0 + Double(queries[h * headSize + $1]) * Double(keys[j * headSize + $1]) } * Double(scale)
                        #expect(abs(Double(grouped[h * rowStride + j]) - reference) < 1e-5, "scores h \(h) j \(j)")
                        #expect(grouped[h * rowStride + j].bitPattern == alone[h * rowStride + j].bitPattern)
                    }
                }
                var sums = [Float](repeating: 0, count: heads * headSize), sumsAlone = sums
                kq_attention_values(p, rowStride, Int32(heads), valueHalves, valueStride, Int32(count), Int32(headSize), &sums)
                for h in 0..<heads {
                    sumsAlone.withUnsafeMutableBufferPointer { out in
                        p.withUnsafeBufferPointer { pp in
                            kq_attention_values(pp.baseAddress! + h * rowStride, rowStride, 1, valueHalves, valueStride, Int32(count),
                                                Int32(headSize), out.baseAddress! + h * headSize)
                        }
                    }
                    for i in 0..<headSize {
                        let reference = (0..<count).reduce(0.0) { $0 + Double(p[h * rowStride + $1]) * Double(values[$1 * valueStride + i]) }
                        #expect(abs(Double(sums[h * headSize + i]) - reference) < 1e-4, "values h \(h) i \(i)")
                    }
                }
                #expect(sums.map(\.bitPattern) == sumsAlone.map(\.bitPattern))
                // The sums add to `out` in order of position: two calls over consecutive ranges give the bits of one.
                var sumsSplit = [Float](repeating: 0, count: heads * headSize)
                let split = 20
                kq_attention_values(p, rowStride, Int32(heads), valueHalves, valueStride, Int32(split), Int32(headSize), &sumsSplit)
                p.withUnsafeBufferPointer { pp in
                    valueHalves.withUnsafeBufferPointer { v in
                        kq_attention_values(pp.baseAddress! + split, rowStride, Int32(heads), v.baseAddress! + split * valueStride,
                                            valueStride, Int32(count - split), Int32(headSize), &sumsSplit)
                    }
                }
                #expect(sumsSplit.map(\.bitPattern) == sums.map(\.bitPattern))
                // Each lane is its own sum: slices of the head's lanes give the bits of the whole head.
                let lanes = headSize % 32 == 0 ? 32 : 16
                for first in stride(from: 0, to: headSize, by: lanes) {
                    var slice = [Float](repeating: 0, count: heads * lanes)
                    valueHalves.withUnsafeBufferPointer { v in
                        kq_attention_values(p, rowStride, Int32(heads), v.baseAddress! + first, valueStride, Int32(count),
                                            Int32(lanes), &slice)
                    }
                    for h in 0..<heads {
                        #expect(slice[(h * lanes)..<(h * lanes + lanes)].map(\.bitPattern)
                                == sums[(h * headSize + first)..<(h * headSize + first + lanes)].map(\.bitPattern))
                    }
                }
                results.append((0..<heads).flatMap { h in grouped[(h * rowStride)..<(h * rowStride + count)] }.map(\.bitPattern)
                               + sums.map(\.bitPattern))
            }
            #expect(results.allSatisfy { $0 == results[0] }, "head size \(headSize), \(heads) heads")
        }
    }

    @Test("SwiGLU matches its definition, with the same bits on every instruction level")
    func swiglu() {
        let n = 1003
        let gate = (0..<n).map { Float(sin(Double($0) * 0.37)) * ($0 % 7 == 0 ? 120 : 9) }
        let up = (0..<n).map { Float(cos(Double($0) * 0.11)) * 3 }
        let best = kq_instruction_level()
        defer { kq_set_instruction_level(best) }
        var results: [[UInt32]] = []
        for level in (0...best).reversed() {
            kq_set_instruction_level(level)
            var out = gate
            out.withUnsafeMutableBufferPointer { VectorOps.swiglu($0.baseAddress!, up: up, count: n) }
            for i in 0..<n {
                let g = Double(gate[i]), reference = g / (1 + Foundation.exp(-g)) * Double(up[i])
                #expect(abs(Double(out[i]) - reference) <= 1e-6 * abs(reference) + 1e-30, "element \(i)")
            }
            results.append(out.map(\.bitPattern))
        }
        #expect(results.allSatisfy { $0 == results[0] })
    }

    @Test("int8 activation quantisation matches its definition, with the same bits on every instruction level",
          arguments: [1, 15, 16, 17, 37])
    func activationQuantisation(blocks: Int) {
        // Block 3 is all zeros (scale 0), block 5 has one large value; the AVX-512 path takes 16 blocks
        // at a time, so these counts cover whole groups, a remainder and both together.
        let columns = 32 * blocks
        let x: [Float] = (0..<columns).map { i in
            let block = i / 32
            if block == 3 { return 0 }
            if block == 5 && i % 32 == 7 { return -350 }
            return Float(sin(Double(i) * 0.7)) * Float(1 + block % 4)
        }
        let best = kq_instruction_level()
        defer { kq_set_instruction_level(best) }
        var results: [[UInt32]] = []
        for level in (0...best).reversed() {
            kq_set_instruction_level(level)
            var q = [Int8](repeating: 0, count: columns)
            var d = [Float](repeating: -1, count: blocks), ds = [Float](repeating: -1, count: blocks)
            var halfSums = [Int32](repeating: -1, count: 2 * blocks)
            kq_quantize(x, Int32(columns), 1, &q, &d, &ds, &halfSums)
            for b in 0..<blocks {
                let values = x[(32 * b)..<(32 * b + 32)]
                let scale = values.map { abs($0) }.max()! / 127
                let inverse: Float = scale != 0 ? 1 / scale : 0
                let expected = values.map { Int8(($0 * inverse).rounded(.toNearestOrEven)) }
                #expect(Array(q[(32 * b)..<(32 * b + 32)]) == expected, "block \(b)")
                #expect(d[b] == scale && ds[b] == scale * Float(expected.reduce(0) { $0 + Int($1) }), "block \(b)")
                let halves = [expected[..<16], expected[16...]].map { $0.reduce(Int32(0)) { $0 + Int32($1) } }
                #expect(Array(halfSums[(2 * b)..<(2 * b + 2)]) == halves, "block \(b)")
            }
            results.append(q.map { UInt32(UInt8(bitPattern: $0)) } + d.map(\.bitPattern) + ds.map(\.bitPattern)
                           + halfSums.map { UInt32(bitPattern: $0) })
        }
        #expect(results.allSatisfy { $0 == results[0] })
    }
}

@Suite("Thread pool")
struct ThreadPoolTests {
    /// Records the ranges it is given.
    final class RangeRecorder: ParallelJob, @unchecked Sendable {
        let ranges = Mutex<[Range<Int>]>([])
        func run(_ range: Range<Int>, part: Int) {
            ranges.withLock { $0.append(range) }
        }
    }

    /// Records the ranges it is given and the parts that ran them.
    final class PartRecorder: ParallelJob, @unchecked Sendable {
        let runs = Mutex<[(range: Range<Int>, part: Int)]>([])
        func run(_ range: Range<Int>, part: Int) {
            runs.withLock { $0.append((range, part)) }
        }
        var items: Int { runs.withLock { $0.reduce(0) { $0 + $1.range.count } } }
        var parts: Set<Int> { runs.withLock { Set($0.map(\.part)) } }
    }

    @Test("a pool that is shut down ends its worker threads and still runs jobs, on the calling thread")
    func shutDown() {
        let pool = ThreadPool(threads: 3)
        let before = PartRecorder()
        pool.run(before, count: 3000, grain: 1)
        #expect(pool.liveWorkers == 2 && before.items == 3000)
        pool.shutDown()
        #expect(pool.liveWorkers == 0)
        let after = PartRecorder()
        pool.run(after, count: 3000, grain: 1)
        #expect(after.items == 3000 && after.parts == [0])
    }

    @Test("a job's ranges cover every item exactly once and hold at least `grain` items except the last",
          arguments: [2, 3])
    func rangesPartitionTheItems(threads: Int) {
        let pool = ThreadPool(threads: threads)
        for count in [0, 1, 2, 5, 16, 17, 60, 216, 1000, 3072] {
            for grain in [1, 3, 16] {
                let job = RangeRecorder()
                pool.run(job, count: count, grain: grain)
                let ranges = job.ranges.withLock { $0 }.sorted { $0.lowerBound < $1.lowerBound }
                var next = 0
                for range in ranges {
                    #expect(range.lowerBound == next, "count \(count), grain \(grain): gap or overlap at \(next)")
                    #expect(range.count >= grain || range.upperBound == count, "count \(count), grain \(grain): \(range)")
                    next = range.upperBound
                }
                #expect(next == count, "count \(count), grain \(grain): items \(next)..<\(count) not run")
            }
        }
    }
}
